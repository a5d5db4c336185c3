//! API keys (`--auth-file`): every rejection path at the handshake, per-user
//! limits, client ids scoped to their user, private channels, admin-only
//! status, and the refusal to serve a non-loopback address anonymously.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use util::{Client, Server};

/// An auth file: alice (at most 2 connections), bob, ops (admin only), pub (publish only).
fn auth_file() -> std::path::PathBuf {
    let hash = |k: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).args(["hash-key", k]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let text = format!(
        "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\nmax-connections = 2\n\n\
         [[user]]\nid = \"bob\"\nkeys = [\"{}\", \"{}\"]\n\n\
         [[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        hash("alice-key"),
        hash("bob-key"),
        hash("bob-second-key"),
        hash("ops-key"),
    );
    assert!(!text.contains("alice-key"), "keys are stored hashed");
    let path = std::env::temp_dir().join(format!("tickcast-auth-{}-{}.toml", std::process::id(), fastrand::u32(..)));
    std::fs::write(&path, text).unwrap();
    path
}

/// Send an upgrade request with `extra` headers; the response status.
fn upgrade_status(s: &Server, path: &str, extra: &str) -> (u16, String) {
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        t,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = t.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    (text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), text)
}

fn status(s: &Server) -> Value {
    let (code, body) = s.get("/status?api_key=ops-key");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn handshake_rejections_and_acceptances() {
    let file = auth_file();
    let s = Server::start(&["--feed", "sim:rate=2000", "--auth-file", file.to_str().unwrap()]);
    for path in ["/stream", "/enhanced-stream?client_id=x", "/live-stream?tokens=2885", "/ws", "/api/ws/prices", "/"] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (code, text) = upgrade_status(&s, path, "");
        assert_eq!(code, 401, "{path} without a key: {text}");
        assert!(text.contains("an API key is required"), "{text}");
        assert!(!text.contains("101"), "no upgrade");
        let (code, text) = upgrade_status(&s, &format!("{path}{sep}api_key=wrong"), "");
        assert_eq!(code, 401, "{path} wrong key: {text}");
        assert!(text.contains("invalid API key"));
        // Admin-only keys may not subscribe.
        let (code, _) = upgrade_status(&s, &format!("{path}{sep}api_key=ops-key"), "");
        assert_eq!(code, 401, "{path} with an admin-only key");
        let (code, text) = upgrade_status(&s, &format!("{path}{sep}api_key=bob-key"), "");
        assert_eq!(code, 101, "{path} with a good key: {text}");
        let (code, text) = upgrade_status(&s, path, "Authorization: Bearer bob-second-key\r\n");
        assert_eq!(code, 101, "{path} with a Bearer key: {text}");
    }
    let (code, _) = upgrade_status(&s, "/stream", "Authorization: Bearer nope\r\n");
    assert_eq!(code, 401);
    // Counted; /status itself needs an admin key.
    assert_eq!(s.get("/status").0, 401);
    assert_eq!(s.get("/metrics?api_key=bob-key").0, 401);
    assert_eq!(s.get("/healthz").0, 200, "health stays open for load balancers");
    let st = status(&s);
    let failures = st["counters"]["auth_failures"].as_u64().unwrap();
    assert!(failures >= 19, "6 paths × 3 refusals + 1 Bearer: {}", st["counters"]);
    assert_eq!(st["auth"], "api_keys");
    let (code, metrics) = s.get("/metrics");
    assert_eq!(code, 401, "{metrics}");
}

#[test]
fn per_user_connection_limit() {
    let file = auth_file();
    let s = Server::start(&["--feed", "sim:rate=500", "--auth-file", file.to_str().unwrap()]);
    let a = s.connect("/stream?api_key=alice-key");
    let b = s.connect("/stream?api_key=alice-key");
    let (code, text) = upgrade_status(&s, "/stream?api_key=alice-key", "");
    assert_eq!(code, 429, "{text}");
    assert!(text.contains("user alice is at its connection limit (2)"), "{text}");
    // Other users are unaffected; closing one of alice's frees a slot.
    assert_eq!(upgrade_status(&s, "/stream?api_key=bob-key", "").0, 101);
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        if upgrade_status(&s, "/stream?api_key=alice-key", "").0 == 101 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "alice's slot came back after a disconnect");
    drop(b);
    assert!(status(&s)["counters"]["limit_rejections"].as_u64().unwrap() >= 1);
}

#[test]
fn a_client_id_belongs_to_its_user() {
    let file = auth_file();
    let s = Server::start(&["--feed", "sim:rate=2000", "--auth-file", file.to_str().unwrap()]);
    let mut alice = s.connect("/stream?client_id=shared-name&api_key=alice-key");
    alice.recv_type("welcome");
    let r = alice.request(json!({"action": "subscribe", "tokens": [2885, 11536]}), 1);
    assert_eq!(r["data"]["total_subscribed"], 2);
    drop(alice);
    // Alice's session is saved when the server drops her connection.
    s.status_until("alice's disconnect", |st| st["connections"] == 0);
    // Bob guesses the id: he gets a fresh session, not alice's.
    let mut bob = s.connect("/stream?client_id=shared-name&api_key=bob-key");
    bob.recv_type("welcome");
    let r = bob.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(r["data"]["total_subscribed"], 0, "{r}");
    drop(bob);
    // Alice gets hers back.
    let mut back = None;
    for _ in 0..50 {
        let mut a = s.connect("/stream?client_id=shared-name&api_key=alice-key");
        a.recv_type("welcome");
        let r = a.request(json!({"action": "get_subscriptions"}), 3);
        if r["data"]["total_subscribed"] == 2 {
            back = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(back.is_some(), "alice's session was restored");
}

#[test]
fn private_channels_reach_only_their_user() {
    let file = auth_file();
    let port = util::free_port();
    let publish = format!("127.0.0.1:{port}");
    let s =
        Server::start(&["--feed", "sim:rate=500", "--auth-file", file.to_str().unwrap(), "--publish-listen", &publish]);
    let mut alice = s.connect("/stream?api_key=alice-key");
    alice.recv_type("welcome");
    let mut bob = s.connect("/stream?api_key=bob-key");
    bob.recv_type("welcome");
    let r = alice.request(json!({"action": "subscribe", "channels": ["private:alice:orders", "signals"]}), 1);
    assert_eq!(r["data"]["rejected"], json!([]), "{r}");
    let r = bob
        .request(json!({"action": "subscribe", "channels": ["private:alice:orders", "private:alice", "signals"]}), 1);
    assert_eq!(r["data"]["subscribed"], json!([{"channel": "signals"}]), "{r}");
    assert_eq!(
        r["data"]["rejected"],
        json!([{"channel": "private:alice:orders", "reason": "private channel of another user"},
               {"channel": "private:alice", "reason": "private channel of another user"}])
    );
    let mut p = TcpStream::connect(&publish).unwrap();
    for i in 0..3 {
        writeln!(p, "{}", json!({"channel": "private:alice:orders", "data": {"order": i}})).unwrap();
    }
    writeln!(p, "{}", json!({"channel": "signals", "data": {"marker": true}})).unwrap();
    let got = alice.recv_until("the third order", |v| v["type"] == "channel" && v["data"]["order"] == 2);
    assert_eq!(got["channel"], "private:alice:orders");
    // Bob sees the public marker but never an order.
    let until_marker = |c: &mut Client| {
        c.recv_until("the public marker", |v| {
            assert_ne!(v["channel"], "private:alice:orders", "private data leaked: {v}");
            v["type"] == "channel" && v["data"]["marker"] == true
        })
    };
    until_marker(&mut bob);
}

#[test]
fn non_loopback_needs_keys_or_an_explicit_opt_out() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tickcast"))
            .args(["--openalgo-listen", "off", "--feed", "sim:rate=10"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve 0.0.0.0:0") && err.contains("--allow-anonymous"), "{err}");
    let out = run(&["--listen", "127.0.0.1:0", "--openalgo-listen", "0.0.0.0:0"]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "the OpenAlgo listener counts too");
    // With the opt-out (or keys) it starts.
    for extra in [vec!["--allow-anonymous"], vec!["--auth-file", auth_file().to_str().unwrap()]] {
        let mut args = vec!["--listen", "0.0.0.0:0"];
        args.extend(extra.iter().copied());
        let mut child = run(&args);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.contains("listening on ws://0.0.0.0:"), "{line}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn bad_auth_files_fail_at_start() {
    let path = std::env::temp_dir().join(format!("tickcast-badauth-{}.toml", std::process::id()));
    std::fs::write(&path, "[[user]]\nid = \"eve\"\nkeys = [\"plaintext-key\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off", "--auth-file", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not `sha256:<64 hex digits>`") && err.contains("hash-key"), "{err}");
}
