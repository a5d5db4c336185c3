//! The native protocol end to end: the real binary, real WebSocket clients.

mod util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{Client, Server};

/// Collect `n` market_data frames, checking snapshot-then-live and seq order.
fn collect_market_data(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut last: HashMap<u64, u64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} market_data frames in 30 s", out.len());
        let v = c.recv_json();
        if v["type"] != "market_data" {
            continue;
        }
        let token = v["token"].as_u64().unwrap();
        let seq = v["seq"].as_u64().unwrap();
        match last.insert(token, seq) {
            None => assert_eq!(v["snapshot"], true, "first frame of {token} is the snapshot: {v}"),
            Some(prev) => {
                assert!(seq > prev, "seq must strictly increase for {token}: {prev} then {seq}");
                assert!(v.get("snapshot").is_none(), "only the first frame is a snapshot: {v}");
            }
        }
        out.push(v);
    }
    out
}

#[test]
fn welcome_names_the_server_and_format() {
    let s = Server::sim();
    let mut c = s.connect("/stream?client_id=alice");
    let w = c.recv_json();
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["client_id"], "alice");
    assert_eq!(w["format"], "json");
    assert_eq!(w["market_open"], true);
    assert!(w["server"].as_str().unwrap().starts_with("tickcast "));
    let mut anon = s.native();
    anon.send_json(json!({"action": "ping", "id": 1}));
    assert_eq!(anon.recv_type("pong")["id"], 1);
}

#[test]
fn subscribe_by_token_acks_then_snapshot_then_live_in_seq_order() {
    let s = Server::sim();
    let mut c = s.native();
    let ack = c.request(json!({"action": "subscribe", "tokens": [2885, 11536, 99999999], "mode": "quote"}), 7);
    assert_eq!(ack["type"], "subscription_response");
    assert_eq!(ack["status"], "success");
    let d = &ack["data"];
    assert_eq!(d["action"], "subscribe");
    assert_eq!(d["subscribed"][0], json!({"token": 2885, "symbol": "RELIANCE", "exchange": "NSE", "mode": "quote"}));
    assert_eq!(d["subscribed"][1]["symbol"], "TCS");
    assert_eq!(d["rejected"], json!([{"token": 99999999, "reason": "unknown token"}]));
    assert_eq!(d["total_subscribed"], 2);
    let frames = collect_market_data(&mut c, 40);
    let tokens: std::collections::HashSet<u64> = frames.iter().map(|f| f["token"].as_u64().unwrap()).collect();
    assert_eq!(tokens, [2885, 11536].into_iter().collect::<std::collections::HashSet<u64>>());
    let f = &frames[0];
    assert_eq!(f["mode"], 2);
    for k in ["ltp", "ltq", "volume", "open", "high", "low", "close", "bid", "ask", "bid_qty", "ask_qty", "oi"] {
        assert!(f["data"][k].is_number(), "quote field {k} in {f}");
    }
    assert!(f["ts"].as_u64().unwrap() > 1_600_000_000_000_000_000, "ts is ns since epoch");
}

#[test]
fn subscribe_by_symbol_with_exchange_default_and_stocks_alias() {
    let s = Server::sim();
    let mut c = s.native();
    let ack = c.request(json!({"action": "subscribe", "symbols": ["NSE:RELIANCE", "tcs", "NOPE"]}), 1);
    let d = &ack["data"];
    assert_eq!(d["subscribed"].as_array().unwrap().len(), 2);
    assert_eq!(d["subscribed"][1]["token"], 11536);
    assert_eq!(d["subscribed"][0]["mode"], "ltp", "ltp is the default mode");
    assert_eq!(d["rejected"], json!([{"symbol": "NOPE", "reason": "unknown symbol"}]));
    let ack = c.request(json!({"action": "subscribe", "stocks": ["INFY"]}), 2);
    assert_eq!(ack["data"]["subscribed"][0]["token"], 1594);
    assert_eq!(ack["data"]["total_subscribed"], 3);
    let f = c.recv_until("ltp frame", |v| v["type"] == "market_data");
    assert_eq!(f["mode"], 1);
    assert_eq!(f["data"].as_object().unwrap().len(), 1, "ltp mode carries only ltp: {f}");
}

#[test]
fn all_rejected_is_an_error_status() {
    let s = Server::sim();
    let mut c = s.native();
    let ack = c.request(json!({"action": "subscribe", "tokens": [1, 2]}), 3);
    assert_eq!(ack["status"], "error");
    assert_eq!(ack["data"]["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(ack["data"]["total_subscribed"], 0);
}

#[test]
fn subscribing_again_changes_the_mode_without_duplicates() {
    let s = Server::sim();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}), 1);
    collect_market_data(&mut c, 3);
    let ack = c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 2);
    assert_eq!(ack["data"]["subscribed"][0]["mode"], "depth");
    assert_eq!(ack["data"]["total_subscribed"], 1);
    let f = c.recv_until("depth frame", |v| v["type"] == "market_data" && v["mode"] == 3);
    let depth = &f["data"]["depth"];
    assert_eq!(depth["buy"].as_array().unwrap().len(), 5);
    assert_eq!(depth["sell"].as_array().unwrap().len(), 5);
    for k in ["price", "quantity", "orders"] {
        assert!(depth["sell"][0][k].is_number(), "{depth}");
    }
    let subs = c.request(json!({"action": "get_subscriptions"}), 3);
    assert_eq!(subs["data"]["subscriptions"][0]["mode"], "depth");
}

#[test]
fn unsubscribe_stops_data() {
    let s = Server::sim();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885, 11536]}), 1);
    collect_market_data(&mut c, 4);
    let ack = c.request(json!({"action": "unsubscribe", "tokens": [2885, 1594]}), 2);
    assert_eq!(ack["data"]["unsubscribed"], json!([{"token": 2885, "symbol": "RELIANCE", "exchange": "NSE"}]));
    assert_eq!(ack["data"]["rejected"][0]["reason"], "not subscribed");
    assert_eq!(ack["data"]["total_subscribed"], 1);
    // Everything after the ack is for TCS only; read a good number of frames.
    let mut tcs = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tcs < 30 {
        assert!(Instant::now() < deadline, "TCS stream stalled");
        let v = c.recv_json();
        if v["type"] == "market_data" {
            assert_eq!(v["token"], 11536, "unsubscribed token still streaming: {v}");
            tcs += 1;
        }
    }
    let ack = c.request(json!({"action": "unsubscribe", "symbols": ["TCS"]}), 3);
    assert_eq!(ack["data"]["total_subscribed"], 0);
    let subs = c.request(json!({"action": "get_subscriptions"}), 4);
    assert_eq!(subs["data"]["subscriptions"], json!([]));
}

#[test]
fn get_subscriptions_lists_modes_and_delivery() {
    let s = Server::sim();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    c.request(json!({"action": "subscribe", "symbols": ["INFY"], "mode": 3, "delivery": "lossless"}), 2);
    c.request(json!({"action": "subscribe", "tokens": [11536], "max_rate": 4}), 3);
    let r = c.request(json!({"action": "get_subscriptions"}), 4);
    assert_eq!(r["type"], "subscription_response");
    assert_eq!(
        r["data"]["subscriptions"],
        json!([
            {"token": 2885, "symbol": "RELIANCE", "exchange": "NSE", "mode": "quote", "delivery": "conflate"},
            {"token": 1594, "symbol": "INFY", "exchange": "NSE", "mode": "depth", "delivery": "lossless"},
            {"token": 11536, "symbol": "TCS", "exchange": "NSE", "mode": "ltp", "delivery": "max_rate", "max_rate": 4},
        ])
    );
    assert_eq!(r["data"]["total_subscribed"], 3);
}

#[test]
fn snapshot_returns_last_values_without_subscribing() {
    let s = Server::sim();
    let mut c = s.native();
    let r = c.request(json!({"action": "snapshot", "tokens": [2885, 4242424], "mode": "quote"}), 9);
    assert_eq!(r["type"], "snapshot");
    let d = &r["data"][0];
    assert_eq!((d["token"].as_u64(), d["snapshot"].as_bool(), d["mode"].as_u64()), (Some(2885), Some(true), Some(2)));
    assert!(d["data"]["bid"].is_number());
    assert_eq!(r["rejected"], json!([{"token": 4242424, "reason": "unknown token"}]));
    let subs = c.request(json!({"action": "get_subscriptions"}), 10);
    assert_eq!(subs["data"]["total_subscribed"], 0, "snapshot does not subscribe");
}

#[test]
fn ping_pong_echoes_id_and_carries_ts() {
    let s = Server::sim();
    let mut c = s.native();
    // Sent as raw text: the ids in the pongs can only come from the requests.
    for (req, id) in [(r#"{"action":"ping","id":42}"#, json!(42)), (r#"{"action":"ping","id":"abc"}"#, json!("abc"))] {
        c.send(req);
        let p = c.recv_until("the pong", |v| v["type"] != "heartbeat");
        assert_eq!((&p["type"], &p["id"]), (&json!("pong"), &id), "{req}: {p}");
        assert!(p["ts"].as_u64().unwrap() > 0, "{p}");
    }
    c.send(r#"{"action":"ping"}"#);
    let p = c.recv_until("the pong", |v| v["type"] != "heartbeat");
    assert_eq!(p["type"], "pong", "{p}");
    assert!(p.get("id").is_none(), "no id asked, none echoed: {p}");
}

#[test]
fn query_tokens_subscribe_on_connect() {
    let s = Server::sim();
    let mut c = s.connect("/stream?tokens=2885,11536&mode=quote");
    assert_eq!(c.recv_json()["type"], "welcome");
    let ack = c.recv_type("subscription_response");
    assert_eq!(ack["data"]["total_subscribed"], 2);
    assert_eq!(ack["data"]["subscribed"][0]["mode"], "quote");
    collect_market_data(&mut c, 10);
}

#[test]
fn same_client_id_gets_its_subscriptions_back() {
    let s = Server::sim();
    let mut c = s.connect("/stream?client_id=desk-7");
    c.recv_json();
    c.request(json!({"action": "subscribe", "tokens": [2885, 1594], "mode": "quote"}), 1);
    let seen = collect_market_data(&mut c, 6);
    let last_seen = seen.iter().filter(|f| f["token"] == 2885).map(|f| f["seq"].as_u64().unwrap()).max().unwrap_or(0);
    drop(c);
    // The session is saved when the server drops the connection: wait for that.
    s.status_until("the disconnect", |st| st["connections"] == 0);
    let mut again = s.connect("/stream?client_id=desk-7");
    assert_eq!(again.recv_json()["client_id"], "desk-7");
    let restored = again.recv_type("subscription_response");
    assert_eq!(restored["data"]["action"], "restore");
    assert_eq!(restored["data"]["total_subscribed"], 2);
    assert_eq!(restored["data"]["subscribed"][0]["mode"], "quote");
    let frames = collect_market_data(&mut again, 6);
    let first = frames.iter().find(|f| f["token"] == 2885).unwrap();
    assert!(first["seq"].as_u64().unwrap() >= last_seen, "snapshot is the newest value");
    // Another id does not see them.
    let mut other = s.connect("/stream?client_id=desk-8");
    other.recv_json();
    let subs = other.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(subs["data"]["total_subscribed"], 0);
}

/// Sessions are for clients that asked to be resumed: a client without a
/// `client_id` leaves none behind, even under the id it was given.
#[test]
fn a_generated_client_id_keeps_no_session() {
    let s = Server::sim();
    let mut c = s.connect("/stream");
    let given = c.recv_json()["client_id"].as_str().unwrap().to_string();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}), 1);
    drop(c);
    s.status_until("the disconnect", |st| st["connections"] == 0);
    let mut again = s.connect(&format!("/stream?client_id={given}"));
    assert_eq!(again.recv_json()["client_id"], given.as_str());
    let subs = again.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(subs["data"]["action"], "get_subscriptions", "no restore came first: {subs}");
    assert_eq!(subs["data"]["total_subscribed"], 0, "{subs}");
}

#[test]
fn idle_clients_get_heartbeats_with_feed_health() {
    let s = Server::start(&["--heartbeat-ms", "200"]);
    s.warm();
    let mut c = s.native();
    let hb = c.recv_type("heartbeat");
    assert!(hb["ts"].as_u64().unwrap() > 0);
    let feed = &hb["feeds"][0];
    assert_eq!(feed["name"], "sim");
    assert_eq!(feed["state"], "live");
    assert!(feed["last_tick_age_ms"].is_number());
}

#[test]
fn rate_capped_subscription_delivers_the_newest_value_marked_conflated() {
    let s = Server::start(&["--feed", "sim:rate=20000"]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "max_rate": 5}), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut frames = Vec::new();
    while frames.len() < 6 {
        assert!(Instant::now() < deadline, "capped stream stalled (6 frames not in 30 s): {frames:?}");
        let v = c.recv_json();
        if v["type"] == "market_data" {
            frames.push(v);
        }
    }
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    // At 20k ticks/s over 54 instruments RELIANCE ticks ~370 times a second;
    // five capped updates must have skipped ticks and said so.
    assert!(frames[1..].iter().any(|f| f["conflated"] == true), "skips are flagged: {frames:?}");
    let span = seqs[5] - seqs[0];
    assert!(span > 5, "capped: 6 frames spanned only {span} seqs: {seqs:?}");
}

#[test]
fn plain_http_endpoints() {
    let s = Server::sim();
    let (code, body) = s.get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let st = s.status();
    for k in ["server", "connections", "subscriptions", "feeds", "ring_overruns", "counters", "latency_ns", "workers"] {
        assert!(st.get(k).is_some(), "/status has {k}: {st}");
    }
    for k in ["window_s", "p50", "p90", "p99", "p99_9", "max", "count"] {
        assert!(st["latency_ns"][k].is_number(), "latency {k}");
    }
    assert_eq!(st["feeds"][0]["state"], "live");
    let (code, metrics) = s.get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "tickcast_connections{dialect=\"native\"} ",
        "tickcast_delivery_latency_seconds_bucket{le=\"+Inf\"} ",
        "tickcast_feed_ticks_total{feed=\"sim\"}",
        "tickcast_slow_consumer_conflations_total",
    ] {
        assert!(metrics.contains(name), "/metrics has {name}");
    }
    let (code, page) = s.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("<html") && page.contains("/stream"));
    assert_eq!(s.get("/nope").0, 404);
}

/// `printf 'GET /status …' | nc -N`, or any client that shuts down its
/// sending side after the request, still gets the whole answer: the reply
/// is rendered off the worker, so it may arrive after the peer's FIN.
#[test]
fn a_request_followed_by_a_half_close_is_still_answered() {
    use std::io::{Read, Write};
    let s = Server::sim();
    for path in ["/status", "/metrics", "/healthz", "/nope"] {
        let mut t = std::net::TcpStream::connect(s.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(t, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        t.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        t.read_to_string(&mut out).unwrap();
        let want = if path == "/nope" { "HTTP/1.1 404" } else { "HTTP/1.1 200" };
        assert!(out.starts_with(want), "{path}: {out:?}");
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        assert!(!body.is_empty(), "{path}: the body arrived whole: {out:?}");
    }
}

#[test]
fn status_counts_connections_subscriptions_and_latency() {
    let s = Server::sim();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885, 11536, 1594]}), 1);
    collect_market_data(&mut c, 20);
    let st = s.status_until("the subscriptions and latency", |st| {
        st["subscriptions"] == 3 && st["latency_ns"]["count"].as_u64() > Some(0)
    });
    assert_eq!(st["connections"], 1, "the status request itself is HTTP, not counted until upgraded: {st}");
    let p = &st["latency_ns"];
    assert!(p["p50"].as_u64() <= p["p99"].as_u64() && p["p99"].as_u64() <= p["max"].as_u64(), "{p}");
    drop(c);
    s.status_until("the disconnect", |st| st["connections"] == 0 && st["subscriptions"] == 0);
}

#[test]
fn market_hours_announce_transitions_and_pause_the_simulator() {
    // Market hours run on the server's injected clock (`TICKCAST_CLOCK=@FILE`):
    // the test opens and closes the session by moving the clock, so a slow
    // start-up cannot miss the window.
    let clock = util::FileClock::new("2026-01-05T08:59:00+00:00");
    let s = Server::start_with_env(
        &["--market-hours", "09:00:00-09:30:00@+00:00", "--heartbeat-ms", "300"],
        &[("TICKCAST_CLOCK", &clock.env())],
    );
    let mut c = s.native_with(|w| assert_eq!(w["market_open"], false, "{w}"));
    let r = c.request(json!({"action": "subscribe", "tokens": [2885, 11536]}), 1);
    assert_eq!(r["data"]["total_subscribed"], 2, "subscriptions are accepted while closed");
    let hb = c.recv_type("heartbeat");
    assert_eq!((hb["market_open"].as_bool(), hb["feeds"][0]["state"].as_str()), (Some(false), Some("paused")));
    clock.set("2026-01-05T09:00:00+00:00");
    let opened = c.recv_until("market open", |v| {
        assert!(v["type"] != "market_data", "no data while closed: {v}");
        v["type"] == "market_status"
    });
    assert_eq!(opened["market_open"], true);
    c.recv_until("data while open", |v| v["type"] == "market_data");
    clock.set("2026-01-05T09:30:00+00:00");
    let closed = c.recv_type("market_status");
    assert_eq!(closed["market_open"], false);
    // Paused again: once the simulator has stopped (status says so) and a
    // heartbeat stamped after that has gone out, only heartbeats come.
    s.status_until("the simulator paused", |st| st["market_open"] == false && st["feeds"][0]["state"] == "paused");
    let paused_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    c.recv_until("a heartbeat after the pause", |v| v["type"] == "heartbeat" && v["ts"].as_u64() > Some(paused_at));
    c.recv_type("heartbeat");
    for _ in 0..2 {
        let next = c.recv_json();
        assert_eq!(next["type"], "heartbeat", "nothing but heartbeats while closed: {next}");
    }
    assert_eq!(
        c.request(json!({"action": "get_subscriptions"}), 2)["data"]["total_subscribed"],
        2,
        "kept through the close"
    );
}

/// Two instances on one host with only `--listen` changed both start: a
/// default-on OpenAlgo listener whose port is taken stays off with a
/// warning; one asked for explicitly still fails the start.
#[test]
fn a_taken_default_openalgo_port_leaves_it_off_but_an_explicit_one_fails() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    // Whoever holds 127.0.0.1:8765 (us, or another server on this host),
    // it is taken while this test runs.
    let _held = std::net::TcpListener::bind("127.0.0.1:8765");
    assert!(std::net::TcpListener::bind("127.0.0.1:8765").is_err(), "8765 is taken");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(banner.contains("listening on ws://127.0.0.1:") && !banner.contains("OpenAlgo:"), "{banner}");
    assert!(stderr.contains("the default OpenAlgo listener stays off"), "warned: {stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an explicit listener that cannot bind fails the start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the OpenAlgo listener") && stderr.contains(&addr), "{stderr}");
}
