//! Counting the primes in a half-open `u64` range with a segmented sieve of Eratosthenes.
//!
//! The sieve only looks at odd numbers and keeps one byte per odd number, in segments small enough to stay
//! in the CPU's L1 cache. Its base primes are capped at [`MAX_SIEVING_PRIME`] so that memory stays small
//! (a few MiB) for every range; a number that survives the sieve but is too big for the sieve to have
//! proven it prime (`n >= (largest base prime + 1)^2`) is checked with a deterministic Miller-Rabin test,
//! which is exact for every `u64`.

/// Largest base prime the sieve keeps. Sieving up to 2^24 proves primality up to 2^48 on its own and costs
/// about 13 MiB of base-prime state; above 2^48 the sieve only filters candidates for Miller-Rabin.
pub const MAX_SIEVING_PRIME: u64 = 1 << 24;

/// Number of odd numbers (bytes) per segment; 32 KiB fits a typical L1 data cache.
const SEGMENT_ODD_NUMBERS: usize = 1 << 15;

/// Counts the primes `p` with `from <= p < to`. Returns 0 when the range is empty.
pub fn count_primes(from: u64, to: u64) -> u64 {
    count_primes_with_sieving_limit(from, to, MAX_SIEVING_PRIME)
}

/// [`count_primes`] with an explicit cap on the base primes, so tests can force the Miller-Rabin path on
/// small numbers where brute force is cheap.
fn count_primes_with_sieving_limit(from: u64, to: u64, max_sieving_prime: u64) -> u64 {
    if from >= to {
        return 0;
    }
    let mut count = 0;
    if from <= 2 && 2 < to {
        count += 1;
    }
    // From here on only odd numbers from 3 up are candidates. `from < to <= u64::MAX` keeps this from
    // overflowing.
    let first_odd = from.max(3) | 1;
    let last = to - 1;
    if first_odd > last {
        return count;
    }
    let sieving_limit = integer_sqrt(last).min(max_sieving_prime);
    let base_primes = odd_primes_up_to(sieving_limit);
    // Survivors below `(sieving_limit + 1)^2` have no prime factor up to their square root, so they are
    // prime; the ones at or above it still need Miller-Rabin. Computed in u128 because it can pass u64::MAX.
    let proven_below = u128::from(sieving_limit + 1) * u128::from(sieving_limit + 1);

    // For each base prime that is already in use, the next odd multiple of it still to be crossed off.
    // Keeping it across segments avoids one division per prime per segment.
    let mut next_multiple: Vec<u64> = Vec::with_capacity(base_primes.len());
    let mut segment = vec![1u8; SEGMENT_ODD_NUMBERS];
    let mut segment_low = first_odd;
    loop {
        let odd_numbers_left = (last - segment_low) / 2 + 1;
        let length = odd_numbers_left.min(SEGMENT_ODD_NUMBERS as u64) as usize;
        let segment_high = segment_low + 2 * (length as u64 - 1);
        let flags = &mut segment[..length];
        flags.fill(1);

        // Bring in the base primes whose square falls inside this segment or below it.
        while let Some(&prime) = base_primes.get(next_multiple.len()) {
            let prime = u64::from(prime);
            if prime * prime > segment_high {
                break;
            }
            next_multiple.push(first_odd_multiple_to_cross(prime, segment_low));
        }
        for (&prime, next) in base_primes.iter().zip(next_multiple.iter_mut()) {
            if *next > segment_high {
                continue;
            }
            let step = prime as usize;
            let mut index = ((*next - segment_low) / 2) as usize;
            while index < length {
                flags[index] = 0;
                index += step;
            }
            // The next multiple lies past this segment, so it cannot overflow beyond `u64::MAX` by more
            // than one stride; saturating keeps it "past the end" in that case.
            *next = segment_low.saturating_add(2 * index as u64);
        }

        if u128::from(segment_high) < proven_below {
            count += flags.iter().filter(|&&flag| flag != 0).count() as u64;
        } else {
            for (index, &flag) in flags.iter().enumerate() {
                let candidate = segment_low + 2 * index as u64;
                if flag != 0 && (u128::from(candidate) < proven_below || is_prime(candidate)) {
                    count += 1;
                }
            }
        }

        match segment_high.checked_add(2) {
            Some(next_low) if next_low <= last => segment_low = next_low,
            _ => return count,
        }
    }
}

/// The first odd multiple of `prime` that is at least `max(prime^2, low)`; smaller multiples either lie
/// before the segment or have a smaller prime factor that crosses them off. Saturates at `u64::MAX`, which
/// is odd and therefore never a multiple the sieve visits within range.
fn first_odd_multiple_to_cross(prime: u64, low: u64) -> u64 {
    let square = prime * prime;
    if square >= low {
        return square;
    }
    let remainder = low % prime;
    let multiple = if remainder == 0 { Some(low) } else { low.checked_add(prime - remainder) };
    let odd_multiple = match multiple {
        Some(multiple) if multiple % 2 == 0 => multiple.checked_add(prime),
        other => other,
    };
    odd_multiple.unwrap_or(u64::MAX)
}

/// The odd primes up to and including `limit`, by a plain bit-packed sieve over the odd numbers.
fn odd_primes_up_to(limit: u64) -> Vec<u32> {
    if limit < 3 {
        return Vec::new();
    }
    // Bit `i` stands for the odd number `2i + 1`.
    let odd_count = limit.div_ceil(2) as usize;
    let mut composite = vec![0u64; odd_count.div_ceil(64)];
    let mut primes = Vec::new();
    for index in 1..odd_count {
        if composite[index / 64] & (1 << (index % 64)) != 0 {
            continue;
        }
        let prime = 2 * index + 1;
        primes.push(prime as u32);
        // The square is computed in u64 because it overflows a 32-bit usize on wasm32 for large primes.
        let square = (prime as u64) * (prime as u64);
        if square / 2 >= odd_count as u64 {
            continue;
        }
        let mut multiple_index = (square / 2) as usize;
        while multiple_index < odd_count {
            composite[multiple_index / 64] |= 1 << (multiple_index % 64);
            multiple_index += prime;
        }
    }
    primes
}

/// The largest `r` with `r * r <= n`.
pub fn integer_sqrt(n: u64) -> u64 {
    // The float estimate is within a few units of the answer for every u64; the loops make it exact.
    let mut root = (n as f64).sqrt() as u64;
    while root.checked_mul(root).is_none_or(|square| square > n) {
        root -= 1;
    }
    while (root + 1).checked_mul(root + 1).is_some_and(|square| square <= n) {
        root += 1;
    }
    root
}

/// Deterministic Miller-Rabin: the first twelve primes as witnesses are exact for all `n < 3.3 * 10^24`,
/// which covers every `u64`.
pub fn is_prime(n: u64) -> bool {
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for witness in WITNESSES {
        if n.is_multiple_of(witness) {
            return n == witness;
        }
    }
    let trailing_zeros = (n - 1).trailing_zeros();
    let odd_part = (n - 1) >> trailing_zeros;
    'witnesses: for witness in WITNESSES {
        let mut x = pow_mod(witness, odd_part, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..trailing_zeros {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witnesses;
            }
        }
        return false;
    }
    true
}

fn mul_mod(a: u64, b: u64, modulus: u64) -> u64 {
    (u128::from(a) * u128::from(b) % u128::from(modulus)) as u64
}

fn pow_mod(mut base: u64, mut exponent: u64, modulus: u64) -> u64 {
    let mut result = 1;
    base %= modulus;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul_mod(result, base, modulus);
        }
        base = mul_mod(base, base, modulus);
        exponent >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime_by_trial_division(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn known_prime_counting_function_values() {
        assert_eq!(count_primes(0, 10), 4);
        assert_eq!(count_primes(0, 100), 25);
        assert_eq!(count_primes(0, 1_000), 168);
        assert_eq!(count_primes(0, 1_000_000), 78_498);
        assert_eq!(count_primes(0, 10_000_000), 664_579);
    }

    #[test]
    fn empty_and_tiny_ranges() {
        assert_eq!(count_primes(5, 5), 0);
        assert_eq!(count_primes(10, 3), 0);
        assert_eq!(count_primes(0, 2), 0);
        assert_eq!(count_primes(2, 3), 1);
        assert_eq!(count_primes(3, 4), 1);
        assert_eq!(count_primes(4, 5), 0);
        assert_eq!(count_primes(0, 3), 1);
        assert_eq!(count_primes(1, 8), 4);
    }

    #[test]
    fn every_small_range_matches_trial_division() {
        for from in 0..120 {
            for to in from..140 {
                let expected = (from..to).filter(|&n| is_prime_by_trial_division(n)).count() as u64;
                assert_eq!(count_primes(from, to), expected, "[{from}, {to})");
            }
        }
    }

    #[test]
    fn ranges_spanning_several_segments_match_miller_rabin() {
        // Miller-Rabin is checked against trial division below; trial division itself is too slow here.
        let from = 1_000_000_007;
        let to = from + 3 * 2 * SEGMENT_ODD_NUMBERS as u64 + 123;
        let expected = (from..to).filter(|&n| is_prime(n)).count() as u64;
        assert_eq!(count_primes(from, to), expected);
    }

    #[test]
    fn miller_rabin_path_agrees_with_the_sieve() {
        // With base primes capped at 31 every survivor above 32^2 goes through Miller-Rabin.
        assert_eq!(count_primes_with_sieving_limit(0, 1_000_000, 31), 78_498);
        assert_eq!(count_primes_with_sieving_limit(999_000, 1_001_000, 2), count_primes(999_000, 1_001_000));
    }

    #[test]
    fn top_of_the_u64_range() {
        // The primes just below 2^64 are 2^64 - k for k = 59, 83, 95, 179, 189, 257, 279, 323, 353, 363.
        let two_to_64_minus = |k: u64| u64::MAX - (k - 1);
        assert!(is_prime(two_to_64_minus(59)));
        assert!(!is_prime(u64::MAX));
        assert_eq!(count_primes(two_to_64_minus(100), u64::MAX), 3);
        assert_eq!(count_primes(two_to_64_minus(363), u64::MAX), 10);
        assert_eq!(count_primes(two_to_64_minus(362), u64::MAX), 9);
        assert_eq!(count_primes(u64::MAX - 1, u64::MAX), 0);
    }

    #[test]
    fn sieve_and_miller_rabin_agree_around_two_to_the_48() {
        // 2^48 is where the sieve stops proving primality by itself.
        let from = (1u64 << 48) - 5_000;
        let to = (1u64 << 48) + 5_000;
        let expected = (from..to).filter(|&n| is_prime(n)).count() as u64;
        assert_eq!(count_primes(from, to), expected);
    }

    #[test]
    fn miller_rabin_matches_trial_division() {
        for n in 0..20_000 {
            assert_eq!(is_prime(n), is_prime_by_trial_division(n), "{n}");
        }
        // Strong pseudoprimes to several small bases must still be rejected.
        for composite in [3_215_031_751, 2_152_302_898_747, 3_474_749_660_383, 341_550_071_728_321] {
            assert!(!is_prime(composite), "{composite}");
        }
    }

    #[test]
    fn integer_sqrt_is_exact() {
        for n in [0, 1, 2, 3, 4, 15, 16, 17, 99, 100, 101, u64::MAX, u64::MAX - 1, (1 << 32) - 1, 1 << 32] {
            let root = integer_sqrt(n);
            assert!(u128::from(root) * u128::from(root) <= u128::from(n), "{n}");
            assert!(u128::from(root + 1) * u128::from(root + 1) > u128::from(n), "{n}");
        }
    }

    #[test]
    fn base_primes() {
        assert_eq!(odd_primes_up_to(2), Vec::<u32>::new());
        assert_eq!(odd_primes_up_to(3), vec![3]);
        assert_eq!(odd_primes_up_to(30), vec![3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(odd_primes_up_to(31), vec![3, 5, 7, 11, 13, 17, 19, 23, 29, 31]);
        assert_eq!(odd_primes_up_to(1_000_000).len(), 78_498 - 1);
    }
}
