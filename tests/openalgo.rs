//! The OpenAlgo dialect (seed `003_…`) on its own listener: the seed's
//! conversation replayed message by message with exact ticks from a UDP
//! feed, the official SDK's message forms, the LTP throttle, every
//! rejection path, keepalive, the client limit, and the official
//! `openalgo` Python SDK itself.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickcast::feed::tcf1;
use tickcast::tick::{Level, Tick, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};
use tungstenite::Message;
use util::{client_frame, read_frame, Client, Server};

/// 2024-12-04T10:30:00 IST, the seed's example timestamp.
const SEED_TS_NS: u64 = 1_733_288_400_000_000_000;

/// The seed's RELIANCE quote (`n` shifts ltp by n paise and adds volume).
fn reliance(n: u64) -> Tick {
    let mut t = Tick {
        token: 2885,
        seq: n + 1,
        ts_ns: SEED_TS_NS,
        ltp: 285050 + n as i64,
        ltq: 10,
        volume: 1_500_000 + n,
        bid: 285045,
        ask: 285055,
        bid_qty: 500,
        ask_qty: 750,
        open: 282000,
        high: 286000,
        low: 281500,
        close: 284825,
        flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
        depth_levels: 5,
        ..Tick::default()
    };
    for i in 0..5 {
        t.depth.bids[i] = Level { price: 285045 - 5 * i as i64, qty: 100 + i as u32, orders: 1 + i as u32 };
        t.depth.asks[i] = Level { price: 285055 + 5 * i as i64, qty: 200 + i as u32, orders: 2 + i as u32 };
    }
    t
}

/// A TCS tick (used as a fence: its frame comes after earlier ticks' frames).
fn tcs(seq: u64) -> Tick {
    Tick { token: 11536, seq, ts_ns: SEED_TS_NS, ltp: 412000, close: 410000, flags: FLAG_QUOTE, ..Tick::default() }
}

fn packet(packet_seq: u64, ticks: &[Tick]) -> Vec<u8> {
    let mut out = Vec::new();
    tcf1::write_packet(&mut out, packet_seq, ticks);
    out
}

/// A server fed by UDP (exact ticks), and a socket to send them from.
struct Fed {
    s: Server,
    feed: SocketAddr,
    tx: UdpSocket,
    packets: u64,
}

impl Fed {
    fn start(extra: &[&str]) -> Fed {
        let mut args = vec!["--feed", "udp://127.0.0.1:0"];
        args.extend_from_slice(extra);
        let s = Server::start(&args);
        let feed = s.status()["feeds"][0]["address"].as_str().unwrap().parse().unwrap();
        Fed { s, feed, tx: UdpSocket::bind("127.0.0.1:0").unwrap(), packets: 0 }
    }

    fn send(&mut self, ticks: &[Tick]) {
        self.packets += 1;
        self.tx.send_to(&packet(self.packets, ticks), self.feed).unwrap();
    }
}

/// Connect and authenticate (no auth file: any key is the anonymous user).
fn authed(s: &Server) -> Client {
    let mut c = s.openalgo();
    c.send_json(json!({"action": "authenticate", "api_key": "any-key"}));
    assert_eq!(c.recv_json()["type"], "auth");
    assert_eq!(c.recv_json()["type"], "auth_response");
    c
}

/// Send a request and read its reply (the next message of `ty`).
fn request(c: &mut Client, req: Value, ty: &str) -> Value {
    c.send_json(req);
    c.recv_type(ty)
}

fn next_data(c: &mut Client) -> Value {
    c.recv_until("market data", |v| v["type"] == "market_data")
}

/// The next message, which must be an error with `code`.
fn expect_error(c: &mut Client, code: &str, what: &str) -> Value {
    let e = c.recv_json();
    assert_eq!((e["type"].as_str(), e["status"].as_str()), (Some("error"), Some("error")), "{what}: {e}");
    assert_eq!(e["code"], code, "{what}: {e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {e}");
    e
}

/// The connection still answers (`ping` → `pong`, skipping market data).
fn assert_alive(c: &mut Client, what: &str) {
    c.send_json(json!({"action": "ping"}));
    let p = c.recv_until("pong", |v| v["type"] == "pong" || v["type"] == "error");
    assert_eq!(p["type"], "pong", "{what}: connection still served: {p}");
}

/// A user file with `alice` (key `alice-key`, at most two connections),
/// `bob` (key `bob-key`) and `ops` (admin: `/status`, key `ops-key`).
fn auth_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-openalgo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users.toml");
    let text = format!(
        "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\nmax-connections = 2\n\n[[user]]\nid = \"bob\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        tickcast::auth::hash_line("alice-key"),
        tickcast::auth::hash_line("bob-key"),
        tickcast::auth::hash_line("ops-key")
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn seed_conversation_authenticate_subscribe_quote_data_unsubscribe() {
    let mut f = Fed::start(&[]);
    let mut c = f.s.openalgo();

    c.send_json(json!({"action": "authenticate", "api_key": "your-openalgo-api-key"}));
    let auth = c.recv_json();
    assert_eq!(
        (&auth["type"], &auth["status"], &auth["message"]),
        (&json!("auth"), &json!("success"), &json!("Authentication successful")),
        "the real server's reply first (the SDK waits for it): {auth}"
    );
    assert_eq!(auth["user_id"], "anonymous");
    assert_eq!(auth["market_open"], true);
    assert_eq!(
        c.recv_json(),
        json!({"type": "auth_response", "status": "success", "message": "Authentication successful"}),
        "then the seed's"
    );

    // The seed's subscribe request, verbatim.
    c.send(
        r#"{
            "action": "subscribe",
            "symbols": [
                {"symbol": "RELIANCE", "exchange": "NSE"},
                {"symbol": "TCS", "exchange": "NSE"},
                {"symbol": "NIFTY28DEC2425000CE", "exchange": "NFO"}
            ],
            "mode": "Quote"
        }"#,
    );
    let r = c.recv_json();
    assert_eq!((r["type"].as_str(), r["status"].as_str()), (Some("subscribe"), Some("partial")), "{r}");
    let subs = r["subscriptions"].as_array().unwrap();
    assert_eq!(
        subs[0],
        json!({"symbol": "RELIANCE", "exchange": "NSE", "status": "success", "mode": "Quote", "depth": 5})
    );
    assert_eq!((subs[1]["symbol"].as_str(), subs[1]["status"].as_str()), (Some("TCS"), Some("success")));
    assert_eq!(
        (subs[2]["symbol"].as_str(), subs[2]["exchange"].as_str(), subs[2]["status"].as_str()),
        (Some("NIFTY28DEC2425000CE"), Some("NFO"), Some("error")),
        "{r}"
    );
    assert!(subs[2]["message"].as_str().unwrap().contains("unknown symbol NFO:NIFTY28DEC2425000CE"), "{r}");

    // The seed's market data response, with the SDK's quote fields added.
    f.send(&[reliance(0)]);
    assert_eq!(
        next_data(&mut c),
        json!({"type": "market_data", "symbol": "RELIANCE", "exchange": "NSE", "mode": 2, "data": {
            "ltp": 2850.50, "open": 2820.00, "high": 2860.00, "low": 2815.00, "close": 2848.25,
            "volume": 1500000, "bid": 2850.45, "ask": 2850.55, "bid_qty": 500, "ask_qty": 750,
            "oi": 0, "prev_oi": 0, "last_trade_quantity": 10, "change": 2.25, "change_percent": 0.08,
            "timestamp": "2024-12-04T10:30:00"}})
    );

    // The seed's unsubscribe request (no mode: every mode).
    c.send(r#"{"action": "unsubscribe", "symbols": [{"symbol": "RELIANCE", "exchange": "NSE"}]}"#);
    let r = c.recv_json();
    assert_eq!(
        r,
        json!({"type": "unsubscribe", "status": "success", "message": "Unsubscription processing complete",
            "successful": [{"symbol": "RELIANCE", "exchange": "NSE", "status": "success"}], "failed": [],
            "broker": "tickcast"})
    );
    // RELIANCE then TCS in one packet: TCS's frame is the next one.
    f.send(&[reliance(1), tcs(1)]);
    let d = next_data(&mut c);
    assert_eq!((d["symbol"].as_str(), d["mode"].as_u64()), (Some("TCS"), Some(2)), "RELIANCE stopped: {d}");
}

#[test]
fn sdk_message_forms_hold_one_instrument_in_several_modes() {
    let mut f = Fed::start(&[]);
    f.send(&[reliance(0)]);
    f.s.status_until("the first tick cached", |st| st["feeds"][0]["ticks"] == 1);
    let mut c = authed(&f.s);

    // The SDK's subscribe_ltp: one instrument, numeric mode, `depth` always there.
    let r = request(
        &mut c,
        json!({"action": "subscribe", "symbol": "RELIANCE", "exchange": "NSE", "mode": 1, "depth": 5}),
        "subscribe",
    );
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["subscriptions"][0]["mode"], "LTP");
    let snap = next_data(&mut c);
    assert_eq!(
        snap,
        json!({"type": "market_data", "symbol": "RELIANCE", "exchange": "NSE", "mode": 1,
            "data": {"ltp": 2850.5, "timestamp": "2024-12-04T10:30:00"}}),
        "a new subscription starts with the last value; LTP mode is ltp + timestamp"
    );

    // subscribe_depth on top: the last value in Depth mode only.
    let r = request(
        &mut c,
        json!({"action": "subscribe", "symbol": "RELIANCE", "exchange": "NSE", "mode": 3, "depth": 5}),
        "subscribe",
    );
    assert_eq!((r["status"].as_str(), r["subscriptions"][0]["mode"].as_str()), (Some("success"), Some("Depth")));
    let d = next_data(&mut c);
    assert_eq!(d["mode"], 3, "{d}");
    assert_eq!(d["data"]["ltp"], 2850.5);
    let book = &d["data"]["depth"];
    assert_eq!(book["buy"].as_array().unwrap().len(), 5);
    assert_eq!(book["buy"][0], json!({"price": 2850.45, "quantity": 100, "orders": 1}));
    assert_eq!(book["sell"][4], json!({"price": 2850.75, "quantity": 204, "orders": 6}));

    // A fence instrument in Quote mode.
    request(&mut c, json!({"action": "subscribe", "symbol": "TCS", "exchange": "NSE", "mode": "quote"}), "subscribe");
    // Every tick now: LTP frame, Depth frame, in that order.
    f.send(&[reliance(1), tcs(1)]);
    let kinds: Vec<(String, u64)> = (0..3)
        .map(|_| {
            let d = next_data(&mut c);
            (d["symbol"].as_str().unwrap().to_string(), d["mode"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(kinds, [("RELIANCE".into(), 1), ("RELIANCE".into(), 3), ("TCS".into(), 2)]);

    // The SDK's unsubscribe_ltp: only that mode goes.
    let r = request(
        &mut c,
        json!({"action": "unsubscribe", "symbol": "RELIANCE", "exchange": "NSE", "mode": 1}),
        "unsubscribe",
    );
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["successful"][0]["mode"], "LTP");
    f.send(&[reliance(2), tcs(2)]);
    let (a, b) = (next_data(&mut c), next_data(&mut c));
    assert_eq!((a["symbol"].as_str(), a["mode"].as_u64()), (Some("RELIANCE"), Some(3)), "{a}");
    assert_eq!(a["data"]["ltp"], 2850.52);
    assert_eq!(b["symbol"], "TCS", "no LTP frame any more: {b}");

    // Unsubscribing a mode not held fails per instrument.
    let r = request(
        &mut c,
        json!({"action": "unsubscribe", "symbol": "RELIANCE", "exchange": "NSE", "mode": 1}),
        "unsubscribe",
    );
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["failed"][0]["message"], "not subscribed in LTP mode");

    // unsubscribe_all: everything, then no data at all.
    let r = request(&mut c, json!({"action": "unsubscribe_all"}), "unsubscribe");
    let mut gone: Vec<&str> =
        r["successful"].as_array().unwrap().iter().map(|e| e["symbol"].as_str().unwrap()).collect();
    gone.sort_unstable();
    assert_eq!((r["status"].as_str(), gone), (Some("success"), vec!["RELIANCE", "TCS"]));
    f.send(&[reliance(3), tcs(3)]);
    f.s.status_until("the ticks published", |st| st["feeds"][0]["ticks"] == 7);
    // Both ticks are in the ring before either ping is sent. The worker
    // drains the ring in the same turn as it answers the first ping, so a
    // frame leaking to this client would be flushed before the second pong:
    // nothing but the two pongs may arrive.
    for n in 1..=2 {
        c.send_json(json!({"action": "ping"}));
        let next = c.recv_json();
        assert_eq!(next["type"], "pong", "pong {n} of 2, no data after unsubscribe_all: {next}");
    }
}

#[test]
fn ltp_mode_is_throttled_and_ends_on_the_newest_price() {
    let mut f = Fed::start(&[]);
    let mut ltp = authed(&f.s);
    let mut quote = authed(&f.s);
    request(
        &mut ltp,
        json!({"action": "subscribe", "symbols": [{"symbol": "RELIANCE", "exchange": "NSE"}], "mode": "LTP"}),
        "subscribe",
    );
    request(
        &mut quote,
        json!({"action": "subscribe", "symbols": [{"symbol": "RELIANCE", "exchange": "NSE"}], "mode": "Quote"}),
        "subscribe",
    );

    // 200 ticks in four back-to-back packets.
    const N: u64 = 200;
    let ticks: Vec<Tick> = (0..N).map(reliance).collect();
    for chunk in ticks.chunks(50) {
        f.send(chunk);
    }
    // Quote mode is not throttled: every tick, in order.
    let volumes: Vec<u64> = (0..N).map(|_| next_data(&mut quote)["data"]["volume"].as_u64().unwrap()).collect();
    assert_eq!(volumes, (0..N).map(|n| 1_500_000 + n).collect::<Vec<_>>());
    // LTP mode: far fewer frames than ticks, prices only rising, and the
    // last frame (the trailing edge) carries the newest price.
    let raw = 285050 + N - 1;
    let newest: f64 = format!("{}.{:02}", raw / 100, raw % 100).parse().unwrap();
    let mut prices = Vec::new();
    while prices.last() != Some(&newest) {
        let d = next_data(&mut ltp);
        assert_eq!(d["mode"], 1);
        prices.push(d["data"]["ltp"].as_f64().unwrap());
        assert!(prices.len() < N as usize / 2, "LTP frames not throttled: {} for {N} ticks", prices.len());
    }
    assert!(prices.windows(2).all(|w| w[0] < w[1]), "{prices:?}");
}

#[test]
fn nothing_but_authenticate_and_ping_before_authentication() {
    let s = Server::sim();
    let mut c = s.openalgo();
    let reliance = json!([{"symbol": "RELIANCE", "exchange": "NSE"}]);
    for req in [
        json!({"action": "subscribe", "symbols": reliance, "mode": "LTP"}),
        json!({"action": "subscribe", "symbol": "RELIANCE", "exchange": "NSE", "mode": 1, "depth": 5}),
        json!({"action": "unsubscribe", "symbols": reliance}),
        json!({"action": "unsubscribe_all"}),
        json!({"action": "get_broker_info"}),
    ] {
        c.send_json(req.clone());
        let e = expect_error(&mut c, "NOT_AUTHENTICATED", &req.to_string());
        assert_eq!(e["message"], "You must authenticate first");
    }
    // ping is served, echoing the client's fields as the real server does.
    c.send_json(json!({"action": "ping", "timestamp": 123, "_pingId": "p1"}));
    let p = c.recv_json();
    assert_eq!((p["type"].as_str(), p["status"].as_str()), (Some("pong"), Some("success")), "{p}");
    assert!(p["server_timestamp"].as_u64().unwrap() > 1_700_000_000_000, "ms since epoch: {p}");
    assert_eq!((&p["client_timestamp"], &p["_pingId"]), (&json!(123), &json!("p1")));
    // No market data leaked meanwhile; authenticating opens the door.
    c.send_json(json!({"action": "authenticate", "api_key": "k"}));
    assert_eq!(c.recv_json()["type"], "auth", "nothing came before the auth reply");
    assert_eq!(c.recv_json()["type"], "auth_response");
    let r = request(&mut c, json!({"action": "subscribe", "symbols": reliance}), "subscribe");
    assert_eq!(r["subscriptions"][0]["mode"], "Quote", "the default mode is Quote: {r}");
    assert_eq!(next_data(&mut c)["mode"], 2);
    let info = request(&mut c, json!({"action": "get_broker_info"}), "broker_info");
    assert_eq!((info["broker"].as_str(), info["user_id"].as_str()), (Some("tickcast"), Some("anonymous")));
}

#[test]
fn keys_are_checked_bad_ones_refused_counted_and_nothing_leaks() {
    let users = auth_file("keys");
    let s = Server::start(&["--feed", "sim:rate=5000", "--auth-file", users.to_str().unwrap()]);
    s.warm();
    let reliance = json!([{"symbol": "RELIANCE", "exchange": "NSE"}]);

    // The upgrade needs no key (the SDK sends it in a message) …
    let mut c = s.openalgo();
    for (what, req, msg) in [
        ("wrong key", json!({"action": "authenticate", "api_key": "nope"}), "Invalid API key"),
        ("no key", json!({"action": "authenticate"}), "API key is required"),
        ("empty key", json!({"action": "authenticate", "api_key": ""}), "API key is required"),
        ("key not a string", json!({"action": "authenticate", "api_key": 42}), "field `api_key` must be a string"),
    ] {
        c.send_json(req);
        assert_eq!(
            c.recv_json(),
            json!({"type": "auth_response", "status": "error", "message": msg}),
            "{what}: the seed's refusal"
        );
        assert_eq!(expect_error(&mut c, "AUTHENTICATION_ERROR", what)["message"], msg, "{what}: the real server's");
    }
    c.send_json(json!({"action": "subscribe", "symbols": reliance}));
    expect_error(&mut c, "NOT_AUTHENTICATED", "after refused keys");
    s.status_until("auth failures counted", |st| st["counters"]["auth_failures"].as_u64() >= Some(4));

    // … the right key opens it, and the same key again is acknowledged.
    c.send_json(json!({"action": "authenticate", "api_key": "alice-key"}));
    assert_eq!(c.recv_json()["user_id"], "alice");
    assert_eq!(c.recv_json()["status"], "success");
    c.send_json(json!({"action": "authenticate", "api_key": "alice-key"}));
    assert_eq!(c.recv_json()["status"], "success");
    assert_eq!(c.recv_json()["type"], "auth_response");
    c.send_json(json!({"action": "authenticate", "api_key": "bob-key"}));
    assert_eq!(c.recv_json()["message"], "this connection is authenticated as another user");
    expect_error(&mut c, "AUTHENTICATION_ERROR", "another user's key");
    let r = request(&mut c, json!({"action": "subscribe", "symbols": reliance, "mode": "LTP"}), "subscribe");
    assert_eq!(r["status"], "success");

    // A key in the upgrade request is checked there: a wrong one is 401 …
    let mut raw = TcpStream::connect(s.openalgo_addr.unwrap()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(raw, "GET /?api_key=nope HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = String::new();
    std::io::Read::read_to_string(&mut raw, &mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // … a right one authenticates the connection (alice's second and last).
    let mut second = Client::connect(&format!("{}/?api_key=alice-key", s.openalgo_url()));
    let r = request(&mut second, json!({"action": "subscribe", "symbols": reliance}), "subscribe");
    assert_eq!(r["status"], "success", "{r}");

    // alice's limit is two connections: a third is refused at `authenticate`.
    let mut third = s.openalgo();
    third.send_json(json!({"action": "authenticate", "api_key": "alice-key"}));
    let refusal = third.recv_json();
    assert_eq!((refusal["type"].as_str(), refusal["status"].as_str()), (Some("auth_response"), Some("error")));
    assert!(refusal["message"].as_str().unwrap().contains("connection limit (2)"), "{refusal}");
    expect_error(&mut third, "AUTHENTICATION_ERROR", "over the user's limit");
    // Closing one of alice's connections frees its slot.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        third.send_json(json!({"action": "authenticate", "api_key": "alice-key"}));
        if third.recv_json()["status"] == "success" {
            assert_eq!(third.recv_json()["type"], "auth_response");
            break;
        }
        expect_error(&mut third, "AUTHENTICATION_ERROR", "still over the limit");
        assert!(Instant::now() < deadline, "alice's slot was never freed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Five wrong keys in a row close the connection (1008).
    let mut guesser = s.openalgo();
    for i in 0..5 {
        guesser.send_json(json!({"action": "authenticate", "api_key": format!("guess-{i}")}));
    }
    let (code, reason) = guesser.recv_close();
    assert_eq!((code, reason.as_str()), (1008, "too many failed authentication attempts"));
}

#[test]
fn bad_requests_get_errors_and_the_connection_stays_open() {
    let s = Server::sim();
    let mut c = authed(&s);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: &[(&str, &str, &str, &str)] = &[
        ("malformed JSON", "{not json", "INVALID_JSON", "Invalid JSON message"),
        ("nested too deep", &deep, "INVALID_JSON", "nested deeper"),
        ("not an object", "[1,2]", "INVALID_MESSAGE", "JSON object"),
        ("no action", "{}", "INVALID_ACTION", "missing field `action`"),
        ("action not a string", r#"{"action":5}"#, "INVALID_ACTION", "must be a string"),
        ("unknown action", r#"{"action":"fly"}"#, "INVALID_ACTION", "Invalid action: fly"),
        ("no instruments", r#"{"action":"subscribe","mode":1}"#, "INVALID_PARAMETERS", "At least one symbol"),
        ("empty list", r#"{"action":"subscribe","symbols":[]}"#, "INVALID_PARAMETERS", "At least one symbol"),
        ("symbols not a list", r#"{"action":"subscribe","symbols":"RELIANCE"}"#, "INVALID_PARAMETERS", "array of"),
        ("entry not an object", r#"{"action":"subscribe","symbols":["RELIANCE"]}"#, "INVALID_PARAMETERS", "array of"),
        (
            "symbol not a string",
            r#"{"action":"subscribe","symbols":[{"symbol":2885,"exchange":"NSE"}]}"#,
            "INVALID_PARAMETERS",
            "field `symbol` must be a non-empty string",
        ),
        (
            "no exchange",
            r#"{"action":"subscribe","symbols":[{"symbol":"RELIANCE"}]}"#,
            "INVALID_PARAMETERS",
            "missing `exchange`",
        ),
        (
            "single form without exchange",
            r#"{"action":"subscribe","symbol":"RELIANCE","mode":1}"#,
            "INVALID_PARAMETERS",
            "missing `exchange`",
        ),
        (
            "unknown mode name",
            r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":"Full"}"#,
            "INVALID_MODE",
            "Invalid mode \"Full\"",
        ),
        (
            "mode out of range",
            r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":4}"#,
            "INVALID_MODE",
            "Invalid mode 4",
        ),
        (
            "mode a bool",
            r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":true}"#,
            "INVALID_MODE",
            "Invalid mode",
        ),
        (
            "depth not a number",
            r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":3,"depth":"5"}"#,
            "INVALID_PARAMETERS",
            "`depth`",
        ),
        (
            "depth zero",
            r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":3,"depth":0}"#,
            "INVALID_PARAMETERS",
            "`depth`",
        ),
        (
            "unsubscribe nothing",
            r#"{"action":"unsubscribe"}"#,
            "INVALID_PARAMETERS",
            "Either symbols or unsubscribe_all",
        ),
        (
            "unsubscribe bad mode",
            r#"{"action":"unsubscribe","symbol":"RELIANCE","exchange":"NSE","mode":"x"}"#,
            "INVALID_MODE",
            "Invalid mode",
        ),
    ];
    let before = s.status()["counters"]["bad_requests"].as_u64().unwrap();
    for (what, text, code, msg) in cases {
        c.send(text);
        let e = expect_error(&mut c, code, what);
        assert!(e["message"].as_str().unwrap().contains(msg), "{what}: {e}");
    }
    c.ws.send(Message::Binary(b"\x01\x02".to_vec())).unwrap();
    let e = expect_error(&mut c, "INVALID_MESSAGE", "binary frame");
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");
    assert_alive(&mut c, "after every bad request");
    let want = before + cases.len() as u64 + 1;
    s.status_until("bad requests counted", |st| st["counters"]["bad_requests"].as_u64() >= Some(want));
    // Nothing was subscribed by any of them.
    let r = request(&mut c, json!({"action": "unsubscribe_all"}), "unsubscribe");
    assert_eq!(r["successful"], json!([]), "{r}");

    // An oversized message closes with 1009.
    c.send(&format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024)));
    assert_eq!(c.recv_close().0, 1009);
}

#[test]
fn unknown_symbols_fail_per_instrument_and_indices_are_on_nse_index() {
    let s = Server::sim();
    let mut c = authed(&s);
    let r = request(
        &mut c,
        json!({"action": "subscribe", "mode": "LTP", "symbols": [
            {"symbol": "NOSUCH", "exchange": "NSE"},
            {"symbol": "NIFTY", "exchange": "NSE"},
            {"symbol": "RELIANCE", "exchange": "NSE_INDEX"},
            {"symbol": "NIFTY", "exchange": "NSE_INDEX"},
            {"symbol": "infy", "exchange": "nse"},
            {"symbol": "NSE:TCS", "exchange": "NSE"}
        ]}),
        "subscribe",
    );
    assert_eq!(r["status"], "partial", "{r}");
    let subs = r["subscriptions"].as_array().unwrap();
    let outcome: Vec<(&str, &str, &str, &str)> = subs
        .iter()
        .map(|e| {
            let detail = e["message"].as_str().or(e["mode"].as_str()).unwrap();
            (e["symbol"].as_str().unwrap(), e["exchange"].as_str().unwrap(), e["status"].as_str().unwrap(), detail)
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("NOSUCH", "NSE", "error", "unknown symbol NSE:NOSUCH"),
            ("NIFTY", "NSE", "error", "NIFTY is an index: subscribe on exchange NSE_INDEX"),
            ("RELIANCE", "NSE_INDEX", "error", "RELIANCE is not an index: subscribe on exchange NSE"),
            ("NIFTY", "NSE_INDEX", "success", "LTP"),
            ("INFY", "NSE", "success", "LTP"),
            ("NSE:TCS", "NSE", "error", "unknown symbol NSE:NSE:TCS"),
        ],
        "any case accepted; replies and frames spell instruments as the master does"
    );
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let d = next_data(&mut c);
        seen.insert(format!("{}:{}", d["exchange"].as_str().unwrap(), d["symbol"].as_str().unwrap()));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["NSE:INFY", "NSE_INDEX:NIFTY"]);

    // Nothing resolvable: status error.
    let r =
        request(&mut c, json!({"action": "subscribe", "symbol": "NOSUCH", "exchange": "BSE", "mode": 2}), "subscribe");
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["subscriptions"][0]["message"], "unknown symbol BSE:NOSUCH");
    let r = request(
        &mut c,
        json!({"action": "unsubscribe", "symbols": [{"symbol": "TCS", "exchange": "NSE"}]}),
        "unsubscribe",
    );
    assert_eq!((r["status"].as_str(), r["failed"][0]["message"].as_str()), (Some("error"), Some("not subscribed")));
}

/// Read raw frames, answering pings when `answer`, until a close frame.
fn raw_until_close(s: &mut TcpStream, answer: bool) -> (bool, u16, String) {
    let mut pinged = false;
    loop {
        let (op, p) = read_frame(s);
        match op {
            0x9 => {
                pinged = true;
                if answer {
                    s.write_all(&client_frame(0xA, true, &p)).unwrap();
                }
            }
            0x8 => return (pinged, u16::from_be_bytes([p[0], p[1]]), String::from_utf8_lossy(&p[2..]).into_owned()),
            _ => {}
        }
    }
}

#[test]
fn keepalive_pings_close_silent_and_unauthenticated_clients() {
    let s = Server::start(&[
        "--feed",
        "sim:rate=1000",
        "--openalgo-ping-interval",
        "0.3",
        "--openalgo-ping-timeout",
        "2",
        "--openalgo-auth-timeout",
        "4",
    ]);
    let addr = s.openalgo_addr.unwrap();
    // Authenticated, never answers a ping: closed 1011.
    let silent = std::thread::spawn(move || {
        let mut raw = util::raw_upgrade(addr, "/");
        raw.write_all(&client_frame(0x1, true, br#"{"action":"authenticate","api_key":"k"}"#)).unwrap();
        raw_until_close(&mut raw, false)
    });
    // Answers pings, never authenticates: closed 1008.
    let anonymous = std::thread::spawn(move || {
        let mut raw = util::raw_upgrade(addr, "/some/path");
        raw_until_close(&mut raw, true)
    });
    // A client that answers pings (tungstenite does while reading) stays.
    let mut kept = authed(&s);
    // A guard, not the thing under test: the closes are checked below.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kept_pings = 0;
    while !(silent.is_finished() && anonymous.is_finished()) {
        assert!(Instant::now() < deadline, "the other clients were not closed within 60 s");
        assert!(matches!(kept.ws.read().unwrap(), Message::Ping(_)), "only pings come to an idle client");
        kept_pings += 1;
    }
    assert!(kept_pings > 0, "the kept client was pinged too (and answered) while the others were closed");
    let (pinged, code, reason) = silent.join().unwrap();
    assert!(pinged);
    assert_eq!((code, reason.as_str()), (1011, "keepalive ping timeout"));
    let (pinged, code, reason) = anonymous.join().unwrap();
    assert!(pinged);
    assert_eq!(code, 1008);
    assert!(reason.starts_with("not authenticated in time"), "{reason}");
    assert_alive(&mut kept, "a client that answers pings");
}

#[test]
fn clients_over_the_limit_get_an_error_then_close_1013() {
    let s = Server::start(&["--feed", "sim:rate=1000", "--openalgo-max-clients", "2"]);
    let a = authed(&s);
    let _b = authed(&s);
    let mut over = s.openalgo();
    let e = expect_error(&mut over, "MAX_CLIENTS", "third client");
    assert!(e["message"].as_str().unwrap().contains("limit (2)"), "{e}");
    assert_eq!(over.recv_close(), (1013, "OpenAlgo client limit reached".to_string()));
    drop(a);
    // A slot frees once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = s.openalgo();
        c.send_json(json!({"action": "authenticate", "api_key": "k"}));
        let m = c.recv_json();
        if m["type"] == "auth" {
            break;
        }
        assert_eq!(m["code"], "MAX_CLIENTS");
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn official_openalgo_python_sdk_streams_ltp_quote_and_depth() {
    let deps = Command::new("python3")
        .args(["-c", "import openalgo; from openalgo import api"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test and could not be run: {e}"));
    assert!(
        deps.status.success(),
        "python3 cannot import the official `openalgo` SDK (pip install openalgo; scripts/test installs it):\n{}",
        String::from_utf8_lossy(&deps.stderr)
    );
    let users = auth_file("sdk");
    let s = Server::start(&["--feed", "sim:rate=5000", "--auth-file", users.to_str().unwrap()]);
    s.warm();
    let url = s.openalgo_url();
    let stdout = util::run_client("python3", "python/openalgo_sdk.py", &[&url, "bob-key", "not-a-key"]);
    assert!(stdout.contains("OK"), "no success line from the SDK script:\n{stdout}");
    println!("{stdout}");
    let st = s.status_until("the SDK's wrong key counted", |st| st["counters"]["auth_failures"].as_u64() >= Some(1));
    assert_eq!(st["counters"]["auth_failures"], 1, "only the wrong key failed");
}
