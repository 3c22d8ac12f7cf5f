//! How the store encodes the values it keeps in columns: its own row types, not the wire types. A field
//! renamed in `protocol` then fails to compile here (the conversions name every field) instead of making
//! rows written by earlier releases unreadable; the tests pin the bytes those releases wrote.
//!
//! - `jobs.limits`: JSON of [`StoredLimits`];
//! - `chunks.spec`: MessagePack (fields by name) of [`StoredChunk`];
//! - `results.status`: JSON of [`StoredStatus`];
//! - `results.output`: MessagePack (fields by name) of [`StoredOutput`].

use std::collections::BTreeMap;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, FileInput};
use distributivecom_protocol::worker::{Limits, Output, RunStatus};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::StoreError;

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn encoding(error: impl std::fmt::Display) -> StoreError {
    StoreError::Encoding(error.to_string())
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLimits {
    memory_bytes: u64,
    time_limit_ms: u64,
    max_stdout_bytes: u64,
    max_stderr_bytes: u64,
    max_data_bytes: u64,
    max_work_units: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStatus {
    Exited { code: u32 },
    Trapped { message: String },
    TimedOut,
    MemoryLimit,
    WorkLimit,
    Failed { message: String },
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOutput {
    stdout: ByteBuf,
    stderr: ByteBuf,
    #[serde(default)]
    stdout_truncated: bool,
    #[serde(default)]
    stderr_truncated: bool,
    #[serde(default)]
    files: BTreeMap<String, ByteBuf>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredChunk {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    stdin: ByteBuf,
    #[serde(default)]
    files: BTreeMap<String, ByteBuf>,
    /// Files that are blobs: path to SHA-256. Absent when there are none, as in rows written before blobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    blobs: BTreeMap<String, String>,
}

fn bytes_in(bytes: &Bytes) -> ByteBuf {
    ByteBuf::from(bytes.0.clone())
}

fn files_in(files: &BTreeMap<String, Bytes>) -> BTreeMap<String, ByteBuf> {
    files.iter().map(|(path, contents)| (path.clone(), bytes_in(contents))).collect()
}

fn files_out(files: BTreeMap<String, ByteBuf>) -> BTreeMap<String, Bytes> {
    files.into_iter().map(|(path, contents)| (path, Bytes(contents.into_vec()))).collect()
}

pub fn limits_to_column(limits: &Limits) -> Result<String, StoreError> {
    let Limits { memory_bytes, time_limit_ms, max_stdout_bytes, max_stderr_bytes, max_data_bytes, max_work_units } =
        *limits;
    let stored = StoredLimits {
        memory_bytes,
        time_limit_ms,
        max_stdout_bytes,
        max_stderr_bytes,
        max_data_bytes,
        max_work_units,
    };
    serde_json::to_string(&stored).map_err(encoding)
}

pub fn limits_from_column(text: &str) -> Result<Limits, StoreError> {
    let StoredLimits {
        memory_bytes,
        time_limit_ms,
        max_stdout_bytes,
        max_stderr_bytes,
        max_data_bytes,
        max_work_units,
    } = serde_json::from_str(text).map_err(|error| corrupt("job limits", error))?;
    Ok(Limits { memory_bytes, time_limit_ms, max_stdout_bytes, max_stderr_bytes, max_data_bytes, max_work_units })
}

pub fn status_to_column(status: &RunStatus) -> Result<String, StoreError> {
    let stored = match status.clone() {
        RunStatus::Exited { code } => StoredStatus::Exited { code },
        RunStatus::Trapped { message } => StoredStatus::Trapped { message },
        RunStatus::TimedOut => StoredStatus::TimedOut,
        RunStatus::MemoryLimit => StoredStatus::MemoryLimit,
        RunStatus::WorkLimit => StoredStatus::WorkLimit,
        RunStatus::Failed { message } => StoredStatus::Failed { message },
    };
    serde_json::to_string(&stored).map_err(encoding)
}

pub fn status_from_column(text: &str) -> Result<RunStatus, StoreError> {
    Ok(match serde_json::from_str(text).map_err(|error| corrupt("result status", error))? {
        StoredStatus::Exited { code } => RunStatus::Exited { code },
        StoredStatus::Trapped { message } => RunStatus::Trapped { message },
        StoredStatus::TimedOut => RunStatus::TimedOut,
        StoredStatus::MemoryLimit => RunStatus::MemoryLimit,
        StoredStatus::WorkLimit => RunStatus::WorkLimit,
        StoredStatus::Failed { message } => RunStatus::Failed { message },
    })
}

pub fn output_to_column(output: &Output) -> Result<Vec<u8>, StoreError> {
    let Output { stdout, stderr, stdout_truncated, stderr_truncated, files } = output;
    let stored = StoredOutput {
        stdout: bytes_in(stdout),
        stderr: bytes_in(stderr),
        stdout_truncated: *stdout_truncated,
        stderr_truncated: *stderr_truncated,
        files: files_in(files),
    };
    rmp_serde::to_vec_named(&stored).map_err(encoding)
}

pub fn output_from_column(bytes: &[u8]) -> Result<Output, StoreError> {
    let StoredOutput { stdout, stderr, stdout_truncated, stderr_truncated, files } =
        rmp_serde::from_slice(bytes).map_err(|error| corrupt("result output", error))?;
    Ok(Output {
        stdout: Bytes(stdout.into_vec()),
        stderr: Bytes(stderr.into_vec()),
        stdout_truncated,
        stderr_truncated,
        files: files_out(files),
    })
}

pub fn chunk_to_column(chunk: &ChunkRequest) -> Result<Vec<u8>, StoreError> {
    let ChunkRequest { args, stdin, files: inputs } = chunk;
    let (mut files, mut blobs) = (BTreeMap::new(), BTreeMap::new());
    for (path, file) in inputs {
        match file {
            FileInput::Inline(contents) => files.insert(path.clone(), bytes_in(contents)).map(drop),
            FileInput::Blob { blob } => blobs.insert(path.clone(), blob.clone()).map(drop),
        };
    }
    let stored = StoredChunk { args: args.clone(), stdin: bytes_in(stdin), files, blobs };
    rmp_serde::to_vec_named(&stored).map_err(encoding)
}

pub fn chunk_from_column(bytes: &[u8]) -> Result<ChunkRequest, StoreError> {
    let StoredChunk { args, stdin, files, blobs } =
        rmp_serde::from_slice(bytes).map_err(|error| corrupt("chunk inputs", error))?;
    let mut inputs: BTreeMap<String, FileInput> =
        files.into_iter().map(|(path, contents)| (path, FileInput::Inline(Bytes(contents.into_vec())))).collect();
    inputs.extend(blobs.into_iter().map(|(path, blob)| (path, FileInput::Blob { blob })));
    Ok(ChunkRequest { args, stdin: Bytes(stdin.into_vec()), files: inputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The bytes earlier releases wrote (with the wire types' encoding), pinned: rows they wrote must stay
    /// readable, and rows written now must read the same in them.
    #[test]
    fn stored_encodings_are_pinned_and_round_trip() {
        let limits = Limits {
            memory_bytes: 1 << 30,
            time_limit_ms: 60_000,
            max_stdout_bytes: 1 << 20,
            max_stderr_bytes: 2,
            max_data_bytes: 3,
            max_work_units: 4,
        };
        let column = limits_to_column(&limits).unwrap();
        assert_eq!(
            column,
            r#"{"memory_bytes":1073741824,"time_limit_ms":60000,"max_stdout_bytes":1048576,"max_stderr_bytes":2,"max_data_bytes":3,"max_work_units":4}"#
        );
        assert_eq!(limits_from_column(&column).unwrap(), limits);

        for (status, pinned) in [
            (RunStatus::Exited { code: 3 }, r#"{"exited":{"code":3}}"#),
            (RunStatus::Trapped { message: "t".into() }, r#"{"trapped":{"message":"t"}}"#),
            (RunStatus::TimedOut, r#""timed_out""#),
            (RunStatus::MemoryLimit, r#""memory_limit""#),
            (RunStatus::WorkLimit, r#""work_limit""#),
            (RunStatus::Failed { message: "f".into() }, r#"{"failed":{"message":"f"}}"#),
        ] {
            assert_eq!(status_to_column(&status).unwrap(), pinned);
            assert_eq!(status_from_column(pinned).unwrap(), status);
        }

        let output = Output {
            stdout: Bytes::from("out"),
            stderr: Bytes::from("e"),
            stdout_truncated: true,
            stderr_truncated: false,
            files: BTreeMap::from([("a".to_owned(), Bytes(vec![1, 2]))]),
        };
        let column = output_to_column(&output).unwrap();
        assert_eq!(hex(&column), OUTPUT_COLUMN);
        assert_eq!(output_from_column(&column).unwrap(), output);

        let chunk = ChunkRequest {
            args: vec!["-x".into()],
            stdin: Bytes::from("in"),
            files: BTreeMap::from([("d/f".to_owned(), FileInput::Inline(Bytes(vec![9])))]),
        };
        let column = chunk_to_column(&chunk).unwrap();
        assert_eq!(hex(&column), CHUNK_COLUMN);
        assert_eq!(chunk_from_column(&column).unwrap(), chunk);

        let with_blob = ChunkRequest {
            files: BTreeMap::from([
                ("a".to_owned(), FileInput::Inline(Bytes(vec![1]))),
                ("s".to_owned(), FileInput::Blob { blob: "ab".to_owned() }),
            ]),
            ..ChunkRequest::default()
        };
        let column = chunk_to_column(&with_blob).unwrap();
        assert_eq!(hex(&column), CHUNK_WITH_BLOB_COLUMN);
        assert_eq!(chunk_from_column(&column).unwrap(), with_blob);

        // The wire types still encode the same today; if they change, rows stay readable through these.
        assert_eq!(hex(&rmp_serde::to_vec_named(&output).unwrap()), OUTPUT_COLUMN);
        assert_eq!(hex(&rmp_serde::to_vec_named(&chunk).unwrap()), CHUNK_COLUMN);
    }

    const OUTPUT_COLUMN: &str = "85a67374646f7574c4036f7574a6737464657272c40165b07374646f75745f7472756e6361746564c3b07374646572725f7472756e6361746564c2a566696c657381a161c4020102";
    const CHUNK_COLUMN: &str = "83a46172677391a22d78a5737464696ec402696ea566696c657381a3642f66c40109";
    const CHUNK_WITH_BLOB_COLUMN: &str =
        "84a46172677390a5737464696ec400a566696c657381a161c40101a5626c6f627381a173a26162";
}
