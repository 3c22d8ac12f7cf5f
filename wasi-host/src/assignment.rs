//! Between the worker protocol and this crate (feature `protocol`): an `Assignment` becomes a
//! [`ChunkInput`], the outputs become a protocol `Output`, and a run that ended abnormally gets its
//! `RunStatus`. Both workers go through these, so they read assignments and report endings alike.

use distributivecom_protocol::Bytes;
use distributivecom_protocol::metering::{FLAG_MEMORY_REFUSED, FLAG_WORK_LIMIT, memory_limit_pages};
use distributivecom_protocol::worker::{Assignment, Output, RunStatus, TrapKind};

use crate::{ChunkInput, ChunkOutputs, HostStop, OutputLimits, WasiCtx};

/// What every host does before it runs a replica, in one place: the WASI context of the run and the
/// values its engine gives the instrumentation (see `protocol::metering`).
#[derive(Debug)]
pub struct Prepared {
    pub wasi: WasiCtx,
    /// For the `WORK_LIMIT` global.
    pub work_limit: i64,
    /// For the `MEMORY_LIMIT_PAGES` global.
    pub memory_limit_pages: i32,
    /// The most linear memory the run may have; the engine refuses more as well.
    pub memory_bytes: u64,
}

/// Prepares a run of `assignment`, or says why it cannot run (as the status to report). Its stdin and
/// files move into the run rather than being copied.
pub fn prepare(assignment: Assignment) -> Result<Prepared, RunStatus> {
    let failed = |message: String| RunStatus::Failed { message };
    let limits = assignment.limits;
    let input = chunk_input(assignment).map_err(failed)?;
    let wasi = WasiCtx::new(input).map_err(|error| failed(error.to_string()))?;
    Ok(Prepared {
        wasi,
        // The instrumentation's counter is an i64: a limit past it means no limit in practice.
        work_limit: i64::try_from(limits.max_work_units).unwrap_or(i64::MAX),
        memory_limit_pages: memory_limit_pages(limits.memory_bytes),
        memory_bytes: limits.memory_bytes,
    })
}

/// The run's input, or why the assignment cannot be run.
pub fn chunk_input(assignment: Assignment) -> Result<ChunkInput, String> {
    let random_seed = <[u8; 32]>::try_from(assignment.random_seed.as_ref())
        .map_err(|_| format!("the random seed has {} bytes instead of 32", assignment.random_seed.len()))?;
    let limits = &assignment.limits;
    Ok(ChunkInput {
        args: assignment.args,
        env: assignment.env.into_iter().collect(),
        stdin: assignment.stdin.0,
        files: assignment.files.into_iter().map(|(path, contents)| (path, contents.0)).collect(),
        clock_start_ns: assignment.clock_start_ns,
        random_seed,
        limits: OutputLimits {
            max_stdout_bytes: limits.max_stdout_bytes,
            max_stderr_bytes: limits.max_stderr_bytes,
            max_fs_bytes: limits.max_data_bytes,
        },
    })
}

/// A run's outputs as the protocol reports them.
pub fn output(outputs: ChunkOutputs) -> Output {
    Output {
        stdout: Bytes(outputs.stdout),
        stderr: Bytes(outputs.stderr),
        stdout_truncated: outputs.stdout_truncated,
        stderr_truncated: outputs.stderr_truncated,
        files: outputs.files.into_iter().map(|(path, contents)| (path, Bytes(contents))).collect(),
    }
}

/// What a host knows about a run that did not return normally from `_start`.
#[derive(Debug)]
pub struct Ending<'a> {
    /// Set when a WASI call ended the program (`proc_exit`, `proc_raise`).
    pub stop: Option<&'a HostStop>,
    /// The instrumentation's flags (`protocol::metering`).
    pub flags: i32,
    /// The host's wall-clock limit interrupted the run.
    pub timed_out: bool,
    /// The host refused memory (beyond the instrumentation's own refusals, which are in `flags`).
    pub memory_refused: bool,
    /// The trap's kind if the engine's error was a trap it recognises.
    pub trap: Option<TrapKind>,
    /// The engine's own words, for traps of no known kind.
    pub message: String,
}

/// The status of a run that ended abnormally. The order of reasons is part of the worker contract
/// (`docs/protocol.md`): an exit status, the work limit, the time limit, refused memory (a program that
/// was refused memory usually ends in a trap of its own; the refusal is the real reason), the trap.
pub fn ending_status(ending: &Ending<'_>) -> RunStatus {
    match ending.stop {
        Some(HostStop::Exit(code)) => return RunStatus::Exited { code: *code },
        Some(HostStop::Raise(signal)) => {
            return RunStatus::Trapped { message: format!("the program raised signal {signal}") };
        }
        None => {}
    }
    if ending.flags & FLAG_WORK_LIMIT != 0 {
        return RunStatus::WorkLimit;
    }
    if ending.timed_out {
        return RunStatus::TimedOut;
    }
    if ending.memory_refused || ending.flags & FLAG_MEMORY_REFUSED != 0 {
        return RunStatus::MemoryLimit;
    }
    match ending.trap {
        Some(TrapKind::Other) | None => RunStatus::Trapped { message: ending.message.clone() },
        Some(kind) => kind.status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(stop: Option<&HostStop>, flags: i32, timed_out: bool, trap: Option<TrapKind>) -> Ending<'_> {
        Ending { stop, flags, timed_out, memory_refused: false, trap, message: "engine words".into() }
    }

    #[test]
    fn reasons_are_taken_in_the_documented_order() {
        let exit = HostStop::Exit(4);
        let everything = ending(Some(&exit), FLAG_WORK_LIMIT | FLAG_MEMORY_REFUSED, true, Some(TrapKind::Unreachable));
        assert_eq!(ending_status(&everything), RunStatus::Exited { code: 4 });
        let limit = ending(None, FLAG_WORK_LIMIT | FLAG_MEMORY_REFUSED, true, Some(TrapKind::Unreachable));
        assert_eq!(ending_status(&limit), RunStatus::WorkLimit);
        assert_eq!(ending_status(&ending(None, FLAG_MEMORY_REFUSED, true, None)), RunStatus::TimedOut);
        let memory = ending(None, FLAG_MEMORY_REFUSED, false, Some(TrapKind::Unreachable));
        assert_eq!(ending_status(&memory), RunStatus::MemoryLimit);
        assert_eq!(ending_status(&ending(None, 0, false, Some(TrapKind::Unreachable))), TrapKind::Unreachable.status());
        assert_eq!(ending_status(&ending(None, 0, false, None)), RunStatus::Trapped { message: "engine words".into() });
    }
}
