//! Each dialect's control messages (`dialect::*`), driven as the worker
//! drives them, without a server (`tickcast::fuzzing::Dialogue`).
//!
//! Input: byte 0 picks the dialect (`Dialect::ALL`, modulo) and whether the
//! first part is the upgrade's query string; the rest, split at 0xFF bytes
//! (never in UTF-8), is the client's messages: UTF-8 goes as text, anything
//! else as a binary message; housekeeping runs between messages.
//!
//! Checks: every reply is one JSON text no longer than 64 KiB plus 16× the
//! message; every data frame is whole server frames; subscriptions stay
//! within the limit; a close uses a code a server may send; nothing is
//! sent after the close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::dialect::Dialect;
use tickcast::fuzzing::{Dialogue, Sent};
use tickcast::ws::frame;

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else { return };
    let dialect = Dialect::ALL[usize::from(*pick) % Dialect::COUNT];
    let mut parts = rest.split(|&b| b == 0xFF);
    let query = if (pick / Dialect::COUNT as u8) & 1 == 1 { parts.next().unwrap_or_default() } else { &[] };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let Ok(mut d) = Dialogue::open(dialect, query) else { return };
    let mut closed = check(&mut d, query.len(), false);
    for msg in parts.take(64) {
        match std::str::from_utf8(msg) {
            Ok(text) => d.text(text),
            Err(_) => d.binary(),
        }
        closed = check(&mut d, msg.len(), closed);
        d.advance(100);
        closed = check(&mut d, 0, closed);
    }
});

/// Check what was sent since the last check; `closed`: the connection was
/// closed before. Returns whether it is closed now.
fn check(d: &mut Dialogue, input_len: usize, mut closed: bool) -> bool {
    assert!(d.subscriptions() <= d.max_subscriptions(), "{} subscriptions", d.subscriptions());
    for sent in d.take() {
        assert!(!closed, "{sent:?} sent after the close");
        match sent {
            Sent::Reply(text) => {
                assert!(text.len() <= 65_536 + 16 * input_len, "a {}-byte reply to {input_len} bytes", text.len());
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                    panic!("reply is not JSON ({e}): {text}");
                }
            }
            Sent::Data(bytes) => {
                let mut b = &bytes[..];
                while !b.is_empty() {
                    let n = frame::frame_len(b).expect("a whole frame header");
                    assert!(n <= b.len(), "a frame runs past the data");
                    assert!(b[0] & 0x80 != 0 && b[1] & 0x80 == 0, "final and unmasked");
                    b = &b[n..];
                }
            }
            Sent::Close(code) => {
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 4000..=4999), "close {code}");
                closed = true;
            }
        }
    }
    closed
}
