//! The command line: `submit` (inputs, JSON Lines, --wait, --out), `status`, `results`, exit codes, and the
//! benchmark command's output format.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn run(server: &TestServer, args: &[&str], dir: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .env("DISTRIBUTIVECOM_SERVER", &server.url)
        .env("DISTRIBUTIVECOM_TOKEN", &server.admin_token)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_with_input_files_waits_and_writes_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _workers = [server.worker(1), server.worker(1)];
    std::fs::write(dir.path().join("a.txt"), "b a b\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "x y\n").unwrap();
    let wasm = program_path("wordfreq");
    let output = run(
        &server,
        &["submit", wasm.to_str().unwrap(), "a.txt", "b.txt", "--arg", "-n", "--arg", "1", "--wait", "--out", "out"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let job: u64 = stdout(&output).trim().parse().expect("submit prints the job id");
    let out = dir.path().join("out");
    assert_eq!(std::fs::read_to_string(out.join("0/stdout")).unwrap(), "2\tb\n");
    assert_eq!(std::fs::read_to_string(out.join("1/stdout")).unwrap(), "1\tx\n");
    assert_eq!(std::fs::read_to_string(out.join("0/exit_code")).unwrap(), "0\n");
    assert_eq!(std::fs::read_to_string(out.join("0/stderr")).unwrap(), "");

    let status = run(&server, &["status", &job.to_string()], dir.path());
    assert_eq!(status.status.code(), Some(0));
    assert!(stdout(&status).contains("succeeded; 2 chunks: 2 succeeded"), "{}", stdout(&status));

    let again = run(&server, &["results", &job.to_string(), "--out", "again"], dir.path());
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(std::fs::read(dir.path().join("again/1/stdout")).unwrap(), b"1\tx\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_with_a_chunks_file_writes_output_files_and_fails_when_a_chunk_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _workers = [server.worker(1), server.worker(1)];
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("words.txt"), "one two two\n").unwrap();
    std::fs::write(
        inputs.join("chunks.jsonl"),
        concat!(
            r#"{"args": ["-i", "/data/nope.ppm", "-o", "/data/out.ppm"]}"#,
            "\n",
            r#"{"args": ["--make-test-image", "8", "4", "1", "-o", "/data/out.ppm", "-f", "invert"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let wasm = program_path("imgfilter");
    let output = run(
        &server,
        &["submit", wasm.to_str().unwrap(), "--chunks", "inputs/chunks.jsonl", "--wait", "--out", "out"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1), "a failed chunk makes the exit code 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chunk 0: exited with status 1"), "{stderr}");
    let out = dir.path().join("out");
    assert_eq!(std::fs::read_to_string(out.join("0/exit_code")).unwrap(), "1\n");
    assert_eq!(std::fs::read_to_string(out.join("0/status")).unwrap(), "exited with status 1\n");
    let image = std::fs::read(out.join("1/files/out.ppm")).unwrap();
    assert!(image.starts_with(b"P6\n8 4\n255\n"));
    assert_eq!(image.len(), "P6\n8 4\n255\n".len() + 8 * 4 * 3);

    // Stdin and input files from a chunks file, resolved against the file's directory.
    std::fs::write(
        inputs.join("words.jsonl"),
        r#"{"args": ["-o", "/data/freq.json", "/data/w.txt"], "stdin": "two\n", "files": {"w.txt": "words.txt"}}"#,
    )
    .unwrap();
    let wasm = program_path("wordfreq");
    let output = run(
        &server,
        &["submit", wasm.to_str().unwrap(), "--chunks", "inputs/words.jsonl", "--wait", "--out", "words"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("words/0/stdout")).unwrap(), "3\ttwo\n1\tone\n");
    assert!(dir.path().join("words/0/files/freq.json").exists());

    // A malformed chunks file is refused before anything is submitted.
    std::fs::write(inputs.join("bad.jsonl"), "{\"argz\": []}\n").unwrap();
    let output = run(&server, &["submit", wasm.to_str().unwrap(), "--chunks", "inputs/bad.jsonl"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.jsonl:1: not a chunk"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_running_job_exits_with_three_and_errors_with_two() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // No workers: the job stays pending.
    let client = server.client();
    let job = submit(&client, "echo-args", vec![chunk(&["x"])]).await;
    let status = run(&server, &["status", &job.to_string()], dir.path());
    assert_eq!(status.status.code(), Some(3));
    assert!(stdout(&status).contains("running"), "{}", stdout(&status));
    assert!(stdout(&status).contains("waiting: no volunteer is connected"), "{}", stdout(&status));
    let missing = run(&server, &["status", "424242"], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job 424242"));
    let unreachable = Command::new(binary())
        .args(["status", "1", "--server", "http://127.0.0.1:9", "--token", "dc_x"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
    // Without a token the CLI says where to get one, before it sends anything.
    let anonymous = Command::new(binary())
        .args(["status", &job.to_string(), "--server", &server.url])
        .env_remove("DISTRIBUTIVECOM_TOKEN")
        .output()
        .unwrap();
    assert_eq!(anonymous.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("no API token: pass --token or set DISTRIBUTIVECOM_TOKEN"), "{stderr}");
}

/// Regression: with one worker and the default replication, the README's first demo showed "0 running, 8
/// pending" forever with no explanation.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_job_says_why_wherever_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _one = server.worker(1);
    let client = server.client();
    let job = submit(&client, "echo-args", vec![chunk(&["x"])]).await;
    let expected = "each chunk needs 2 distinct volunteers; 1 is connected";
    eventually("the job to wait for a second volunteer", std::time::Duration::from_secs(30), || async {
        client.status(job).await.unwrap().waiting_reason.as_deref() == Some(expected)
    })
    .await;
    let status = run(&server, &["status", &job.to_string()], dir.path());
    assert_eq!(status.status.code(), Some(3));
    assert!(stdout(&status).contains(&format!("waiting: {expected}")), "{}", stdout(&status));

    // A job of one replica runs only on its owner's own workers, and says so while none is connected.
    let owners = submit_request(
        &client,
        "echo-args",
        distributivecom_protocol::api::JobRequest {
            chunks: vec![chunk(&["y"])],
            replication: Some(distributivecom_protocol::api::ReplicationRequest { replicas: 1, quorum: 1 }),
            ..Default::default()
        },
    )
    .await;
    let reason = client.status(owners).await.unwrap().waiting_reason.unwrap();
    assert!(reason.contains("runs only on your own workers"), "{reason}");
    let _second = server.worker(1);
    let (finished, _) = finish(&client, job).await;
    assert_eq!(finished.waiting_reason, None, "a finished job waits for nothing");
}

/// Regression: `submit` could not raise the 1 MiB stdout cap, so a program printing more was cut with no
/// way around it from the command line.
#[tokio::test(flavor = "multi_thread")]
async fn submit_sets_every_output_limit_the_api_takes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _own = server.own_worker(1);
    let big: Vec<u8> = (0..1_500_000u32).map(|index| b'a' + (index % 26) as u8).collect();
    std::fs::write(dir.path().join("big.txt"), &big).unwrap();
    let wasm = program_path("echo-args");
    let wasm = wasm.to_str().unwrap();
    let common = ["--replicas", "1", "--quorum", "1", "--wait"];
    let mut raised = vec!["submit", wasm, "big.txt", "--max-stdout-mib", "2", "--max-stderr-mib", "0.5"];
    raised.extend(["--max-data-mib", "8", "--out", "raised"]);
    raised.extend(common);
    let output = run(&server, &raised, dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read(dir.path().join("raised/0/stdout")).unwrap(), big, "1.5 MiB kept whole");
    assert_eq!(std::fs::read_to_string(dir.path().join("raised/0/status")).unwrap(), "exited with status 0\n");

    let mut default = vec!["submit", wasm, "big.txt", "--out", "default"];
    default.extend(common);
    assert_eq!(run(&server, &default, dir.path()).status.code(), Some(0));
    assert_eq!(std::fs::read(dir.path().join("default/0/stdout")).unwrap(), &big[..1024 * 1024]);
    let status = std::fs::read_to_string(dir.path().join("default/0/status")).unwrap();
    assert!(status.contains("stdout was truncated"), "{status}");

    let refused = run(&server, &["submit", wasm, "--max-stdout-mib", "0"], dir.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-stdout-mib must be a positive number"));
}

#[test]
fn the_benchmark_prints_its_figures_as_json() {
    let output = Command::new(binary())
        .args(["bench", "--chunks", "300", "--rounds", "5", "--replicated-chunks", "100", "--json"])
        .output()
        .expect("the benchmark runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    for key in [
        "chunks_per_sec",
        "replicated_chunks_per_sec",
        "round_p50_ms",
        "round_p99_ms",
        "instrumentation_slowdown",
        "cpu_speedup_2_workers",
        "session_round_p50_ms",
        "session_round_p99_ms",
        "session_bytes_per_round",
        "session_bytes_per_round_without_affinity",
        "session_slowed_round_p50_ms_with_backups",
        "session_slowed_round_p50_ms_without_backups",
    ] {
        assert!(figures[key].as_f64().is_some_and(|value| value > 0.0), "{key} in {figures}");
    }
    // With the shards cached on the volunteers, a round sends far less than the shards themselves.
    let (cached, inline) =
        (figures["session_bytes_per_round"].as_u64(), figures["session_bytes_per_round_without_affinity"].as_u64());
    assert!(cached.unwrap() * 10 < inline.unwrap(), "{figures}");
}

#[tokio::test]
async fn a_worker_given_an_identity_volunteers_as_it_even_with_a_token_in_the_environment() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let identity = dir.path().join("a.json");
    // As the README's training demo does: the token exported for the commands, two workers by identity.
    let mut worker = Command::new(binary())
        .args(["worker", "--server", &server.url, "--slots", "1", "--identity", identity.to_str().unwrap()])
        .env("DISTRIBUTIVECOM_TOKEN", &server.admin_token)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = worker.stderr.take().unwrap();
    let first = std::io::BufReader::new(stderr).lines().next().unwrap().unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(first.contains("as anonymous volunteer"), "{first}");
    assert!(identity.exists(), "the identity was registered and kept");
}

#[test]
fn a_worker_refuses_slot_counts_the_server_would_refuse() {
    for slots in ["0", "257"] {
        let output = Command::new(binary())
            .args(["worker", "--server", "http://127.0.0.1:9", "--slots", slots, "--identity", "/nonexistent/a.json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--slots {slots}");
        assert!(stderr.contains("--slots must be between 1 and 256"), "--slots {slots}: {stderr}");
    }
}
