//! A gate under a worker's WebSocket that refuses a message larger than the worker may send *before* its
//! payload is read: it watches the frame headers in the bytes from the worker and asks, as each message
//! begins, how large it may be (room for a valid report of every replica the worker holds; see
//! `report_limits`). The WebSocket library's own limits are fixed at the handshake; this one follows what
//! the worker holds from moment to moment.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Says how many bytes the next message may hold.
pub type MessageLimit = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Follows the frames of one direction of a WebSocket (client to server: every frame is masked).
#[derive(Debug, Default)]
pub struct FrameWatcher {
    /// The frame header being read (at most 2 + 8 + 4 bytes).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Payload bytes of the current message so far, and what it may hold.
    message_bytes: u64,
    message_limit: u64,
}

/// A message that is larger than the worker may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub message_bytes: u64,
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "a message of at least {} bytes is larger than this worker may send now ({} bytes: room for a report \
             of each replica it holds, within its jobs' limits)",
            self.message_bytes, self.limit
        )
    }
}

impl FrameWatcher {
    /// Follows `bytes`, the next bytes from the worker. `limit` is asked as each message begins.
    pub fn feed(&mut self, mut bytes: &[u8], limit: &dyn Fn() -> u64) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skipped;
                bytes = &bytes[skipped as usize..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let Some(payload) = self.complete_header() else { continue };
            let (opcode, fin) = (self.header[0] & 0x0f, self.header[0] & 0x80 != 0);
            self.header.clear();
            // Control frames (close, ping, pong) carry at most 125 bytes and are never fragmented
            // (RFC 6455, 5.5); refused here, before the library would buffer a claimed payload.
            if opcode >= 8 && (payload > 125 || !fin) {
                return Err(TooLarge { message_bytes: payload, limit: 125 });
            }
            if opcode < 8 {
                if opcode != 0 {
                    // A text or binary frame starts a message (0 continues one).
                    self.message_bytes = 0;
                    self.message_limit = limit();
                }
                self.message_bytes = self.message_bytes.saturating_add(payload);
                if self.message_bytes > self.message_limit {
                    return Err(TooLarge { message_bytes: self.message_bytes, limit: self.message_limit });
                }
            }
            self.payload_left = payload;
        }
        Ok(())
    }

    /// The payload length once the header in hand is whole.
    fn complete_header(&self) -> Option<u64> {
        let header = &self.header;
        if header.len() < 2 {
            return None;
        }
        let short = u64::from(header[1] & 0x7f);
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if header[1] & 0x80 != 0 { 4 } else { 0 };
        if header.len() < 2 + extended + mask {
            return None;
        }
        Some(match extended {
            0 => short,
            length => header[2..2 + length].iter().fold(0, |value, byte| (value << 8) | u64::from(*byte)),
        })
    }
}

/// A stream whose reads pass through a [`FrameWatcher`]; writes pass untouched.
pub struct FrameGate<S> {
    inner: S,
    watcher: FrameWatcher,
    limit: MessageLimit,
}

impl<S> FrameGate<S> {
    pub fn new(inner: S, limit: MessageLimit) -> FrameGate<S> {
        FrameGate { inner, watcher: FrameWatcher::default(), limit }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGate<S> {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            let limit = this.limit.clone();
            if let Err(too_large) = this.watcher.feed(&buf.filled()[before..], &*limit) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, too_large.to_string())));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGate<S> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for a payload of `length` bytes.
    fn header(opcode: u8, fin: bool, length: u64) -> Vec<u8> {
        let mut bytes = vec![(u8::from(fin) << 7) | opcode];
        match length {
            0..=125 => bytes.push(0x80 | length as u8),
            126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend((length as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0x80 | 127);
                bytes.extend(length.to_be_bytes());
            }
        }
        bytes.extend([1, 2, 3, 4]);
        bytes
    }

    fn frame(opcode: u8, fin: bool, length: u64) -> Vec<u8> {
        let mut bytes = header(opcode, fin, length);
        bytes.resize(bytes.len() + length as usize, 0xaa);
        bytes
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_split() {
        let mut stream = frame(2, true, 100);
        stream.extend(frame(9, true, 4)); // a ping between messages
        stream.extend(frame(2, false, 300));
        stream.extend(frame(0, true, 700));
        for split in [1, 2, 3, 7, 64, stream.len()] {
            let mut watcher = FrameWatcher::default();
            for piece in stream.chunks(split) {
                watcher.feed(piece, &|| 1000).unwrap();
            }
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_its_header_before_its_payload() {
        let mut watcher = FrameWatcher::default();
        // Only the header of a frame that claims 2^63 bytes: refused without reading any of them.
        let refused = watcher.feed(&header(2, true, 1 << 63), &|| 1 << 20).unwrap_err();
        assert_eq!(refused, TooLarge { message_bytes: 1 << 63, limit: 1 << 20 });

        // Fragments add up: the third one takes the message over.
        let mut watcher = FrameWatcher::default();
        let mut stream = frame(2, false, 400);
        stream.extend(frame(0, false, 400));
        stream.extend(header(0, true, 400));
        let refused = watcher.feed(&stream, &|| 1000).unwrap_err();
        assert_eq!(refused.message_bytes, 1200);
    }

    #[test]
    fn a_control_frame_over_125_bytes_is_refused_at_its_header() {
        let mut watcher = FrameWatcher::default();
        assert_eq!(
            watcher.feed(&header(9, true, 512 << 20), &|| 1 << 30),
            Err(TooLarge { message_bytes: 512 << 20, limit: 125 })
        );
        let mut watcher = FrameWatcher::default();
        assert!(watcher.feed(&header(10, false, 4), &|| 1 << 30).is_err(), "a fragmented control frame");
        let mut watcher = FrameWatcher::default();
        assert!(watcher.feed(&frame(9, true, 125), &|| 0).is_ok(), "a ping is not a message");
    }

    #[test]
    fn the_limit_is_asked_as_each_message_begins() {
        let asked = std::sync::atomic::AtomicU64::new(0);
        let limit = || {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            500
        };
        let mut watcher = FrameWatcher::default();
        let mut stream = frame(2, false, 200);
        stream.extend(frame(0, true, 200));
        stream.extend(frame(2, true, 500));
        watcher.feed(&stream, &limit).unwrap();
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
