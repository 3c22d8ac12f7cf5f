//! How a chunk's result is laid out as files: the one layout of the CLI's `--out` directory and of the
//! server's `GET /api/jobs/{id}/results.zip`, so that the two cannot drift apart.
//!
//! ```text
//! <index>/stdout
//! <index>/stderr
//! <index>/exit_code      only when the program exited: its status and a newline
//! <index>/status         the result in words, and whether stdout or stderr was truncated
//! <index>/files/<name>   every file the program wrote under /data
//! ```
//!
//! Paths are relative, with `/` between their parts. An output file whose name is not a plain relative
//! path (see [`is_plain_relative_path`]) is left out, said so in `status`, and named in
//! [`ResultFiles::refused`]: a volunteer's program chooses those names, and none may place a file outside
//! its chunk's directory.

use std::borrow::Cow;

use crate::api::ChunkResult;
use crate::worker::RunStatus;

/// One file of a chunk's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultFile<'a> {
    /// Relative, `/`-separated: `3/stdout`, `3/files/out/a.png`.
    pub path: String,
    pub contents: Cow<'a, [u8]>,
}

/// The files of one chunk's result, in a fixed order, and the output files left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultFiles<'a> {
    pub files: Vec<ResultFile<'a>>,
    /// Names of output files that are not plain relative paths, which are not laid out.
    pub refused: Vec<&'a str>,
}

/// The files of `result` under the directory named after its chunk's index.
pub fn result_files(result: &ChunkResult) -> ResultFiles<'_> {
    let index = result.index;
    let output = &result.output;
    let mut files = Vec::with_capacity(4 + output.files.len());
    files.push(ResultFile { path: format!("{index}/stdout"), contents: Cow::Borrowed(&output.stdout[..]) });
    files.push(ResultFile { path: format!("{index}/stderr"), contents: Cow::Borrowed(&output.stderr[..]) });
    if let RunStatus::Exited { code } = result.status {
        files.push(ResultFile { path: format!("{index}/exit_code"), contents: Cow::Owned(format!("{code}\n").into()) });
    }
    let refused: Vec<&str> =
        output.files.keys().map(String::as_str).filter(|name| !is_plain_relative_path(name)).collect();
    let mut status = format!("{}\n", result.reason);
    if output.stdout_truncated {
        status.push_str("stdout was truncated at the job's limit\n");
    }
    if output.stderr_truncated {
        status.push_str("stderr was truncated at the job's limit\n");
    }
    for name in &refused {
        status.push_str(&format!("the output file {name:?} was left out: its name is not a plain relative path\n"));
    }
    files.push(ResultFile { path: format!("{index}/status"), contents: Cow::Owned(status.into_bytes()) });
    for (name, contents) in &output.files {
        if is_plain_relative_path(name) {
            files.push(ResultFile { path: format!("{index}/files/{name}"), contents: Cow::Borrowed(&contents[..]) });
        }
    }
    ResultFiles { files, refused }
}

/// Whether `name` is a plain relative path on every system: parts separated by single `/`, none empty,
/// `.` or `..`, and no backslash or NUL anywhere (so it cannot start at a root or a drive either).
pub fn is_plain_relative_path(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\\', '\0'])
        && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Bytes;
    use crate::worker::Output;

    fn result(status: RunStatus, files: &[(&str, &[u8])]) -> ChunkResult {
        ChunkResult {
            index: 7,
            succeeded: status.is_success(),
            reason: status.describe(),
            status,
            attempts: 2,
            work_units: 10,
            output: Output {
                stdout: Bytes(b"out".to_vec()),
                stderr: Bytes(b"err".to_vec()),
                stdout_truncated: true,
                stderr_truncated: false,
                files: files.iter().map(|(name, bytes)| (name.to_string(), Bytes(bytes.to_vec()))).collect(),
            },
        }
    }

    #[test]
    fn a_result_is_laid_out_as_the_out_directory() {
        let result = result(RunStatus::Exited { code: 3 }, &[("a.txt", b"A"), ("sub/b.bin", b"B")]);
        let laid_out = result_files(&result);
        let files: BTreeMap<&str, &[u8]> =
            laid_out.files.iter().map(|file| (file.path.as_str(), &file.contents[..])).collect();
        assert_eq!(
            files,
            BTreeMap::from([
                ("7/stdout", &b"out"[..]),
                ("7/stderr", b"err"),
                ("7/exit_code", b"3\n"),
                ("7/status", b"exited with status 3\nstdout was truncated at the job's limit\n"),
                ("7/files/a.txt", b"A"),
                ("7/files/sub/b.bin", b"B"),
            ])
        );
        assert!(laid_out.refused.is_empty());
    }

    #[test]
    fn a_result_that_did_not_exit_has_no_exit_code() {
        let timed_out = result(RunStatus::TimedOut, &[]);
        let laid_out = result_files(&timed_out);
        assert!(laid_out.files.iter().all(|file| file.path != "7/exit_code"));
        assert!(laid_out.files.iter().any(|file| file.path == "7/status"));
    }

    #[test]
    fn output_file_names_cannot_escape_the_chunk_directory() {
        let names: &[(&str, &[u8])] = &[
            ("ok.bin", b""),
            ("../evil", b""),
            ("/etc/passwd", b""),
            ("a/../../b", b""),
            ("", b""),
            ("a//b", b""),
            ("./a", b""),
            ("a\\..\\b", b""),
            ("c:\\windows", b""),
        ];
        let hostile = result(RunStatus::Exited { code: 0 }, names);
        let laid_out = result_files(&hostile);
        assert!(laid_out.files.iter().any(|file| file.path == "7/files/ok.bin"));
        assert_eq!(laid_out.refused.len(), names.len() - 1, "{:?}", laid_out.refused);
        let status = laid_out.files.iter().find(|file| file.path == "7/status").unwrap();
        assert!(String::from_utf8_lossy(&status.contents).contains(r#"the output file "../evil" was left out"#));
        assert!(is_plain_relative_path("sub/dir/out.bin"));
    }
}
