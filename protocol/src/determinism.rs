//! The determinism contract shared by the coordinator, every worker and the tests: the key of a chunk's
//! `random_get` stream, and the digest by which replicas of a chunk are compared.

use sha2::{Digest, Sha256};

use crate::encode;
use crate::worker::ReplicaReport;

/// The ChaCha20 key of a chunk's `random_get`: it depends only on the chunk's identity, so every replica of
/// the chunk, on any worker, sees the same random bytes. SHA-256 of `"distributivecom chunk seed v1"`, the
/// job id (u64, little-endian) and the chunk index (u32, little-endian).
pub fn chunk_seed(job: u64, chunk: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"distributivecom chunk seed v1");
    hasher.update(job.to_le_bytes());
    hasher.update(chunk.to_le_bytes());
    hasher.finalize().into()
}

/// The digest replicas are compared by: everything a correct worker reproduces exactly (how the run ended,
/// its outputs and its work units), and nothing that varies between honest workers (run time).
pub fn result_digest(report: &ReplicaReport) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"distributivecom result v1");
    hasher.update(encode(&(&report.status, &report.output, report.work_units)));
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Output, RunStatus};

    #[test]
    fn the_seed_and_the_digest_are_pinned() {
        // Every worker and every stored result depends on these bytes: changing them is a new protocol.
        assert_eq!(
            hex(&chunk_seed(7, 3)),
            hex(&{
                let mut hasher = Sha256::new();
                hasher.update(b"distributivecom chunk seed v1\x07\0\0\0\0\0\0\0\x03\0\0\0");
                <[u8; 32]>::from(hasher.finalize())
            })
        );
        let report = |compute_us| ReplicaReport {
            replica: 1,
            status: RunStatus::Exited { code: 0 },
            output: Output { stdout: "x".into(), ..Output::default() },
            compute_us,
            work_units: 5,
        };
        assert_eq!(result_digest(&report(1)), result_digest(&report(99)), "run time is not part of a result");
        let other = ReplicaReport { work_units: 6, ..report(1) };
        assert_ne!(result_digest(&report(1)), result_digest(&other));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
