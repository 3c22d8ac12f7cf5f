//! The process-level functions: arguments, environment, clocks, `poll_oneoff`, randomness and
//! signals.

use super::{WasiResult, le_u64};
use crate::abi::{Errno, SIGNAL_MAX, eventtype, layout, subclockflags};
use crate::chunk::HostStop;
use crate::clock::CLOCK_STEP_NS;
use crate::ctx::{FdKind, StringList, WasiCtx};
use crate::memory::{GuestMemory, StructImage, check_range, read_bytes, write_u32, write_u64};

/// How many random bytes are generated per guest memory write; it bounds the host buffer whatever
/// length the guest asks for.
const RANDOM_CHUNK_BYTES: usize = 4096;

/// Writes a string list as `args_get` and `environ_get` specify: an array of pointers at
/// `pointers`, each pointing into the NUL-terminated strings copied to `buffer`.
fn write_string_list(memory: &mut dyn GuestMemory, list: &StringList, pointers: u32, buffer: u32) -> WasiResult {
    check_range(memory, pointers, list.offsets.len() as u64 * 4)?;
    check_range(memory, buffer, list.buffer.len() as u64)?;
    let mut pointer_array = Vec::with_capacity(list.offsets.len() * 4);
    for offset in &list.offsets {
        let address = u32::try_from(u64::from(buffer) + u64::from(*offset)).map_err(|_| Errno::Fault)?;
        pointer_array.extend_from_slice(&address.to_le_bytes());
    }
    memory.write(pointers, &pointer_array)?;
    memory.write(buffer, &list.buffer)?;
    Ok(())
}

fn write_string_list_sizes(
    memory: &mut dyn GuestMemory,
    list: &StringList,
    count_pointer: u32,
    size_pointer: u32,
) -> WasiResult {
    check_range(memory, count_pointer, 4)?;
    check_range(memory, size_pointer, 4)?;
    // Both values were checked to fit a u32 when the context was built.
    write_u32(memory, count_pointer, list.offsets.len() as u32)?;
    write_u32(memory, size_pointer, list.buffer.len() as u32)
}

/// One decoded `subscription`.
#[derive(Clone, Copy, Debug)]
enum Subscription {
    /// A clock subscription, with its deadline converted to elapsed virtual time.
    Clock { userdata: u64, deadline_elapsed_ns: u64 },
    /// An `fd_read` or `fd_write` subscription.
    Fd { userdata: u64, event_type: u8, fd: u32 },
}

/// One `event` to report.
#[derive(Clone, Copy, Debug)]
struct Event {
    userdata: u64,
    error: Errno,
    event_type: u8,
    nbytes: u64,
}

impl WasiCtx {
    pub(crate) fn args_get(&mut self, memory: &mut dyn GuestMemory, argv: u32, argv_buf: u32) -> WasiResult {
        write_string_list(memory, &self.args, argv, argv_buf)
    }

    pub(crate) fn args_sizes_get(
        &mut self,
        memory: &mut dyn GuestMemory,
        argc_pointer: u32,
        size_pointer: u32,
    ) -> WasiResult {
        write_string_list_sizes(memory, &self.args, argc_pointer, size_pointer)
    }

    pub(crate) fn environ_get(&mut self, memory: &mut dyn GuestMemory, environ: u32, environ_buf: u32) -> WasiResult {
        write_string_list(memory, &self.env, environ, environ_buf)
    }

    pub(crate) fn environ_sizes_get(
        &mut self,
        memory: &mut dyn GuestMemory,
        count_pointer: u32,
        size_pointer: u32,
    ) -> WasiResult {
        write_string_list_sizes(memory, &self.env, count_pointer, size_pointer)
    }

    pub(crate) fn clock_res_get(
        &mut self,
        memory: &mut dyn GuestMemory,
        id: u32,
        resolution_pointer: u32,
    ) -> WasiResult {
        self.clock.read(id).ok_or(Errno::Inval)?;
        write_u64(memory, resolution_pointer, CLOCK_STEP_NS)
    }

    pub(crate) fn clock_time_get(
        &mut self,
        memory: &mut dyn GuestMemory,
        id: u32,
        _precision: u64,
        time_pointer: u32,
    ) -> WasiResult {
        let now = self.clock.read(id).ok_or(Errno::Inval)?;
        write_u64(memory, time_pointer, now)?;
        // Only a successful read moves time on, so a faulting call leaves no trace.
        self.clock.step();
        Ok(())
    }

    pub(crate) fn random_get(&mut self, memory: &mut dyn GuestMemory, buffer: u32, len: u32) -> WasiResult {
        check_range(memory, buffer, u64::from(len))?;
        let mut chunk = [0u8; RANDOM_CHUNK_BYTES];
        let mut written: u32 = 0;
        while written < len {
            let take = ((len - written) as usize).min(RANDOM_CHUNK_BYTES);
            self.random.fill(&mut chunk[..take]);
            memory.write(buffer + written, &chunk[..take])?;
            written += take as u32;
        }
        Ok(())
    }

    pub(crate) fn proc_raise(&mut self, signal: u32) -> Result<WasiResult, HostStop> {
        match signal {
            // Signal 0 means "no signal"; like raise(0) it does nothing.
            0 => Ok(Ok(())),
            // SIGNAL_MAX fits into a u8, and so does every signal below it.
            1..=SIGNAL_MAX => Err(HostStop::Raise(signal as u8)),
            _ => Ok(Err(Errno::Inval)),
        }
    }

    /// `poll_oneoff` on a virtual clock: fd subscriptions are always ready, and if only clocks are
    /// subscribed, the clock jumps to the earliest deadline instead of waiting for it.
    pub(crate) fn poll_oneoff(
        &mut self,
        memory: &mut dyn GuestMemory,
        subscriptions_pointer: u32,
        events_pointer: u32,
        nsubscriptions: u32,
        nevents_pointer: u32,
    ) -> WasiResult {
        if nsubscriptions == 0 {
            // There would be nothing to wait for, so the call would block forever.
            return Err(Errno::Inval);
        }
        // Validate all memory first; this also bounds the subscription list below by the guest memory.
        check_range(memory, subscriptions_pointer, u64::from(nsubscriptions) * layout::SUBSCRIPTION_SIZE as u64)?;
        check_range(memory, events_pointer, u64::from(nsubscriptions) * layout::EVENT_SIZE as u64)?;
        check_range(memory, nevents_pointer, 4)?;

        let mut subscriptions = Vec::new();
        for index in 0..nsubscriptions {
            let pointer = subscriptions_pointer + index * layout::SUBSCRIPTION_SIZE as u32;
            subscriptions.push(self.decode_subscription(memory, pointer)?);
        }

        // Events that are ready without waiting: every fd subscription and every expired clock.
        let elapsed = self.clock.elapsed_ns();
        let mut events: Vec<Event> = subscriptions
            .iter()
            .filter_map(|subscription| match *subscription {
                Subscription::Clock { userdata, deadline_elapsed_ns } => (deadline_elapsed_ns <= elapsed)
                    .then_some(Event { userdata, error: Errno::Success, event_type: eventtype::CLOCK, nbytes: 0 }),
                Subscription::Fd { userdata, event_type, fd } => Some(self.fd_readiness(userdata, event_type, fd)),
            })
            .collect();
        if events.is_empty() {
            // Only future clock deadlines are left: sleep by jumping to the earliest one, then report
            // every clock that has expired by then.
            let earliest = subscriptions
                .iter()
                .filter_map(|subscription| match subscription {
                    Subscription::Clock { deadline_elapsed_ns, .. } => Some(*deadline_elapsed_ns),
                    Subscription::Fd { .. } => None,
                })
                .min()
                .unwrap_or(elapsed);
            self.clock.advance_to(earliest);
            events = subscriptions
                .iter()
                .filter_map(|subscription| match *subscription {
                    Subscription::Clock { userdata, deadline_elapsed_ns } if deadline_elapsed_ns <= earliest => {
                        Some(Event { userdata, error: Errno::Success, event_type: eventtype::CLOCK, nbytes: 0 })
                    }
                    _ => None,
                })
                .collect();
        }

        let mut image = Vec::with_capacity(events.len() * layout::EVENT_SIZE);
        for event in &events {
            let mut bytes = StructImage::<{ layout::EVENT_SIZE }>::new();
            bytes.put_u64(0, event.userdata);
            bytes.put_u16(8, event.error as u16);
            bytes.put_u8(10, event.event_type);
            bytes.put_u64(16, event.nbytes);
            image.extend_from_slice(&bytes.bytes);
        }
        memory.write(events_pointer, &image)?;
        // There are at most `nsubscriptions` events.
        write_u32(memory, nevents_pointer, events.len() as u32)
    }

    fn decode_subscription(&self, memory: &dyn GuestMemory, pointer: u32) -> Result<Subscription, Errno> {
        let bytes = read_bytes::<{ layout::SUBSCRIPTION_SIZE }>(memory, pointer)?;
        let userdata = le_u64(&bytes, 0);
        match bytes[8] {
            eventtype::CLOCK => {
                let id = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
                let timeout = le_u64(&bytes, 24);
                let flags = u16::from_le_bytes([bytes[40], bytes[41]]);
                if flags & !subclockflags::ALL != 0 {
                    return Err(Errno::Inval);
                }
                let deadline_elapsed_ns = if flags & subclockflags::SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                    self.clock.absolute_to_elapsed(id, timeout).ok_or(Errno::Inval)?
                } else {
                    self.clock.read(id).ok_or(Errno::Inval)?;
                    self.clock.elapsed_ns().saturating_add(timeout)
                };
                Ok(Subscription::Clock { userdata, deadline_elapsed_ns })
            }
            event_type @ (eventtype::FD_READ | eventtype::FD_WRITE) => {
                let fd = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
                Ok(Subscription::Fd { userdata, event_type, fd })
            }
            _ => Err(Errno::Inval),
        }
    }

    /// Every fd is either ready at once or unusable: stdin and files are in memory, and output never
    /// blocks. Reads report how many bytes are left; writes report 0.
    fn fd_readiness(&self, userdata: u64, event_type: u8, fd: u32) -> Event {
        let reading = event_type == eventtype::FD_READ;
        let readiness = match self.fds.get(&fd).map(|entry| entry.kind) {
            None => Err(Errno::Badf),
            Some(FdKind::Stdin) if reading => Ok(self.stdin.len().saturating_sub(self.stdin_position) as u64),
            Some(FdKind::File { inode, position }) if reading => {
                Ok(self.fs.file_data(inode).map_or(0, |data| (data.len() as u64).saturating_sub(position)))
            }
            Some(FdKind::Stdout | FdKind::Stderr | FdKind::File { .. }) if !reading => Ok(0),
            Some(_) => Err(Errno::Badf),
        };
        match readiness {
            Ok(nbytes) => Event { userdata, error: Errno::Success, event_type, nbytes },
            Err(error) => Event { userdata, error, event_type, nbytes: 0 },
        }
    }
}
