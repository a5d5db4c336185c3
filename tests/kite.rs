//! The Kite ticker dialect end to end: the official `kiteconnect` client
//! (PyPI) unchanged against `/kite` and `--kite-listen`, with known ticks
//! fed in over UDP; the wire format, batching, heartbeat, errors and auth
//! checked byte by byte with a Rust client.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickcast::feed::tcf1;
use tickcast::tick::{Level, Tick, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};
use tungstenite::Message;
use util::{Client, Server};

const RELIANCE: u32 = 738561;
const NIFTY: u32 = 26000 * 256 + 9;
/// The ticks' exchange time: 2025-11-21 08:00:00 UTC.
const TS_S: u64 = 1_763_712_000;

/// RELIANCE with `seq`: ltp 2850.50 + seq paise, volume 1000 × seq, depth.
fn reliance(seq: u64) -> Tick {
    let mut t = Tick {
        token: 2885,
        seq,
        ts_ns: TS_S * 1_000_000_000 + seq,
        ltp: 285050 + seq as i64,
        ltq: 10,
        volume: 1000 * seq,
        bid: 285045,
        ask: 285055,
        bid_qty: 100,
        ask_qty: 200,
        open: 282000,
        high: 286000,
        low: 281500,
        close: 284825,
        flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
        depth_levels: 5,
        ..Tick::default()
    };
    for i in 0..5 {
        t.depth.bids[i] = Level { price: 285045 - 5 * i as i64, qty: 100, orders: 1 };
        t.depth.asks[i] = Level { price: 285055 + 5 * i as i64, qty: 200, orders: 2 + i as u32 };
    }
    t
}

/// NIFTY 50 with `seq`: ltp 25000.00 + seq paise, OHLC.
fn nifty(seq: u64) -> Tick {
    Tick {
        token: 26000,
        seq,
        ts_ns: TS_S * 1_000_000_000,
        ltp: 2_500_000 + seq as i64,
        open: 2_495_000,
        high: 2_510_000,
        low: 2_490_000,
        close: 2_480_000,
        flags: FLAG_OHLC,
        ..Tick::default()
    }
}

/// A server reading TCF1 over UDP, with API keys for users `desk` and
/// `bob` (and `ops`, an admin, for `/status`).
fn server(extra: &[&str]) -> (Server, UdpSocket, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("tickcast-kite-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let users: PathBuf = dir.join("users.toml");
    let text = format!(
        "[[user]]\nid = \"desk\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"bob\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        tickcast::auth::hash_line("desk-token"),
        tickcast::auth::hash_line("bob-token"),
        tickcast::auth::hash_line("ops-key")
    );
    std::fs::write(&users, text).unwrap();
    let args = [&["--feed", "udp://127.0.0.1:0", "--auth-file", users.to_str().unwrap()], extra].concat();
    let s = Server::start(&args);
    let feed: SocketAddr = s.status()["feeds"][0]["address"].as_str().unwrap().parse().unwrap();
    (s, UdpSocket::bind("127.0.0.1:0").unwrap(), feed)
}

/// Send both instruments every 20 ms until the guard drops.
struct Feeder(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Feeder {
    fn start(sock: UdpSocket, to: SocketAddr) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let h = std::thread::spawn(move || {
            let mut seq = 1;
            while !flag.load(Ordering::Relaxed) {
                let mut out = Vec::new();
                tcf1::write_packet(&mut out, seq, &[reliance(seq), nifty(seq)]);
                sock.send_to(&out, to).unwrap();
                seq += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Feeder(stop, Some(h))
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

fn kite_url(addr: SocketAddr, path: &str, query: &str) -> String {
    format!("ws://{addr}{path}?{query}")
}

/// The `TICK <phase> <json>` lines of the client script.
fn ticks_of(stdout: &str) -> Vec<(String, Value)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TICK "))
        .map(|l| {
            let (phase, json) = l.split_once(' ').unwrap();
            (phase.to_string(), serde_json::from_str(json).unwrap())
        })
        .collect()
}

fn close_to(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)
}

/// Check one RELIANCE tick as the client parsed it: prices from the seq
/// its last price gives, OHLC, totals, depth and timestamps exactly.
fn check_reliance(phase: &str, t: &Value) {
    let ltp = t["last_price"].as_f64().unwrap();
    let seq = (ltp * 100.0).round() as i64 - 285050;
    assert!(seq >= 1, "{phase}: last price {ltp}");
    assert_eq!(t["tradable"], true, "{phase}");
    let want_mode = match phase {
        "ltp" => "ltp",
        "full" => "full",
        _ => "quote",
    };
    assert_eq!(t["mode"], want_mode, "{phase}: {t}");
    if phase == "ltp" {
        assert_eq!(t.as_object().unwrap().len(), 4, "an LTP packet: {t}");
        return;
    }
    assert_eq!(t["volume_traded"], 1000 * seq, "{phase}: volume of seq {seq}");
    assert_eq!(t["last_traded_quantity"], 10);
    assert_eq!(
        (t["total_buy_quantity"].as_u64(), t["total_sell_quantity"].as_u64()),
        (Some(500), Some(1000)),
        "{phase}: the depth shown"
    );
    let ohlc = &t["ohlc"];
    for (k, want) in [("open", 2820.0), ("high", 2860.0), ("low", 2815.0), ("close", 2848.25)] {
        assert!(close_to(&ohlc[k], want), "{phase}: {k} {}", ohlc[k]);
    }
    assert!(close_to(&t["change"], (ltp - 2848.25) * 100.0 / 2848.25), "{phase}: change {}", t["change"]);
    if phase == "full" {
        assert_eq!(t["exchange_timestamp"].as_f64(), Some(TS_S as f64), "{t}");
        assert_eq!(t["last_trade_time"].as_f64(), Some(TS_S as f64));
        let (buy, sell) = (&t["depth"]["buy"], &t["depth"]["sell"]);
        assert_eq!(buy.as_array().unwrap().len(), 5);
        assert_eq!(buy[0]["quantity"], 100);
        assert!(close_to(&buy[0]["price"], 2850.45));
        assert!(close_to(&buy[4]["price"], 2850.25));
        assert_eq!(buy[4]["orders"], 1);
        assert!(close_to(&sell[0]["price"], 2850.55));
        assert_eq!((sell[4]["quantity"].as_u64(), sell[4]["orders"].as_u64()), (Some(200), Some(6)));
    }
}

fn check_nifty(phase: &str, t: &Value) {
    let ltp = t["last_price"].as_f64().unwrap();
    assert!(((ltp * 100.0).round() as i64) > 2_500_000, "{phase}: {ltp}");
    assert_eq!(t["tradable"], false, "{phase}: an index is not tradable");
    assert_eq!(t["mode"], if phase == "full" { "full" } else { "quote" }, "{phase}: {t}");
    let ohlc = &t["ohlc"];
    for (k, want) in [("open", 24950.0), ("high", 25100.0), ("low", 24900.0), ("close", 24800.0)] {
        assert!(close_to(&ohlc[k], want), "{phase}: {k} {}", ohlc[k]);
    }
    assert!(t.get("volume_traded").is_none() && t.get("depth").is_none(), "an index packet: {t}");
    if phase == "full" {
        assert_eq!(t["exchange_timestamp"].as_f64(), Some(TS_S as f64), "{t}");
    }
}

fn check_session(stdout: &str) {
    println!("{stdout}");
    assert!(stdout.contains("\nOK") || stdout.starts_with("OK"), "no OK line:\n{stdout}");
    let ticks = ticks_of(stdout);
    assert_eq!(ticks.len(), 5, "{stdout}");
    for (phase, t) in &ticks {
        match t["instrument_token"].as_u64().map(|n| n as u32) {
            Some(RELIANCE) => check_reliance(phase, t),
            Some(NIFTY) => check_nifty(phase, t),
            other => panic!("unexpected instrument {other:?}: {t}"),
        }
    }
}

#[test]
fn the_official_client_streams_unchanged() {
    let (s, sock, feed) = server(&["--kite-listen", "127.0.0.1:0"]);
    let _feeder = Feeder::start(sock, feed);
    let out = util::run_client(
        "python3",
        "python/kite_ticker.py",
        &[&format!("ws://{}/kite", s.addr), "desk", "desk-token", "session"],
    );
    check_session(&out);
    // A client whose URL cannot change: the Kite listener serves `/`.
    let kite = s.kite_addr.expect("the banner names the Kite listener");
    let out = util::run_client(
        "python3",
        "python/kite_ticker.py",
        &[&format!("ws://{kite}"), "desk", "desk-token", "session"],
    );
    check_session(&out);
    let st = s.status();
    assert_eq!(st["kite_listen"], kite.to_string());
    assert_eq!(st["counters"]["auth_failures"], 0);
}

#[test]
fn the_official_client_reports_a_refused_token() {
    let (s, _sock, _feed) = server(&[]);
    for (api_key, token) in [("desk", "not-a-token"), ("someone-else", "desk-token")] {
        let out = util::run_client(
            "python3",
            "python/kite_ticker.py",
            &[&format!("ws://{}/kite", s.addr), api_key, token, "refused"],
        );
        assert!(out.contains("OK") && out.contains("403"), "{api_key}/{token}:\n{out}");
    }
    s.status_until("both refusals counted", |st| st["counters"]["auth_failures"] == 2);
}

/// Parse a Kite data frame: (token, packet) for each packet.
fn packets(frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let n = u16::from_be_bytes([frame[0], frame[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = u16::from_be_bytes([frame[at], frame[at + 1]]) as usize;
        let p = frame[at + 2..at + 2 + len].to_vec();
        out.push((u32::from_be_bytes(p[..4].try_into().unwrap()), p));
        at += 2 + len;
    }
    assert_eq!(at, frame.len(), "the count and lengths cover the frame exactly");
    out
}

fn next_binary(c: &mut Client, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match c.recv() {
            Message::Binary(b) if pred(&b) => return b.to_vec(),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
            Message::Text(t) => panic!("unexpected text while waiting for {what}: {t}"),
            other => panic!("unexpected {other:?} while waiting for {what}"),
        }
    }
    panic!("timed out waiting for {what}");
}

/// Ticks ready in the same turn share one frame; every packet is the
/// length of its mode; an idle connection gets the 1-byte heartbeat;
/// unknown tokens and bad requests get Kite's error message.
#[test]
fn frames_batch_packets_and_idle_connections_get_heartbeats() {
    let (s, sock, feed) = server(&[]);
    let mut c = Client::connect(&kite_url(s.addr, "/kite", "api_key=desk&access_token=desk-token"));
    c.send(&format!(r#"{{"a":"subscribe","v":[{RELIANCE},{NIFTY}]}}"#));
    c.send(&format!(r#"{{"a":"mode","v":["full",[{RELIANCE}]]}}"#));
    // Nothing ticked yet: the first thing to arrive is a heartbeat.
    let hb = next_binary(&mut c, "a heartbeat", |_| true);
    assert_eq!(hb.len(), 1, "{hb:?}");
    // One datagram with both instruments: one frame, two packets.
    let mut out = Vec::new();
    tcf1::write_packet(&mut out, 1, &[reliance(1), nifty(1)]);
    sock.send_to(&out, feed).unwrap();
    let f = next_binary(&mut c, "the data frame", |b| b.len() > 1);
    let ps = packets(&f);
    let lens: Vec<(u32, usize)> = ps.iter().map(|(t, p)| (*t, p.len())).collect();
    assert_eq!(lens, [(RELIANCE, 184), (NIFTY, 28)], "one frame: RELIANCE full, NIFTY index quote");
    let ltp = u32::from_be_bytes(ps[0].1[4..8].try_into().unwrap());
    assert_eq!(ltp, 285051);
    // Errors in Kite's shape; the connection stays.
    c.send(r#"{"a":"subscribe","v":[2885,123]}"#);
    let e = c.recv_json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["data"], "invalid instrument tokens: 2885, 123");
    c.send(r#"{"a":"mode","v":["depth",[738561]]}"#);
    assert!(c.recv_json()["data"].as_str().unwrap().contains("unknown mode `depth`"));
    c.send(r#"{"a":"unsubscribe","v":[738561,6656009]}"#);
    sock.send_to(
        &{
            let mut out = Vec::new();
            tcf1::write_packet(&mut out, 2, &[reliance(2), nifty(2)]);
            out
        },
        feed,
    )
    .unwrap();
    let hb = next_binary(&mut c, "only heartbeats after unsubscribing", |_| true);
    assert_eq!(hb.len(), 1, "no data after unsubscribing: {hb:?}");
    let st = s.status_until("the bad requests counted", |st| st["counters"]["bad_requests"] == 2);
    assert_eq!(st["connections_by_dialect"]["kite"], 1);
}

/// The handshake refusal as Kite answers it: HTTP 403, counted.
#[test]
fn a_wrong_pair_is_refused_with_403() {
    let (s, _sock, _feed) = server(&[]);
    for query in ["api_key=desk&access_token=nope", "api_key=bob&access_token=desk-token", "api_key=desk"] {
        let url = kite_url(s.addr, "/kite", query);
        match tungstenite::connect(url.as_str()) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403, "{query}"),
            Err(e) => panic!("{query}: {e}"),
            Ok(_) => panic!("{query}: accepted"),
        }
    }
    let st = s.status_until("counted", |st| st["counters"]["auth_failures"] == 3);
    assert_eq!(st["counters"]["handshake_failures"], 0, "a 403 is an auth failure, not a bad handshake");
}

/// Order postbacks published to `private:<user>:orders` reach that user's
/// Kite connections as Kite's `{"type":"order","data":…}`, and no one else's.
#[test]
fn order_postbacks_reach_their_users_kite_connections() {
    let port = util::free_port();
    let publish = format!("127.0.0.1:{port}");
    let (s, _sock, _feed) = server(&["--publish-listen", &publish]);
    let mut desk = Client::connect(&kite_url(s.addr, "/kite", "api_key=desk&access_token=desk-token"));
    let mut bob = Client::connect(&kite_url(s.addr, "/kite", "api_key=bob&access_token=bob-token"));
    let mut p = std::net::TcpStream::connect(&publish).unwrap();
    let order = r#"{"order_id":"151220000000000","status":"COMPLETE","tradingsymbol":"RELIANCE","filled_quantity":1}"#;
    std::io::Write::write_all(&mut p, format!("{{\"channel\":\"private:desk:orders\",\"data\":{order}}}\n").as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        assert!(Instant::now() < deadline, "no order update");
        if let Message::Text(t) = desk.recv() {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    let want: Value = serde_json::from_str(&format!(r#"{{"type":"order","data":{order}}}"#)).unwrap();
    assert_eq!(got, want);
    // The other user's connection sees heartbeats only.
    let quiet = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet {
        match bob.recv() {
            Message::Binary(b) => assert_eq!(b.len(), 1, "a heartbeat"),
            other => panic!("another user's order reached bob: {other:?}"),
        }
    }
}

#[test]
fn a_bad_kite_listen_address_fails_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--kite-listen", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kite-listen `nowhere`"), "{err}");
}
