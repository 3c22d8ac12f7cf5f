//! What a volunteer's report may hold: the job's limits, checked as each report arrives, and the largest
//! frame a worker may send given the replicas it holds.
//!
//! An honest worker never exceeds these: the WASI host cuts stdout and stderr at the job's limits and
//! refuses file writes past its data limit, its file count and its path lengths. So a report that breaks
//! them is a lie; it is dropped at once and counted as invalid, and never held in memory.

use distributivecom_protocol::worker::{Limits, ReplicaReport, RunStatus};
use distributivecom_wasi::{MAX_FS_NODES, MAX_PATH_BYTES};

// A report that decodes at all holds no more files than a run can create.
const _: () = assert!(MAX_FS_NODES <= distributivecom_protocol::worker::MAX_OUTPUT_FILES);

/// What one frame may hold beyond the reports' contents: a hello, heartbeats, slot changes, releases and
/// the MessagePack framing of the reports.
pub const FRAME_BASE_BYTES: u64 = 64 * 1024;
/// Room for one report's framing, status and file names beyond its outputs' contents.
const REPORT_OVERHEAD_BYTES: u64 = 16 * 1024;
/// The most bytes of file names one report's output files may have together. An honest program would
/// need tens of thousands of files with long names to come near it.
pub const MAX_OUTPUT_PATH_BYTES: u64 = 16 * 1024 * 1024;
/// The longest message a status may carry (a trap's words, why a run could not start).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

/// The most bytes a valid report of a replica with these limits can take on the wire.
pub fn report_bound(limits: &Limits) -> u64 {
    limits
        .max_stdout_bytes
        .saturating_add(limits.max_stderr_bytes)
        .saturating_add(limits.max_data_bytes)
        .saturating_add(MAX_OUTPUT_PATH_BYTES)
        .saturating_add(REPORT_OVERHEAD_BYTES)
}

/// Why a report is not one an honest worker could have sent for a replica with these limits.
pub fn check_report(report: &ReplicaReport, limits: &Limits) -> Result<(), String> {
    let output = &report.output;
    if output.stdout.len() as u64 > limits.max_stdout_bytes {
        return Err(format!(
            "stdout holds {} bytes, more than the job's limit of {}",
            output.stdout.len(),
            limits.max_stdout_bytes
        ));
    }
    if output.stderr.len() as u64 > limits.max_stderr_bytes {
        return Err(format!(
            "stderr holds {} bytes, more than the job's limit of {}",
            output.stderr.len(),
            limits.max_stderr_bytes
        ));
    }
    if output.files.len() > MAX_FS_NODES {
        return Err(format!("{} output files, more than the {MAX_FS_NODES} a run can create", output.files.len()));
    }
    let (mut contents, mut names) = (0u64, 0u64);
    for (path, bytes) in &output.files {
        if path.len() > MAX_PATH_BYTES {
            return Err(format!("an output file's path has {} bytes, more than {MAX_PATH_BYTES}", path.len()));
        }
        contents = contents.saturating_add(bytes.len() as u64);
        names = names.saturating_add(path.len() as u64);
    }
    if contents > limits.max_data_bytes {
        return Err(format!(
            "the output files hold {contents} bytes, more than the job's data limit of {}",
            limits.max_data_bytes
        ));
    }
    if names > MAX_OUTPUT_PATH_BYTES {
        return Err(format!("the output files' names take {names} bytes, more than {MAX_OUTPUT_PATH_BYTES}"));
    }
    let message = match &report.status {
        RunStatus::Trapped { message } | RunStatus::Failed { message } => message.len(),
        _ => 0,
    };
    if message > MAX_STATUS_MESSAGE_BYTES {
        return Err(format!("the status message has {message} bytes, more than {MAX_STATUS_MESSAGE_BYTES}"));
    }
    // Work units are not checked here: a run may pass the limit in its last straight-line stretch and exit
    // before the next check, and payments are capped at the limit anyway.
    Ok(())
}

#[cfg(test)]
mod tests {
    use distributivecom_protocol::Bytes;
    use distributivecom_protocol::worker::Output;

    use super::*;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 1 << 20,
            time_limit_ms: 1000,
            max_stdout_bytes: 10,
            max_stderr_bytes: 10,
            max_data_bytes: 100,
            max_work_units: 1000,
        }
    }

    fn report(output: Output) -> ReplicaReport {
        ReplicaReport { replica: 1, status: RunStatus::Exited { code: 0 }, output, compute_us: 5, work_units: 7 }
    }

    #[test]
    fn reports_within_the_jobs_limits_pass_and_any_excess_is_named() {
        let fits = Output {
            stdout: Bytes(vec![1; 10]),
            stderr: Bytes(vec![2; 10]),
            files: [("a".to_owned(), Bytes(vec![0; 60])), ("b/c".to_owned(), Bytes(vec![0; 40]))].into(),
            ..Output::default()
        };
        assert_eq!(check_report(&report(fits.clone()), &limits()), Ok(()));

        let stdout = Output { stdout: Bytes(vec![1; 11]), ..fits.clone() };
        assert!(check_report(&report(stdout), &limits()).unwrap_err().starts_with("stdout holds 11 bytes"));
        let stderr = Output { stderr: Bytes(vec![1; 11]), ..fits.clone() };
        assert!(check_report(&report(stderr), &limits()).unwrap_err().starts_with("stderr holds 11 bytes"));
        let mut files = fits.clone();
        files.files.insert("d".to_owned(), Bytes(vec![0; 1]));
        assert!(check_report(&report(files), &limits()).unwrap_err().contains("data limit of 100"));
        let mut long_name = fits.clone();
        long_name.files = [("x".repeat(MAX_PATH_BYTES + 1), Bytes::default())].into();
        assert!(check_report(&report(long_name), &limits()).unwrap_err().contains("path has"));

        let mut chatty = report(fits.clone());
        chatty.status = RunStatus::Failed { message: "x".repeat(MAX_STATUS_MESSAGE_BYTES + 1) };
        assert!(check_report(&chatty, &limits()).is_err());
    }

    #[test]
    fn the_bound_covers_the_largest_valid_report_on_the_wire() {
        let limits = limits();
        let largest = ReplicaReport {
            replica: u64::MAX,
            status: RunStatus::Trapped { message: "t".repeat(MAX_STATUS_MESSAGE_BYTES) },
            output: Output {
                stdout: Bytes(vec![0xff; 10]),
                stderr: Bytes(vec![0xff; 10]),
                stdout_truncated: true,
                stderr_truncated: true,
                files: [("f".repeat(MAX_PATH_BYTES), Bytes(vec![0xff; 100]))].into(),
            },
            compute_us: u64::MAX,
            work_units: u64::MAX,
        };
        assert_eq!(check_report(&largest, &limits), Ok(()));
        let encoded = distributivecom_protocol::encode(&largest).len() as u64;
        assert!(encoded <= report_bound(&limits), "{encoded} > {}", report_bound(&limits));
    }
}
