//! Deterministic randomness for `random_get`: the ChaCha20 keystream of the chunk's seed.
//!
//! The exact definition (which other implementations must reproduce bit for bit) is in the crate
//! documentation, section "random_get".

/// The ChaCha20 block function of RFC 8439, section 2.3: 20 rounds over the 16-word state
/// `constants | key | counter | nonce`, plus the input state, serialized little-endian.
pub fn chacha20_block(key: &[u8; 32], counter: u32, nonce: &[u8; 12]) -> [u8; 64] {
    let mut state = [0u32; 16];
    state[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for (word, bytes) in state[4..12].iter_mut().zip(key.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    state[12] = counter;
    for (word, bytes) in state[13..16].iter_mut().zip(nonce.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }

    let mut working = state;
    for _ in 0..10 {
        // A column round followed by a diagonal round makes the "double round" of the RFC.
        quarter_round(&mut working, 0, 4, 8, 12);
        quarter_round(&mut working, 1, 5, 9, 13);
        quarter_round(&mut working, 2, 6, 10, 14);
        quarter_round(&mut working, 3, 7, 11, 15);
        quarter_round(&mut working, 0, 5, 10, 15);
        quarter_round(&mut working, 1, 6, 11, 12);
        quarter_round(&mut working, 2, 7, 8, 13);
        quarter_round(&mut working, 3, 4, 9, 14);
    }

    let mut block = [0u8; 64];
    for (index, bytes) in block.chunks_exact_mut(4).enumerate() {
        bytes.copy_from_slice(&working[index].wrapping_add(state[index]).to_le_bytes());
    }
    block
}

fn quarter_round(state: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    state[a] = state[a].wrapping_add(state[b]);
    state[d] = (state[d] ^ state[a]).rotate_left(16);
    state[c] = state[c].wrapping_add(state[d]);
    state[b] = (state[b] ^ state[c]).rotate_left(12);
    state[a] = state[a].wrapping_add(state[b]);
    state[d] = (state[d] ^ state[a]).rotate_left(8);
    state[c] = state[c].wrapping_add(state[d]);
    state[b] = (state[b] ^ state[c]).rotate_left(7);
}

/// The keystream `random_get` hands out, consumed sequentially across calls.
#[derive(Clone)]
pub(crate) struct RandomStream {
    key: [u8; 32],
    /// The index of the next block to generate. It is 64 bits wide: the low 32 bits are the RFC 8439
    /// block counter and the high 32 bits go into the first nonce word, which is zero for the first
    /// 2^32 blocks (256 GiB), so the stream is exactly RFC 8439 ChaCha20 with a zero nonce.
    next_block: u64,
    block: [u8; 64],
    /// How many bytes of `block` have been handed out; 64 means the block is used up.
    used: usize,
}

impl std::fmt::Debug for RandomStream {
    // The seed is not secret, but printing it in every debug dump of the context is just noise.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RandomStream").field("next_block", &self.next_block).field("used", &self.used).finish()
    }
}

impl RandomStream {
    pub(crate) fn new(seed: [u8; 32]) -> RandomStream {
        RandomStream { key: seed, next_block: 0, block: [0u8; 64], used: 64 }
    }

    /// Fills `out` with the next `out.len()` bytes of the keystream.
    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            if self.used == 64 {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&((self.next_block >> 32) as u32).to_le_bytes());
                self.block = chacha20_block(&self.key, self.next_block as u32, &nonce);
                self.next_block = self.next_block.wrapping_add(1);
                self.used = 0;
            }
            let take = (out.len() - filled).min(64 - self.used);
            out[filled..filled + take].copy_from_slice(&self.block[self.used..self.used + take]);
            filled += take;
            self.used += take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// RFC 8439, section 2.3.2: the block function test vector.
    #[test]
    fn chacha20_block_matches_rfc8439_section_2_3_2() {
        let key: [u8; 32] = std::array::from_fn(|index| index as u8);
        let nonce = [0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x4a, 0x00, 0x00, 0x00, 0x00];
        let block = chacha20_block(&key, 1, &nonce);
        assert_eq!(
            hex(&block),
            concat!(
                "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e",
                "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
            )
        );
    }

    /// RFC 8439, appendix A.1, test vector #1: the all-zero key, nonce and counter, which is exactly the
    /// first block `random_get` returns for an all-zero seed.
    #[test]
    fn zero_seed_stream_matches_rfc8439_appendix_a1() {
        let mut stream = RandomStream::new([0u8; 32]);
        let mut out = [0u8; 64];
        stream.fill(&mut out);
        assert_eq!(
            hex(&out),
            concat!(
                "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7",
                "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
            )
        );
    }

    #[test]
    fn stream_is_consumed_sequentially() {
        let mut whole = RandomStream::new([7u8; 32]);
        let mut expected = [0u8; 200];
        whole.fill(&mut expected);

        let mut pieces = RandomStream::new([7u8; 32]);
        let mut actual = [0u8; 200];
        let (first, rest) = actual.split_at_mut(8);
        pieces.fill(first);
        let (second, rest) = rest.split_at_mut(70);
        pieces.fill(second);
        pieces.fill(&mut rest[..0]);
        pieces.fill(rest);
        assert_eq!(actual, expected);
    }
}
