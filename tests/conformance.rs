//! RFC 6455 conformance, the way the Autobahn testsuite checks a server
//! (Autobahn itself cannot run here; these tests are its stand-in). Raw
//! bytes over TCP to the real binary: each case writes client frames and
//! reads what the server answers. Case families are named as Autobahn
//! numbers them (1.x framing, 2.x pings, 3.x reserved bits, 4.x opcodes,
//! 5.x fragmentation, 6.x UTF-8, 7.x close, 9.x limits) plus the handshake.
//!
//! What a message "accepted" means here: the native dialect answers
//! `{"action":"ping","id":X}` with a `pong` echoing `X`, so a text message
//! that got through the frame layer intact comes back in the reply.
//!
//! Policies where the RFC leaves a choice: a length in a longer encoding
//! than needed (non-minimal) is accepted (§5.2 binds senders); close codes
//! 1012-1014 (IANA-registered) are echoed like 1000-1003 and 1007-1011.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use tickcast::ws::frame::{OP_BINARY as BINARY, OP_CLOSE as CLOSE, OP_PING as PING, OP_PONG as PONG, OP_TEXT as TEXT};
use util::{client_frame, raw_upgrade, read_frame, Server};

/// The continuation opcode (§5.2).
const CONT: u8 = 0x0;

/// A small server: the simulator, slow (these tests subscribe to nothing).
fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--feed", "sim:rate=10"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A `/stream` connection past its welcome message.
fn open(s: &Server) -> TcpStream {
    let mut raw = raw_upgrade(s.addr, "/stream");
    assert_eq!(next_frame(&mut raw).0, TEXT, "the welcome");
    raw
}

/// The next frame from the server, skipping native heartbeats (an idle
/// connection gets one a second).
fn next_frame(raw: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let (op, p) = read_frame(raw);
        let heartbeat = op == TEXT && serde_json::from_slice::<Value>(&p).is_ok_and(|v| v["type"] == "heartbeat");
        if !heartbeat {
            return (op, p);
        }
    }
}

/// A native ping request whose reply echoes `id`: an accepted message.
fn ping_request(id: &str) -> Vec<u8> {
    serde_json::json!({"action": "ping", "id": id}).to_string().into_bytes()
}

/// Write `bytes`, then a ping request with id `end`; the frames the server
/// sent before that request's reply (its reply not included).
fn answers(raw: &mut TcpStream, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = bytes.to_vec();
    out.extend(client_frame(TEXT, true, &ping_request("end")));
    raw.write_all(&out).unwrap();
    let mut got = Vec::new();
    loop {
        let (op, p) = next_frame(raw);
        assert_ne!(op, CLOSE, "closed ({:?}) after {got:?}", close_of(&p));
        if op == TEXT && reply_id(&p).as_deref() == Some("end") {
            return got;
        }
        got.push((op, p));
    }
}

/// The `id` of a JSON text reply.
fn reply_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v["id"].as_str().map(str::to_string)
}

/// The pong replies' ids among `frames` (other frames must not be there).
fn pong_ids(frames: &[(u8, Vec<u8>)]) -> Vec<String> {
    frames
        .iter()
        .map(|(op, p)| {
            assert_eq!(*op, TEXT, "only replies expected: {frames:?}");
            let v: Value = serde_json::from_slice(p).unwrap();
            assert_eq!(v["type"], "pong", "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn close_of(p: &[u8]) -> (u16, String) {
    let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
    (code, String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into_owned())
}

/// Write `bytes`; the server must answer `before` (ping request ids, in
/// order), then close with `code`, then close the TCP connection.
#[track_caller]
fn fails_with(s: &Server, label: &str, bytes: &[u8], before: &[&str], code: u16) {
    let mut raw = open(s);
    raw.write_all(bytes).unwrap();
    let mut ids = Vec::new();
    let (got, reason) = loop {
        let (op, p) = next_frame(&mut raw);
        match op {
            CLOSE => break close_of(&p),
            TEXT => ids.push(reply_id(&p).unwrap_or_default()),
            PONG => ids.push(format!("pong:{}", String::from_utf8_lossy(&p))),
            op => panic!("{label}: unexpected frame {op:#x}"),
        }
    };
    assert_eq!((got, ids), (code, before.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "{label}: {reason}");
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let eof = raw.read_to_end(&mut rest);
    assert!(eof.is_ok() && rest.is_empty(), "{label}: the server closes TCP after its close frame: {eof:?} {rest:?}");
}

/// A frame with the header bytes given by hand (any length encoding),
/// masked with a zero key so the payload goes as is.
fn frame_with_len(first: u8, len_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    f.extend_from_slice(len_bytes);
    f[1] |= 0x80;
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A ping request padded to exactly `len` bytes (at least 28).
fn request_of_len(len: usize, tag: &str) -> (Vec<u8>, String) {
    let empty = ping_request(tag).len();
    let id = format!("{tag}{}", "x".repeat(len - empty));
    let r = ping_request(&id);
    assert_eq!(r.len(), len);
    (r, id)
}

// --- 1.x framing: text and binary messages, every length encoding ---------

#[test]
fn framing_text_and_binary_of_every_length_encoding() {
    let s = server(&[]);
    let mut raw = open(&s);
    // 1.1.1-1.1.8: text payloads of 7-bit, 16-bit and 64-bit lengths.
    for len in [28, 125, 126, 127, 128, 65_535, 65_536] {
        let (req, id) = request_of_len(len, &format!("t{len}"));
        let got = answers(&mut raw, &client_frame(TEXT, true, &req));
        assert_eq!(pong_ids(&got), [id], "text of {len} bytes");
    }
    // 1.2.x: binary messages are read whole (an error reply each, the
    // connection stays open), at every length encoding.
    for len in [0, 125, 126, 65_535, 65_536] {
        let got = answers(&mut raw, &client_frame(BINARY, true, &vec![0xfe; len]));
        assert_eq!(got.len(), 1, "binary of {len} bytes: one reply");
        let v: Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(v["type"], "error", "{v}");
    }
    // 1.1.x "chopped": one message written a byte at a time.
    let frame = client_frame(TEXT, true, &ping_request("chopped"));
    for b in &frame {
        raw.write_all(std::slice::from_ref(b)).unwrap();
        raw.flush().unwrap();
    }
    assert_eq!(pong_ids(&answers(&mut raw, &[])), ["chopped"]);
}

#[test]
fn framing_non_minimal_lengths_are_accepted() {
    // Policy: a length encoded in 16 or 64 bits although it fits in 7.
    let s = server(&[]);
    let mut raw = open(&s);
    let req = ping_request("wide16");
    let got = answers(&mut raw, &frame_with_len(0x81, &[126, 0, req.len() as u8], &req));
    assert_eq!(pong_ids(&got), ["wide16"]);
    let req = ping_request("wide64");
    let got = answers(&mut raw, &frame_with_len(0x81, &[127, 0, 0, 0, 0, 0, 0, 0, req.len() as u8], &req));
    assert_eq!(pong_ids(&got), ["wide64"]);
}

#[test]
fn framing_unmasked_frames_and_impossible_lengths_fail() {
    let s = server(&[]);
    // §5.1: a client frame must be masked.
    fails_with(&s, "unmasked text", &[0x81, 0x02, b'{', b'}'], &[], 1002);
    fails_with(&s, "unmasked ping", &[0x89, 0x00], &[], 1002);
    // §5.2: the most significant bit of a 64-bit length must be 0.
    fails_with(
        &s,
        "64-bit length, top bit set",
        &frame_with_len(0x82, &[127, 0x80, 0, 0, 0, 0, 0, 0, 1], &[]),
        &[],
        1002,
    );
    // Over any limit: refused from the header alone (9.x).
    fails_with(&s, "2^62 bytes", &frame_with_len(0x82, &[127, 0x40, 0, 0, 0, 0, 0, 0, 0], &[]), &[], 1009);
}

// --- 2.x pings and pongs ---------------------------------------------------

#[test]
fn pings_are_answered_with_their_payload_and_pongs_ignored() {
    let s = server(&[]);
    let mut raw = open(&s);
    // 2.1: empty; 2.2: text; 2.3: binary; 2.4: 125 bytes (the most allowed).
    let binary: Vec<u8> = (0..=255u8).cycle().take(125).collect();
    for payload in [&b""[..], b"Hello, world!", &[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff], &binary] {
        let got = answers(&mut raw, &client_frame(PING, true, payload));
        assert_eq!(got, [(PONG, payload.to_vec())]);
    }
    // 2.7/2.8: unsolicited pongs (empty, with payload) are ignored.
    let pongs = [client_frame(PONG, true, b""), client_frame(PONG, true, b"unsolicited")].concat();
    assert_eq!(answers(&mut raw, &pongs), []);
    // 2.10/2.11: ten pings in one write (then chopped): ten pongs, in order.
    let pings: Vec<Vec<u8>> = (0..10).map(|i| format!("ping {i}").into_bytes()).collect();
    let burst: Vec<u8> = pings.iter().flat_map(|p| client_frame(PING, true, p)).collect();
    let want: Vec<(u8, Vec<u8>)> = pings.iter().map(|p| (PONG, p.clone())).collect();
    assert_eq!(answers(&mut raw, &burst), want);
    for b in &burst {
        raw.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(answers(&mut raw, &[]), want);
    // 2.5: a ping of 126 bytes is a protocol error.
    fails_with(&s, "2.5 ping of 126 bytes", &client_frame(PING, true, &[b'x'; 126]), &[], 1002);
    // 2.6 (in spirit): a pong of 126 bytes too.
    fails_with(&s, "pong of 126 bytes", &client_frame(PONG, true, &[b'x'; 126]), &[], 1002);
}

// --- 3.x reserved bits -------------------------------------------------------

#[test]
fn every_reserved_bit_fails_the_connection() {
    let s = server(&[]);
    for (bit, name) in [(0x40u8, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3"), (0x70, "RSV1-3")] {
        for (op, payload) in
            [(TEXT, ping_request("x")), (BINARY, vec![1, 2]), (PING, b"p".to_vec()), (CLOSE, vec![3, 232])]
        {
            let mut f = client_frame(op, true, &payload);
            f[0] |= bit;
            fails_with(&s, &format!("3.x {name} on opcode {op:#x}"), &f, &[], 1002);
        }
        // 3.2/3.3: a valid message first is answered, then the bad frame fails.
        let mut f = client_frame(TEXT, true, &ping_request("after"));
        f[0] |= bit;
        let bytes = [client_frame(TEXT, true, &ping_request("first")), f, client_frame(PING, true, b"late")].concat();
        fails_with(&s, &format!("3.x {name} after a valid message"), &bytes, &["first"], 1002);
    }
}

// --- 4.x reserved opcodes ----------------------------------------------------

#[test]
fn every_reserved_opcode_fails_the_connection() {
    let s = server(&[]);
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        // 4.1.1/4.2.1: empty; 4.1.2/4.2.2: with payload.
        fails_with(&s, &format!("4.x opcode {op:#x}, empty"), &client_frame(op, true, b""), &[], 1002);
        fails_with(&s, &format!("4.x opcode {op:#x}, payload"), &client_frame(op, true, b"reserved"), &[], 1002);
        // 4.1.3/4.2.3: after a valid message, which is answered first.
        let bytes = [client_frame(TEXT, true, &ping_request("first")), client_frame(op, true, b"")].concat();
        fails_with(&s, &format!("4.x opcode {op:#x} after a message"), &bytes, &["first"], 1002);
    }
}

// --- 5.x fragmentation ---------------------------------------------------------

#[test]
fn fragmented_messages_with_control_frames_between_their_fragments() {
    let s = server(&[]);
    let mut raw = open(&s);
    let msg = ping_request("fragmented");
    // 5.3-5.5: two fragments, written together, then a byte at a time.
    let two = [client_frame(TEXT, false, &msg[..9]), client_frame(CONT, true, &msg[9..])].concat();
    assert_eq!(pong_ids(&answers(&mut raw, &two)), ["fragmented"]);
    for b in &two {
        raw.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(pong_ids(&answers(&mut raw, &[])), ["fragmented"]);
    // 5.6-5.8: a ping between the fragments is answered first.
    let with_ping = [
        client_frame(TEXT, false, &msg[..9]),
        client_frame(PING, true, b"between"),
        client_frame(CONT, true, &msg[9..]),
    ]
    .concat();
    let got = answers(&mut raw, &with_ping);
    assert_eq!(got[0], (PONG, b"between".to_vec()));
    assert_eq!(pong_ids(&got[1..]), ["fragmented"]);
    // 5.19/5.20: many fragments (one byte each, some empty) with pings and
    // pongs between them.
    let mut many = client_frame(TEXT, false, &[]);
    for (i, b) in msg.iter().enumerate() {
        many.extend(client_frame(CONT, i + 1 == msg.len(), std::slice::from_ref(b)));
        if i % 7 == 0 {
            many.extend(client_frame(PING, true, format!("p{i}").as_bytes()));
            many.extend(client_frame(PONG, true, b"ignored"));
        }
    }
    let got = answers(&mut raw, &many);
    let pongs: Vec<_> = got.iter().filter(|(op, _)| *op == PONG).map(|(_, p)| p.clone()).collect();
    let want: Vec<Vec<u8>> = (0..msg.len()).step_by(7).map(|i| format!("p{i}").into_bytes()).collect();
    assert_eq!(pongs, want);
    assert_eq!(pong_ids(&got[want.len()..]), ["fragmented"]);
    // A fragmented binary message is read whole too (an error reply).
    let bin = [client_frame(BINARY, false, &[1; 100]), client_frame(CONT, true, &[2; 100])].concat();
    assert_eq!(answers(&mut raw, &bin).len(), 1);
}

#[test]
fn fragmentation_violations_fail_the_connection() {
    let s = server(&[]);
    let msg = ping_request("frag");
    // 5.1/5.2: control frames must not be fragmented.
    fails_with(&s, "5.1 fragmented ping", &client_frame(PING, false, b"a"), &[], 1002);
    fails_with(&s, "5.2 fragmented pong", &client_frame(PONG, false, b"a"), &[], 1002);
    fails_with(&s, "fragmented close", &client_frame(CLOSE, false, &[3, 232]), &[], 1002);
    // 5.9-5.11: a continuation with nothing to continue (final).
    fails_with(&s, "5.9 continuation without start", &client_frame(CONT, true, &msg), &[], 1002);
    // 5.12-5.14: ... and not final, followed by a text frame.
    let bytes = [client_frame(CONT, false, &msg[..5]), client_frame(TEXT, true, &msg)].concat();
    fails_with(&s, "5.12 non-final continuation without start", &bytes, &[], 1002);
    // 5.15: a whole fragmented message, then a continuation of nothing.
    let bytes = [
        client_frame(TEXT, false, &msg[..5]),
        client_frame(CONT, true, &msg[5..]),
        client_frame(CONT, false, b"x"),
        client_frame(TEXT, true, &msg),
    ]
    .concat();
    fails_with(&s, "5.15 continuation after the final fragment", &bytes, &["frag"], 1002);
    // 5.16-5.18: a new data frame inside a fragmented message.
    for op in [TEXT, BINARY] {
        for fin in [true, false] {
            let bytes = [
                client_frame(TEXT, false, &msg[..5]),
                client_frame(op, fin, b"new"),
                client_frame(CONT, true, &msg[5..]),
            ]
            .concat();
            fails_with(&s, &format!("5.18 opcode {op:#x} (fin {fin}) inside a fragmented message"), &bytes, &[], 1002);
        }
    }
}

// --- 6.x UTF-8 -------------------------------------------------------------------

/// Texts that are valid UTF-8, with multi-byte characters of every length.
const VALID: [&str; 5] = ["", "Hello-µ@ßöäüàá-UTF-8!!", "κόσμε", "\u{10FFFF}\u{FFFD}\u{7FF}\u{800}", "𝄞 €"];

/// Byte strings that are not UTF-8 (6.3-6.21): overlong forms, surrogates,
/// past U+10FFFF, impossible bytes, cut sequences.
const INVALID: [&[u8]; 10] = [
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // 6.3: a surrogate inside
    b"\xc0\xaf",                                                       // 6.9: overlong '/'
    b"\xe0\x80\xaf",                                                   // overlong, 3 bytes
    b"\xf0\x80\x80\xaf",                                               // overlong, 4 bytes
    b"\xed\xa0\x80",                                                   // 6.19: U+D800
    b"\xed\xbf\xbf",                                                   // U+DFFF
    b"\xf4\x90\x80\x80",                                               // 6.8: U+110000
    b"\xfe",                                                           // 6.5: impossible byte
    b"\xff\xfe",                                                       // 6.5
    b"\xce\xba\xe1",                                                   // 6.4: cut at the end
];

/// A ping request with `id` given as raw bytes (maybe not UTF-8).
fn ping_request_raw(id: &[u8]) -> Vec<u8> {
    [&br#"{"action":"ping","id":""#[..], id, br#""}"#].concat()
}

#[test]
fn valid_utf8_is_accepted_whole_and_split_at_every_byte() {
    let s = server(&[]);
    let mut raw = open(&s);
    for text in VALID {
        // 6.2.x: one frame, then split across two fragments at every byte,
        // inside characters too.
        let msg = ping_request_raw(text.as_bytes());
        assert_eq!(pong_ids(&answers(&mut raw, &client_frame(TEXT, true, &msg))), [text]);
        for cut in 1..msg.len() {
            let bytes = [client_frame(TEXT, false, &msg[..cut]), client_frame(CONT, true, &msg[cut..])].concat();
            assert_eq!(pong_ids(&answers(&mut raw, &bytes)), [text], "{text:?} cut at {cut}");
        }
        // 6.2.4 in spirit: one fragment per byte.
        let mut bytes = client_frame(TEXT, false, &msg[..1]);
        for (i, b) in msg.iter().enumerate().skip(1) {
            bytes.extend(client_frame(CONT, i + 1 == msg.len(), std::slice::from_ref(b)));
        }
        assert_eq!(pong_ids(&answers(&mut raw, &bytes)), [text], "{text:?} a byte per fragment");
    }
}

#[test]
fn invalid_utf8_fails_with_1007_whole_or_split() {
    let s = server(&[]);
    for (i, bad) in INVALID.iter().enumerate() {
        let msg = ping_request_raw(bad);
        fails_with(&s, &format!("6.x invalid #{i}, one frame"), &client_frame(TEXT, true, &msg), &[], 1007);
        // Split across fragments inside the bad sequence.
        let cut = msg.len() - 2 - bad.len() / 2 - 1;
        let bytes = [client_frame(TEXT, false, &msg[..cut]), client_frame(CONT, true, &msg[cut..])].concat();
        fails_with(&s, &format!("6.x invalid #{i}, split at {cut}"), &bytes, &[], 1007);
    }
    // A valid first fragment and an invalid second one (6.4.x).
    let bytes = [client_frame(TEXT, false, "κόσμε".as_bytes()), client_frame(CONT, true, b"\xed\xa0\x80")].concat();
    fails_with(&s, "6.4 invalid in the last fragment", &bytes, &[], 1007);
    // Binary messages are not checked: the same bytes are read as binary.
    let mut raw = open(&s);
    let got = answers(&mut raw, &client_frame(BINARY, true, INVALID[1]));
    assert_eq!(got.len(), 1, "binary with non-UTF-8 bytes: one error reply, still open");
}

// --- 7.x close -------------------------------------------------------------------

#[test]
fn close_frames_are_echoed_and_nothing_after_them_is_read() {
    let s = server(&[]);
    // 7.1.1: a close with code 1000 is answered with 1000.
    fails_with(&s, "7.1.1", &client_frame(CLOSE, true, &[3, 232]), &[], 1000);
    // 7.1.2/7.1.3/7.1.5: frames after the close are not read (no reply).
    let bytes = [client_frame(CLOSE, true, &[3, 232]), client_frame(TEXT, true, &ping_request("late"))].concat();
    fails_with(&s, "7.1.3 a message after the close", &bytes, &[], 1000);
    let bytes = [client_frame(CLOSE, true, &[3, 232]), client_frame(PING, true, b"late")].concat();
    fails_with(&s, "7.1.4 a ping after the close", &bytes, &[], 1000);
    // 7.1.6 in spirit: a message before the close is answered first.
    let bytes = [client_frame(TEXT, true, &ping_request("before")), client_frame(CLOSE, true, &[3, 232])].concat();
    fails_with(&s, "7.1.6", &bytes, &["before"], 1000);
    // 7.3.1: an empty close: answered with 1000.
    fails_with(&s, "7.3.1 empty close", &client_frame(CLOSE, true, b""), &[], 1000);
    // 7.3.2: a 1-byte payload (a close body starts with a 2-byte code).
    fails_with(&s, "7.3.2 one-byte close", &client_frame(CLOSE, true, &[0x03]), &[], 1002);
    // 7.3.3-7.3.5: code only; with a reason; with a reason of 123 bytes.
    fails_with(&s, "7.3.3 code only", &client_frame(CLOSE, true, &[3, 232]), &[], 1000);
    fails_with(&s, "7.3.4 code and reason", &client_frame(CLOSE, true, b"\x03\xe8Hello World!"), &[], 1000);
    let long = [&[3u8, 232][..], &[b'*'; 123]].concat();
    fails_with(&s, "7.3.5 a 123-byte reason", &client_frame(CLOSE, true, &long), &[], 1000);
    // 7.3.6: a 124-byte reason makes a 126-byte control frame.
    let too_long = [&[3u8, 232][..], &[b'*'; 124]].concat();
    fails_with(&s, "7.3.6 a 124-byte reason", &client_frame(CLOSE, true, &too_long), &[], 1002);
    // 7.5.1: a reason that is not UTF-8.
    let bad = [&[3u8, 232][..], b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"].concat();
    fails_with(&s, "7.5.1 a reason that is not UTF-8", &client_frame(CLOSE, true, &bad), &[], 1007);
}

#[test]
fn valid_close_codes_are_echoed_and_invalid_ones_fail_with_1002() {
    let s = server(&[]);
    // 7.7.x: codes a peer may send (and the IANA-registered 1012-1014).
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
        fails_with(&s, &format!("7.7 close {code}"), &client_frame(CLOSE, true, &code.to_be_bytes()), &[], code);
    }
    // 7.9.x and 7.13.x: codes never sent on the wire, unassigned or out of range.
    for code in [0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65_535] {
        fails_with(&s, &format!("7.9 close {code}"), &client_frame(CLOSE, true, &code.to_be_bytes()), &[], 1002);
    }
}

// --- 9.x limits ----------------------------------------------------------------------

#[test]
fn messages_over_the_size_limit_fail_with_1009() {
    let s = server(&["--max-message-bytes", "1024"]);
    let mut raw = open(&s);
    // At the limit: accepted, whole or in fragments.
    let (req, id) = request_of_len(1024, "limit");
    assert_eq!(pong_ids(&answers(&mut raw, &client_frame(TEXT, true, &req))), std::slice::from_ref(&id));
    let bytes = [client_frame(TEXT, false, &req[..600]), client_frame(CONT, true, &req[600..])].concat();
    assert_eq!(pong_ids(&answers(&mut raw, &bytes)), [id]);
    // One byte over: one frame, or fragments that add up to it.
    let (req, _) = request_of_len(1025, "over");
    fails_with(&s, "9.x one frame over the limit", &client_frame(TEXT, true, &req), &[], 1009);
    let bytes = [client_frame(TEXT, false, &req[..600]), client_frame(CONT, true, &req[600..])].concat();
    fails_with(&s, "9.x fragments over the limit", &bytes, &[], 1009);
    let bytes = [client_frame(BINARY, false, &[0; 1000]), client_frame(CONT, false, &[0; 1000])].concat();
    fails_with(&s, "9.x binary fragments over the limit", &bytes, &[], 1009);
}

// --- the opening handshake (§4.1, §4.2) ---------------------------------------------

/// Write `bytes` (a request head, maybe frames after it) on a new
/// connection; the connection and the response head (status line and
/// headers: a 101 is followed by frames, an error by its body).
fn http(s: &Server, bytes: &[u8]) -> (TcpStream, String) {
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t.write_all(bytes).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && t.read_exact(&mut b).is_ok() {
        head.push(b[0]);
    }
    (t, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn handshake_errors_get_the_rfc_status() {
    let s = server(&[]);
    let good = "GET /stream HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // The good one, with the RFC's example key and accept value (§1.3).
    let (_, ok) = http(&s, good.as_bytes());
    assert!(
        ok.starts_with("HTTP/1.1 101 ") && ok.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{ok}"
    );
    // Header names and the upgrade token are case-insensitive; Connection is a list.
    let mixed = good
        .replace("Upgrade: websocket", "upgrade: WebSocket")
        .replace("Connection: Upgrade", "connection: keep-alive, upgrade");
    assert!(http(&s, mixed.as_bytes()).1.starts_with("HTTP/1.1 101 "), "mixed case");
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing key", good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), "400"),
        ("empty key", good.replace("dGhlIHNhbXBsZSBub25jZQ==", ""), "400"),
        ("key of 15 bytes", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"), "400"),
        ("key cut short", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ="), "400"),
        ("key of 17 bytes", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZSE="), "400"),
        ("key not base64", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!!!"), "400"),
        ("version 12", good.replace("Version: 13", "Version: 12"), "426"),
        ("version 8", good.replace("Version: 13", "Version: 8"), "426"),
        ("missing version", good.replace("Sec-WebSocket-Version: 13\r\n", ""), "426"),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), "400"),
        ("missing Upgrade", good.replace("Upgrade: websocket\r\n", ""), "400"),
        ("missing Connection", good.replace("Connection: Upgrade\r\n", ""), "400"),
        ("Upgrade not websocket", good.replace("Upgrade: websocket", "Upgrade: h2c"), "400"),
        ("Connection without upgrade", good.replace("Connection: Upgrade", "Connection: keep-alive"), "400"),
        ("POST", good.replace("GET", "POST"), "400"),
        ("PUT", good.replace("GET", "PUT"), "400"),
        ("not HTTP", "\x16\x03\x01\x00\x05hello\r\n\r\n".to_string(), "400"),
    ];
    for (label, head, status) in cases {
        let (_, out) = http(&s, head.as_bytes());
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{label}: {out:?}");
        // §4.4: a refused version is answered with the version spoken.
        assert_eq!(out.contains("\r\nSec-WebSocket-Version: 13\r\n"), status == "426", "{label}: {out:?}");
        assert!(!out.contains("Sec-WebSocket-Accept"), "{label}: {out:?}");
    }
    // Frames sent right behind the upgrade request, in the same write, are read.
    let mut bytes = good.as_bytes().to_vec();
    bytes.extend(client_frame(TEXT, true, &ping_request("pipelined")));
    let (mut t, head) = http(&s, &bytes);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(next_frame(&mut t).0, TEXT, "the welcome");
    let (op, p) = next_frame(&mut t);
    assert_eq!((op, reply_id(&p).as_deref()), (TEXT, Some("pipelined")));
}
