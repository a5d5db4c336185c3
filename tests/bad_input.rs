//! Every bad input gets a clear answer, and never hurts anyone else.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;
use util::{client_frame, raw_upgrade, read_close, read_frame, Server};

#[test]
fn bad_requests_get_error_frames_and_the_connection_stays_open() {
    let s = Server::sim();
    let mut c = s.native();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("malformed JSON", r#"{"action":"subscribe","tokens":[2885"#, "bad_request", "malformed JSON"),
        ("not an object", r#"[1,2,3]"#, "bad_request", "must be a JSON object"),
        ("missing action", r#"{"tokens":[2885]}"#, "bad_request", "missing field `action`"),
        ("action not a string", r#"{"action":5}"#, "bad_request", "field `action` must be a string"),
        ("unknown action", r#"{"action":"teleport"}"#, "unknown_action", "unknown action `teleport`"),
        (
            "tokens not an array",
            r#"{"action":"subscribe","tokens":"2885"}"#,
            "bad_request",
            "field `tokens` must be an array of integers",
        ),
        (
            "tokens with a string",
            r#"{"action":"subscribe","tokens":[2885,"x"]}"#,
            "bad_request",
            "field `tokens` must be an array of integers",
        ),
        (
            "tokens with a float",
            r#"{"action":"subscribe","tokens":[28.85]}"#,
            "bad_request",
            "field `tokens` must be an array of integers",
        ),
        (
            "symbols not strings",
            r#"{"action":"subscribe","symbols":[1]}"#,
            "bad_request",
            "field `symbols` must be an array of strings",
        ),
        ("nothing to subscribe", r#"{"action":"subscribe"}"#, "bad_request", "needs `tokens`"),
        (
            "bad mode",
            r#"{"action":"subscribe","tokens":[2885],"mode":"everything"}"#,
            "bad_request",
            "field `mode` must be one of",
        ),
        (
            "bad delivery",
            r#"{"action":"subscribe","tokens":[2885],"delivery":"sometimes"}"#,
            "bad_request",
            "field `delivery`",
        ),
        (
            "negative max_rate",
            r#"{"action":"subscribe","tokens":[2885],"max_rate":-1}"#,
            "bad_request",
            "field `max_rate`",
        ),
        ("empty text", "", "bad_request", "malformed JSON"),
    ];
    for (i, (label, text, code, msg)) in cases.iter().enumerate() {
        c.send(text);
        let e = c.recv_type("error");
        assert_eq!(e["code"], *code, "{label}: {e}");
        assert!(e["message"].as_str().unwrap().contains(msg), "{label}: {e}");
        // Still open and serving:
        let p = c.request(json!({"action": "ping"}), 1000 + i as u64);
        assert_eq!(p["type"], "pong", "{label}");
    }
    let e = c.request(json!({"action": "teleport"}), 77);
    assert_eq!((e["type"].as_str(), e["id"].as_u64()), (Some("error"), Some(77)), "errors echo the id");
    s.status_until("counted bad requests", |st| st["counters"]["bad_requests"].as_u64() >= Some(cases.len() as u64));
}

#[test]
fn unknown_tokens_and_symbols_are_rejected_per_entry() {
    let s = Server::sim();
    let mut c = s.native();
    let r = c.request(json!({"action": "subscribe", "tokens": [0, 4294967295u64, 99999999999u64, -5], "symbols": ["BSE:RELIANCE", ""]}), 1);
    let rejected = r["data"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 6, "{r}");
    assert!(rejected.iter().all(|e| e["reason"] == "unknown token" || e["reason"] == "unknown symbol"), "{r}");
    assert_eq!(r["status"], "error");
}

#[test]
fn client_binary_messages_get_an_error_and_stay_open() {
    let s = Server::sim();
    let mut c = s.native();
    c.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    let e = c.recv_type("error");
    assert_eq!(e["code"], "unsupported");
    assert_eq!(c.request(json!({"action": "ping"}), 5)["type"], "pong");
}

#[test]
fn oversized_messages_close_with_1009() {
    let s = Server::start(&["--max-message-bytes", "1024"]);
    let mut c = s.native();
    let big = format!(r#"{{"action":"subscribe","symbols":["{}"]}}"#, "A".repeat(4096));
    c.send(&big);
    let (code, reason) = c.recv_close();
    assert_eq!(code, 1009, "{reason}");
    assert!(!reason.is_empty());
    // Default limit is 64 KiB: a 100 KiB frame is refused from its header.
    let s = Server::sim();
    let mut raw = raw_upgrade(s.addr, "/stream");
    let mut hdr = vec![0x81u8, 0x80 | 127];
    hdr.extend_from_slice(&(100u64 * 1024).to_be_bytes());
    hdr.extend_from_slice(&[9, 9, 9, 9]);
    raw.write_all(&hdr).unwrap();
    assert_eq!(read_close(&mut raw).0, 1009);
    s.status_until("the oversize counted", |st| st["counters"]["oversized_messages"] == 1);
}

#[test]
fn unmasked_client_frames_close_with_1002() {
    let s = Server::sim();
    let mut raw = raw_upgrade(s.addr, "/stream");
    raw.write_all(&[0x81, 0x04, b'p', b'i', b'n', b'g']).unwrap();
    let (code, reason) = read_close(&mut raw);
    assert_eq!(code, 1002);
    assert!(reason.contains("masked"), "{reason}");
    s.status_until("the protocol error counted", |st| st["counters"]["protocol_errors"] == 1);
}

#[test]
fn protocol_violations_close_with_1002_or_1007() {
    let s = Server::sim();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("reserved opcode", client_frame(0x3, true, b"x"), 1002),
        (
            "rsv bit",
            {
                let mut f = client_frame(0x1, true, b"{}");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("orphan continuation", client_frame(0x0, true, b"x"), 1002),
        ("invalid UTF-8", client_frame(0x1, true, &[0xff, 0xfe]), 1007),
        // RFC 6455 §5.5.1: a close body starts with a 2-byte code.
        ("a one-byte close body", client_frame(0x8, true, &[0x03]), 1002),
        // §8.1: a close reason must be UTF-8.
        ("a close reason that is not UTF-8", client_frame(0x8, true, &[0x03, 0xe8, 0xff, 0xfe]), 1007),
        ("a close code never sent on the wire", client_frame(0x8, true, &1005u16.to_be_bytes()), 1002),
        ("a valid close is echoed", client_frame(0x8, true, &[0x03, 0xe8, b'b', b'y', b'e']), 1000),
    ];
    for (label, bytes, want) in cases {
        let mut raw = raw_upgrade(s.addr, "/stream");
        raw.write_all(&bytes).unwrap();
        assert_eq!(read_close(&mut raw).0, want, "{label}");
    }
}

#[test]
fn fragmented_messages_are_reassembled_and_pings_answered() {
    let s = Server::sim();
    let mut raw = raw_upgrade(s.addr, "/stream");
    assert_eq!(read_frame(&mut raw).0, 0x1, "welcome");
    let msg = br#"{"action":"ping","id":"frag"}"#;
    raw.write_all(&client_frame(0x1, false, &msg[..10])).unwrap();
    raw.write_all(&client_frame(0x9, true, b"hi")).unwrap(); // a ping between fragments
    raw.write_all(&client_frame(0x0, true, &msg[10..])).unwrap();
    let (op, payload) = read_frame(&mut raw);
    assert_eq!((op, payload.as_slice()), (0xA, &b"hi"[..]), "pong echoes the ping payload first");
    let (op, payload) = read_frame(&mut raw);
    assert_eq!(op, 0x1);
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("pong"), Some("frag")));
}

#[test]
fn client_close_is_echoed() {
    let s = Server::sim();
    let mut raw = raw_upgrade(s.addr, "/stream");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.write_all(&client_frame(0x8, true, &payload)).unwrap();
    assert_eq!(read_close(&mut raw).0, 1000);
}

#[test]
fn bad_handshakes_get_http_errors_and_others_are_served() {
    let s = Server::sim();
    // Half-finished handshake: a client that stops mid-request.
    let mut stuck = TcpStream::connect(s.addr).unwrap();
    stuck.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nUpg").unwrap();
    let answer = |req: &str| {
        let mut t = TcpStream::connect(s.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        t.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = t.read_to_string(&mut out);
        out
    };
    let cases = [
        ("garbage", "\x16\x03\x01\x02\x00hello\r\n\r\n", "400"),
        ("wrong path", "GET /nowhere HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 13\r\n\r\n", "404"),
        ("no key", "GET /stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("old version", "GET /stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 12\r\n\r\n", "426"),
        ("HTTP/1.0", "GET /stream HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("bad format", "GET /stream?format=xml HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("huge head", &format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000)), "431"),
        ("POST", "POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"),
    ];
    for (label, req, status) in cases {
        let out = answer(req);
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{label}: {out:?}");
        // RFC 6455 §4.4: a refused version is told the one this server speaks.
        assert_eq!(out.contains("\r\nSec-WebSocket-Version: 13\r\n"), status == "426", "{label}: {out:?}");
    }
    // The stuck client did not block anyone.
    let mut c = s.native();
    assert_eq!(c.request(json!({"action": "ping"}), 1)["type"], "pong");
    drop(stuck);
}

#[test]
fn abrupt_disconnects_leave_the_server_healthy() {
    let s = Server::sim();
    for round in 0..3 {
        let mut clients: Vec<_> = (0..20).map(|_| s.native()).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.request(json!({"action": "subscribe", "tokens": [2885, 11536, 1594], "mode": "depth"}), i as u64);
        }
        // Drop the TCP connections without a close handshake, some mid-frame.
        for (i, mut c) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                if let tungstenite::stream::MaybeTlsStream::Plain(sock) = c.ws.get_mut() {
                    let _ = sock.write_all(&client_frame(0x1, true, b"{\"action\":\"ping\"}")[..5]);
                }
            }
            drop(c); // no close handshake: the socket just goes away
        }
        s.status_until(&format!("round {round} cleaned up"), |st| st["connections"] == 0 && st["subscriptions"] == 0);
    }
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    c.recv_type("market_data");
}

#[test]
fn subscription_limit_rejects_the_excess_with_a_reason() {
    let s = Server::start(&["--max-subscriptions", "2"]);
    s.warm();
    let mut c = s.native();
    let r = c.request(json!({"action": "subscribe", "tokens": [2885, 11536, 1594]}), 1);
    assert_eq!(r["data"]["total_subscribed"], 2);
    let rej = &r["data"]["rejected"][0];
    assert_eq!(rej["token"], 1594);
    assert!(rej["reason"].as_str().unwrap().contains("subscription limit reached (2 per connection)"), "{r}");
    // Changing the mode of an existing subscription is not a new one.
    let r = c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 2);
    assert_eq!(r["status"], "success");
}

#[test]
fn connection_limit_answers_503() {
    let s = Server::start(&["--max-connections", "2"]);
    let _first = s.native();
    let second = s.native();
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = t.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out:?}");
    assert!(out.contains("connection limit reached (2)"), "{out:?}");
    drop(second);
    // A slot is free again: the status request itself gets in. (Polls made
    // while the server was still full are refused and counted too.)
    s.status_until("the rejection counted", |st| st["counters"]["connections_rejected"].as_u64() >= Some(1));
}

#[test]
fn a_client_that_floods_requests_without_reading_is_closed_1008() {
    let s = Server::start(&["--out-buffer-bytes", "65536"]);
    let mut raw = raw_upgrade(s.addr, "/stream");
    let ping = client_frame(0x1, true, br#"{"action":"ping","id":"flood-flood-flood"}"#);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 4000).collect();
    // Write without reading; the server must close rather than buffer forever.
    let _ = raw.set_write_timeout(Some(Duration::from_secs(5)));
    for _ in 0..20 {
        if raw.write_all(&burst).is_err() {
            break;
        }
    }
    s.status_until("the flood cut off", |st| st["connections"] == 0 && st["counters"]["policy_closes"] == 1);
}

/// Fuzz-style: thousands of mutated requests; every one is answered and the
/// connection (and server) stays up.
#[test]
fn mutated_requests_are_all_answered_and_nothing_breaks() {
    let s = Server::sim();
    let mut c = s.native();
    let seeds = [
        r#"{"action":"subscribe","tokens":[2885,11536],"mode":"quote","id":1}"#,
        r#"{"action":"unsubscribe","symbols":["NSE:RELIANCE"],"id":2}"#,
        r#"{"action":"snapshot","tokens":[1594],"mode":"depth","id":3}"#,
        r#"{"action":"subscribe","symbols":["TCS"],"max_rate":2.5,"delivery":"conflate"}"#,
    ];
    let alphabet = br#"{}[]":,0123456789-.eE aAzZ\ntrufalsn"#;
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..2000 {
        let mut b = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..rng.usize(1..5) {
            let at = rng.usize(..b.len());
            b[at] = alphabet[rng.usize(..alphabet.len())];
        }
        c.send(std::str::from_utf8(&b).unwrap());
    }
    // Replies and data interleave. Every request gets exactly one reply
    // (`error`, `subscription_response`, `snapshot` or `pong`), in order, so
    // exactly 2000 replies come before the final ping's pong.
    c.send_json(json!({"action": "ping", "id": 987654}));
    let (mut replies, mut errors) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no final pong within 60 s ({replies} replies so far)");
        let v = c.recv_json();
        match v["type"].as_str() {
            Some("pong") if v["id"] == 987654 => break,
            Some("error") => errors += 1,
            Some("subscription_response" | "snapshot" | "pong") => {}
            Some("market_data" | "gap" | "heartbeat") => continue,
            _ => panic!("not a reply nor data: {v}"),
        }
        replies += 1;
    }
    assert_eq!(replies, 2000, "one reply per request ({errors} of them errors)");
    assert!(errors > 100, "the mutations made bad requests: {errors} errors");
    // The server counted exactly the errors it answered, and no protocol error.
    let st = s.status_until(&format!("bad_requests == {errors}"), |st| st["counters"]["bad_requests"] == errors);
    assert_eq!(st["counters"]["protocol_errors"], 0, "{st}");
}

/// Regression: a 10 KB message nested 5000 deep used to overflow the
/// worker's stack (simd-json recurses) and abort the whole process.
#[test]
fn deeply_nested_json_is_refused_not_fatal() {
    let s = Server::sim();
    let mut c = s.native();
    let deep = format!(r#"{{"action":"ping","x":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    c.send(&deep);
    let e = c.recv_type("error");
    assert!(e["message"].as_str().unwrap().contains("nested deeper than 32"), "{e}");
    assert_eq!(c.request(json!({"action": "ping"}), 1)["type"], "pong");
    let mut other = s.native();
    assert_eq!(other.request(json!({"action": "ping"}), 2)["type"], "pong", "the server is still up");
}

/// Regression: `max_rate` of 1e-11 overflowed `now + interval` (a worker
/// panic in debug builds, no cap in release).
#[test]
fn max_rate_out_of_range_is_refused() {
    let s = Server::sim();
    let mut c = s.native();
    for bad in [1e-11, 0.0, 1e12] {
        let e = c.request(json!({"action": "subscribe", "tokens": [2885], "max_rate": bad}), 1);
        assert_eq!(e["type"], "error", "{bad}: {e}");
        assert!(e["message"].as_str().unwrap().contains("from 0.01 to"), "{e}");
    }
}

/// Regression: one request listing a token thousands of times produced a
/// reply 250x its size and stalled the worker.
#[test]
fn duplicate_targets_fold_and_too_many_are_refused() {
    let s = Server::start(&["--max-subscriptions", "2"]);
    s.warm();
    let mut c = s.native();
    let r = c.request(json!({"action": "snapshot", "tokens": vec![2885; 10_000], "mode": "depth"}), 1);
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "duplicates folded");
    let r = c.request(json!({"action": "subscribe", "tokens": [2885, 2885, 11536, 11536]}), 2);
    assert_eq!(r["data"]["subscribed"].as_array().unwrap().len(), 2);
    let many: Vec<u64> = (1_000_000..1_001_001).collect();
    let e = c.request(json!({"action": "snapshot", "tokens": many}), 3);
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("limit_exceeded")), "{e}");
}

/// Out of file descriptors (`prlimit --nofile=64`), accept fails and
/// connections wait in the backlog; as accepted ones close, the waiting
/// ones are accepted without any new connection arriving to wake the
/// listener, and the episode is counted once.
#[test]
fn out_of_descriptors_the_backlog_drains_as_connections_close() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new("prlimit")
        .args(["--nofile=64:64", env!("CARGO_BIN_EXE_tickcast"), "--listen", "127.0.0.1:0", "--openalgo-listen", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs the server with few descriptors");
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    let addr = util::banner_addr(&banner);
    let upgrade = "GET /stream HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut socks: Vec<Option<TcpStream>> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(upgrade.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            Some(s)
        })
        .collect();
    let mut upgraded = [false; 100];
    // Read 101s until `want` sockets in `among` have one, or the deadline.
    let settle = |socks: &mut [Option<TcpStream>], upgraded: &mut [bool; 100], secs: u64, want: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline && upgraded.iter().filter(|&&u| u).count() < want {
            for (i, s) in socks.iter_mut().enumerate() {
                let Some(s) = s.as_mut().filter(|_| !upgraded[i]) else { continue };
                if let Ok(n) = s.read(&mut buf) {
                    upgraded[i] |= buf[..n].starts_with(b"HTTP/1.1 101");
                }
            }
        }
    };
    settle(&mut socks, &mut upgraded, 3, 100);
    let first = upgraded.iter().filter(|&&u| u).count();
    assert!(first > 10 && first < 100, "the descriptor limit stops accepting part way: {first} upgraded");
    // Close 50 upgraded connections: 50 descriptors free up.
    let mut closed = 0;
    for (s, up) in socks.iter_mut().zip(&upgraded) {
        if *up && closed < 50.min(first) {
            *s = None;
            closed += 1;
        }
    }
    let waiting = 100 - first;
    let want = first + waiting.min(closed).saturating_sub(5);
    settle(&mut socks, &mut upgraded, 15, want);
    let now = upgraded.iter().filter(|&&u| u).count();
    assert!(now >= want, "the backlog drained as descriptors freed up: {first} then {now} upgraded, wanted {want}");
    let _ = child.kill();
    let _ = child.wait();
}
