//! Trading WS (`/ws`, seed `001_…`): the seed's conversation replayed
//! message by message against the real binary, the seed's MVP behaviour
//! (everything until the first subscribe), relayed signals and trades,
//! private conflated portfolio updates, `/websocket/status`, the
//! `WEBSOCKET_*` settings, and the seed's own JavaScript client run
//! unchanged under Node.

mod util;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;
use util::{Client, Server};

// ── helpers ────────────────────────────────────────────────────────────

/// Simulator at 5000 ticks/s, warm, batching every 0.2 s (unless `args`
/// say otherwise), plus `args`.
fn sim(args: &[&str]) -> Server {
    let mut all = vec!["--feed", "sim:rate=5000"];
    if !args.contains(&"--websocket-price-update-interval") {
        all.extend(["--websocket-price-update-interval", "0.2"]);
    }
    all.extend_from_slice(args);
    let s = Server::start(&all);
    s.warm();
    s
}

/// Connect to `/ws{query}` and read the greeting.
fn trading(s: &Server, query: &str) -> (Client, Value) {
    let mut c = s.connect(&format!("/ws{query}"));
    let hello = c.recv_json();
    assert_eq!(hello["type"], "connected", "{hello}");
    assert_iso(&hello["timestamp"]);
    (c, hello)
}

/// Milliseconds since the epoch of `2024-12-19T12:00:00.123Z`; panics on
/// anything else.
fn iso_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    let b = s.as_bytes();
    let shape = b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape, "timestamp `{s}` is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

fn assert_iso(v: &Value) {
    let ms = iso_ms(v);
    assert!(ms > 1_600_000_000_000, "timestamp {v} is not a current time");
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect()
}

fn set<'a>(items: &[&'a str]) -> BTreeSet<&'a str> {
    items.iter().copied().collect()
}

/// Check a `price_update` has exactly the seed's shape; its symbols.
fn check_price_update(v: &Value) -> BTreeSet<String> {
    assert_eq!(v["type"], "price_update");
    assert_eq!(keys(v), set(&["type", "symbols", "timestamp"]), "{v}");
    assert_iso(&v["timestamp"]);
    let symbols = v["symbols"].as_object().unwrap_or_else(|| panic!("`symbols` is not an object: {v}"));
    assert!(!symbols.is_empty(), "an empty batch is never sent: {v}");
    for (sym, q) in symbols {
        // The simulator sends OHLC, so every entry is the seed's full one.
        let fields = set(&["price", "change", "change_pct", "volume", "high", "low", "open", "close"]);
        assert_eq!(keys(q), fields, "{sym}: {q}");
        for f in &fields {
            assert!(q[*f].is_number(), "{sym}.{f} is not a number: {q}");
        }
        assert!(q["volume"].is_u64(), "{sym}.volume is an integer: {q}");
        let price = q["price"].as_f64().unwrap();
        assert_eq!(q["close"].as_f64(), Some(price), "close is the last price, as in the seed: {q}");
        let (low, high) = (q["low"].as_f64().unwrap(), q["high"].as_f64().unwrap());
        assert!(low <= price && price <= high, "{sym}: low {low} <= price {price} <= high {high}");
        let prev_close = price - q["change"].as_f64().unwrap();
        let pct = q["change_pct"].as_f64().unwrap();
        assert!((pct - 100.0 * (price - prev_close) / prev_close).abs() <= 0.006, "{sym}: change_pct {pct}: {q}");
    }
    symbols.keys().cloned().collect()
}

/// Check an `error` message: the seed's shape, and `want` in its text.
fn check_error(v: &Value, want: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(keys(v), set(&["type", "error", "timestamp"]), "{v}");
    assert_iso(&v["timestamp"]);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(want), "error `{msg}` does not say `{want}`");
}

/// `price_update`s stamped after `after` (earlier batches may still be in
/// flight when an acknowledgement overtakes them on the control lane).
fn updates_after(c: &mut Client, after: i64, n: usize) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv_type("price_update");
        let syms = check_price_update(&v);
        if iso_ms(&v["timestamp"]) > after {
            out.push(syms);
        }
    }
    out
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Publish NDJSON lines `{"channel":…,"data":…}` in one write.
fn publish(s: &Server, lines: &[Value]) {
    publish_to(s.publish_addr(), lines);
}

/// Publish to the port at `addr` (with an auth file `/status`, where the
/// port's address shows, needs an admin key: such tests pick the port).
fn publish_to(addr: SocketAddr, lines: &[Value]) {
    let mut p = TcpStream::connect(addr).unwrap();
    let mut buf = String::new();
    for l in lines {
        buf.push_str(&l.to_string());
        buf.push('\n');
    }
    p.write_all(buf.as_bytes()).unwrap();
    // Closing right away is fine: the port reads what was sent first.
}

fn websocket_status(s: &Server) -> Value {
    let (code, body) = s.get("/websocket/status");
    assert_eq!(code, 200, "/websocket/status answered {code}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn websocket_status_until(s: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = websocket_status(s);
        if pred(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "/websocket/status never showed {what}: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The HTTP status and body of a refused upgrade to `path`.
fn refused(s: &Server, path: &str) -> (u16, String) {
    match tungstenite::connect(s.url(path)) {
        Ok(_) => panic!("{path}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

// ── the seed's conversation ────────────────────────────────────────────

#[test]
fn seed_conversation_ping_subscribe_and_conflated_batches() {
    let s = sim(&[]);
    let (mut c, hello) = trading(&s, "");
    let id = hello["client_id"].as_str().unwrap();
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "a generated client_id is a UUID: {id}");
    assert_eq!(hello["market_open"], true);

    c.send_json(json!({"type": "ping"}));
    assert_eq!(c.recv_type("pong"), json!({"type": "pong"}), "the seed's pong, exactly");

    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["RELIANCE", "TCS", "INFY"]}));
    let ack = c.recv_type("subscribed");
    assert_eq!(ack["channel"], "price_updates");
    assert_eq!(ack["symbols"], json!(["RELIANCE", "TCS", "INFY"]));
    let after = iso_ms(&ack["timestamp"]);

    // Several symbols per message, each once (the newest value): ticks are
    // gathered per interval, not sent one by one. (The interval's length is
    // the dialect's unit tests' business, on a driven clock; here a loaded
    // machine could delay one batch and bring the next closer.)
    let wanted = names(&["RELIANCE", "TCS", "INFY"]);
    let mut batched = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while batched < 3 {
        assert!(Instant::now() < deadline, "never saw batches of several symbols");
        let v = c.recv_type("price_update");
        let text = v.to_string();
        let syms = check_price_update(&v);
        if iso_ms(&v["timestamp"]) <= after {
            continue;
        }
        assert!(syms.is_subset(&wanted), "only the subscribed symbols: {syms:?}");
        for sym in &syms {
            assert_eq!(text.matches(&format!("\"{sym}\":")).count(), 1, "{sym} once per batch: {text}");
        }
        if syms.len() >= 2 {
            batched += 1;
        }
    }
}

#[test]
fn mvp_client_gets_every_instrument_until_it_subscribes() {
    let s = sim(&["--websocket-ping-interval", "0.3"]);
    let instruments = s.status()["instruments"].as_u64().unwrap() as usize;
    let (mut c, _) = trading(&s, "");
    let mut seen = BTreeSet::new();
    while seen.len() < instruments {
        seen.extend(check_price_update(&c.recv_type("price_update")));
    }
    assert!(seen.contains("RELIANCE") && seen.contains("NIFTY"), "indices too: {seen:?}");

    // The first subscribe replaces "everything" with its symbols.
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["TCS"]}));
    let ack = c.recv_type("subscribed");
    for syms in updates_after(&mut c, iso_ms(&ack["timestamp"]), 3) {
        assert_eq!(syms, names(&["TCS"]));
    }

    // A second subscribe adds to the first.
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["INFY", "tcs"]}));
    let ack = c.recv_type("subscribed");
    assert_eq!(ack["symbols"], json!(["INFY", "TCS"]));
    let mut union = BTreeSet::new();
    for syms in updates_after(&mut c, iso_ms(&ack["timestamp"]), 4) {
        assert!(syms.is_subset(&names(&["TCS", "INFY"])), "{syms:?}");
        union.extend(syms);
    }
    assert_eq!(union, names(&["TCS", "INFY"]));

    // Unsubscribing without symbols stops price updates altogether.
    c.send_json(json!({"type": "unsubscribe", "channel": "price_updates"}));
    let ack = c.recv_type("unsubscribed");
    assert_eq!(keys(&ack), set(&["type", "channel", "timestamp"]));
    let stopped = iso_ms(&ack["timestamp"]);
    // No fixed sleep: the connection's housekeeping sends a due price batch
    // before it pings an idle client, and the ping interval (0.3 s) is
    // longer than the batch interval (0.2 s). So every message up to the
    // first ping after the ack is checked, and that ping comes only once a
    // batch would have been due.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no ping to the idle client in 20 s (updates kept it busy?)");
        match c.ws.read().unwrap() {
            Message::Ping(_) => break,
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert!(
                    v["type"] != "price_update" || iso_ms(&v["timestamp"]) <= stopped,
                    "a price update after unsubscribing: {v}"
                );
            }
            _ => {}
        }
    }
    c.send_json(json!({"type": "ping"}));
    assert_eq!(c.recv_json(), json!({"type": "pong"}), "nothing but the pong");
}

#[test]
fn unknown_symbols_are_named_and_the_known_ones_subscribed() {
    let s = sim(&[]);
    let (mut c, _) = trading(&s, "");
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["RELIANCE", "NOPE1", "nse:tcs", "INE009A01021", "ZZZ"]}));
    let ack = c.recv_type("subscribed");
    assert_eq!(ack["symbols"], json!(["RELIANCE", "TCS", "INFY"]), "symbols, EXCHANGE:SYMBOL and ISINs resolve");
    let err = c.recv_type("error");
    check_error(&err, "Unknown symbols: NOPE1, ZZZ");
    check_error(&err, "the others were subscribed");
    let mut union = BTreeSet::new();
    for syms in updates_after(&mut c, iso_ms(&ack["timestamp"]), 4) {
        union.extend(syms);
    }
    assert_eq!(union, names(&["RELIANCE", "TCS", "INFY"]));

    // Only unknown symbols: an error, nothing changes (still subscribed).
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["NOPE2"]}));
    let err = c.recv_type("error");
    check_error(&err, "Unknown symbols: NOPE2");
    assert!(!err["error"].as_str().unwrap().contains("the others"), "{err}");
    for syms in updates_after(&mut c, iso_ms(&err["timestamp"]), 2) {
        assert!(syms.is_subset(&names(&["RELIANCE", "TCS", "INFY"])), "still the same symbols: {syms:?}");
    }
}

#[test]
fn unsubscribing_symbols_reports_what_was_not_subscribed() {
    let s = sim(&[]);
    let (mut c, _) = trading(&s, "");
    // Before any subscribe the client receives everything: naming symbols
    // to stop cannot be honoured, and the error says what to do.
    c.send_json(json!({"type": "unsubscribe", "channel": "price_updates", "symbols": ["TCS"]}));
    check_error(&c.recv_type("error"), "unsubscribe without `symbols` to stop price updates");
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["RELIANCE", "TCS"]}));
    c.recv_type("subscribed");
    c.send_json(json!({"type": "unsubscribe", "channel": "price_updates", "symbols": ["TCS", "INFY", "NOPE"]}));
    let ack = c.recv_type("unsubscribed");
    assert_eq!(ack["symbols"], json!(["TCS"]));
    check_error(&c.recv_type("error"), "Unknown symbols: NOPE");
    check_error(&c.recv_type("error"), "Not subscribed to INFY");
    for syms in updates_after(&mut c, iso_ms(&ack["timestamp"]), 3) {
        assert_eq!(syms, names(&["RELIANCE"]));
    }
}

#[test]
fn bad_input_gets_an_error_with_timestamp_and_the_connection_stays() {
    let s = Server::start(&["--feed", "sim:rate=200"]);
    let (mut c, _) = trading(&s, "");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: &[(&str, &str, &str)] = &[
        ("malformed JSON", "{\"type\":", "Invalid message format: malformed JSON"),
        ("not JSON at all", "hello", "Invalid message format: malformed JSON"),
        ("deeply nested", &deep, "Invalid message format: JSON nested deeper than"),
        ("not an object", "[1,2]", "Invalid message format: expected a JSON object with a `type`"),
        ("no type", r#"{"channel":"signals"}"#, "missing field `type` (ping, subscribe or unsubscribe)"),
        ("type not a string", r#"{"type":5}"#, "field `type` must be a string"),
        (
            "unknown type",
            r#"{"type":"hello"}"#,
            "Unknown message type `hello` (expected ping, subscribe or unsubscribe)",
        ),
        ("no channel", r#"{"type":"subscribe","symbols":["TCS"]}"#, "missing field `channel`"),
        ("channel not a string", r#"{"type":"subscribe","channel":["signals"]}"#, "field `channel` must be a string"),
        (
            "unknown channel",
            r#"{"type":"subscribe","channel":"news"}"#,
            "Unknown channel `news` (expected price_updates, signals, trades or portfolio)",
        ),
        ("unknown channel to unsubscribe", r#"{"type":"unsubscribe","channel":"orders"}"#, "Unknown channel `orders`"),
        (
            "symbols not an array",
            r#"{"type":"subscribe","channel":"price_updates","symbols":"TCS"}"#,
            "field `symbols` must be an array of symbol strings",
        ),
        (
            "symbols not strings",
            r#"{"type":"subscribe","channel":"price_updates","symbols":[2885]}"#,
            "field `symbols` must be an array of symbol strings",
        ),
        (
            "price_updates without symbols",
            r#"{"type":"subscribe","channel":"price_updates"}"#,
            "subscribing to price_updates needs `symbols`",
        ),
        (
            "price_updates with no symbols",
            r#"{"type":"subscribe","channel":"price_updates","symbols":[]}"#,
            "subscribing to price_updates needs `symbols`",
        ),
        (
            "unsubscribe with an empty list",
            r#"{"type":"unsubscribe","channel":"price_updates","symbols":[]}"#,
            "`symbols` is empty",
        ),
        (
            "unknown symbols",
            r#"{"type":"subscribe","channel":"price_updates","symbols":["NOPE"]}"#,
            "Unknown symbols: NOPE",
        ),
    ];
    for (label, text, want) in cases {
        c.send(text);
        let v = c.recv_type("error");
        assert!(v["error"].as_str().unwrap().contains(want), "{label}: {v}");
        check_error(&v, want);
    }
    c.ws.send(Message::Binary(vec![1, 2, 3])).unwrap();
    check_error(&c.recv_type("error"), "binary messages are not accepted; send requests as JSON text frames");
    c.send_json(json!({"type": "ping"}));
    assert_eq!(c.recv_type("pong"), json!({"type": "pong"}), "still open after every bad message");
    let st = s.status_until("the bad requests counted", |st| st["counters"]["bad_requests"].as_u64() >= Some(18));
    assert_eq!(st["counters"]["bad_requests"], 18, "{st}");
}

#[test]
fn oversized_messages_close_with_1009() {
    let s = Server::start(&["--feed", "sim:rate=200", "--max-message-bytes", "1024"]);
    let (mut c, _) = trading(&s, "");
    c.send(&format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000)));
    let (code, reason) = c.recv_close();
    assert_eq!(code, 1009, "{reason}");
}

// ── channels ───────────────────────────────────────────────────────────

#[test]
fn signals_and_trades_are_relayed_verbatim() {
    let s = sim(&["--publish-listen", "127.0.0.1:0", "--websocket-price-update-interval", "3"]);
    let (mut c, _) = trading(&s, "");
    let next_relayed = |c: &mut Client| {
        c.recv_until("a signal or a trade", |v| v["type"] == "signal" || v["type"] == "trade_executed")
    };
    // The seed's messages, as a strategy process publishes them.
    let signal = json!({"type": "signal", "signal_type": "BUY", "symbol": "RELIANCE", "price": 2850.25, "quantity": 10, "confidence": 0.85, "timestamp": "2024-12-19T12:00:00Z"});
    let trade = json!({"type": "trade_executed", "symbol": "RELIANCE", "side": "BUY", "quantity": 10, "price": 2850.25, "timestamp": "2024-12-19T12:00:00Z"});
    publish(&s, &[json!({"channel": "signals", "data": signal}), json!({"channel": "trades", "data": trade})]);
    assert_eq!(next_relayed(&mut c), signal, "relayed exactly as published");
    assert_eq!(next_relayed(&mut c), trade);

    // Subscribing again is harmless (the MVP already receives them).
    for _ in 0..2 {
        c.send_json(json!({"type": "subscribe", "channel": "signals", "symbols": ["RELIANCE"]}));
        let ack = c.recv_type("subscribed");
        assert_eq!((&ack["channel"], keys(&ack)), (&json!("signals"), set(&["type", "channel", "timestamp"])));
    }
    let s2 = json!({"type": "signal", "signal_type": "SELL", "symbol": "TCS", "price": 3250.0, "quantity": 5, "confidence": 0.6, "timestamp": "2024-12-19T12:00:01Z"});
    let t2 = json!({"type": "trade_executed", "symbol": "TCS", "side": "SELL", "quantity": 5, "price": 3250.0, "timestamp": "2024-12-19T12:00:01Z"});
    publish(&s, &[json!({"channel": "signals", "data": s2}), json!({"channel": "trades", "data": t2})]);
    assert_eq!(next_relayed(&mut c), s2, "once, not once per subscribe");
    assert_eq!(next_relayed(&mut c), t2);

    // Unsubscribed from signals: trades still come, signals do not.
    c.send_json(json!({"type": "unsubscribe", "channel": "signals"}));
    assert_eq!(c.recv_type("unsubscribed")["channel"], "signals");
    let t3 = json!({"type": "trade_executed", "symbol": "INFY", "side": "BUY", "quantity": 1, "price": 1500.0, "timestamp": "2024-12-19T12:00:02Z"});
    publish(&s, &[json!({"channel": "signals", "data": s2}), json!({"channel": "trades", "data": t3})]);
    assert_eq!(next_relayed(&mut c), t3, "the signal published before it was not delivered");

    // Another client, fresh: the MVP subscribed it to both.
    let (mut d, _) = trading(&s, "");
    publish(&s, &[json!({"channel": "signals", "data": signal})]);
    assert_eq!(next_relayed(&mut d), signal);
    let st = websocket_status(&s);
    assert_iso(&st["stream_health"]["signals"]["last_update"]);
    assert_eq!(st["stream_health"]["signals"]["is_healthy"], true, "{st}");
}

/// Write an auth file with users alice and bob (keys `alice-key`, `bob-key`) and ops (admin, `ops-key`).
fn auth_file(tag: &str) -> std::path::PathBuf {
    let hash = |key: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).args(["hash-key", key]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let path = std::env::temp_dir().join(format!("tickcast-trading-{tag}-{}.toml", std::process::id()));
    let text = format!(
        "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\nroles = [\"subscribe\"]\n\n[[user]]\nid = \"bob\"\nkeys = [\"{}\"]\nroles = [\"subscribe\"]\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        hash("alice-key"),
        hash("bob-key"),
        hash("ops-key")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn portfolio(user: &str, count: u64) -> Value {
    json!({"channel": format!("private:{user}:portfolio"), "data": {
        "type": "portfolio_update", "channel": "portfolio", "timestamp": "2024-12-19T12:00:00Z",
        "data": {"positions": {"RELIANCE": {"symbol": "RELIANCE", "quantity": 10, "average_price": 2840.25,
            "market_price": 2850.5, "unrealized_pnl": 102.5, "unrealized_pnl_pct": 0.36}},
            "total_pnl": 102.5, "position_count": count, "owner": user}}})
}

#[test]
fn portfolio_updates_are_private_and_conflated_to_the_newest() {
    let auth = auth_file("portfolio");
    let publish: SocketAddr = format!("127.0.0.1:{}", util::free_port()).parse().unwrap();
    let s = Server::start(&[
        "--feed",
        "sim:rate=200",
        "--workers",
        "1",
        "--auth-file",
        auth.to_str().unwrap(),
        "--publish-listen",
        &publish.to_string(),
        "--websocket-portfolio-update-interval",
        "2",
        "--websocket-price-update-interval",
        "5",
    ]);
    let (status, _) = refused(&s, "/ws");
    assert_eq!(status, 401, "an API key is required with an auth file");
    let (mut a1, _) = trading(&s, "?api_key=alice-key");
    let (mut a2, _) = trading(&s, "?api_key=alice-key");
    let (mut b, _) = trading(&s, "?api_key=bob-key");
    // Subscribing explicitly changes nothing (idempotent).
    a2.send_json(json!({"type": "subscribe", "channel": "portfolio"}));
    assert_eq!(a2.recv_type("subscribed")["channel"], "portfolio");

    // Five updates at once: the newest wins; at most the first and the
    // newest are sent (one per 2 s interval).
    let burst: Vec<Value> = (1..=5).map(|n| portfolio("alice", n)).collect();
    publish_to(publish, &burst);
    for c in [&mut a1, &mut a2] {
        let mut got = Vec::new();
        while got.last() != Some(&5) {
            let v = c.recv_type("portfolio_update");
            assert_eq!(v["data"]["owner"], "alice");
            assert_eq!(v, burst[v["data"]["position_count"].as_u64().unwrap() as usize - 1]["data"], "verbatim");
            got.push(v["data"]["position_count"].as_u64().unwrap());
        }
        assert!(got.len() <= 2, "conflated to the newest per interval: {got:?}");
    }
    // Bob's first portfolio message is his own: had alice's reached his
    // connection, it would have gone out in the same housekeeping pass
    // that sent it to alice (one worker).
    publish_to(publish, &[portfolio("bob", 99)]);
    let v = b.recv_type("portfolio_update");
    assert_eq!((v["data"]["owner"].as_str(), v["data"]["position_count"].as_u64()), (Some("bob"), Some(99)), "{v}");

    // Unsubscribed: no more portfolio updates for a2 (a1 still gets them).
    a2.send_json(json!({"type": "unsubscribe", "channel": "portfolio"}));
    a2.recv_type("unsubscribed");
    publish_to(publish, &[portfolio("alice", 6)]);
    assert_eq!(a1.recv_type("portfolio_update")["data"]["position_count"], 6);
    a2.send_json(json!({"type": "ping"}));
    a2.recv_until("pong", |v| {
        assert_ne!(v["type"], "portfolio_update", "{v}");
        v["type"] == "pong"
    });
    let _ = std::fs::remove_file(auth);
}

// ── status and settings ────────────────────────────────────────────────

#[test]
fn websocket_status_has_the_seed_shape_and_counts_connections() {
    let s = sim(&["--publish-listen", "127.0.0.1:0", "--websocket-max-connections", "7"]);
    let st = websocket_status(&s);
    let top = [
        "enabled",
        "active_connections",
        "max_connections",
        "ping_interval",
        "price_update_interval",
        "portfolio_update_interval",
        "stream_health",
    ];
    assert_eq!(keys(&st), set(&top), "{st}");
    assert_eq!(
        (
            &st["enabled"],
            &st["max_connections"],
            &st["ping_interval"],
            &st["price_update_interval"],
            &st["portfolio_update_interval"]
        ),
        (&json!(true), &json!(7), &json!(30), &json!(0.2), &json!(5)),
        "{st}"
    );
    assert_eq!(st["active_connections"], 0);
    let prices = &st["stream_health"]["price_updates"];
    assert_eq!(keys(prices), set(&["last_update", "error_count", "recovery_attempts", "is_healthy", "started_at"]));
    assert_eq!(
        (&prices["error_count"], &prices["recovery_attempts"], &prices["is_healthy"]),
        (&json!(0), &json!(0), &json!(true))
    );
    assert!(iso_ms(&prices["started_at"]) <= iso_ms(&prices["last_update"]), "{prices}");
    let signals = &st["stream_health"]["signals"];
    assert_eq!(keys(signals), set(&["last_update", "error_count", "is_healthy"]));
    assert_eq!(
        (&signals["last_update"], &signals["error_count"], &signals["is_healthy"]),
        (&Value::Null, &json!(0), &json!(true))
    );

    let (c1, _) = trading(&s, "");
    let (_c2, _) = trading(&s, "");
    let _native = s.native();
    websocket_status_until(&s, "2 connections", |st| st["active_connections"] == 2);
    drop(c1);
    websocket_status_until(&s, "1 connection", |st| st["active_connections"] == 1);

    // A bad publisher line counts against the signals stream.
    publish(&s, &[json!({"channel": "bad name!", "data": 1})]);
    websocket_status_until(&s, "a signals error", |st| st["stream_health"]["signals"]["error_count"] == 1);
}

#[test]
fn max_connections_from_the_environment_refuses_with_503() {
    let s = Server::start_with_env(&["--feed", "sim:rate=200"], &[("WEBSOCKET_MAX_CONNECTIONS", "2")]);
    let (c1, _) = trading(&s, "");
    let (_c2, _) = trading(&s, "");
    let (code, body) = refused(&s, "/ws");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("connection limit (2, WEBSOCKET_MAX_CONNECTIONS)"), "{body}");
    let _native = s.native(); // the limit is the Trading endpoint's alone
    let st = websocket_status(&s);
    assert_eq!((&st["max_connections"], &st["active_connections"]), (&json!(2), &json!(2)), "{st}");
    assert_eq!(st["stream_health"]["signals"]["is_healthy"], false, "no channel publisher configured: {st}");
    drop(c1);
    websocket_status_until(&s, "a free place", |st| st["active_connections"] == 1);
    let (mut c3, _) = trading(&s, "");
    c3.send_json(json!({"type": "ping"}));
    assert_eq!(c3.recv_type("pong"), json!({"type": "pong"}));
}

#[test]
fn websocket_enabled_false_from_the_environment_answers_404() {
    let s = Server::start_with_env(&["--feed", "sim:rate=200"], &[("WEBSOCKET_ENABLED", "false")]);
    let (code, body) = refused(&s, "/ws");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("WEBSOCKET_ENABLED=false"), "{body}");
    assert_eq!(websocket_status(&s)["enabled"], false);
    let _native = s.native(); // the rest of the server is unaffected
}

#[test]
fn client_id_is_echoed_and_its_symbols_come_back_on_reconnect() {
    let s = sim(&[]);
    let (mut c, hello) = trading(&s, "?client_id=my-client-id");
    assert_eq!(hello["client_id"], "my-client-id");
    c.send_json(json!({"type": "subscribe", "channel": "price_updates", "symbols": ["TCS"]}));
    c.recv_type("subscribed");
    drop(c);
    websocket_status_until(&s, "the disconnect", |st| st["active_connections"] == 0);
    let (mut again, hello) = trading(&s, "?client_id=my-client-id");
    assert_eq!(hello["client_id"], "my-client-id");
    for _ in 0..3 {
        assert_eq!(check_price_update(&again.recv_type("price_update")), names(&["TCS"]), "restored, not everything");
    }
    let (code, body) = refused(&s, "/ws?client_id=");
    assert_eq!(code, 400);
    assert!(body.contains("client_id must be"), "{body}");
}

#[test]
fn idle_clients_get_websocket_pings_every_ping_interval() {
    let s = Server::start(&["--feed", "sim:rate=200", "--websocket-ping-interval", "0.3"]);
    let (mut c, _) = trading(&s, "");
    c.send_json(json!({"type": "unsubscribe", "channel": "price_updates"}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pings = 0;
    while pings < 2 {
        assert!(Instant::now() < deadline, "no ping frames to an idle client");
        if let Message::Ping(_) = c.ws.read().unwrap() {
            pings += 1;
        }
    }
}

#[test]
fn market_open_and_close_are_announced() {
    // Market hours run on the server's injected clock (`TICKCAST_CLOCK=@FILE`):
    // the test opens and closes the session by moving the clock.
    let clock = util::FileClock::new("2026-01-05T08:59:00+00:00");
    let s = Server::start_with_env(
        &["--market-hours", "09:00:00-09:30:00@+00:00", "--websocket-price-update-interval", "0.2"],
        &[("TICKCAST_CLOCK", &clock.env())],
    );
    let (mut c, hello) = trading(&s, "");
    assert_eq!(hello["market_open"], false);
    clock.set("2026-01-05T09:00:00+00:00");
    let opened = c.recv_until("market open", |v| {
        assert_ne!(v["type"], "price_update", "no prices while closed: {v}");
        v["type"] == "market_status"
    });
    assert_eq!(keys(&opened), set(&["type", "market_open", "timestamp"]));
    assert_eq!(opened["market_open"], true);
    assert_iso(&opened["timestamp"]);
    c.recv_type("price_update");
    clock.set("2026-01-05T09:30:00+00:00");
    let closed = c.recv_type("market_status");
    assert_eq!(keys(&closed), set(&["type", "market_open", "timestamp"]));
    assert_eq!(closed["market_open"], false);
}

// ── the seed's own JavaScript client ───────────────────────────────────

#[test]
fn seed_javascript_client_runs_unchanged_under_node() {
    let s = sim(&[]);
    let url = s.url("/ws");
    let stdout = util::run_client("node", "node/run_trading_client.js", &[&url]);
    let lines: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"))).collect();
    let logs: Vec<&str> = lines.iter().filter_map(|l| l["log"].as_str()).collect();
    assert_eq!(logs.first(), Some(&"WebSocket connected"), "{stdout}");
    assert!(logs.contains(&"Pong received"), "{stdout}");
    let update = lines.iter().find(|l| l["event"] == "price_update").expect("a price_update");
    let symbols = update["symbols"].as_object().unwrap();
    assert!(!symbols.is_empty());
    // The seed's onPriceUpdate printed one line per symbol: `SYM: $price (+pct%)`.
    for (sym, q) in symbols {
        let pct = q["change_pct"].as_f64().unwrap();
        let want = format!("{sym}: ${} ({}{}%)", q["price"], if pct > 0.0 { "+" } else { "" }, q["change_pct"]);
        assert!(logs.contains(&want.as_str()), "the seed logged `{want}`:\n{stdout}");
    }
    assert!(!lines.iter().any(|l| l.get("error_log").is_some()), "no errors: {stdout}");
    assert_eq!(lines.last(), Some(&json!({"done": true})));
}
