//! Frame headers out (server frames: unmasked, so one encoded frame serves
//! every subscriber) and frame parsing in (tungstenite's `FrameHeader`);
//! masked client frames out for the bench harness and tests.

use std::io::Cursor;
use std::ops::Range;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Longest server frame header (no mask): 2 + 8 bytes.
pub const MAX_HEADER: usize = 10;

/// Reserve room for a header at the end of `out`; write the payload after
/// it and call [`finish`]. Returns the reservation's start.
#[inline]
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; MAX_HEADER]);
    start
}

/// Write the header for the payload that follows the reservation at
/// `start`, right-aligned so header and payload are contiguous, and return
/// the frame's byte range in `out` (the unused reservation bytes stay
/// before it). No payload bytes move.
#[inline]
pub fn finish(out: &mut [u8], start: usize, opcode: u8) -> Range<usize> {
    let payload_len = out.len() - start - MAX_HEADER;
    let mut hdr = [0u8; MAX_HEADER];
    let n = header(&mut hdr, opcode, payload_len);
    let at = start + MAX_HEADER - n;
    out[at..start + MAX_HEADER].copy_from_slice(&hdr[..n]);
    at..out.len()
}

/// Frames one encode writes back to back (one per stream or mode). Each
/// finished frame leaves the unused part of its header reservation in front
/// of it; [`Run::push`] moves it up against the frame before, so the run's
/// range holds nothing but whole frames.
#[derive(Debug, Default)]
pub struct Run(Option<Range<usize>>);

impl Run {
    /// Add `frame`, the range [`finish`] just returned (it ends `out`).
    pub fn push(&mut self, out: &mut Vec<u8>, frame: Range<usize>) {
        debug_assert_eq!(frame.end, out.len(), "the frame just finished");
        match &mut self.0 {
            None => self.0 = Some(frame),
            Some(run) => {
                let len = frame.len();
                out.copy_within(frame, run.end);
                run.end += len;
                out.truncate(run.end);
            }
        }
    }

    /// The run's bytes in `out` (empty at its end when no frame was pushed).
    pub fn range(self, out: &[u8]) -> Range<usize> {
        self.0.unwrap_or(out.len()..out.len())
    }
}

/// Format an unmasked, final frame header for `len` payload bytes into
/// `buf`; returns the header length (2, 4 or 10).
#[inline]
pub fn header(buf: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    buf[0] = 0x80 | opcode;
    if len < 126 {
        buf[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Append a whole frame with `payload` to `out`.
pub fn append(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mut hdr = [0u8; MAX_HEADER];
    let n = header(&mut hdr, opcode, payload.len());
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(payload);
}

/// Append a masked (client) frame with `payload`: `fin` clear for a
/// fragment that more frames continue.
pub fn append_masked(out: &mut Vec<u8>, opcode: u8, fin: bool, mask: [u8; 4], payload: &[u8]) {
    let mut hdr = [0u8; MAX_HEADER];
    let n = header(&mut hdr, opcode, payload.len());
    if !fin {
        hdr[0] &= 0x7F;
    }
    hdr[1] |= 0x80;
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Append a close frame with `code` and `reason` (truncated to fit 125 bytes).
pub fn append_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut p = [0u8; 125];
    p[..2].copy_from_slice(&code.to_be_bytes());
    let mut r = reason.len().min(123);
    while !reason.is_char_boundary(r) {
        r -= 1;
    }
    p[2..2 + r].copy_from_slice(&reason.as_bytes()[..r]);
    append(out, OP_CLOSE, &p[..2 + r]);
}

/// Length of the frame starting at `buf[0]`, if its header is complete.
/// Used to find frame boundaries in an out-buffer (server frames only).
#[inline]
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)? & 0x7F;
    match b1 {
        126 => Some(4 + u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize),
        127 => Some(10 + u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize),
        n => Some(2 + n as usize),
    }
}

/// What a client frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text data frame (or first fragment).
    Text,
    /// Binary data frame (or first fragment).
    Binary,
    /// Continuation of a fragmented message.
    Continuation,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

/// A complete client frame in the input buffer, payload already unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Frame kind.
    pub kind: Kind,
    /// FIN bit.
    pub fin: bool,
    /// Payload byte range within the buffer given to [`parse`].
    pub payload: Range<usize>,
    /// Bytes consumed (header + payload).
    pub consumed: usize,
}

/// Why a client frame was refused; each maps to a close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Malformed header, reserved bits or opcode, bad control frame (1002).
    Protocol(&'static str),
    /// Client frames must be masked (1002).
    Unmasked,
    /// Declared payload longer than the limit (1009).
    TooBig,
}

impl FrameError {
    /// Close code and reason to send for this error.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            FrameError::Protocol(why) => (super::close::PROTOCOL, why),
            FrameError::Unmasked => (super::close::PROTOCOL, "client frames must be masked"),
            FrameError::TooBig => (super::close::TOO_BIG, "frame exceeds the size limit"),
        }
    }
}

/// Parse one client frame from the start of `buf`, unmasking its payload in
/// place. `Ok(None)`: need more bytes. Rejects a too-long frame as soon as
/// its header arrives, before buffering the payload.
///
/// # Errors
/// See [`FrameError`].
pub fn parse(buf: &mut [u8], max_payload: usize) -> Result<Option<Parsed>, FrameError> {
    let mut cur = Cursor::new(&*buf);
    let (hdr, len) = match FrameHeader::parse(&mut cur) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError::Protocol("invalid frame header")),
    };
    if hdr.rsv1 || hdr.rsv2 || hdr.rsv3 {
        return Err(FrameError::Protocol("reserved bits set without an extension"));
    }
    let kind = match hdr.opcode {
        OpCode::Data(Data::Text) => Kind::Text,
        OpCode::Data(Data::Binary) => Kind::Binary,
        OpCode::Data(Data::Continue) => Kind::Continuation,
        OpCode::Control(Control::Close) => Kind::Close,
        OpCode::Control(Control::Ping) => Kind::Ping,
        OpCode::Control(Control::Pong) => Kind::Pong,
        _ => return Err(FrameError::Protocol("reserved opcode")),
    };
    let control = matches!(kind, Kind::Close | Kind::Ping | Kind::Pong);
    if control && (len > 125 || !hdr.is_final) {
        return Err(FrameError::Protocol("control frames must be final and at most 125 bytes"));
    }
    let Some(mask) = hdr.mask else {
        return Err(FrameError::Unmasked);
    };
    if len >> 63 != 0 {
        // §5.2: "the most significant bit MUST be 0".
        return Err(FrameError::Protocol("64-bit payload length with the most significant bit set"));
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooBig);
    }
    let start = cur.position() as usize;
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    for (i, b) in buf[start..end].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok(Some(Parsed { kind, fin: hdr.is_final, payload: start..end, consumed: end }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        append_masked(&mut out, opcode, fin, [0x37, 0xfa, 0x21, 0x3d], payload);
        out
    }

    #[test]
    fn parses_rfc_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut buf = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let p = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((p.kind, p.fin, p.consumed), (Kind::Text, true, 11));
        assert_eq!(&buf[p.payload], b"Hello");
    }

    /// RFC 6455 §5.7's examples, written by hand from the RFC, against what
    /// this module writes (server frames unmasked, client frames masked).
    #[test]
    fn writes_the_rfc_6455_examples_byte_for_byte() {
        let hello = [0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let mut out = Vec::new();
        append(&mut out, OP_TEXT, b"Hello");
        assert_eq!(out, [&[0x81, 0x05][..], &hello].concat(), "single-frame unmasked text");
        out.clear();
        append_masked(&mut out, OP_TEXT, true, [0x37, 0xfa, 0x21, 0x3d], b"Hello");
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58], "single-frame masked text");
        out.clear();
        append_masked(&mut out, OP_TEXT, false, [0; 4], b"Hel");
        append_masked(&mut out, 0x0, true, [0; 4], b"lo");
        // The RFC's fragmented example is unmasked; with a zero mask the
        // payload bytes are the same and only the mask bit and key differ.
        assert_eq!(out, [0x01, 0x83, 0, 0, 0, 0, 0x48, 0x65, 0x6c, 0x80, 0x82, 0, 0, 0, 0, 0x6c, 0x6f], "fragmented");
        out.clear();
        append(&mut out, OP_PING, b"Hello");
        assert_eq!(out, [&[0x89, 0x05][..], &hello].concat(), "unmasked ping");
        out.clear();
        append(&mut out, OP_BINARY, &[0xAB; 256]);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00], "256 bytes binary: 16-bit length");
        assert_eq!(out.len(), 4 + 256);
        out.clear();
        append(&mut out, OP_BINARY, &[0xCD; 65536]);
        assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00], "64 KiB binary: 64-bit length");
        assert_eq!(out.len(), 10 + 65536);
    }

    /// Server frames read by an independent decoder (the tungstenite
    /// client), and tungstenite's client frames (masked with its own random
    /// keys) parsed here.
    #[test]
    fn frames_agree_with_tungstenite_both_ways() {
        use tungstenite::protocol::{CloseFrame, Role, WebSocket};
        use tungstenite::Message;
        let big = "x".repeat(70_000);
        let mut wire = Vec::new();
        append(&mut wire, OP_TEXT, b"Hello");
        append(&mut wire, OP_BINARY, &[7u8; 300]);
        let start = begin(&mut wire);
        wire.extend_from_slice(big.as_bytes());
        finish(&mut wire, start, OP_TEXT);
        append(&mut wire, OP_PING, b"hb");
        append_close(&mut wire, 1013, "slow consumer");
        let mut client = WebSocket::from_raw_socket(std::io::Cursor::new(wire), Role::Client, None);
        assert_eq!(client.read().unwrap(), Message::text("Hello"));
        assert_eq!(client.read().unwrap(), Message::binary(vec![7u8; 300]));
        assert_eq!(client.read().unwrap(), Message::text(big.clone()));
        assert_eq!(client.read().unwrap(), Message::Ping(b"hb".to_vec()));
        let close = client.read().unwrap();
        assert_eq!(close, Message::Close(Some(CloseFrame { code: 1013.into(), reason: "slow consumer".into() })));

        let mut sender = WebSocket::from_raw_socket(std::io::Cursor::new(Vec::new()), Role::Client, None);
        for m in [Message::text("Hello"), Message::binary(vec![9u8; 200]), Message::text(big.clone())] {
            sender.send(m).unwrap();
        }
        let mut bytes = sender.get_ref().get_ref().clone();
        let mut buf = &mut bytes[..];
        let mut got = Vec::new();
        while !buf.is_empty() {
            let p = parse(buf, 1 << 20).unwrap().expect("a whole frame");
            assert!(p.fin);
            got.push((p.kind, buf[p.payload.clone()].to_vec()));
            buf = &mut buf[p.consumed..];
        }
        assert_eq!(
            got,
            [(Kind::Text, b"Hello".to_vec()), (Kind::Binary, vec![9u8; 200]), (Kind::Text, big.into_bytes())]
        );
    }

    #[test]
    fn refusals_map_to_close_codes() {
        let cases: Vec<(&str, Vec<u8>, usize, FrameError)> = vec![
            ("unmasked", vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'], 1024, FrameError::Unmasked),
            ("too big", masked(OP_TEXT, true, &[b'x'; 300]), 100, FrameError::TooBig),
            (
                "rsv1",
                {
                    let mut f = masked(OP_TEXT, true, b"x");
                    f[0] |= 0x40;
                    f
                },
                1024,
                FrameError::Protocol("reserved bits set without an extension"),
            ),
            ("reserved opcode", masked(0x3, true, b"x"), 1024, FrameError::Protocol("invalid frame header")),
            (
                "fragmented ping",
                masked(0x9, false, b"x"),
                1024,
                FrameError::Protocol("control frames must be final and at most 125 bytes"),
            ),
        ];
        for (label, mut buf, max, want) in cases {
            assert_eq!(parse(&mut buf, max).unwrap_err(), want, "{label}");
        }
        assert_eq!(FrameError::TooBig.close().0, 1009);
        assert_eq!(FrameError::Unmasked.close().0, 1002);
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() {
        let mut hdr = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4];
        assert_eq!(
            parse(&mut hdr, 65536).unwrap_err(),
            FrameError::Protocol("64-bit payload length with the most significant bit set")
        );
    }

    #[test]
    fn too_big_is_refused_from_the_header_alone() {
        let mut hdr = vec![0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4];
        assert_eq!(parse(&mut hdr, 65536).unwrap_err(), FrameError::TooBig);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let full = masked(OP_TEXT, true, b"{\"action\":\"ping\"}");
        for cut in 0..full.len() {
            let mut part = full[..cut].to_vec();
            assert_eq!(parse(&mut part, 1024).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn server_headers_round_trip_through_frame_len() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
            let mut out = Vec::new();
            let start = begin(&mut out);
            out.resize(out.len() + len, b'a');
            let r = finish(&mut out, start, OP_TEXT);
            assert_eq!(frame_len(&out[r.clone()]), Some(r.len()), "len {len}");
            let mut c = Cursor::new(&out[r.clone()]);
            let (h, l) = FrameHeader::parse(&mut c).unwrap().unwrap();
            assert_eq!((l as usize, h.mask, h.is_final), (len, None, true));
        }
    }

    /// Fuzz-style: random and mutated bytes never panic the parser, and
    /// whatever it accepts lies inside the buffer.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x7c0ffee);
        let seed_frame = masked(OP_TEXT, true, br#"{"action":"subscribe","tokens":[2885]}"#);
        for i in 0..200_000 {
            let mut buf: Vec<u8> = if i % 2 == 0 {
                (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect()
            } else {
                let mut f = seed_frame.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..f.len());
                    f[at] = rng.u8(..);
                }
                f.truncate(rng.usize(0..=f.len()));
                f
            };
            let len = buf.len();
            if let Ok(Some(p)) = parse(&mut buf, 1024) {
                assert!(p.payload.end <= len && p.consumed <= len && p.payload.start <= p.payload.end);
            }
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let mut out = Vec::new();
        append_close(&mut out, 1009, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]

        /// A valid stream of client frames, delivered in pieces split at
        /// any points, parses to the same frames as when whole: a partial
        /// frame waits for more, never errs or misparses.
        #[test]
        fn prop_any_split_of_a_valid_stream_parses_the_same(
            frames in proptest::collection::vec(
                (proptest::sample::select(vec![OP_TEXT, OP_BINARY, OP_PING, OP_PONG]), proptest::prelude::any::<bool>(),
                 proptest::prelude::any::<[u8; 4]>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                1..8),
            cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..10),
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (op, long, mask, mut payload) in frames {
                if matches!(op, OP_PING | OP_PONG) {
                    payload.truncate(125); // control frames: at most 125 bytes
                } else if long {
                    payload = payload.repeat(250); // 16-bit and 64-bit lengths too
                }
                append_masked(&mut wire, op, true, mask, &payload);
                let kind = match op { OP_TEXT => Kind::Text, OP_BINARY => Kind::Binary, OP_PING => Kind::Ping, _ => Kind::Pong };
                want.push((kind, payload));
            }
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.push(wire.len());
            at.sort_unstable();
            let (mut buf, mut got, mut from) = (Vec::new(), Vec::new(), 0);
            for to in at {
                buf.extend_from_slice(&wire[from..to]);
                from = to;
                while let Some(p) = parse(&mut buf, 1 << 20).unwrap() {
                    proptest::prop_assert!(p.fin);
                    got.push((p.kind, buf[p.payload.clone()].to_vec()));
                    buf.drain(..p.consumed);
                }
            }
            proptest::prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
            proptest::prop_assert_eq!(got, want);
        }
    }
}
