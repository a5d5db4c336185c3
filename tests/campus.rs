//! The campus prices dialect (seed `002_…`): the seed's flow replayed
//! against the real binary, its limits (100 subscriptions, 10 changes a
//! minute, idle timeout) and bad input.

mod util;

use serde_json::{json, Value};
use tungstenite::Message;
use util::{Client, Server};

fn reply(c: &mut Client) -> Value {
    c.recv_type("subscription")
}

fn price_for(c: &mut Client, key: &str) -> Value {
    c.recv_until(key, |v| v["type"] == "price_update" && v["instrument_key"] == key)
}

#[test]
fn seed_flow_status_subscribe_price_updates_unsubscribe() {
    let s = Server::sim();
    let mut c = s.connect("/api/ws/prices");
    assert_eq!(
        c.recv_json(),
        json!({"type": "status", "status": "connected", "message": "Live market data connected"})
    );
    // Plain HTTP polls are not protocol connections: exactly one campus client.
    s.status_until("one campus connection", |st| {
        st["connections_by_dialect"]["campus"] == 1 && st["connections_by_dialect"]["native"] == 0
    });
    c.send_json(json!({"action": "subscribe", "instruments": ["NSE_EQ|INE002A01018", "NSE_EQ|INE467B01029"]}));
    let r = reply(&mut c);
    assert_eq!(r["instruments"], json!(["NSE_EQ|INE002A01018", "NSE_EQ|INE467B01029"]), "{r}");
    assert_eq!(r["total"], 2);
    for key in ["NSE_EQ|INE002A01018", "NSE_EQ|INE467B01029"] {
        let p = price_for(&mut c, key);
        let obj = p.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["type", "instrument_key", "data"], "{p}");
        let d = p["data"].as_object().unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["last_price", "timestamp", "change_percent", "volume"], "{p}");
        assert!(d["last_price"].as_f64().unwrap() > 0.0);
        assert!(d["change_percent"].is_number() && d["volume"].is_u64());
        let ts = d["timestamp"].as_str().unwrap();
        assert!(ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");
    }
    // An index by its symbol.
    c.send_json(json!({"action": "subscribe", "instruments": ["NSE_INDEX|NIFTY"]}));
    assert_eq!(reply(&mut c)["instruments"], json!(["NSE_INDEX|NIFTY"]));
    price_for(&mut c, "NSE_INDEX|NIFTY");
    c.send_json(json!({"action": "unsubscribe", "instruments": ["NSE_EQ|INE002A01018"]}));
    let r = reply(&mut c);
    assert_eq!((r["action"].as_str(), r["total"].as_u64()), (Some("unsubscribe"), Some(2)), "{r}");
    for _ in 0..200 {
        let p = c.recv_type("price_update");
        assert_ne!(p["instrument_key"], "NSE_EQ|INE002A01018", "data after unsubscribe");
    }
}

#[test]
fn bad_input_gets_an_error_and_the_connection_stays() {
    let s = Server::sim();
    let mut c = s.connect("/api/ws/prices");
    c.recv_type("status");
    let cases: &[(&str, &str)] = &[
        ("{oops", "malformed JSON"),
        ("\"subscribe\"", "JSON object"),
        (r#"{"instruments":[]}"#, "missing field `action`"),
        (r#"{"action":1}"#, "`action` must be a string"),
        (r#"{"action":"buy"}"#, "unknown action `buy`"),
        (r#"{"action":"subscribe"}"#, "missing field `instruments`"),
        (r#"{"action":"subscribe","instruments":"NSE_EQ|INE002A01018"}"#, "must be an array"),
        (r#"{"action":"subscribe","instruments":[5]}"#, "array of strings"),
    ];
    for (text, want) in cases {
        c.send(text);
        let e = c.recv_type("error");
        assert!(e["message"].as_str().unwrap().contains(want), "{text}: {e}");
    }
    c.ws.send(Message::binary(vec![0u8; 4])).unwrap();
    assert!(c.recv_type("error")["message"].as_str().unwrap().contains("binary"));
    // Unknown keys are listed, known ones subscribed.
    c.send_json(json!({"action": "subscribe", "instruments": ["NSE_EQ|INE000000000", "BSE_EQ|INE002A01018", "NSE_EQ|INE009A01021", "garbage"]}));
    let r = reply(&mut c);
    assert_eq!(r["instruments"], json!(["NSE_EQ|INE009A01021"]), "{r}");
    let failed: Vec<&str> =
        r["failed"].as_array().unwrap().iter().map(|f| f["instrument_key"].as_str().unwrap()).collect();
    assert_eq!(failed, ["NSE_EQ|INE000000000", "BSE_EQ|INE002A01018", "garbage"]);
    price_for(&mut c, "NSE_EQ|INE009A01021");
}

#[test]
fn ten_subscription_changes_a_minute_then_1008() {
    let s = Server::sim();
    let mut c = s.connect("/api/ws/prices");
    c.recv_type("status");
    for i in 0..10 {
        let action = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        c.send_json(json!({"action": action, "instruments": ["NSE_EQ|INE002A01018"]}));
        assert_eq!(reply(&mut c)["action"], action);
    }
    c.send_json(json!({"action": "subscribe", "instruments": ["NSE_EQ|INE002A01018"]}));
    let e = c.recv_type("error");
    assert!(e["message"].as_str().unwrap().contains("at most 10 subscription changes per minute"), "{e}");
    let (code, reason) = c.recv_close();
    assert_eq!(code, 1008, "{reason}");
    // Other connections are unaffected.
    let mut other = s.connect("/api/ws/prices");
    other.recv_type("status");
    other.send_json(json!({"action": "subscribe", "instruments": ["NSE_EQ|INE002A01018"]}));
    assert_eq!(reply(&mut other)["total"], 1);
}

#[test]
fn at_most_100_subscriptions() {
    // A master of 120 instruments with made-up ISINs.
    let dir = std::env::temp_dir().join(format!("tickcast-campus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let master = dir.join("master.csv");
    let mut csv = String::from("token,exchange,symbol,name,isin,tick_size,lot_size,price_decimals,ref_price\n");
    for i in 0..120 {
        csv.push_str(&format!("{},NSE,SYM{i},Company {i},INE{i:04}A0101,0.05,1,2,100.00\n", 1000 + i));
    }
    std::fs::write(&master, csv).unwrap();
    let s = Server::start(&["--master", master.to_str().unwrap(), "--feed", "sim:rate=2000"]);
    let mut c = s.connect("/api/ws/prices");
    c.recv_type("status");
    let keys: Vec<String> = (0..105).map(|i| format!("NSE_EQ|INE{i:04}A0101")).collect();
    c.send_json(json!({"action": "subscribe", "instruments": keys}));
    let r = reply(&mut c);
    assert_eq!(r["total"], 100, "{}", r["failed"]);
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 5);
    assert!(failed[0]["reason"].as_str().unwrap().contains("subscription limit reached (100 per user)"));
    // Unsubscribing makes room again.
    c.send_json(json!({"action": "unsubscribe", "instruments": [&keys[0]]}));
    assert_eq!(reply(&mut c)["total"], 99);
    c.send_json(json!({"action": "subscribe", "instruments": [&keys[104]]}));
    assert_eq!(reply(&mut c)["total"], 100);
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let s = Server::start(&["--feed", "sim:rate=500", "--campus-idle-timeout-secs", "1"]);
    let mut c = s.connect("/api/ws/prices");
    c.recv_type("status");
    c.send_json(json!({"action": "subscribe", "instruments": ["NSE_EQ|INE002A01018"]}));
    reply(&mut c);
    // Data keeps flowing, but the client says nothing: closed with a status first.
    let st = c.recv_until("the idle notice", |v| v["type"] == "status");
    assert_eq!(st["status"], "disconnected", "{st}");
    let (code, reason) = c.recv_close();
    assert_eq!((code, reason.as_str()), (1000, "idle timeout"));
}
