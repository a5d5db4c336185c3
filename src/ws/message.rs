//! Frames → messages, sans-IO: control frames answered in place of the
//! caller, fragments reassembled up to a size limit, text checked as UTF-8,
//! protocol errors turned into the close code and reason to send.
//!
//! The worker owns the bytes and the socket; [`Reassembler::feed`] walks the
//! complete frames in a buffer and hands each event to a callback, which may
//! stop the walk (a connection that started closing reads no further).

use std::ops::ControlFlow;

use super::close;
use super::frame::{self, Kind};

/// Why the server closes a connection: the code and reason of its close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Sent in the close frame and logged.
    pub reason: &'static str,
}

/// What a client's frames amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message (text is valid UTF-8).
    Message {
        /// Binary or text.
        binary: bool,
        /// Its payload, unmasked (reassembled if it came in fragments).
        payload: &'a mut [u8],
    },
    /// A ping: answer with a pong carrying `payload`.
    Ping(&'a [u8]),
    /// A pong (the answer to a ping of ours).
    Pong,
    /// The peer closes: answer with a close frame of `code` (its own code
    /// echoed when valid, RFC 6455 §5.5.1), then close.
    Close {
        /// The code to answer with.
        code: u16,
    },
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragments {
    binary: bool,
    bytes: Vec<u8>,
}

/// One connection's incoming message state.
#[derive(Debug, Default)]
pub struct Reassembler {
    frag: Option<Fragments>,
}

impl Reassembler {
    /// Handle every complete frame in `buf` (payloads at most `max` bytes,
    /// messages too), calling `on` for each event until it breaks. Returns
    /// the bytes used; what is left is an incomplete frame.
    ///
    /// # Errors
    /// A protocol violation: the close code and reason to answer with (the
    /// bytes up to the bad frame were handled).
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        max: usize,
        mut on: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> (usize, Result<(), CloseReason>) {
        let mut off = 0;
        while off < buf.len() {
            let parsed = match frame::parse(&mut buf[off..], max) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    let (code, reason) = e.close();
                    return (off, Err(CloseReason { code, reason }));
                }
            };
            let payload = off + parsed.payload.start..off + parsed.payload.end;
            off += parsed.consumed;
            match self.frame(parsed.kind, parsed.fin, &mut buf[payload], max, &mut on) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => break,
                Err(why) => return (off, Err(why)),
            }
        }
        (off, Ok(()))
    }

    fn frame(
        &mut self,
        kind: Kind,
        fin: bool,
        payload: &mut [u8],
        max: usize,
        on: &mut impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, CloseReason> {
        match kind {
            Kind::Ping => Ok(on(Event::Ping(payload))),
            Kind::Pong => Ok(on(Event::Pong)),
            Kind::Close => {
                // §5.5.1: a body starts with a 2-byte code; §8.1: the reason is UTF-8.
                if payload.len() == 1 {
                    return Err(CloseReason {
                        code: close::PROTOCOL,
                        reason: "a close body starts with a 2-byte code",
                    });
                }
                if payload.len() > 2 && std::str::from_utf8(&payload[2..]).is_err() {
                    return Err(CloseReason { code: close::INVALID_DATA, reason: "close reason is not valid UTF-8" });
                }
                let code =
                    if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { close::NORMAL };
                let code = if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) { code } else { close::PROTOCOL };
                Ok(on(Event::Close { code }))
            }
            Kind::Continuation => {
                let Some(f) = self.frag.as_mut() else {
                    return Err(CloseReason {
                        code: close::PROTOCOL,
                        reason: "continuation frame without a message to continue",
                    });
                };
                if f.bytes.len() + payload.len() > max {
                    return Err(CloseReason { code: close::TOO_BIG, reason: "message exceeds the size limit" });
                }
                f.bytes.extend_from_slice(payload);
                if !fin {
                    return Ok(ControlFlow::Continue(()));
                }
                let Fragments { binary, mut bytes } = self.frag.take().expect("checked above");
                message(binary, &mut bytes, on)
            }
            Kind::Text | Kind::Binary => {
                if self.frag.is_some() {
                    return Err(CloseReason {
                        code: close::PROTOCOL,
                        reason: "new message started inside a fragmented one",
                    });
                }
                let binary = kind == Kind::Binary;
                if fin {
                    message(binary, payload, on)
                } else {
                    self.frag = Some(Fragments { binary, bytes: payload.to_vec() });
                    Ok(ControlFlow::Continue(()))
                }
            }
        }
    }
}

/// A complete message: text must be UTF-8.
fn message(
    binary: bool,
    payload: &mut [u8],
    on: &mut impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, CloseReason> {
    if !binary && std::str::from_utf8(payload).is_err() {
        return Err(CloseReason { code: close::INVALID_DATA, reason: "text frame is not valid UTF-8" });
    }
    Ok(on(Event::Message { binary, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{append_masked, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

    /// The continuation opcode (RFC 6455 §5.2).
    const OP_CONT: u8 = 0x0;

    /// What `feed` reports for `bytes`: events (owned), bytes used, result.
    fn run(r: &mut Reassembler, bytes: &[u8], max: usize) -> (Vec<String>, usize, Result<(), CloseReason>) {
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        let (used, res) = r.feed(&mut buf, max, |e| {
            events.push(match e {
                Event::Message { binary, payload } => {
                    format!("{}:{}", if binary { "bin" } else { "text" }, String::from_utf8_lossy(payload))
                }
                Event::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                Event::Pong => "pong".into(),
                Event::Close { code } => format!("close:{code}"),
            });
            ControlFlow::Continue(())
        });
        (events, used, res)
    }

    fn frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        append_masked(&mut out, op, fin, [9, 8, 7, 6], payload);
        out
    }

    #[test]
    fn messages_control_frames_and_fragments() {
        let mut r = Reassembler::default();
        let bytes = [
            frame(OP_TEXT, true, b"{\"a\":1}"),
            frame(OP_PING, true, b"hb"),
            frame(OP_TEXT, false, b"hel"),
            frame(OP_PONG, true, b""),
            frame(OP_CONT, false, b"lo "),
            frame(OP_CONT, true, b"world"),
            frame(OP_BINARY, true, &[1, 2]),
            frame(OP_CLOSE, true, &[0x03, 0xe8]),
        ]
        .concat();
        let (events, used, res) = run(&mut r, &bytes, 1024);
        assert_eq!(res, Ok(()));
        assert_eq!(used, bytes.len());
        assert_eq!(events, ["text:{\"a\":1}", "ping:hb", "pong", "text:hello world", "bin:\u{1}\u{2}", "close:1000"]);
    }

    #[test]
    fn an_incomplete_frame_waits_and_a_split_message_completes() {
        let mut r = Reassembler::default();
        let f = frame(OP_TEXT, true, b"abcdef");
        let (events, used, _) = run(&mut r, &f[..f.len() - 2], 1024);
        assert_eq!((events.len(), used), (0, 0), "nothing until the frame is whole");
        let (events, used, _) = run(&mut r, &f, 1024);
        assert_eq!((events, used), (vec!["text:abcdef".to_string()], f.len()));
    }

    #[test]
    fn violations_close_with_the_rfc_code() {
        let cases: &[(&str, Vec<u8>, u16)] = &[
            ("continuation with nothing to continue", frame(OP_CONT, true, b"x"), close::PROTOCOL),
            (
                "a new message inside a fragmented one",
                [frame(OP_TEXT, false, b"a"), frame(OP_TEXT, true, b"b")].concat(),
                close::PROTOCOL,
            ),
            ("text that is not UTF-8", frame(OP_TEXT, true, &[0xff, 0xfe]), close::INVALID_DATA),
            (
                "UTF-8 broken across fragments",
                [frame(OP_TEXT, false, &[0xc3]), frame(OP_CONT, true, &[0x28])].concat(),
                close::INVALID_DATA,
            ),
            (
                "fragments over the limit",
                [frame(OP_TEXT, false, &[b'a'; 6]), frame(OP_CONT, true, &[b'a'; 6])].concat(),
                close::TOO_BIG,
            ),
            ("a frame over the limit", frame(OP_TEXT, true, &[b'a'; 11]), close::TOO_BIG),
            ("an unmasked frame", vec![0x81, 0x01, b'a'], close::PROTOCOL),
            ("a close body of one byte", frame(OP_CLOSE, true, &[0x03]), close::PROTOCOL),
            ("a close reason that is not UTF-8", frame(OP_CLOSE, true, &[0x03, 0xe8, 0xff, 0xfe]), close::INVALID_DATA),
        ];
        for (label, bytes, code) in cases {
            let (_, _, res) = run(&mut Reassembler::default(), bytes, 10);
            assert_eq!(res.map_err(|e| e.code), Err(*code), "{label}");
        }
    }

    #[test]
    fn close_codes_are_echoed_only_when_valid() {
        for (payload, want) in
            [(vec![], 1000), (vec![0x0f, 0xa0], 4000), (vec![0x03, 0xed], 1002), (vec![0x03, 0xf7], 1002)]
        {
            let (events, _, _) = run(&mut Reassembler::default(), &frame(OP_CLOSE, true, &payload), 125);
            assert_eq!(events, [format!("close:{want}")], "{payload:?}");
        }
    }

    #[test]
    fn the_callback_can_stop_the_walk() {
        let mut r = Reassembler::default();
        let mut bytes = [frame(OP_TEXT, true, b"one"), frame(OP_TEXT, true, b"two")].concat();
        let mut seen = 0;
        let (used, res) = r.feed(&mut bytes, 1024, |_| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert_eq!((seen, res), (1, Ok(())));
        assert!(used < bytes.len(), "the second frame stays for later");
    }
}
