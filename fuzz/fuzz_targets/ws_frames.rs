//! Client bytes → frames → messages (`ws::frame`, `ws::message`).
//!
//! Input: byte 0 picks the size limit, byte 1 how the stream is cut into
//! reads, the rest is the stream. Checks:
//! - the stream read in pieces gives exactly the events and the error it
//!   gives when read whole (a partial frame waits, never errs or misparses);
//! - every message is within the limit, text is UTF-8, a ping's payload is
//!   at most 125 bytes, a close is answered with a code the RFC allows;
//! - every frame `frame::parse` accepts lies in the buffer and re-encodes
//!   (minimal length, another mask) to a frame that parses the same.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use tickcast::ws::frame::{self, Kind};
use tickcast::ws::message::{CloseReason, Event, Reassembler};

#[derive(Debug, PartialEq)]
enum Ev {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(u16),
}

/// Feed `stream` in pieces ending at `cuts` as the worker does (append,
/// feed, drop what was used), stopping at a close or an error.
fn read(stream: &[u8], cuts: &[usize], max: usize) -> (Vec<Ev>, Option<CloseReason>) {
    let (mut rx, mut buf, mut evs, mut from) = (Reassembler::default(), Vec::new(), Vec::new(), 0);
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        let mut closed = false;
        let (used, res) = rx.feed(&mut buf, max, |e| {
            evs.push(match e {
                Event::Message { binary, payload } => Ev::Message(binary, payload.to_vec()),
                Event::Ping(p) => Ev::Ping(p.to_vec()),
                Event::Pong => Ev::Pong,
                Event::Close { code } => {
                    closed = true;
                    Ev::Close(code)
                }
            });
            if closed {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(used <= buf.len());
        if let Err(why) = res {
            return (evs, Some(why));
        }
        if closed {
            return (evs, None);
        }
        buf.drain(..used);
    }
    (evs, None)
}

fn opcode(kind: Kind) -> u8 {
    match kind {
        Kind::Text => frame::OP_TEXT,
        Kind::Binary => frame::OP_BINARY,
        Kind::Continuation => 0x0,
        Kind::Close => frame::OP_CLOSE,
        Kind::Ping => frame::OP_PING,
        Kind::Pong => frame::OP_PONG,
    }
}

fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fuzz_target!(|data: &[u8]| {
    let [limit, cut_seed, stream @ ..] = data else { return };
    let max = 1usize << (limit % 21); // 1 B ..= 1 MiB

    // Frames one by one: bounds and the re-encoding round trip.
    let mut buf = stream.to_vec();
    let mut off = 0;
    while off < buf.len() {
        let len = buf.len() - off;
        let Ok(Some(p)) = frame::parse(&mut buf[off..], max) else { break };
        assert!(p.payload.start <= p.payload.end && p.payload.end <= len && p.consumed == p.payload.end);
        assert!(p.payload.len() <= max);
        let payload = buf[off + p.payload.start..off + p.payload.end].to_vec();
        let mut again = Vec::new();
        frame::append_masked(&mut again, opcode(p.kind), p.fin, [0xa5, 0x5a, 0x00, 0xff], &payload);
        let q = frame::parse(&mut again, max).expect("a re-encoded frame parses").expect("whole");
        assert_eq!((q.kind, q.fin, &again[q.payload.clone()]), (p.kind, p.fin, &payload[..]));
        assert_eq!(q.consumed, again.len());
        off += p.consumed;
    }

    // Messages: whole, then in pieces.
    let (whole, err) = read(stream, &[], max);
    for ev in &whole {
        match ev {
            Ev::Message(binary, p) => {
                assert!(p.len() <= max, "a message over the limit");
                assert!(*binary || std::str::from_utf8(p).is_ok(), "text that is not UTF-8");
            }
            Ev::Ping(p) => assert!(p.len() <= 125),
            Ev::Pong => {}
            Ev::Close(code) => assert!(close_code_allowed(*code), "close answered with {code}"),
        }
    }
    if let Some(why) = err {
        assert!(matches!(why.code, 1002 | 1007 | 1009), "error close {}", why.code);
    }
    let mut rng = u64::from(*cut_seed) | 1;
    let mut cuts = Vec::new();
    let mut at = 0;
    while !stream.is_empty() && cuts.len() < 16 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        at += 1 + (rng as usize % 24);
        if at >= stream.len() {
            break;
        }
        cuts.push(at);
    }
    let (pieces, err2) = read(stream, &cuts, max);
    assert_eq!(pieces, whole, "events differ when the stream arrives at {cuts:?}");
    assert_eq!(err2, err, "the error differs when the stream arrives at {cuts:?}");
});
