//! The virtual clocks and poll_oneoff.

use distributivecom_wasi::{CLOCK_STEP_NS, ChunkInput, Errno, clockid, eventtype, subclockflags};

use crate::harness::Guest;

const START: u64 = 1_700_000_000_000_000_000;

fn guest() -> Guest {
    Guest::new(ChunkInput { clock_start_ns: START, stdin: b"12345".to_vec(), ..ChunkInput::default() })
}

/// Encodes a clock subscription.
fn clock_subscription(userdata: u64, id: u32, timeout: u64, flags: u16) -> [u8; 48] {
    let mut bytes = [0u8; 48];
    bytes[0..8].copy_from_slice(&userdata.to_le_bytes());
    bytes[8] = eventtype::CLOCK;
    bytes[16..20].copy_from_slice(&id.to_le_bytes());
    bytes[24..32].copy_from_slice(&timeout.to_le_bytes());
    bytes[32..40].copy_from_slice(&1_000u64.to_le_bytes());
    bytes[40..42].copy_from_slice(&flags.to_le_bytes());
    bytes
}

/// Encodes an fd_read or fd_write subscription.
fn fd_subscription(userdata: u64, event_type: u8, fd: u32) -> [u8; 48] {
    let mut bytes = [0u8; 48];
    bytes[0..8].copy_from_slice(&userdata.to_le_bytes());
    bytes[8] = event_type;
    bytes[16..20].copy_from_slice(&fd.to_le_bytes());
    bytes
}

/// A decoded event: (userdata, error, type, nbytes).
type Event = (u64, u16, u8, u64);

fn poll(guest: &mut Guest, subscriptions: &[[u8; 48]]) -> Result<Vec<Event>, Errno> {
    let input = guest.put(&subscriptions.concat());
    let output = guest.alloc(32 * subscriptions.len() as u32);
    let nevents = guest.alloc(4);
    let count = subscriptions.len() as u64;
    guest.call("poll_oneoff", &[u64::from(input), u64::from(output), count, u64::from(nevents)])?;
    Ok((0..guest.u32_at(nevents))
        .map(|index| {
            let event = output + 32 * index;
            (guest.u64_at(event), guest.u16_at(event + 8), guest.bytes_at(event + 10, 1)[0], guest.u64_at(event + 16))
        })
        .collect())
}

#[test]
fn clocks_start_at_the_submission_time_and_advance_per_read() {
    let mut guest = guest();
    assert_eq!(guest.clock(clockid::REALTIME), START);
    assert_eq!(guest.clock(clockid::MONOTONIC), CLOCK_STEP_NS);
    assert_eq!(guest.clock(clockid::PROCESS_CPUTIME_ID), 2 * CLOCK_STEP_NS);
    assert_eq!(guest.clock(clockid::THREAD_CPUTIME_ID), 3 * CLOCK_STEP_NS);
    assert_eq!(guest.clock(clockid::REALTIME), START + 4 * CLOCK_STEP_NS);
    assert_eq!(guest.ctx.elapsed_ns(), 5 * CLOCK_STEP_NS);

    let result = guest.alloc(8);
    assert_eq!(guest.call("clock_time_get", &[4, 0, u64::from(result)]), Err(Errno::Inval));
    assert_eq!(guest.call("clock_time_get", &[0, 0, u64::MAX]), Err(Errno::Fault));
    assert_eq!(guest.ctx.elapsed_ns(), 5 * CLOCK_STEP_NS, "failed reads do not advance time");
    for id in 0..4 {
        guest.call("clock_res_get", &[id, u64::from(result)]).expect("resolution");
        assert_eq!(guest.u64_at(result), CLOCK_STEP_NS);
    }
    assert_eq!(guest.call("clock_res_get", &[9, u64::from(result)]), Err(Errno::Inval));
    assert_eq!(guest.ctx.elapsed_ns(), 5 * CLOCK_STEP_NS, "clock_res_get does not advance time");
}

#[test]
fn sleeping_advances_the_clock_instead_of_waiting() {
    let mut guest = guest();
    let one_second = 1_000_000_000;
    assert_eq!(poll(&mut guest, &[clock_subscription(7, clockid::MONOTONIC, one_second, 0)]), Ok(vec![(7, 0, 0, 0)]));
    assert_eq!(guest.ctx.elapsed_ns(), one_second);
    assert_eq!(guest.clock(clockid::REALTIME), START + one_second);

    // With several clocks only the earliest fires, and time jumps exactly to it.
    let events = poll(
        &mut guest,
        &[
            clock_subscription(1, clockid::MONOTONIC, 5_000, 0),
            clock_subscription(2, clockid::REALTIME, 3_000, 0),
            clock_subscription(3, clockid::MONOTONIC, 3_000, 0),
        ],
    );
    assert_eq!(events, Ok(vec![(2, 0, 0, 0), (3, 0, 0, 0)]));
    assert_eq!(guest.ctx.elapsed_ns(), one_second + CLOCK_STEP_NS + 3_000);
}

#[test]
fn absolute_deadlines_are_measured_on_their_own_clock() {
    let mut guest = guest();
    let abstime = subclockflags::SUBSCRIPTION_CLOCK_ABSTIME;
    let events = poll(&mut guest, &[clock_subscription(1, clockid::REALTIME, START + 50_000, abstime)]);
    assert_eq!(events, Ok(vec![(1, 0, 0, 0)]));
    assert_eq!(guest.ctx.elapsed_ns(), 50_000);
    // A deadline in the past fires at once without moving time.
    let events = poll(&mut guest, &[clock_subscription(2, clockid::MONOTONIC, 10, abstime)]);
    assert_eq!(events, Ok(vec![(2, 0, 0, 0)]));
    assert_eq!(guest.ctx.elapsed_ns(), 50_000);
    let events = poll(&mut guest, &[clock_subscription(3, clockid::REALTIME, 0, abstime)]);
    assert_eq!(events, Ok(vec![(3, 0, 0, 0)]));
    assert_eq!(guest.ctx.elapsed_ns(), 50_000);
}

#[test]
fn fd_subscriptions_are_ready_at_once_and_clocks_then_do_not_fire() {
    let mut guest = guest();
    assert_eq!(guest.read(0, 2), Ok(b"12".to_vec()));
    let events = poll(
        &mut guest,
        &[
            clock_subscription(1, clockid::MONOTONIC, 1_000_000, 0),
            fd_subscription(2, eventtype::FD_READ, 0),
            fd_subscription(3, eventtype::FD_WRITE, 1),
            fd_subscription(4, eventtype::FD_READ, 99),
            fd_subscription(5, eventtype::FD_READ, 1),
        ],
    );
    let badf = Errno::Badf as u16;
    assert_eq!(
        events,
        Ok(vec![
            (2, 0, eventtype::FD_READ, 3),
            (3, 0, eventtype::FD_WRITE, 0),
            (4, badf, eventtype::FD_READ, 0),
            (5, badf, eventtype::FD_READ, 0),
        ])
    );
    assert_eq!(guest.ctx.elapsed_ns(), 0, "nobody had to wait");
}

#[test]
fn file_read_readiness_reports_the_remaining_bytes() {
    let mut guest = Guest::with_files(&[("f", b"0123456789")]);
    let fd = guest.open("f", 0).expect("open");
    guest.read(fd, 4).expect("read");
    let events = poll(&mut guest, &[fd_subscription(9, eventtype::FD_READ, fd)]);
    assert_eq!(events, Ok(vec![(9, 0, eventtype::FD_READ, 6)]));
}

#[test]
fn invalid_poll_requests_are_refused() {
    let mut guest = guest();
    let output = guest.alloc(64);
    let nevents = guest.alloc(4);
    assert_eq!(
        guest.call("poll_oneoff", &[u64::from(output), u64::from(output), 0, u64::from(nevents)]),
        Err(Errno::Inval)
    );
    assert_eq!(poll(&mut guest, &[clock_subscription(1, 17, 0, 0)]), Err(Errno::Inval), "unknown clock");
    assert_eq!(poll(&mut guest, &[clock_subscription(1, 0, 0, 0x8)]), Err(Errno::Inval), "unknown flags");
    assert_eq!(poll(&mut guest, &[fd_subscription(1, 3, 0)]), Err(Errno::Inval), "unknown event type");
    let input = guest.put(&clock_subscription(1, 1, 10, 0));
    assert_eq!(
        guest.call("poll_oneoff", &[u64::from(input), u64::from(u32::MAX - 8), 1, u64::from(nevents)]),
        Err(Errno::Fault)
    );
    assert_eq!(
        guest.call("poll_oneoff", &[u64::from(input), u64::from(output), u64::from(u32::MAX), u64::from(nevents)]),
        Err(Errno::Fault)
    );
    assert_eq!(guest.ctx.elapsed_ns(), 0, "failed polls do not sleep");
}
