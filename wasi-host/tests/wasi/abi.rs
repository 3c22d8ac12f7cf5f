//! The function table and the dispatch of `WasiCtx::call`.

use distributivecom_wasi::{ChunkInput, Errno, FUNCTIONS, MODULE_NAME, ValType, WasiCtx, lookup};

use crate::harness::Guest;

#[test]
fn function_table_has_the_46_preview1_functions_with_their_signatures() {
    use ValType::{I32 as A, I64 as L};
    let expected: &[(&str, &[ValType], &[ValType])] = &[
        ("args_get", &[A, A], &[A]),
        ("args_sizes_get", &[A, A], &[A]),
        ("environ_get", &[A, A], &[A]),
        ("environ_sizes_get", &[A, A], &[A]),
        ("clock_res_get", &[A, A], &[A]),
        ("clock_time_get", &[A, L, A], &[A]),
        ("fd_advise", &[A, L, L, A], &[A]),
        ("fd_allocate", &[A, L, L], &[A]),
        ("fd_close", &[A], &[A]),
        ("fd_datasync", &[A], &[A]),
        ("fd_fdstat_get", &[A, A], &[A]),
        ("fd_fdstat_set_flags", &[A, A], &[A]),
        ("fd_fdstat_set_rights", &[A, L, L], &[A]),
        ("fd_filestat_get", &[A, A], &[A]),
        ("fd_filestat_set_size", &[A, L], &[A]),
        ("fd_filestat_set_times", &[A, L, L, A], &[A]),
        ("fd_pread", &[A, A, A, L, A], &[A]),
        ("fd_prestat_get", &[A, A], &[A]),
        ("fd_prestat_dir_name", &[A, A, A], &[A]),
        ("fd_pwrite", &[A, A, A, L, A], &[A]),
        ("fd_read", &[A, A, A, A], &[A]),
        ("fd_readdir", &[A, A, A, L, A], &[A]),
        ("fd_renumber", &[A, A], &[A]),
        ("fd_seek", &[A, L, A, A], &[A]),
        ("fd_sync", &[A], &[A]),
        ("fd_tell", &[A, A], &[A]),
        ("fd_write", &[A, A, A, A], &[A]),
        ("path_create_directory", &[A, A, A], &[A]),
        ("path_filestat_get", &[A, A, A, A, A], &[A]),
        ("path_filestat_set_times", &[A, A, A, A, L, L, A], &[A]),
        ("path_link", &[A, A, A, A, A, A, A], &[A]),
        ("path_open", &[A, A, A, A, A, L, L, A, A], &[A]),
        ("path_readlink", &[A, A, A, A, A, A], &[A]),
        ("path_remove_directory", &[A, A, A], &[A]),
        ("path_rename", &[A, A, A, A, A, A], &[A]),
        ("path_symlink", &[A, A, A, A, A], &[A]),
        ("path_unlink_file", &[A, A, A], &[A]),
        ("poll_oneoff", &[A, A, A, A], &[A]),
        ("proc_exit", &[A], &[]),
        ("proc_raise", &[A], &[A]),
        ("sched_yield", &[], &[A]),
        ("random_get", &[A, A], &[A]),
        ("sock_accept", &[A, A, A], &[A]),
        ("sock_recv", &[A, A, A, A, A, A], &[A]),
        ("sock_send", &[A, A, A, A, A], &[A]),
        ("sock_shutdown", &[A, A], &[A]),
    ];
    assert_eq!(MODULE_NAME, "wasi_snapshot_preview1");
    assert_eq!(FUNCTIONS.len(), 46);
    assert_eq!(expected.len(), 46);
    for (index, (function, (name, params, results))) in FUNCTIONS.iter().zip(expected).enumerate() {
        assert_eq!(function.name, *name, "function {index}");
        assert_eq!(function.params, *params, "params of {name}");
        assert_eq!(function.results, *results, "results of {name}");
        assert_eq!(lookup(name), Some(index));
    }
    assert_eq!(lookup("fd_seek").map(|index| FUNCTIONS[index].params), Some(&[A, L, A, A][..]));
    assert_eq!(lookup("path_open_at"), None);
}

#[test]
fn wrong_argument_counts_and_unknown_functions_are_inval_not_panics() {
    let mut ctx = WasiCtx::new(ChunkInput::default()).expect("valid input");
    let mut memory = [0u8; 64];
    let fd_close = lookup("fd_close").expect("exists");
    assert_eq!(ctx.call(&mut memory[..], fd_close, &[]), Ok(Errno::Inval.raw()));
    assert_eq!(ctx.call(&mut memory[..], fd_close, &[1, 2]), Ok(Errno::Inval.raw()));
    assert_eq!(ctx.call(&mut memory[..], 46, &[]), Ok(Errno::Inval.raw()));
    assert_eq!(ctx.call(&mut memory[..], usize::MAX, &[1]), Ok(Errno::Inval.raw()));
}

#[test]
fn upper_bits_of_i32_arguments_are_ignored() {
    // A JS host may hand over i32 values sign-extended (a pointer above 2 GiB is negative in JS); only
    // the low 32 bits count, whatever the upper ones hold.
    let mut guest = Guest::new(ChunkInput::default());
    let buffer = guest.put(b"ok");
    let iovecs = guest.put_iovecs(&[(buffer, 2)]);
    let nwritten = guest.alloc(4);
    let junk = 0xffff_ffff_0000_0000u64;
    guest.call("fd_write", &[1 | junk, u64::from(iovecs) | junk, 1 | junk, u64::from(nwritten) | junk]).expect("write");
    assert_eq!(guest.u32_at(nwritten), 2);
    assert_eq!(guest.finish().stdout, b"ok");
}
