//! Exchange streams (seed `004_…`) end to end: Binance-style requests at `/`
//! on the main port, `{"stream","data"}` frames derived from instrument
//! ticks, and channel streams relayed verbatim from the publish port and
//! from Redis — with the seed's own client flow (Node `ws`) at the end.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;
use util::{Client, Redis, Server};

/// Send `req` (which carries an `id`) and return the reply with that id,
/// skipping stream frames.
fn call(c: &mut Client, req: Value) -> Value {
    let id = req["id"].clone();
    c.send_json(req);
    c.recv_until("the reply", |v| v.get("stream").is_none() && v["id"] == id)
}

/// `call` for a request that must succeed with `result: null`.
fn ok(c: &mut Client, method: &str, params: &[&str], id: u64) {
    let r = call(c, json!({"method": method, "params": params, "id": id}));
    assert_eq!(r, json!({"result": null, "id": id}), "{method} {params:?}");
}

fn list(c: &mut Client, id: u64) -> Value {
    let r = call(c, json!({"method": "LIST_SUBSCRIPTIONS", "id": id}));
    assert_eq!(r["id"], id, "{r}");
    r["result"].clone()
}

/// The next text message, as JSON (pings are answered and skipped).
fn next(c: &mut Client) -> Value {
    c.recv_json()
}

/// The next frame of `stream`, skipping others.
fn next_of(c: &mut Client, stream: &str) -> Value {
    c.recv_until(stream, |v| v["stream"] == stream)
}

fn is_decimal(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let (i, f) = s.split_once('.').unwrap_or((s, "0"));
        !i.is_empty() && !f.is_empty() && (i.bytes().chain(f.bytes())).all(|b| b.is_ascii_digit())
    })
}

fn is_count(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn price(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

/// Check one frame against the seed's messages, field by field and type by
/// type; returns its stream type.
fn check_seed_frame(v: &Value, market: &str) -> String {
    let obj = v.as_object().unwrap_or_else(|| panic!("a frame is an object: {v}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["stream", "data"], "{v}");
    let stream = v["stream"].as_str().unwrap();
    let (kind, name) = stream.split_once('@').unwrap();
    assert_eq!(name, market, "{v}");
    let d = &v["data"];
    assert_eq!((d["e"].as_str(), d["s"].as_str()), (Some(kind), Some(market)), "{v}");
    match kind {
        "trade" => {
            assert!(d["t"].is_u64(), "t is a number: {v}");
            assert!(d["m"].is_boolean(), "m is a boolean: {v}");
            assert!(is_decimal(&d["p"]) && is_count(&d["q"]), "p, q are strings: {v}");
        }
        "ticker" => assert!(is_decimal(&d["c"]), "c is a string: {v}"),
        "depth" => {
            for side in ["a", "b"] {
                let levels = d[side].as_array().unwrap_or_else(|| panic!("{side} is an array: {v}"));
                assert!(!levels.is_empty(), "{v}");
                for l in levels {
                    let pair = l.as_array().unwrap();
                    assert!(pair.len() == 2 && is_decimal(&pair[0]) && is_count(&pair[1]), "[price, qty]: {v}");
                }
            }
            let (ask, bid) = (price(&d["a"][0][0]), price(&d["b"][0][0]));
            assert!(bid < ask, "best bid below best ask: {v}");
            let asks: Vec<f64> = d["a"].as_array().unwrap().iter().map(|l| price(&l[0])).collect();
            let bids: Vec<f64> = d["b"].as_array().unwrap().iter().map(|l| price(&l[0])).collect();
            assert!(asks.windows(2).all(|w| w[0] < w[1]) && bids.windows(2).all(|w| w[0] > w[1]), "{v}");
        }
        other => panic!("unexpected stream type {other}: {v}"),
    }
    kind.to_string()
}

fn publisher(s: &Server) -> TcpStream {
    TcpStream::connect(s.publish_addr()).unwrap()
}

/// A server whose only inputs are the publish port (ticks and channels we
/// write ourselves, so every value is known).
fn publish_only() -> Server {
    Server::start(&["--feed", "udp://127.0.0.1:0", "--publish-listen", "127.0.0.1:0"])
}

/// The seed's trade message for its example market.
fn seed_trade(t: u64) -> Value {
    json!({"stream": "trade@TATA_INR", "data": {"e": "trade", "t": t, "m": false, "p": "1000.50", "q": "10", "s": "TATA_INR"}})
}

fn seed_depth() -> Value {
    json!({"stream": "depth@TATA_INR", "data": {"a": [["1001.00", "50"]], "b": [["1000.00", "30"]], "e": "depth"}})
}

#[test]
fn plain_get_serves_the_page_and_an_upgrade_speaks_exchange_streams() {
    let s = Server::start(&["--feed", "sim:rate=1000"]);
    let (code, body) = s.get("/");
    assert_eq!(code, 200);
    assert!(body.to_ascii_lowercase().contains("<html"), "{body}");
    let mut c = s.connect("/");
    // The seed's server says nothing on connect: the first message is a reply.
    assert_eq!(call(&mut c, json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})), json!({"result": [], "id": 1}));
}

#[test]
fn seed_conversation_gives_trade_depth_and_ticker_frames_with_the_seed_fields() {
    let s = Server::sim();
    let mut c = s.connect("/");
    let params = ["trade@RELIANCE", "depth@RELIANCE", "ticker@RELIANCE"];
    c.send_json(json!({"method": "SUBSCRIBE", "params": params, "id": 1}));
    assert_eq!(next(&mut c), json!({"result": null, "id": 1}), "the reply comes first");
    // Snapshot of the cached last value: the book and the ticker, never a
    // replayed trade.
    let snap: Vec<String> = (0..2).map(|_| check_seed_frame(&next(&mut c), "RELIANCE")).collect();
    assert_eq!(snap, ["ticker", "depth"]);
    let (mut trades, mut tickers, mut depths) = (Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while trades.len() < 5 || tickers < 2 || depths < 2 {
        assert!(Instant::now() < deadline, "{} trades, {tickers} tickers, {depths} depths in 30 s", trades.len());
        let v = next(&mut c);
        match check_seed_frame(&v, "RELIANCE").as_str() {
            "trade" => trades.push(v["data"]["t"].as_u64().unwrap()),
            "ticker" => tickers += 1,
            _ => depths += 1,
        }
    }
    assert!(trades.windows(2).all(|w| w[0] < w[1]), "trade ids increase: {trades:?}");
    assert_eq!(list(&mut c, 3), json!(["trade@RELIANCE", "ticker@RELIANCE", "depth@RELIANCE"]));
    ok(&mut c, "UNSUBSCRIBE", &params, 4);
    assert_eq!(list(&mut c, 5), json!([]));
}

/// Exact frames from ticks we publish: streams of one market share one
/// subscription; adding and removing streams changes what each tick sends;
/// UNSUBSCRIBE stops a stream (proved with a later tick of another
/// instrument on the same feed, which arrives in order).
#[test]
fn streams_of_a_market_share_one_subscription_and_unsubscribe_stops_them() {
    let s = publish_only();
    let mut c = s.connect("/");
    let mut p = publisher(&s);
    ok(&mut c, "SUBSCRIBE", &["trade@reliance"], 1);
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":2850.5,"ltq":10,"bid":2850.45,"ask":2850.55,"volume":100}}}}"#)
        .unwrap();
    assert_eq!(
        next(&mut c),
        json!({"stream": "trade@RELIANCE", "data": {"e": "trade", "t": 1, "m": false, "p": "2850.50", "q": "10", "s": "RELIANCE"}})
    );
    // A second stream of the same market (any spelling): the reply, then
    // the new stream's snapshot; still one subscription.
    c.send_json(json!({"method": "SUBSCRIBE", "params": ["ticker@NSE:RELIANCE"], "id": 2}));
    assert_eq!(next(&mut c), json!({"result": null, "id": 2}));
    let t = next(&mut c);
    assert_eq!((t["stream"].as_str(), t["data"]["c"].as_str()), (Some("ticker@RELIANCE"), Some("2850.50")), "{t}");
    s.status_until("one subscription", |st| st["subscriptions"] == 1);
    // One tick now sends both streams, trade first.
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":2851,"ltq":5,"volume":105}}}}"#).unwrap();
    let (a, b) = (next(&mut c), next(&mut c));
    assert_eq!(
        (a["stream"].as_str(), a["data"]["t"].as_u64(), a["data"]["p"].as_str(), a["data"]["q"].as_str()),
        (Some("trade@RELIANCE"), Some(2), Some("2851.00"), Some("5")),
        "{a}"
    );
    assert_eq!(
        (b["stream"].as_str(), b["data"]["c"].as_str(), b["data"]["v"].as_str()),
        (Some("ticker@RELIANCE"), Some("2851.00"), Some("105"))
    );

    // Drop the trade stream; TCS's ticker is the marker that the next
    // RELIANCE tick has been through the fan-out.
    ok(&mut c, "UNSUBSCRIBE", &["TRADE@RELIANCE"], 3);
    ok(&mut c, "SUBSCRIBE", &["ticker@TCS"], 4);
    assert_eq!(list(&mut c, 5), json!(["ticker@RELIANCE", "ticker@TCS"]));
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":2852,"ltq":7}}}}"#).unwrap();
    writeln!(p, r#"{{"tick":{{"token":11536,"ltp":3500,"ltq":1}}}}"#).unwrap();
    let r = next(&mut c);
    assert_eq!(
        (r["stream"].as_str(), r["data"]["c"].as_str()),
        (Some("ticker@RELIANCE"), Some("2852.00")),
        "no trade: {r}"
    );
    assert_eq!(next(&mut c)["stream"], "ticker@TCS");

    // Drop the last stream of RELIANCE: its subscription goes.
    ok(&mut c, "UNSUBSCRIBE", &["ticker@RELIANCE"], 6);
    writeln!(p, r#"{{"tick":{{"token":2885,"ltp":2853,"ltq":7}}}}"#).unwrap();
    writeln!(p, r#"{{"tick":{{"token":11536,"ltp":3501,"ltq":1}}}}"#).unwrap();
    let m = next(&mut c);
    assert_eq!(
        (m["stream"].as_str(), m["data"]["c"].as_str()),
        (Some("ticker@TCS"), Some("3501.00")),
        "nothing of RELIANCE: {m}"
    );
    assert_eq!(list(&mut c, 7), json!(["ticker@TCS"]));
    // Streams not held unsubscribe quietly, as on Binance.
    ok(&mut c, "UNSUBSCRIBE", &["depth@INFY", "trade@RELIANCE"], 8);
    s.status_until("one subscription", |st| st["subscriptions"] == 1);
}

#[test]
fn channel_streams_relay_publish_port_messages_verbatim() {
    let s = publish_only();
    let mut c = s.connect("/");
    ok(&mut c, "SUBSCRIBE", &["trade@TATA_INR", "depth@TATA_INR"], 1);
    let mut p = publisher(&s);
    // The seed's trading engine publishes the whole message; the client
    // gets exactly it, and nothing of a channel it did not subscribe to.
    let line = |name: &str, data: &Value| format!("{}\n", json!({"channel": name, "data": data}));
    p.write_all(line("trade@TATA_INR", &seed_trade(12345)).as_bytes()).unwrap();
    p.write_all(line("trade@OTHER_INR", &seed_trade(1)).as_bytes()).unwrap();
    p.write_all(line("depth@TATA_INR", &seed_depth()).as_bytes()).unwrap();
    let Message::Text(text) = c.recv() else { panic!("a text frame") };
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), seed_trade(12345), "{text}");
    assert_eq!(next(&mut c), seed_depth());

    // Instrument streams list first, then channel streams.
    ok(&mut c, "SUBSCRIBE", &["ticker@RELIANCE"], 2);
    assert_eq!(list(&mut c, 3), json!(["ticker@RELIANCE", "trade@TATA_INR", "depth@TATA_INR"]));
    ok(&mut c, "UNSUBSCRIBE", &["trade@TATA_INR"], 4);
    p.write_all(line("trade@TATA_INR", &seed_trade(12346)).as_bytes()).unwrap();
    p.write_all(line("depth@TATA_INR", &seed_depth()).as_bytes()).unwrap();
    assert_eq!(next(&mut c), seed_depth(), "the trade stream stopped");
    assert_eq!(list(&mut c, 5), json!(["ticker@RELIANCE", "depth@TATA_INR"]));
}

/// The seed's deployment: the trading engine `PUBLISH`es on Redis channels
/// named after the streams, and the server (`--feed redis://…`) subscribes
/// on Redis only while a client wants them. Instrument streams come over
/// the same Redis from an origin tickcast (`--publish`).
#[test]
fn redis_channels_reach_the_client_verbatim_and_instrument_streams_cross_redis() {
    let redis = Redis::start();
    let origin = Server::start(&["--feed", "sim:rate=2000,seed=3", "--publish", &redis.url()]);
    let edge = Server::start(&["--feed", &redis.url()]);
    let mut c = edge.connect("/");
    ok(&mut c, "SUBSCRIBE", &["trade@TATA_INR"], 1);
    let numsub = |r: &Redis| r.raw(&["PUBSUB", "NUMSUB", "trade@TATA_INR"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !numsub(&redis).ends_with(":1\r\n") {
        assert!(Instant::now() < deadline, "the edge never subscribed on Redis: {:?}", numsub(&redis));
        std::thread::sleep(Duration::from_millis(50));
    }
    let payload =
        r#"{"stream":"trade@TATA_INR","data":{"e":"trade","t":12345,"m":false,"p":"1000.50","q":"10","s":"TATA_INR"}}"#;
    assert_eq!(redis.command(&["PUBLISH", "trade@TATA_INR", payload]).as_deref(), Some(":1"));
    match c.recv() {
        Message::Text(t) => assert_eq!(t.as_str(), payload, "relayed byte for byte"),
        other => panic!("expected the relayed text, got {other:?}"),
    }
    // Ticks published by the origin become exchange frames at the edge.
    ok(&mut c, "SUBSCRIBE", &["trade@TCS", "depth@TCS"], 2);
    for stream in ["trade@TCS", "depth@TCS"] {
        check_seed_frame(&next_of(&mut c, stream), "TCS");
    }
    // The last client leaving a stream unsubscribes the edge on Redis.
    ok(&mut c, "UNSUBSCRIBE", &["trade@TATA_INR"], 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !numsub(&redis).ends_with(":0\r\n") {
        assert!(Instant::now() < deadline, "the edge never unsubscribed on Redis: {:?}", numsub(&redis));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(origin);
}

/// Every bad input gets a Binance-style error (`code` 2 invalid request, 3
/// not JSON), echoes the request's id where it had a usable one, and
/// leaves the connection open and its subscriptions as they were.
#[test]
fn bad_requests_get_binance_errors_and_the_connection_stays_open() {
    let s = Server::start(&["--feed", "sim:rate=1000"]);
    let mut c = s.connect("/");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, String, u64, Value, &str)> = vec![
        ("malformed JSON", "{\"method\":".into(), 3, Value::Null, "Invalid JSON"),
        ("not JSON at all", "hello".into(), 3, Value::Null, "Invalid JSON"),
        ("nested too deep", deep, 3, Value::Null, "nested deeper"),
        ("an array", "[]".into(), 2, Value::Null, "a request is a JSON object"),
        ("a string", "\"SUBSCRIBE\"".into(), 2, Value::Null, "a request is a JSON object"),
        ("no method", r#"{"id":1}"#.into(), 2, json!(1), "missing field `method`"),
        ("method not a string", r#"{"method":5,"id":2}"#.into(), 2, json!(2), "`method` must be a string"),
        ("unknown method", r#"{"method":"SET_PROPERTY","id":3}"#.into(), 2, json!(3), "unknown method `SET_PROPERTY`"),
        ("id an object", r#"{"method":"LIST_SUBSCRIPTIONS","id":{"a":1}}"#.into(), 2, Value::Null, "request ID"),
        ("id a float", r#"{"method":"LIST_SUBSCRIPTIONS","id":1.5}"#.into(), 2, Value::Null, "request ID"),
        ("no params", r#"{"method":"SUBSCRIBE","id":"s"}"#.into(), 2, json!("s"), "missing field `params`"),
        (
            "params a string",
            r#"{"method":"SUBSCRIBE","params":"trade@RELIANCE","id":4}"#.into(),
            2,
            json!(4),
            "must be an array",
        ),
        (
            "param a number",
            r#"{"method":"UNSUBSCRIBE","params":[2885],"id":5}"#.into(),
            2,
            json!(5),
            "must be an array of stream names",
        ),
        (
            "unknown stream type",
            r#"{"method":"SUBSCRIBE","params":["kline@RELIANCE"],"id":6}"#.into(),
            2,
            json!(6),
            "unknown stream type `kline`",
        ),
        (
            "no @",
            r#"{"method":"SUBSCRIBE","params":["RELIANCE"],"id":7}"#.into(),
            2,
            json!(7),
            "is not `<type>@<market>`",
        ),
        ("no market", r#"{"method":"SUBSCRIBE","params":["trade@"],"id":8}"#.into(), 2, json!(8), "names no market"),
        (
            "unknown market, no channel source",
            r#"{"method":"SUBSCRIBE","params":["trade@TATA_INR"],"id":9}"#.into(),
            2,
            json!(9),
            "unknown market `TATA_INR`",
        ),
        (
            "bad name in UNSUBSCRIBE",
            r#"{"method":"UNSUBSCRIBE","params":["kline@TCS"],"id":10}"#.into(),
            2,
            json!(10),
            "unknown stream type",
        ),
        // One bad stream refuses the whole request.
        (
            "one bad of two",
            r#"{"method":"SUBSCRIBE","params":["trade@RELIANCE","kline@RELIANCE"],"id":11}"#.into(),
            2,
            json!(11),
            "unknown stream type",
        ),
    ];
    let n = cases.len() as u64;
    for (label, text, code, id, msg) in cases {
        c.send(&text);
        let r = next(&mut c);
        assert_eq!(
            r.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["error".into(), "id".into()]),
            "{label}: {r}"
        );
        assert_eq!((r["error"]["code"].as_u64(), &r["id"]), (Some(code), &id), "{label}: {r}");
        assert!(r["error"]["msg"].as_str().unwrap().contains(msg), "{label}: {r}");
    }
    c.ws.send(Message::binary(vec![0x7b, 0x7d])).unwrap();
    let r = next(&mut c);
    assert_eq!((r["error"]["code"].as_u64(), &r["id"]), (Some(3), &Value::Null), "binary: {r}");
    assert!(r["error"]["msg"].as_str().unwrap().contains("binary messages are not accepted"), "{r}");
    assert_eq!(list(&mut c, 20), json!([]), "nothing was subscribed by a refused request");
    // Still a working connection; the id can be a string or null.
    assert_eq!(
        call(&mut c, json!({"method": "subscribe", "params": ["ticker@tcs"], "id": "x"})),
        json!({"result": null, "id": "x"})
    );
    c.send(r#"{"method":"LIST_SUBSCRIPTIONS","id":null}"#);
    assert_eq!(c.recv_until("the list", |v| v.get("result").is_some()), json!({"result": ["ticker@TCS"], "id": null}));
    s.status_until("every error counted", |st| st["counters"]["bad_requests"].as_u64() == Some(n + 1));
}

#[test]
fn channel_names_are_checked_where_a_channel_source_exists() {
    let s = publish_only();
    let mut c = s.connect("/");
    let r = call(&mut c, json!({"method": "SUBSCRIBE", "params": ["trade@TATA INR"], "id": 1}));
    assert_eq!(r["error"]["code"], 2, "{r}");
    assert!(r["error"]["msg"].as_str().unwrap().contains("not a channel name"), "{r}");
    // Channel names are case-sensitive (Redis channels are); the type is not.
    ok(&mut c, "SUBSCRIBE", &["TRADE@tata_inr"], 2);
    assert_eq!(list(&mut c, 3), json!(["trade@tata_inr"]));
}

#[test]
fn oversized_messages_close_with_1009() {
    let s = Server::start(&["--feed", "sim:rate=1000", "--max-message-bytes", "1024"]);
    let mut c = s.connect("/");
    let params: Vec<String> = (0..100).map(|i| format!("trade@MARKET_{i}")).collect();
    c.send_json(json!({"method": "SUBSCRIBE", "params": params, "id": 1}));
    assert_eq!(c.recv_close().0, 1009);
}

/// `--max-subscriptions` counts markets and channels (all streams of one
/// market are one subscription); a request that would pass it is refused
/// as a whole.
#[test]
fn the_subscription_limit_counts_markets_and_channels() {
    let s = Server::start(&["--feed", "sim:rate=1000", "--publish-listen", "127.0.0.1:0", "--max-subscriptions", "2"]);
    let mut c = s.connect("/");
    ok(&mut c, "SUBSCRIBE", &["trade@RELIANCE", "depth@RELIANCE", "ticker@TCS"], 1);
    for (id, stream) in [(2, "trade@INFY"), (3, "trade@TATA_INR")] {
        let r = call(&mut c, json!({"method": "SUBSCRIBE", "params": [stream], "id": id}));
        assert_eq!(r["error"]["code"], 2, "{r}");
        assert!(r["error"]["msg"].as_str().unwrap().contains("subscription limit reached: at most 2"), "{r}");
    }
    let held = json!(["trade@RELIANCE", "depth@RELIANCE", "ticker@TCS"]);
    assert_eq!(list(&mut c, 4), held, "refused requests changed nothing");
    ok(&mut c, "SUBSCRIBE", &["ticker@RELIANCE"], 5); // a held market: no new unit
    ok(&mut c, "UNSUBSCRIBE", &["ticker@TCS"], 6);
    ok(&mut c, "SUBSCRIBE", &["trade@TATA_INR"], 7);
    assert_eq!(list(&mut c, 8), json!(["trade@RELIANCE", "ticker@RELIANCE", "depth@RELIANCE", "trade@TATA_INR"]));
    // One request cannot name more than max(limit, 1000) streams.
    let params: Vec<String> = (0..1001).map(|i| format!("trade@M{i}")).collect();
    let r = call(&mut c, json!({"method": "UNSUBSCRIBE", "params": params, "id": 9}));
    assert!(r["error"]["msg"].as_str().unwrap().contains("too many parameters (1001; at most 1000)"), "{r}");
}

/// The seed's own client flow, in Node with the `ws` package:
/// `tests/node/exchange_client.js`. Needs `node` and
/// `npm install --prefix tests/node` (scripts/test does it); fails, never
/// skips, without them.
#[test]
fn node_ws_client_runs_the_seed_flow() {
    let s = Server::sim();
    let url = format!("ws://{}", s.addr);
    let stdout = util::run_client("node", "node/exchange_client.js", &[&url]);
    assert!(stdout.starts_with("OK: depth@RELIANCE, ticker@RELIANCE, trade@RELIANCE"), "{stdout}");
}
