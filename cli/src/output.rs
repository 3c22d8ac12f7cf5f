//! Writing results to disk: `DIR/<chunk index>/{stdout, stderr, exit_code, status, files/<name>}`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use distributivecom_protocol::api::ChunkResult;
use distributivecom_protocol::worker::RunStatus;

/// Writes every result under `dir`, replacing earlier copies of the same chunks.
pub fn write_results(dir: &Path, results: &[ChunkResult]) -> anyhow::Result<()> {
    for result in results {
        write_result(dir, result).with_context(|| format!("could not write the result of chunk {}", result.index))?;
    }
    Ok(())
}

fn write_result(dir: &Path, result: &ChunkResult) -> anyhow::Result<()> {
    let chunk_dir = dir.join(result.index.to_string());
    if chunk_dir.exists() {
        fs::remove_dir_all(&chunk_dir).with_context(|| format!("could not replace {}", chunk_dir.display()))?;
    }
    fs::create_dir_all(&chunk_dir).with_context(|| format!("could not create {}", chunk_dir.display()))?;
    fs::write(chunk_dir.join("stdout"), &result.output.stdout)?;
    fs::write(chunk_dir.join("stderr"), &result.output.stderr)?;
    if let RunStatus::Exited { code } = result.status {
        fs::write(chunk_dir.join("exit_code"), format!("{code}\n"))?;
    }
    let mut status = format!("{}\n", result.reason);
    if result.output.stdout_truncated {
        status.push_str("stdout was truncated at the job's limit\n");
    }
    if result.output.stderr_truncated {
        status.push_str("stderr was truncated at the job's limit\n");
    }
    fs::write(chunk_dir.join("status"), status)?;
    for (name, contents) in &result.output.files {
        let path = chunk_dir.join("files").join(safe_relative_path(name)?);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, contents).with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

/// A file name from the server, as a path that cannot leave the chunk's directory.
fn safe_relative_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    if name.is_empty() || !path.components().all(|component| matches!(component, Component::Normal(_))) {
        bail!("refusing to write an output file named {name:?}: it is not a plain relative path");
    }
    Ok(path.to_owned())
}

/// Tells the user which chunks failed and why (the first ten).
pub fn report_failures(results: &[ChunkResult]) {
    let failed: Vec<&ChunkResult> = results.iter().filter(|result| !result.succeeded).collect();
    for result in failed.iter().take(10) {
        let stderr = String::from_utf8_lossy(&result.output.stderr);
        let last_line = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
        if last_line.is_empty() {
            eprintln!("chunk {}: {}", result.index, result.reason);
        } else {
            eprintln!("chunk {}: {} (stderr: {last_line})", result.index, result.reason);
        }
    }
    if failed.len() > 10 {
        eprintln!("... and {} more failed chunks", failed.len() - 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_file_names_cannot_escape_the_chunk_directory() {
        assert!(safe_relative_path("out.bin").is_ok());
        assert!(safe_relative_path("sub/dir/out.bin").is_ok());
        assert!(safe_relative_path("../evil").is_err());
        assert!(safe_relative_path("/etc/passwd").is_err());
        assert!(safe_relative_path("a/../../b").is_err());
        assert!(safe_relative_path("").is_err());
    }
}
