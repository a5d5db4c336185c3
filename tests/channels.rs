//! Named channels and the publish port: co-located processes publish NDJSON,
//! WebSocket clients subscribe by channel name.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use util::Server;

fn publisher(s: &Server) -> TcpStream {
    let p = TcpStream::connect(s.publish_addr()).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    p
}

fn next_channel(c: &mut util::Client) -> Value {
    c.recv_until("a channel message", |v| v["type"] == "channel")
}

#[test]
fn published_signals_reach_only_their_channel_subscribers() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0"]);
    let mut a = s.native();
    let mut b = s.native();
    let r = a.request(json!({"action": "subscribe", "channels": ["signals"]}), 1);
    assert_eq!(r["data"]["subscribed"], json!([{"channel": "signals"}]));
    b.request(json!({"action": "subscribe", "channels": ["trades"]}), 1);
    let mut p = publisher(&s);
    p.write_all(b"{\"channel\":\"signals\",\"data\":{\"symbol\":\"RELIANCE\",\"side\":\"buy\",\"qty\":10}}\n").unwrap();
    p.write_all(b"{\"channel\":\"trades\",\"data\":{\"id\":77}}\n{\"channel\":\"signals\",\"data\":[1,2,3]}\n")
        .unwrap();
    let m1 = next_channel(&mut a);
    assert_eq!((m1["channel"].as_str(), m1["seq"].as_u64()), (Some("signals"), Some(1)));
    assert_eq!(m1["data"], json!({"symbol": "RELIANCE", "side": "buy", "qty": 10}));
    assert!(m1["ts"].as_u64().unwrap() > 0);
    let m2 = next_channel(&mut a);
    assert_eq!((m2["seq"].as_u64(), &m2["data"]), (Some(2), &json!([1, 2, 3])));
    let t = next_channel(&mut b);
    assert_eq!((t["channel"].as_str(), t["data"]["id"].as_u64()), (Some("trades"), Some(77)));
    // b never sees a signal. The last signal reached a before b's pings are
    // sent, so b's worker drains it in the turn answering the first ping and
    // would flush it before the second pong: every message b reads up to
    // that pong is checked.
    for id in [9, 10] {
        b.send_json(json!({"action": "ping", "id": id}));
        let v = b.recv_until("pong", |v| {
            assert_ne!(v["type"], "channel", "b is subscribed to trades only: {v}");
            v["type"] == "pong"
        });
        assert_eq!(v["id"], id, "{v}");
    }
    let subs = a.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(subs["data"]["subscriptions"], json!([{"channel": "signals"}]));
    let r = a.request(json!({"action": "unsubscribe", "channels": ["signals", "nope"]}), 3);
    assert_eq!(r["data"]["unsubscribed"], json!([{"channel": "signals"}]));
    assert_eq!(r["data"]["rejected"][0]["reason"], "not subscribed");
}

#[test]
fn bad_publish_lines_are_answered_and_the_publisher_carries_on() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0"]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "channels": ["signals"]}), 1);
    let mut p = publisher(&s);
    let lines = [
        "not json at all",
        r#"{"channel":"bad name!","data":1}"#,
        r#"{"tick":{"token":99999999,"ltp":1}}"#,
        r#"{"tick":{"token":2885,"ltp":"high"}}"#,
        r#"{"hello":"world"}"#,
        r#"{"channel":"signals","data":{"ok":true}}"#,
    ];
    for l in lines {
        writeln!(p, "{l}").unwrap();
    }
    let mut replies = BufReader::new(p.try_clone().unwrap());
    let expect =
        ["malformed JSON", "channel names are", "unknown token 99999999", "`tick.ltp` must be a number", "a line is"];
    for (i, want) in expect.iter().enumerate() {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "line {}: {v}", i + 1);
        assert_eq!(v["line"], i as u64 + 1);
    }
    assert_eq!(next_channel(&mut c)["data"], json!({"ok": true}), "the good line after the bad ones");
    s.status_until("rejections counted", |st| {
        st["feeds"].as_array().unwrap().iter().any(|f| f["kind"] == "publish" && f["rejected"] == 5)
    });
}

#[test]
fn ticks_published_as_json_reach_instrument_subscribers() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0", "--feed", "udp://127.0.0.1:0"]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    let mut p = publisher(&s);
    p.write_all(b"{\"tick\":{\"token\":2885,\"ltp\":2850.5,\"volume\":100,\"bid\":2850.45,\"ask\":2850.55,\"ts\":1763712000000000000}}\n").unwrap();
    p.write_all(b"{\"tick\":{\"token\":2885,\"ltp\":2851,\"volume\":150}}\n").unwrap();
    let f = c.recv_until("market data", |v| v["type"] == "market_data");
    assert_eq!((f["seq"].as_u64(), f["ts"].as_u64()), (Some(1), Some(1_763_712_000_000_000_000)));
    assert_eq!((f["data"]["ltp"].as_f64(), f["data"]["bid"].as_f64()), (Some(2850.5), Some(2850.45)));
    let g = c.recv_until("market data", |v| v["type"] == "market_data");
    assert_eq!(
        (g["seq"].as_u64(), g["data"]["ltp"].as_f64(), g["data"]["bid"].as_f64()),
        (Some(2), Some(2851.0), Some(2850.45))
    );
}

#[test]
fn bad_channel_subscriptions_are_rejected_per_entry() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0", "--max-channels", "1"]);
    let mut c = s.native();
    let r = c.request(json!({"action": "subscribe", "channels": ["ok", "second", "spaces are bad"]}), 1);
    assert_eq!(r["data"]["subscribed"], json!([{"channel": "ok"}]));
    let reasons: Vec<&str> =
        r["data"]["rejected"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "channel limit reached",
            "channel names are 1-128 characters of A-Z a-z 0-9 _ @ : . | - (not starting with tcf1:)"
        ]
    );
    c.send(r#"{"action":"subscribe","channels":"signals"}"#);
    assert!(c.recv_type("error")["message"].as_str().unwrap().contains("`channels` must be an array of strings"));
}

#[test]
fn channels_count_toward_the_subscription_limit() {
    let s = Server::start(&["--max-subscriptions", "2"]);
    let mut c = s.native();
    let r = c.request(json!({"action": "subscribe", "tokens": [2885], "channels": ["a", "b"]}), 1);
    assert_eq!(
        r["data"]["subscribed"],
        json!([{"token": 2885, "symbol": "RELIANCE", "exchange": "NSE", "mode": "ltp"}, {"channel": "a"}])
    );
    assert_eq!(
        r["data"]["rejected"],
        json!([{"channel": "b", "reason": "subscription limit reached (2 per connection)"}])
    );
    assert_eq!(r["data"]["total_subscribed"], 2);
    let again = c.request(json!({"action": "subscribe", "channels": ["a"]}), 2);
    assert_eq!(again["data"]["subscribed"], json!([{"channel": "a"}]), "re-subscribing is not a new subscription");
    let r = c.request(json!({"action": "subscribe", "tokens": [11536]}), 3);
    assert!(r["data"]["rejected"][0]["reason"].as_str().unwrap().contains("subscription limit reached"), "{r}");
}

/// Regression: `seq` at u64::MAX made the next tick line overflow and kill
/// the publish thread (debug) or wrap (release).
#[test]
fn publish_port_refuses_seq_that_does_not_advance() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0"]);
    let mut p = publisher(&s);
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":1,"seq":18446744073709551615}}}}"#).unwrap();
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":2}}}}"#).unwrap();
    writeln!(p, r#"{{"tick":{{"token":11536,"ltp":3,"seq":5}}}}"#).unwrap();
    writeln!(p, r#"{{"tick":{{"token":11536,"ltp":4,"seq":5}}}}"#).unwrap();
    let mut replies = BufReader::new(p.try_clone().unwrap());
    for want in ["exhausted", "is not after the last one (5)"] {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert!(line.contains(want), "{line}");
    }
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "channels": ["alive"]}), 1);
    writeln!(p, r#"{{"channel":"alive","data":1}}"#).unwrap();
    assert_eq!(next_channel(&mut c)["data"], 1, "the publish thread is still running");
}

/// No silent loss: after a burst far larger than the channel ring, every
/// seq is either delivered or inside a `gap` notice.
#[test]
fn a_channel_burst_is_delivered_or_reported_as_a_gap() {
    let s = Server::start(&["--publish-listen", "127.0.0.1:0"]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "channels": ["burst"]}), 1);
    let mut p = publisher(&s);
    const N: u64 = 20_000;
    let burst: String = (0..N).map(|i| format!("{{\"channel\":\"burst\",\"data\":{i}}}\n")).collect();
    p.write_all(burst.as_bytes()).unwrap();
    let mut covered = vec![false; N as usize + 1];
    let mut last = 0;
    while last < N {
        let v = c.recv_until("burst traffic", |v| v["type"] == "channel" || v["type"] == "gap");
        if v["type"] == "gap" {
            let (from, to) = (v["from_seq"].as_u64().unwrap(), v["to_seq"].as_u64().unwrap());
            for q in from..=to {
                covered[q as usize] = true;
            }
        } else {
            last = v["seq"].as_u64().unwrap();
            covered[last as usize] = true;
        }
    }
    let silent: Vec<usize> = (1..=N as usize).filter(|&q| !covered[q]).take(5).collect();
    assert!(silent.is_empty(), "seqs lost without a gap notice, e.g. {silent:?}");
}
