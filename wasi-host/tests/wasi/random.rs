//! random_get: the ChaCha20 keystream of the chunk's seed.

use distributivecom_wasi::{ChunkInput, Errno, chacha20_block};

use crate::harness::Guest;

fn guest(seed: [u8; 32]) -> Guest {
    Guest::new(ChunkInput { random_seed: seed, ..ChunkInput::default() })
}

#[test]
fn random_bytes_are_the_chacha20_keystream_of_the_seed() {
    let seed: [u8; 32] = std::array::from_fn(|index| (index * 7) as u8);
    let mut guest = guest(seed);
    let stream: Vec<u8> = (0..3).flat_map(|block| chacha20_block(&seed, block, &[0; 12])).collect();
    assert_eq!(guest.random(150), stream[..150]);
    assert_eq!(guest.random(42), stream[150..192]);
}

#[test]
fn random_bytes_are_consumed_sequentially_across_calls() {
    let mut whole = guest([1; 32]);
    let mut pieces = guest([1; 32]);
    let expected = whole.random(16);
    let mut actual = pieces.random(8);
    actual.extend(pieces.random(0));
    actual.extend(pieces.random(8));
    assert_eq!(actual, expected);
    assert_ne!(guest([2; 32]).random(16), expected, "another seed gives other bytes");
}

#[test]
fn large_requests_and_bad_buffers() {
    let mut guest = guest([3; 32]);
    let big = guest.random(100_000);
    assert_eq!(big[..64], chacha20_block(&[3; 32], 0, &[0; 12]));
    assert_eq!(big[99_968..], chacha20_block(&[3; 32], 1562, &[0; 12])[..32]);
    assert_eq!(guest.call("random_get", &[u64::from(u32::MAX - 3), 8]), Err(Errno::Fault));
    assert_eq!(guest.call("random_get", &[16, u64::from(u32::MAX)]), Err(Errno::Fault));
    // The failed calls consumed nothing: the stream continues right after the 100 000 bytes.
    assert_eq!(guest.random(32), chacha20_block(&[3; 32], 1562, &[0; 12])[32..]);
}
