//! Hostile or careless guests: out-of-bounds pointers, garbage arguments, and determinism.

use distributivecom_wasi::{
    ChunkInput, ChunkOutputs, Errno, FUNCTIONS, HostStop, OutputLimits, ValType, WasiCtx, lookup, oflags, rights,
};

use crate::harness::{Guest, MEMORY_BYTES, errno, input_with_files};

const END: u64 = MEMORY_BYTES as u64;

#[test]
fn out_of_bounds_pointers_give_fault_and_change_nothing() {
    let mut guest = Guest::new(ChunkInput {
        args: vec!["prog".into()],
        stdin: b"input".to_vec(),
        ..input_with_files(&[("f", b"data")])
    });
    let good = u64::from(guest.alloc(64));
    let iovecs = u64::from(guest.put_iovecs(&[(100, 4)]));
    let bad_iovec = u64::from(guest.put_iovecs(&[(MEMORY_BYTES as u32 - 2, 4)]));
    let cases: &[(&str, &[u64])] = &[
        ("args_sizes_get", &[END, good]),
        ("args_get", &[good, END - 2]),
        ("environ_sizes_get", &[good, u64::from(u32::MAX)]),
        ("fd_write", &[1, END, 1, good]),
        ("fd_write", &[1, bad_iovec, 1, good]),
        ("fd_write", &[1, iovecs, 1, END]),
        ("fd_read", &[0, iovecs, 1, END - 3]),
        ("fd_read", &[0, bad_iovec, 1, good]),
        ("fd_pread", &[4, bad_iovec, 1, 0, good]),
        ("fd_pwrite", &[4, bad_iovec, 1, 0, good]),
        ("fd_seek", &[4, 2, 0, END - 4]),
        ("fd_tell", &[4, END]),
        ("fd_fdstat_get", &[1, END - 23]),
        ("fd_filestat_get", &[4, END - 63]),
        ("fd_prestat_get", &[3, END]),
        ("fd_prestat_dir_name", &[3, END - 4, 5]),
        ("fd_readdir", &[3, END - 10, 100, 0, good]),
        ("fd_readdir", &[3, good, 64, 0, END]),
        ("path_open", &[3, 0, END - 1, 5, u64::from(oflags::CREAT), rights::ALL, 0, 0, good]),
        ("path_open", &[3, 0, good, 0, u64::from(oflags::CREAT), rights::ALL, 0, 0, END]),
        ("path_create_directory", &[3, END, 1]),
        ("path_filestat_get", &[3, 0, u64::from(u32::MAX), 2, good]),
        ("path_rename", &[3, END, 1, 3, good, 1]),
        ("path_unlink_file", &[3, END - 1, 2]),
        ("clock_time_get", &[0, 0, END - 7]),
        ("clock_res_get", &[0, END]),
        ("random_get", &[END - 5, 6]),
    ];
    let fd = guest.open("f", 0).expect("open f as fd 4");
    assert_eq!(fd, 4);
    guest.memory[good as usize..good as usize + 2].copy_from_slice(b"zz");
    for (name, args) in cases {
        let before = guest.memory.clone();
        assert_eq!(guest.call(name, args), Err(Errno::Fault), "{name}{args:?}");
        // A faulting call must not have written any guest memory either.
        assert!(guest.memory == before, "{name}{args:?} wrote memory before faulting");
    }
    assert_eq!(guest.ctx.elapsed_ns(), 0);
    assert_eq!(guest.read(0, 10), Ok(b"input".to_vec()), "stdin was not consumed");
    assert_eq!(guest.tell(4), Ok(0));
    let outputs = guest.finish();
    assert!(outputs.stdout.is_empty());
    assert!(outputs.files.is_empty(), "nothing was created: {:?}", outputs.files.keys());
}

#[test]
fn huge_lengths_and_counts_are_refused_without_allocating() {
    let mut guest = Guest::new(ChunkInput::default());
    let good = u64::from(guest.alloc(64));
    let max = u64::from(u32::MAX);
    assert_eq!(guest.call("fd_write", &[1, good, max, good]), Err(Errno::Inval), "too many iovecs");
    assert_eq!(guest.call("fd_read", &[0, good, 16_385, good]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_write", &[1, END - 800, 16_384, good]), Err(Errno::Fault), "the array runs past the end");
    // Overlapping iovecs can add up to more than the u32 that reports the count; POSIX says EINVAL.
    let overlapping = u64::from(guest.put_iovecs(&[(0, 1 << 20); 4097]));
    assert_eq!(guest.call("fd_write", &[1, overlapping, 4097, good]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_write", &[1, overlapping, 4095, good]), Ok(()));
    assert_eq!(guest.u32_at(good as u32), 4095 << 20);
    assert_eq!(guest.call("random_get", &[good, max]), Err(Errno::Fault));
    assert_eq!(guest.call("fd_readdir", &[3, good, u32::MAX.into(), 0, good + 60]), Ok(()));
    assert_eq!(guest.call("poll_oneoff", &[good, good, max, good]), Err(Errno::Fault));
}

/// A small deterministic generator, so the garbage is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }

    fn pick(&mut self, choices: &[u64]) -> u64 {
        choices[(self.next() % choices.len() as u64) as usize]
    }

    /// Any value at all, biased towards boundaries.
    fn anything(&mut self, kind: ValType) -> u64 {
        match (kind, self.next() % 3) {
            (_, 0) => self.pick(&[0, 1, 4096, 1 << 31, 1 << 20, u32::MAX as u64, u64::MAX, 1 << 63]),
            (ValType::I64, _) => self.next() << 11 | self.next() & 0x7ff,
            (ValType::I32, _) => self.next() & 0xffff_ffff,
        }
    }

    /// A value for a parameter with the given role (see `ROLES`); mostly plausible, sometimes not.
    fn argument(&mut self, role: u8, kind: ValType) -> u64 {
        if self.next().is_multiple_of(5) {
            return self.anything(kind);
        }
        match role {
            // The preopen is where everything starts, so it is drawn most often.
            b'F' => self.pick(&[0, 1, 2, 3, 3, 3, 4, 5, 6]),
            b'P' => self.pick(&[4000, 4100, 4200, 4300, 4400, 60_000, 65_530]),
            b'V' => self.pick(&[IOVECS, IOVECS + 8]),
            b'U' => SUBSCRIPTIONS,
            b'S' => self.pick(&PATHS.map(|(offset, _)| offset)),
            b'L' => self.next() % 10,
            b'N' => self.next() % 600,
            b'X' => self.next() % 16,
            b'I' => self.next() % 64,
            _ => self.anything(kind),
        }
    }
}

/// The role of every parameter of every function, in `FUNCTIONS` order: F fd, P result or buffer
/// pointer, V iovec array, U subscriptions, S path pointer, L small length or count, N buffer length,
/// X flags or enum, I 64-bit offset, size or time.
const ROLES: [&str; 46] = [
    "PP",
    "PP",
    "PP",
    "PP",
    "XP",
    "XIP",
    "FIIX",
    "FII",
    "F",
    "F",
    "FP",
    "FX",
    "FII",
    "FP",
    "FI",
    "FIIX",
    "FVLIP",
    "FP",
    "FPL",
    "FVLIP",
    "FVLP",
    "FPNIP",
    "FF",
    "FIXP",
    "F",
    "FP",
    "FVLP",
    "FSL",
    "FXSLP",
    "FXSLIIX",
    "FXSLFSL",
    "FXSLXIIXP",
    "FSLPNP",
    "FSL",
    "FSLFSL",
    "SLFSL",
    "FSL",
    "UPLP",
    "X",
    "X",
    "",
    "PN",
    "FXP",
    "FPLXPP",
    "FPLXP",
    "FX",
];

const IOVECS: u64 = 1000;
const SUBSCRIPTIONS: u64 = 5000;
const PATHS: [(u64, &str); 6] =
    [(100, "a.txt"), (200, "dir"), (300, "dir/b.txt"), (400, "new"), (500, "dir/sub"), (600, "..")];

/// Runs a long sequence of random calls against a small memory and returns everything observable.
fn garbage_run(seed: u64) -> (Vec<Result<i32, HostStop>>, Vec<u8>, ChunkOutputs) {
    let mut input = input_with_files(&[("a.txt", b"alpha"), ("dir/b.txt", b"beta"), ("dir/sub/c", b"")]);
    input.stdin = b"some stdin".to_vec();
    input.env = vec![("K".into(), "V".into())];
    input.limits = OutputLimits { max_stdout_bytes: 4096, max_stderr_bytes: 4096, max_fs_bytes: 1 << 16 };
    let mut ctx = WasiCtx::new(input).expect("valid input");
    let mut memory = vec![0u8; 1 << 16];
    let mut rng = Lcg(seed);
    for byte in memory.iter_mut() {
        *byte = rng.next() as u8;
    }
    // Plant real paths, iovecs and subscriptions, so that calls get past their argument checks.
    for (offset, path) in PATHS {
        memory[offset as usize..offset as usize + path.len()].copy_from_slice(path.as_bytes());
    }
    let iovecs = [2000u32, 16, 3000, 100];
    for (index, value) in iovecs.iter().enumerate() {
        let offset = IOVECS as usize + 4 * index;
        memory[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    let mut subscriptions = [0u8; 96];
    subscriptions[8] = 0; // A relative monotonic clock subscription...
    subscriptions[16..20].copy_from_slice(&1u32.to_le_bytes());
    subscriptions[24..32].copy_from_slice(&5_000u64.to_le_bytes());
    subscriptions[48 + 8] = 1; // ...and an fd_read subscription on stdin.
    memory[SUBSCRIPTIONS as usize..SUBSCRIPTIONS as usize + 96].copy_from_slice(&subscriptions);

    let mut results = Vec::new();
    for iteration in 0..20_000 {
        let function = (rng.next() % FUNCTIONS.len() as u64) as usize;
        // Closing or renumbering fds at random would soon close the preopen, and every later call
        // would stop at BADF; they only happen near the end so that the run first explores deeply.
        let destructive = matches!(FUNCTIONS[function].name, "fd_close" | "fd_renumber");
        if FUNCTIONS[function].name == "proc_exit" || (destructive && iteration < 18_000) {
            continue;
        }
        let roles = ROLES[function].as_bytes();
        let mut args: Vec<u64> =
            FUNCTIONS[function].params.iter().zip(roles).map(|(kind, role)| rng.argument(*role, *kind)).collect();
        // Usually give a planted path its real length.
        for index in 1..args.len() {
            let planted = PATHS.iter().find(|(offset, _)| *offset == args[index - 1]);
            if let (b'S', Some((_, path))) = (roles[index - 1], planted)
                && !rng.next().is_multiple_of(4)
            {
                args[index] = path.len() as u64;
            }
        }
        results.push(ctx.call(&mut memory[..], function, &args));
    }
    (results, memory, ctx.finish())
}

#[test]
fn the_fuzz_roles_match_the_signatures() {
    for (function, roles) in FUNCTIONS.iter().zip(ROLES) {
        assert_eq!(function.params.len(), roles.len(), "roles of {}", function.name);
    }
}

#[test]
fn garbage_arguments_never_panic_and_runs_are_deterministic() {
    let mut some_run_left_files = false;
    for seed in [1, 2, 3] {
        let first = garbage_run(seed);
        let second = garbage_run(seed);
        assert!(first == second, "seed {seed} gave different results on two runs");
        let successes = first.0.iter().filter(|result| **result == Ok(0)).count();
        assert!(successes > 2_000, "only {successes} calls succeeded; the generator no longer reaches deep");
        let distinct_errnos: std::collections::BTreeSet<_> =
            first.0.iter().filter_map(|result| result.as_ref().ok()).collect();
        assert!(distinct_errnos.len() > 10, "only {distinct_errnos:?} were returned");
        assert!(!first.2.stdout.is_empty(), "seed {seed} wrote nothing to stdout");
        some_run_left_files |= !first.2.files.is_empty();
    }
    assert!(some_run_left_files, "no run left output files");
}

/// A scripted program touching every kind of state; used to compare two runs byte for byte.
fn scripted_run() -> (Vec<i32>, ChunkOutputs) {
    let mut guest = Guest::new(ChunkInput {
        args: vec!["prog".into(), "x".into()],
        stdin: b"line one\nline two\n".to_vec(),
        random_seed: [9; 32],
        ..input_with_files(&[("in.txt", b"input data")])
    });
    let mut codes = Vec::new();
    let mut record = |result: Result<(), Errno>| codes.push(result.err().map_or(0, Errno::raw));
    let fd = guest.create("out/result.txt");
    record(fd.map(|_| ()));
    record(guest.mkdir("out"));
    let fd = guest.create("out/result.txt").expect("create");
    let random = guest.random(16);
    let now = guest.clock(0);
    let line = guest.read(0, 9).expect("stdin");
    guest.write(fd, &line).expect("write");
    guest.write(fd, format!("{now} {random:?}\n").as_bytes()).expect("write");
    guest.write(1, b"done\n").expect("stdout");
    record(guest.rename("in.txt", "out/in-copy.txt"));
    record(guest.unlink("missing"));
    let stat = guest.filestat(fd).expect("stat");
    guest.write(2, format!("{stat:?}\n").as_bytes()).expect("stderr");
    (codes, guest.finish())
}

#[test]
fn identical_inputs_give_identical_outputs() {
    let first = scripted_run();
    let second = scripted_run();
    assert_eq!(first, second);
    let (codes, outputs) = first;
    assert_eq!(codes, [Errno::Noent.raw(), 0, 0, Errno::Noent.raw()]);
    assert_eq!(outputs.stdout, b"done\n");
    assert_eq!(outputs.files.keys().collect::<Vec<_>>(), ["out/in-copy.txt", "out/result.txt"]);
    assert!(outputs.files["out/result.txt"].starts_with(b"line one\n1700000000000000000 ["));
}

#[test]
fn memory_errors_name_the_access() {
    let mut ctx = WasiCtx::new(ChunkInput::default()).expect("valid input");
    let mut memory: Vec<u8> = vec![0; 8];
    let function = lookup("clock_time_get").expect("exists");
    assert_eq!(ctx.call(&mut memory[..], function, &[0, 0, 4]).map(errno), Ok(Err(Errno::Fault)));
    let error = distributivecom_wasi::GuestMemory::write(&mut memory[..], 4, &[0; 8]).expect_err("out of bounds");
    assert_eq!((error.offset, error.len), (4, 8));
}
