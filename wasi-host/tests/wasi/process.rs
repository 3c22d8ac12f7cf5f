//! Arguments, environment, exit, signals and the functions that do not exist here (sockets, links).

use distributivecom_wasi::{ChunkInput, Errno, HostStop, InputError};

use crate::harness::Guest;

fn guest_with_args_and_env() -> Guest {
    Guest::new(ChunkInput {
        args: vec!["prog.wasm".into(), "--level".into(), "3".into(), String::new(), "ünïcode".into()],
        env: vec![("HOME".into(), "/data".into()), ("EMPTY".into(), String::new()), ("A".into(), "b=c".into())],
        ..ChunkInput::default()
    })
}

#[test]
fn args_sizes_and_layout_follow_the_spec() {
    let mut guest = guest_with_args_and_env();
    let (count, size) = (guest.alloc(4), guest.alloc(4));
    guest.call("args_sizes_get", &[u64::from(count), u64::from(size)]).expect("sizes");
    let expected = b"prog.wasm\0--level\x003\0\0\xc3\xbcn\xc3\xafcode\0";
    assert_eq!(guest.u32_at(count), 5);
    assert_eq!(guest.u32_at(size) as usize, expected.len());

    let (argv, argv_buf) = (guest.alloc(5 * 4), guest.alloc(expected.len() as u32));
    guest.call("args_get", &[u64::from(argv), u64::from(argv_buf)]).expect("args");
    assert_eq!(guest.bytes_at(argv_buf, expected.len()), expected);
    let pointers: Vec<u32> = (0..5).map(|index| guest.u32_at(argv + 4 * index)).collect();
    assert_eq!(pointers, [argv_buf, argv_buf + 10, argv_buf + 18, argv_buf + 20, argv_buf + 21]);
}

#[test]
fn environ_is_key_equals_value_in_input_order() {
    let mut guest = guest_with_args_and_env();
    let (count, size) = (guest.alloc(4), guest.alloc(4));
    guest.call("environ_sizes_get", &[u64::from(count), u64::from(size)]).expect("sizes");
    let expected = b"HOME=/data\0EMPTY=\0A=b=c\0";
    assert_eq!((guest.u32_at(count), guest.u32_at(size) as usize), (3, expected.len()));

    let (environ, environ_buf) = (guest.alloc(12), guest.alloc(expected.len() as u32));
    guest.call("environ_get", &[u64::from(environ), u64::from(environ_buf)]).expect("environ");
    assert_eq!(guest.bytes_at(environ_buf, expected.len()), expected);
    assert_eq!(guest.u32_at(environ + 8), environ_buf + 18);
}

#[test]
fn empty_args_and_env_have_zero_sizes() {
    let mut guest = Guest::new(ChunkInput::default());
    let (count, size) = (guest.alloc(4), guest.alloc(4));
    guest.memory[count as usize] = 0xff;
    guest.call("environ_sizes_get", &[u64::from(count), u64::from(size)]).expect("sizes");
    assert_eq!((guest.u32_at(count), guest.u32_at(size)), (0, 0));
    guest.call("environ_get", &[0, 0]).expect("nothing to write, so even NULL is fine");
}

#[test]
fn arguments_and_environment_are_validated() {
    let nul_argument = ChunkInput { args: vec!["a".into(), "b\0c".into()], ..ChunkInput::default() };
    assert!(matches!(try_new(nul_argument), Err(InputError::ArgumentContainsNul { index: 1, .. })));
    for (name, value) in [("", "x"), ("A=B", "x"), ("A", "x\0")] {
        let input = ChunkInput { env: vec![(name.into(), value.into())], ..ChunkInput::default() };
        let error = try_new(input).expect_err("invalid variable");
        assert!(matches!(error, InputError::InvalidEnvironmentVariable { .. }), "{error}");
    }
}

/// `WasiCtx::new` without the context, so the validation test reads as a list of cases.
fn try_new(input: ChunkInput) -> Result<(), InputError> {
    distributivecom_wasi::WasiCtx::new(input).map(|_| ())
}

#[test]
fn proc_exit_and_proc_raise_stop_the_program() {
    let mut guest = Guest::new(ChunkInput::default());
    assert_eq!(guest.try_call("proc_exit", &[3]), Err(HostStop::Exit(3)));
    assert_eq!(guest.try_call("proc_exit", &[u64::from(u32::MAX)]), Err(HostStop::Exit(u32::MAX)));
    assert_eq!(HostStop::Exit(3).to_string(), "the program exited with status 3");
    assert_eq!(guest.try_call("proc_raise", &[6]), Err(HostStop::Raise(6)));
    assert_eq!(HostStop::Raise(6).to_string(), "the program raised signal 6");
    assert_eq!(guest.call("proc_raise", &[0]), Ok(()));
    assert_eq!(guest.call("proc_raise", &[31]), Err(Errno::Inval));
    assert_eq!(guest.call("sched_yield", &[]), Ok(()));
}

#[test]
fn sockets_and_links_are_not_supported() {
    let mut guest = Guest::with_files(&[("file", b"x")]);
    assert_eq!(guest.call("sock_accept", &[3, 0, 100]), Err(Errno::Notsup));
    assert_eq!(guest.call("sock_recv", &[0, 0, 0, 0, 100, 104]), Err(Errno::Notsup));
    assert_eq!(guest.call("sock_send", &[1, 0, 0, 0, 100]), Err(Errno::Notsup));
    assert_eq!(guest.call("sock_shutdown", &[1, 2]), Err(Errno::Notsup));
    let (old, old_len) = guest.put_str("file");
    let (new, new_len) = guest.put_str("link");
    assert_eq!(guest.call("path_link", &[3, 0, old, old_len, 3, new, new_len]), Err(Errno::Notsup));
    assert_eq!(guest.call("path_symlink", &[old, old_len, 3, new, new_len]), Err(Errno::Notsup));
    let buffer = guest.alloc(64);
    let used = guest.alloc(4);
    assert_eq!(
        guest.call("path_readlink", &[3, old, old_len, u64::from(buffer), 64, u64::from(used)]),
        Err(Errno::Inval)
    );
    assert_eq!(
        guest.call("path_readlink", &[3, new, new_len, u64::from(buffer), 64, u64::from(used)]),
        Err(Errno::Noent)
    );
}
