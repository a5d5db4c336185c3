//! The Odin dialect (seed `000_…`): the seed's conversation replayed message
//! by message against the real binary, bad input, the reconnect flow, and
//! the seed's own Python client (`tests/python/odin_client.py`).

mod util;

use serde_json::{json, Value};
use tungstenite::Message;
use util::{Client, Server};

/// Read until a `subscription_response`, skipping market data.
fn response(c: &mut Client) -> Value {
    c.recv_type("subscription_response")
}

/// Read market data until every symbol in `want` has been seen.
fn data_for(c: &mut Client, want: &[&str]) {
    let mut left: Vec<&str> = want.to_vec();
    while !left.is_empty() {
        let m = c.recv_type("market_data");
        assert!(m["data"]["ltp"].is_number(), "{m}");
        assert!(m["token"].is_string() && m["timestamp"].is_string(), "{m}");
        left.retain(|s| m["symbol"] != *s);
    }
}

#[test]
fn seed_conversation_on_the_enhanced_stream() {
    let s = Server::sim();
    let mut c = s.connect("/enhanced-stream?client_id=trading_app_123");
    // 1. Initial connection: the welcome, exactly as the seed shows it.
    let welcome = c.recv_json();
    assert_eq!(
        welcome,
        json!({
          "type": "welcome",
          "status": "connected",
          "client_id": "trading_app_123",
          "data": {
            "message": "Connected to Odin Streamer Enhanced WebSocket",
            "features": ["dynamic_subscriptions", "market_hours_control", "persistent_connection"],
            "market_open": true,
            "instructions": {
              "subscribe": "{\"type\": \"request\", \"action\": \"subscribe\", \"stocks\": [\"RELIANCE\", \"TCS\"]}",
              "unsubscribe": "{\"type\": \"request\", \"action\": \"unsubscribe\", \"stocks\": [\"RELIANCE\"]}",
              "ping": "{\"type\": \"request\", \"action\": \"ping\"}"
            }
          }
        })
    );
    // 2. Subscribe.
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["RELIANCE", "TCS", "INFY"]}));
    assert_eq!(
        response(&mut c),
        json!({"type": "subscription_response", "status": "success",
               "data": {"action": "subscribe", "subscribed_stocks": ["RELIANCE", "TCS", "INFY"], "total_subscribed": 3}})
    );
    data_for(&mut c, &["RELIANCE", "TCS", "INFY"]);
    // 3. Add more later.
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["WIPRO", "HDFCBANK"]}));
    assert_eq!(
        response(&mut c),
        json!({"type": "subscription_response", "status": "success",
               "data": {"action": "subscribe", "subscribed_stocks": ["WIPRO", "HDFCBANK"], "total_subscribed": 5}})
    );
    // 4. Remove some.
    c.send_json(json!({"type": "request", "action": "unsubscribe", "stocks": ["TCS", "INFY"]}));
    let r = response(&mut c);
    assert_eq!(r["data"]["unsubscribed_stocks"], json!(["TCS", "INFY"]), "{r}");
    assert_eq!(r["data"]["total_subscribed"], 3);
    // 5. Current subscriptions.
    c.send_json(json!({"type": "request", "action": "get_subscriptions"}));
    let r = response(&mut c);
    assert_eq!(r["data"]["subscribed_stocks"], json!(["RELIANCE", "WIPRO", "HDFCBANK"]), "{r}");
    // Tokens, as strings (the seed's form) and numbers; 476 is not in the
    // bundled master and is reported, the rest subscribed.
    c.send_json(json!({"type": "request", "action": "subscribe", "tokens": ["476", "11536", 1594]}));
    let r = response(&mut c);
    assert_eq!(r["status"], "success");
    assert_eq!(r["data"]["subscribed_stocks"], json!(["TCS", "INFY"]), "{r}");
    assert_eq!(r["data"]["failed_stocks"], json!([{"stock": "476", "reason": "unknown token"}]));
    assert_eq!(r["data"]["total_subscribed"], 5);
    // Best-practice form without `type`.
    c.send_json(json!({"action": "subscribe", "tokens": ["3045"]}));
    assert_eq!(response(&mut c)["data"]["subscribed_stocks"], json!(["SBIN"]));
    // Ping.
    c.send_json(json!({"type": "request", "action": "ping"}));
    let pong = c.recv_type("pong");
    assert!(pong["timestamp"].is_string(), "{pong}");
    // After an unsubscribe no more data for it arrives (read a while of data).
    c.send_json(json!({"type": "request", "action": "unsubscribe", "stocks": ["SBIN"]}));
    response(&mut c);
    for _ in 0..200 {
        let m = c.recv_type("market_data");
        assert_ne!(m["symbol"], "SBIN", "data after unsubscribe");
    }
}

#[test]
fn same_client_id_gets_its_subscriptions_back() {
    let s = Server::sim();
    let cid = format!("reconnect_{}", std::process::id());
    let mut c = s.connect(&format!("/enhanced-stream?client_id={cid}"));
    c.recv_type("welcome");
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["RELIANCE", "TCS"]}));
    response(&mut c);
    drop(c);
    // The session is saved when the server sees the disconnect.
    let mut back = None;
    for _ in 0..50 {
        let mut c = s.connect(&format!("/enhanced-stream?client_id={cid}"));
        c.recv_type("welcome");
        c.send_json(json!({"type": "request", "action": "get_subscriptions"}));
        let r = c.recv_type("subscription_response");
        if r["data"]["action"] == "restore" {
            back = Some((c, r));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (mut c, r) = back.expect("the reconnect restored the subscriptions");
    assert_eq!(r["data"]["subscribed_stocks"], json!(["RELIANCE", "TCS"]), "{r}");
    data_for(&mut c, &["RELIANCE", "TCS"]);
}

#[test]
fn live_stream_subscribes_from_the_url() {
    let s = Server::sim();
    let mut c = s.connect("/live-stream?tokens=476,11536,1594");
    let w = c.recv_type("welcome");
    assert_eq!(w["data"]["market_open"], true);
    let r = response(&mut c);
    assert_eq!(r["data"]["subscribed_stocks"], json!(["TCS", "INFY"]), "{r}");
    data_for(&mut c, &["TCS", "INFY"]);
    let mut c = s.connect("/live-stream?stocks=RELIANCE,TCS");
    assert_eq!(response(&mut c)["data"]["subscribed_stocks"], json!(["RELIANCE", "TCS"]));
    data_for(&mut c, &["RELIANCE", "TCS"]);
}

#[test]
fn bad_input_gets_an_error_and_the_connection_stays() {
    let s = Server::sim();
    let mut c = s.connect("/enhanced-stream?client_id=bad_input");
    c.recv_type("welcome");
    let cases: &[(&str, &str)] = &[
        ("{not json", "malformed JSON"),
        ("[1,2]", "JSON object"),
        (r#"{"type":"request"}"#, "missing field `action`"),
        (r#"{"type":"request","action":7}"#, "`action` must be a string"),
        (r#"{"type":"request","action":"dance"}"#, "unknown action `dance`"),
        (r#"{"type":"reply","action":"ping"}"#, "`type` must be \"request\""),
        (r#"{"type":"request","action":"subscribe"}"#, "needs `stocks`"),
        (r#"{"type":"request","action":"subscribe","stocks":"RELIANCE"}"#, "`stocks` must be an array"),
        (r#"{"type":"request","action":"subscribe","stocks":[1]}"#, "array of strings"),
        (r#"{"type":"request","action":"subscribe","tokens":[true]}"#, "token numbers or strings"),
    ];
    for (text, want) in cases {
        c.send(text);
        let e = c.recv_type("error");
        assert_eq!(e["status"], "error");
        assert!(e["message"].as_str().unwrap().contains(want), "{text}: {e}");
    }
    c.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert!(c.recv_type("error")["message"].as_str().unwrap().contains("binary"));
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["NOSUCHSTOCK"]}));
    let r = response(&mut c);
    assert_eq!(r["status"], "error");
    assert_eq!(r["data"]["failed_stocks"], json!([{"stock": "NOSUCHSTOCK", "reason": "unknown symbol"}]));
    // Still serving.
    c.send_json(json!({"type": "request", "action": "subscribe", "stocks": ["TCS"]}));
    assert_eq!(response(&mut c)["status"], "success");
    data_for(&mut c, &["TCS"]);
    let bad = s.get("/status");
    let v: Value = serde_json::from_str(&bad.1).unwrap();
    assert!(v["counters"]["bad_requests"].as_u64().unwrap() >= 12, "{v}");
}

#[test]
fn the_seed_python_client_works_unchanged() {
    let s = Server::start(&["--feed", "sim:rate=5000"]);
    let stdout = util::run_client("python3", "python/odin_client.py", &[&s.addr.to_string()]);
    assert!(stdout.contains("OK"), "odin_client.py did not finish:\n{stdout}");
}

#[test]
fn the_seed_javascript_client_works_unchanged_under_node() {
    let s = Server::start(&["--feed", "sim:rate=5000"]);
    let stdout = util::run_client("node", "node/odin_client.js", &[&s.addr.to_string()]);
    assert!(stdout.contains("OK"), "odin_client.js did not finish:\n{stdout}");
}
