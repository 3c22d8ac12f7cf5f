//! Writing results to disk: `DIR/<chunk index>/{stdout, stderr, exit_code, status, files/<name>}`, the
//! layout of `distributivecom_protocol::layout` (which the server's results.zip shares).

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use distributivecom_protocol::api::ChunkResult;
use distributivecom_protocol::layout::{is_plain_relative_path, result_files};

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
    // The layout is the protocol's, shared with the server's ZIP of a job's results.
    let laid_out = result_files(result);
    for name in &laid_out.refused {
        eprintln!("chunk {}: left out an output file named {name:?}: it is not a plain relative path", result.index);
    }
    for file in &laid_out.files {
        let path = dir.join(local_path(&file.path)?);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &file.contents).with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

/// A layout's `/`-separated relative path as a path of this system that cannot leave the output directory.
fn local_path(relative: &str) -> anyhow::Result<PathBuf> {
    let path: PathBuf = relative.split('/').collect();
    if !is_plain_relative_path(relative)
        || !path.components().all(|component| matches!(component, Component::Normal(_)))
    {
        bail!("refusing to write a result file named {relative:?}: it is not a plain relative path here");
    }
    Ok(path)
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
    fn result_paths_cannot_escape_the_output_directory() {
        assert_eq!(
            local_path("3/files/sub/out.bin").unwrap(),
            Path::new("3").join("files").join("sub").join("out.bin")
        );
        assert!(local_path("../evil").is_err());
        assert!(local_path("/etc/passwd").is_err());
        assert!(local_path("").is_err());
    }
}
