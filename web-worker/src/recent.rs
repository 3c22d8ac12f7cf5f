//! The blobs an executor used last, kept in its memory (within a size, least recently used out first), so
//! that a shard a session's rounds send again and again is not read back from the Cache API, and hashed
//! again, for every run. Pure, so the host tests check it; bytes enter it only once verified.

use std::collections::HashMap;

/// Blobs by hash, within `max_bytes`.
#[derive(Debug)]
pub struct RecentBlobs {
    max_bytes: usize,
    bytes: usize,
    clock: u64,
    entries: HashMap<String, (Vec<u8>, u64)>,
}

impl RecentBlobs {
    pub fn new(max_bytes: usize) -> RecentBlobs {
        RecentBlobs { max_bytes, bytes: 0, clock: 0, entries: HashMap::new() }
    }

    /// A copy of the blob's bytes, if held (it becomes the most recently used).
    pub fn get(&mut self, sha256: &str) -> Option<Vec<u8>> {
        self.clock += 1;
        let clock = self.clock;
        let (bytes, used) = self.entries.get_mut(sha256)?;
        *used = clock;
        Some(bytes.clone())
    }

    /// Keeps a verified blob (unless it alone is larger than the whole), evicting the least recently used
    /// others until everything fits.
    pub fn keep(&mut self, sha256: &str, bytes: &[u8]) {
        if bytes.len() > self.max_bytes || self.entries.contains_key(sha256) {
            return;
        }
        self.clock += 1;
        self.bytes += bytes.len();
        self.entries.insert(sha256.to_owned(), (bytes.to_vec(), self.clock));
        while self.bytes > self.max_bytes {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(name, _)| name.clone());
            let Some(oldest) = oldest else { break };
            if let Some((removed, _)) = self.entries.remove(&oldest) {
                self.bytes -= removed.len();
            }
        }
    }

    pub fn held_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_blobs_leave_first_within_the_size() {
        let mut recent = RecentBlobs::new(10);
        recent.keep("a", &[1; 4]);
        recent.keep("b", &[2; 4]);
        assert_eq!(recent.get("a"), Some(vec![1; 4]), "a is used, so b is now the oldest");
        recent.keep("c", &[3; 4]);
        assert_eq!((recent.get("b"), recent.held_bytes()), (None, 8));
        assert_eq!(recent.get("c"), Some(vec![3; 4]));
        recent.keep("huge", &[0; 11]);
        assert_eq!(recent.get("huge"), None, "larger than the whole is not kept");
        assert_eq!(recent.get("a"), Some(vec![1; 4]));
    }
}
