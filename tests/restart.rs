//! Restarts that lose no client (`--state-file`): the real binary is
//! stopped with SIGTERM and started again on the same port and file; a
//! client that reconnects with its `client_id` gets its subscriptions back.

mod util;

use std::path::PathBuf;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use util::{free_port, Client, Server};

/// A state file path of this test's own (removed on drop).
struct StateFile(PathBuf);

impl StateFile {
    fn new(name: &str) -> StateFile {
        StateFile(std::env::temp_dir().join(format!("tickcast-state-{}-{name}.json", std::process::id())))
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(listen: &str, state: &StateFile) -> Server {
    let s = Server::start_listening(listen, &["--feed", "sim:rate=5000", "--state-file", state.arg()], &[]);
    s.warm();
    s
}

/// Read until the server's close frame; its code and reason.
fn close_of(c: &mut Client) -> (CloseCode, String) {
    loop {
        match c.ws.read() {
            Ok(Message::Close(Some(f))) => return (f.code, f.reason.to_string()),
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

/// Stop `s` with SIGTERM and wait for it to exit.
fn stop(mut s: Server) {
    s.terminate();
    assert!(s.child.wait().unwrap().success(), "a clean stop exits 0");
}

#[test]
fn a_client_id_keeps_its_subscriptions_across_a_restart() {
    let state = StateFile::new("restart");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start(&listen, &state);
    let mut c = s.connect("/stream?client_id=desk-9");
    c.recv_type("welcome");
    let ack = c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote", "delivery": "lossless"}), 1);
    assert_eq!(ack["data"]["total_subscribed"], 1);
    // A client without a client_id is closed the same way but keeps nothing.
    let mut anonymous = s.connect("/stream");
    anonymous.recv_type("welcome");
    anonymous.request(json!({"action": "subscribe", "tokens": [1594]}), 1);

    let pid = s.child.id();
    util::unsafe_free_kill(pid, "-TERM");
    let (code, reason) = close_of(&mut c);
    assert_eq!(code, CloseCode::Away, "1001 going away");
    assert!(reason.contains("restarting"), "reason {reason:?}");
    assert_eq!(close_of(&mut anonymous).0, CloseCode::Away);
    stop(s);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state.0).unwrap()).unwrap();
    assert_eq!(saved["sessions"].as_array().unwrap().len(), 1, "only the client that chose its id: {saved}");

    let s = start(&listen, &state);
    let mut again = s.connect("/stream?client_id=desk-9");
    assert_eq!(again.recv_json()["client_id"], "desk-9");
    let restored = again.recv_type("subscription_response");
    assert_eq!(restored["data"]["action"], "restore");
    assert_eq!(restored["data"]["subscribed"][0]["token"], 2885);
    // A snapshot first, then live ticks, without subscribing again.
    let first = again.recv_until("market data", |v| v["type"] == "market_data");
    assert_eq!((first["token"].as_u64(), first["snapshot"].as_bool()), (Some(2885), Some(true)));
    let live = again.recv_until("a live tick", |v| v["type"] == "market_data" && v["snapshot"].is_null());
    assert_eq!(live["token"], 2885);
    let subs = again.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(subs["data"]["subscriptions"][0]["delivery"], "lossless", "{subs}");
    assert_eq!(subs["data"]["subscriptions"][0]["mode"], "quote");
}

/// A state file that is not JSON, of another version, or with a bad
/// session is reported and ignored: the server starts without sessions,
/// and a clean stop writes a good file over it.
#[test]
fn a_bad_state_file_is_ignored_and_replaced() {
    let state = StateFile::new("bad");
    let good_sub = json!({"token": 2885, "mode": "quote", "delivery": "conflate"});
    let session =
        |subs: Value| json!({"user": "", "client_id": "desk-3", "expires_unix_ms": u64::MAX / 2, "subs": subs});
    let file = |version: u64, s: Value| json!({"format": "tickcast-sessions", "version": version, "sessions": [s]});
    let cases = [
        ("not JSON", "{\"format\": \"tickcast-sess".to_string()),
        ("another format", json!({"format": "other", "version": 1, "sessions": []}).to_string()),
        ("a future version", file(2, session(json!([good_sub]))).to_string()),
        (
            "a bad mode",
            file(1, session(json!([{"token": 2885, "mode": "full-ish", "delivery": "conflate"}]))).to_string(),
        ),
        (
            "a bad delivery",
            file(1, session(json!([{"token": 2885, "mode": "ltp", "delivery": "eventual"}]))).to_string(),
        ),
        (
            "max_rate without its interval",
            file(1, session(json!([{"token": 2885, "mode": "ltp", "delivery": "max_rate"}]))).to_string(),
        ),
        (
            "a token that is not a u32",
            file(1, session(json!([{"token": -4, "mode": "ltp", "delivery": "conflate"}]))).to_string(),
        ),
        ("no client_id", file(1, json!({"user": "", "expires_unix_ms": 1, "subs": []})).to_string()),
    ];
    for (what, text) in cases {
        std::fs::write(&state.0, &text).unwrap();
        let s = start("127.0.0.1:0", &state);
        let mut c = s.connect("/stream?client_id=desk-3");
        c.recv_type("welcome");
        let subs = c.request(json!({"action": "get_subscriptions"}), 1);
        assert_eq!(subs["data"]["total_subscribed"], 0, "{what}: nothing restored");
        drop(c);
        stop(s);
        let written: Value = serde_json::from_str(&std::fs::read_to_string(&state.0).unwrap()).unwrap();
        assert_eq!(
            (written["format"].as_str(), written["version"].as_u64()),
            (Some("tickcast-sessions"), Some(1)),
            "{what}"
        );
    }
}

/// The same across a restart for the Odin dialect's `client_id`.
#[test]
fn an_odin_client_id_keeps_its_subscriptions_across_a_restart() {
    let state = StateFile::new("odin");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start(&listen, &state);
    let mut c = s.connect("/enhanced-stream?client_id=odin_desk");
    c.recv_type("welcome");
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["RELIANCE", "TCS"]}));
    c.recv_type("subscription_response");
    util::unsafe_free_kill(s.child.id(), "-TERM");
    assert_eq!(close_of(&mut c).0, CloseCode::Away);
    stop(s);

    let s = start(&listen, &state);
    let mut c = s.connect("/enhanced-stream?client_id=odin_desk");
    c.recv_type("welcome");
    c.send_json(json!({"type": "request", "action": "get_subscriptions"}));
    let r = c.recv_type("subscription_response");
    assert_eq!(r["data"]["action"], "restore", "{r}");
    assert_eq!(r["data"]["subscribed_stocks"], json!(["RELIANCE", "TCS"]), "{r}");
    let m = c.recv_type("market_data");
    assert!(m["symbol"] == "RELIANCE" || m["symbol"] == "TCS", "{m}");
}
