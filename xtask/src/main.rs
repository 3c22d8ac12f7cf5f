//! `cargo xtask`: the multi-step builds and the two commands of the README.
//!
//! - `cargo xtask serve [ARGS...]`: set up what is missing, build everything (example programs, the web
//!   app's wasm, the release binary) and run `distributivecom serve ARGS...`.
//! - `cargo xtask test`: set up what is missing (browser and Node.js included), build everything and run
//!   every test: the unit and in-process tiers in debug mode, the end-to-end and program tiers in release
//!   mode, and the browser tests in Chromium.
//! - `cargo xtask setup`: only install what is missing (rustup targets, the pinned wasm-bindgen-cli,
//!   Chromium, ChromeDriver, Node.js), skipping what is already there.
//! - `cargo xtask build`: only build (programs, web app, release binary).
//! - `cargo xtask bench [--peers] [ARGS...]`: build, then run `distributivecom bench ARGS...`; with
//!   `--peers`, run the Dask and Ray baselines (`../shared/peers/`) right after it in the same run, in
//!   virtual environments under `~/.cache/distributivecom/peers` (installed from PyPI on first use).
//!
//! Nothing here downloads anything but packages from the registries (crates.io through cargo, Debian
//! through apt-get, rustup's own targets).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

const WASM_TARGETS: [&str; 2] = ["wasm32-unknown-unknown", "wasm32-wasip1"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args.split_first().map(|(first, rest)| (first.as_str(), rest)).unwrap_or(("help", &[]));
    let outcome = match command {
        "setup" => setup(Needs::Everything),
        "build" => setup(Needs::Build).and_then(|()| build()),
        "build-programs" => build_programs(),
        "build-web" => setup(Needs::Build).and_then(|()| build_web()),

        "serve" => setup(Needs::Build).and_then(|()| build()).and_then(|()| run_binary("serve", rest)),
        "test" => setup(Needs::Everything).and_then(|()| build()).and_then(|()| test(rest)),
        "bench" => setup(Needs::Build).and_then(|()| build()).and_then(|()| bench(rest)),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup | build | build-programs | serve [ARGS] | test | bench [--peers] [ARGS]>"
            );
            return ExitCode::from(2);
        }
    };
    print_phases();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // Read at run time (`cargo run` sets it): a build cache shared between clones, as `.ci/run` keeps,
    // may hold an xtask compiled in another clone, whose compile-time path is gone.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).parent().expect("xtask sits in the workspace").to_owned()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` if set (`.ci/run` keeps it outside the clone, so
/// that a fresh clone reuses the dependencies already built), otherwise `target/` in the workspace. The
/// web app's `dist` stays in the workspace's `target/web/dist` either way: the server embeds it from there.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Runs `phase`, then says how long it took, so that a slow CI run shows where its time went.
fn timed<T>(name: &str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = std::time::Instant::now();
    let outcome = phase();
    let seconds = started.elapsed().as_secs_f64();
    let verdict = if outcome.is_ok() { "done" } else { "FAILED" };
    eprintln!("xtask: phase {name:?} {verdict} in {seconds:.0} s");
    PHASES.with(|phases| phases.borrow_mut().push((name.to_owned(), seconds, outcome.is_ok())));
    outcome
}

thread_local! {
    static PHASES: std::cell::RefCell<Vec<(String, f64, bool)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The phases so far, one line each, for the end of a run.
fn print_phases() {
    PHASES.with(|phases| {
        let phases = phases.borrow();
        if phases.is_empty() {
            return;
        }
        let total: f64 = phases.iter().map(|(_, seconds, _)| seconds).sum();
        eprintln!("xtask: time by phase ({total:.0} s in all):");
        for (name, seconds, ok) in phases.iter() {
            eprintln!("xtask:   {name:<16} {seconds:>6.0} s{}", if *ok { "" } else { "  (failed)" });
        }
    });
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(workspace_root());
    command
}

/// Runs a command, failing with its description if it fails.
fn run(command: &mut Command) -> Result {
    eprintln!("xtask: running {command:?}");
    let status = command.status().map_err(|error| format!("could not run {command:?}: {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("{command:?} failed with {status}")) }
}

/// Whether a command exists and runs.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().map(|output| output.status.success()).unwrap_or(false)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// What building and serving need.
    Build,
    /// Also what the tests need: a browser, its driver and Node.js.
    Everything,
}

fn setup(needs: Needs) -> Result {
    timed("setup", || {
        install_targets()?;
        install_wasm_bindgen()?;
        if needs == Needs::Everything {
            install_debian_packages(&[
                ("chromium", "chromium"),
                ("chromedriver", "chromium-driver"),
                ("node", "nodejs"),
            ])?;
        }
        Ok(())
    })
}

/// `rust-toolchain.toml` lists the targets, but with RUSTUP_AUTO_INSTALL=0 nothing installs them.
fn install_targets() -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .map_err(|error| format!("could not run rustup: {error}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> =
        WASM_TARGETS.iter().copied().filter(|target| !installed.lines().any(|line| line.trim() == *target)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup").arg("target").arg("add").args(&missing).current_dir(workspace_root()))
}

/// The wasm-bindgen version in Cargo.lock: the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock"))
        .map_err(|error| format!("could not read Cargo.lock: {error}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|line| line.trim().strip_prefix("version = "))
        {
            return Ok(version.trim_matches('"').to_owned());
        }
    }
    Err("Cargo.lock has no wasm-bindgen package".to_owned())
}

fn install_wasm_bindgen() -> Result {
    let version = locked_wasm_bindgen_version()?;
    let current = Command::new("wasm-bindgen").arg("--version").output();
    if let Ok(output) = current
        && String::from_utf8_lossy(&output.stdout).split_whitespace().nth(1) == Some(version.as_str())
    {
        return Ok(());
    }
    // Without --locked: the CLI's own lock file names a webpki-roots release the registry no longer has.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &version]))
}

/// Installs Debian packages whose command is missing.
fn install_debian_packages(packages: &[(&str, &str)]) -> Result {
    let missing: Vec<&str> =
        packages.iter().filter(|(command, _)| !works(command, &["--version"])).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().map(|output| output.stdout == b"0\n").unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt(&["update"]))?;
    run(apt(&["install", "-y", "--no-install-recommends"]).args(&missing))
}

fn build_programs() -> Result {
    timed("build programs", build_programs_untimed)
}

fn build_programs_untimed() -> Result {
    run(cargo().args([
        "build",
        "--package",
        "distributivecom-examples",
        "--package",
        "distributivecom-test-programs",
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasi-release",
    ]))
}

/// The browser parts: both wasm crates built size-optimised for `wasm32-unknown-unknown`, run through
/// `wasm-bindgen --target web`, and laid out with `static/` in `target/web/dist`, which the server embeds.
fn build_web() -> Result {
    timed("build web", build_web_untimed)
}

fn build_web_untimed() -> Result {
    run(cargo().args([
        "build",
        "--package",
        "distributivecom-web-worker",
        "--package",
        "distributivecom-frontend",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ]))?;
    let root = workspace_root();
    // Built in a staging folder, then only what changed is written into `dist`: the server embeds `dist`
    // and rebuilds when anything in it changes (`server/build.rs`).
    let dist = root.join("target/web/staging");
    let assets = dist.join("assets");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).map_err(|error| format!("could not clear {}: {error}", dist.display()))?;
    }
    std::fs::create_dir_all(&assets).map_err(|error| format!("could not create {}: {error}", assets.display()))?;
    for name in ["distributivecom_web_worker", "distributivecom_frontend"] {
        let wasm = target_dir().join("wasm32-unknown-unknown/wasm-release").join(format!("{name}.wasm"));
        run(Command::new("wasm-bindgen")
            // The name section is a third of the size and only helps debugging.
            .args(["--target", "web", "--no-typescript", "--remove-name-section", "--remove-producers-section"])
            .arg("--out-dir")
            .arg(&assets)
            .arg(&wasm))?;
    }
    let copy = |from: &str, to: &Path| {
        std::fs::copy(root.join("static").join(from), to)
            .map(drop)
            .map_err(|error| format!("could not copy static/{from}: {error}"))
    };
    copy("index.html", &dist.join("index.html"))?;
    copy("app.css", &assets.join("app.css"))?;
    copy("volunteer-worker.js", &assets.join("volunteer-worker.js"))?;
    // The embed script (served at /embed.js) and its widget's script and style.
    for embed in ["embed.js", "embed-frame.js", "embed.css"] {
        copy(embed, &assets.join(embed))?;
    }
    sync_folder(&dist, &root.join("target/web/dist"))
}

/// Makes `to` hold exactly the files of `from`, writing only those whose bytes differ (so their times
/// change only when their content does).
fn sync_folder(from: &Path, to: &Path) -> Result {
    let failed =
        |what: &str, path: &Path, error: std::io::Error| format!("could not {what} {}: {error}", path.display());
    std::fs::create_dir_all(to).map_err(|error| failed("create", to, error))?;
    let mut wanted = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(from).map_err(|error| failed("read", from, error))? {
        let entry = entry.map_err(|error| failed("read", from, error))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        wanted.insert(entry.file_name());
        if source.is_dir() {
            sync_folder(&source, &target)?;
            continue;
        }
        let bytes = std::fs::read(&source).map_err(|error| failed("read", &source, error))?;
        if std::fs::read(&target).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&target, &bytes).map_err(|error| failed("write", &target, error))?;
        }
    }
    for entry in std::fs::read_dir(to).map_err(|error| failed("read", to, error))? {
        let entry = entry.map_err(|error| failed("read", to, error))?;
        if !wanted.contains(&entry.file_name()) {
            let path = entry.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|error| failed("remove", &path, error))?;
        }
    }
    Ok(())
}

fn build() -> Result {
    build_programs()?;
    build_web()?;
    timed("build release", || run(cargo().args(["build", "--release", "--package", "distributivecom"])))
}

/// Every test, in three passes that all run even if one fails, so a red run shows everything broken:
/// - the unit and in-process tiers of the whole workspace in debug mode, so that overflow checks run;
/// - the slow tiers in release mode: the end-to-end tests (real server and worker processes, Node.js,
///   Chromium) and the built wasm programs through wasmtime, behind the features that gate them;
/// - the wasm crates' wasm-bindgen tests in headless Chromium.
fn test(extra: &[String]) -> Result {
    let fast = timed("unit tests (debug)", || run(cargo().args(["test", "--no-fail-fast", "--workspace"]).args(extra)));
    let slow = timed("end-to-end tests", || {
        run(cargo()
            .args(["test", "--release", "--no-fail-fast", "--package", "distributivecom"])
            .args(["--package", "distributivecom-worker"])
            .args(["--features", "distributivecom/e2e,distributivecom-worker/built-programs"])
            .args(extra))
    });
    let browser = timed("browser tests", || {
        run(cargo()
            .args([
                "test",
                "--no-fail-fast",
                "--package",
                "distributivecom-web-worker",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .env("CHROMEDRIVER", "/usr/bin/chromedriver"))
    });
    fast.and(slow).and(browser)
}

/// The benchmark, and with `--peers` the Dask and Ray baselines beside it in the same run.
fn bench(args: &[String]) -> Result {
    let peers = args.iter().any(|arg| arg == "--peers");
    let args: Vec<String> = args.iter().filter(|arg| *arg != "--peers").cloned().collect();
    // The date goes with the figures: a figure measured on another day (or of other code) is not this one.
    run(Command::new("date").args(["-u", "+xtask: benchmark run of %F %H:%M UTC"]))?;
    timed("benchmark", || run_binary("bench", &args))?;
    if !peers {
        return Ok(());
    }
    let directory = std::env::var_os("DISTRIBUTIVECOM_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/peers"));
    for (name, script, package) in [("dask", "dask_bench.py", "dask[distributed]"), ("ray", "ray_bench.py", "ray")] {
        let python = peer_python(name, package)?;
        timed(name, || run(Command::new(&python).arg(directory.join(script))))?;
    }
    eprintln!("xtask: the three benchmarks above ran one after another on this machine, in this run");
    Ok(())
}

/// A Python with `package` installed, in a virtual environment of its own (created on first use; pip
/// fetches from PyPI only).
fn peer_python(name: &str, package: &str) -> Result<PathBuf> {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let environment = home.join("distributivecom/peers").join(name);
    let python = environment.join("bin/python");
    if !works(python.to_str().unwrap_or_default(), &["-c", &format!("import {name}")]) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&environment))?;
        run(Command::new(environment.join("bin/pip")).args(["install", "--quiet", package]))?;
    }
    Ok(python)
}

fn run_binary(subcommand: &str, args: &[String]) -> Result {
    // `cargo xtask serve -- --listen ...` passes the `--` through; the binary does not want it.
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    let binary = target_dir().join("release/distributivecom");
    run(Command::new(binary).arg(subcommand).args(args))
}
