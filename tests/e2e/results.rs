//! Results from volunteers equal a local run of the same program: stdout, stderr, exit code and output
//! files, checked against our own runtime (same chunk identity, so even random bytes and clocks agree)
//! and against an independent WASI implementation (Node.js's `node:wasi`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, ChunkResult};
use distributivecom_protocol::worker::RunStatus;

use crate::support::*;

/// A small binary PPM image with some structure in it.
fn test_image(width: usize, height: usize) -> Vec<u8> {
    let mut image = format!("P6\n# made by the e2e tests\n{width} {height}\n255\n").into_bytes();
    for y in 0..height {
        for x in 0..width {
            image.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, ((x * y) % 256) as u8]);
        }
    }
    image
}

fn chunk_with(args: &[&str], stdin: &[u8], files: &[(&str, Vec<u8>)]) -> ChunkRequest {
    ChunkRequest {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: Bytes(stdin.to_vec()),
        files: files.iter().map(|(name, contents)| (name.to_string(), Bytes(contents.clone()).into())).collect(),
    }
}

/// The chunks of the comparison jobs, by program.
fn jobs() -> Vec<(&'static str, Vec<ChunkRequest>)> {
    let text = b"The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.\n".repeat(20);
    vec![
        (
            "imgfilter",
            vec![
                chunk_with(
                    &["-i", "/data/in.ppm", "-o", "/data/out.ppm", "-f", "grayscale", "-f", "blur"],
                    b"",
                    &[("in.ppm", test_image(40, 30))],
                ),
                chunk_with(
                    &["-i", "/data/sub/in.ppm", "-o", "/data/sub/out.ppm", "-f", "sepia"],
                    b"",
                    &[("sub/in.ppm", test_image(33, 17))],
                ),
                chunk_with(&["-i", "/data/missing.ppm", "-o", "/data/out.ppm"], b"", &[]),
            ],
        ),
        (
            "wordfreq",
            vec![chunk_with(
                &["-n", "5", "-o", "/data/freq.json", "/data/book.txt"],
                &text,
                &[("book.txt", text.clone())],
            )],
        ),
        (
            "fsops",
            vec![chunk_with(
                &["alpha", "beta gamma"],
                b"bytes on stdin\x00\xff",
                &[("input.txt", b"input file".to_vec())],
            )],
        ),
        ("fail", vec![chunk_with(&[], b"", &[])]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn results_from_volunteers_equal_a_local_run_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // Two volunteers: every chunk is validated by both agreeing byte for byte.
    let _workers = [server.worker(1), server.worker(1)];
    let client = server.client();
    let mut entropy_chunks = vec![chunk_with(&[], b"", &[]); 3];
    entropy_chunks[1].args = vec!["different".into()];
    let mut all_jobs = jobs();
    all_jobs.push(("entropy", entropy_chunks));

    for (program_name, chunks) in all_jobs {
        let job = submit(&client, program_name, chunks.clone()).await;
        let (status, results) = finish(&client, job).await;
        assert_eq!(results.len(), chunks.len(), "{program_name}: every chunk has a result");
        assert_results_match_native_runs(&status, program_name, &chunks, &results);
        check_expectations(program_name, &results);
    }
}

/// What each program's results must hold, so that equality above is not equality of two wrong answers.
fn check_expectations(program_name: &str, results: &[ChunkResult]) {
    match program_name {
        "imgfilter" => {
            assert_eq!(results[0].status, RunStatus::Exited { code: 0 });
            let out = &results[0].output.files["out.ppm"];
            assert!(out.starts_with(b"P6\n40 30\n255\n"), "a binary PPM comes back");
            assert_eq!(out.len(), "P6\n40 30\n255\n".len() + 40 * 30 * 3);
            assert!(
                results[1].output.files.contains_key("sub/out.ppm"),
                "nested output paths are kept: {}",
                String::from_utf8_lossy(&results[1].output.stderr)
            );
            assert!(!results[1].output.files.contains_key("sub/in.ppm"), "unchanged inputs are not outputs");
            assert_eq!(results[2].status, RunStatus::Exited { code: 1 });
            assert!(String::from_utf8_lossy(&results[2].output.stderr).contains("missing.ppm"));
        }
        "wordfreq" => {
            let stdout = String::from_utf8_lossy(&results[0].output.stdout);
            // The text arrives twice: on stdin and as /data/book.txt.
            assert!(stdout.starts_with("160\tthe\n"), "{stdout}");
            assert!(results[0].output.files.contains_key("freq.json"));
        }
        "fail" => {
            assert_eq!(results[0].status, RunStatus::Exited { code: 3 });
            assert!(!results[0].succeeded);
        }
        "entropy" => {
            // Different chunks of one job get different random bytes; argv does not change them.
            assert_ne!(results[0].output.files["random.bin"], results[2].output.files["random.bin"]);
            assert_eq!(results[0].output.files["random.bin"].len(), 64);
        }
        _ => {}
    }
}

/// Runs the program under Node.js's WASI (an independent preview 1 implementation) with the chunk's
/// inputs in a real directory, and returns (exit code, stdout, stderr, created or changed files).
fn run_under_node(
    program: &Path,
    args: &[String],
    chunk: &ChunkRequest,
) -> (u32, Vec<u8>, Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for (name, contents) in &chunk.files {
        let path = data.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents.inline().expect("inline files only")).unwrap();
    }
    let paths = |name: &str| work.path().join(name);
    std::fs::write(paths("stdin"), &chunk.stdin).unwrap();
    std::fs::write(paths("run.js"), NODE_RUNNER).unwrap();
    let node = Command::new("node")
        .arg("--no-warnings")
        .arg(paths("run.js"))
        .arg(program)
        .arg(&data)
        .arg(paths("stdin"))
        .arg(paths("stdout"))
        .arg(paths("stderr"))
        .arg(paths("exit_code"))
        .arg(serde_json::to_string(args).unwrap())
        .status()
        .expect("node is installed (.ci/run installs it); it is the independent WASI reference");
    assert!(node.success(), "node could not run {}", program.display());
    let exit_code = std::fs::read_to_string(paths("exit_code")).unwrap().trim().parse().unwrap();
    let mut files = BTreeMap::new();
    collect_changed(&data, &data, chunk, &mut files);
    (exit_code, std::fs::read(paths("stdout")).unwrap(), std::fs::read(paths("stderr")).unwrap(), files)
}

fn collect_changed(root: &Path, dir: &Path, chunk: &ChunkRequest, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_changed(root, &path, chunk, files);
            continue;
        }
        let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let contents = std::fs::read(&path).unwrap();
        if chunk.files.get(&name).and_then(|input| input.inline()) != Some(contents.as_slice()) {
            files.insert(name, contents);
        }
    }
}

const NODE_RUNNER: &str = r#"
const fs = require('fs');
const { WASI } = require('node:wasi');
const [program, data, stdin, stdout, stderr, exitCode, args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: JSON.parse(args),
  env: {},
  preopens: { '/data': data },
  stdin: fs.openSync(stdin, 'r'),
  stdout: fs.openSync(stdout, 'w'),
  stderr: fs.openSync(stderr, 'w'),
  returnOnExit: true,
});
(async () => {
  const module = await WebAssembly.compile(fs.readFileSync(program));
  const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  fs.writeFileSync(exitCode, String(wasi.start(instance)));
})();
"#;

#[tokio::test(flavor = "multi_thread")]
async fn results_from_volunteers_equal_an_independent_wasi_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // Two volunteers: every chunk is validated by both agreeing byte for byte.
    let _workers = [server.worker(1), server.worker(1)];
    let client = server.client();
    for (program_name, chunks) in jobs() {
        let job = submit(&client, program_name, chunks.clone()).await;
        let (_, results) = finish(&client, job).await;
        for (result, chunk) in results.iter().zip(&chunks) {
            let mut args = vec![format!("{program_name}.wasm")];
            args.extend(chunk.args.iter().cloned());
            let (code, stdout, stderr, files) = run_under_node(&program_path(program_name), &args, chunk);
            let what = format!("{program_name} chunk {}", result.index);
            assert_eq!(result.status, RunStatus::Exited { code }, "{what}: exit code");
            assert_eq!(result.output.stdout.as_ref(), stdout.as_slice(), "{what}: stdout");
            assert_eq!(result.output.stderr.as_ref(), stderr.as_slice(), "{what}: stderr");
            let ours: BTreeMap<String, Vec<u8>> =
                result.output.files.iter().map(|(name, contents)| (name.clone(), contents.0.clone())).collect();
            assert_eq!(ours, files, "{what}: output files");
        }
    }
}

#[tokio::test]
async fn the_sdk_maps_a_program_over_inputs_and_streams_each_result_as_it_completes() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _workers = [server.worker(2), server.worker(2)];
    let client = server.client();
    let inputs: Vec<ChunkRequest> = (0..40).map(|index| chunk(&[&format!("input-{index}")])).collect();
    let mut seen = BTreeMap::new();
    let mut stream = std::pin::pin!(client.map(program("echo-args"), inputs));
    while let Some(result) = stream.next().await {
        let result = result.expect("every result arrives");
        assert!(result.succeeded, "{}", result.reason);
        assert!(seen.insert(result.index, String::from_utf8(result.output.stdout.0).unwrap()).is_none(), "once each");
    }
    assert_eq!(seen.len(), 40);
    for (index, stdout) in seen {
        assert_eq!(stdout, format!("input-{index}\n"));
    }
    // A refusal comes out of the stream as its first item.
    let mut refused = std::pin::pin!(client.map(b"not wasm".to_vec(), vec![chunk(&[])]));
    let error = refused.next().await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(refused.next().await.is_none());
}
