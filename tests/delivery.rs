//! Delivery guarantees under pressure, binary frames, and process life.

mod util;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use serde_json::{json, Value};
use tickcast::encode::rkyv::{ArchivedWireDepth, ArchivedWireHeader, ArchivedWireQuote};
use tungstenite::Message;
use util::{client_frame, raw_upgrade, read_frame, Server};

/// A client that subscribes to everything in depth mode and stops reading.
fn stalled_client(s: &Server, extra: Value) -> TcpStream {
    let mut raw = raw_upgrade(s.addr, "/stream");
    let tokens: Vec<u32> = tickcast::instrument::Registry::bundled().iter().map(|(_, i)| i.token).collect();
    let mut req = json!({"action": "subscribe", "tokens": tokens, "mode": "depth"});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    raw.write_all(&client_frame(0x1, true, req.to_string().as_bytes())).unwrap();
    raw
}

#[test]
fn a_stalled_client_is_conflated_and_never_delays_a_healthy_one() {
    let s = Server::start(&["--feed", "sim:rate=20000", "--out-buffer-bytes", "65536"]);
    s.warm();
    let mut stalled = stalled_client(&s, json!({}));
    let mut healthy = s.native();
    healthy.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    // The healthy client keeps streaming while the other one's buffers fill.
    let mut last = 0;
    let mut frames = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = healthy.recv_json();
        if v["type"] == "market_data" {
            let seq = v["seq"].as_u64().unwrap();
            assert!(seq > last, "healthy stream out of order");
            last = seq;
            frames += 1;
        }
        let st = if frames % 200 == 0 { Some(s.status()) } else { None };
        if frames >= 400 && st.is_some_and(|st| st["counters"]["slow_consumer_conflations"].as_u64() >= Some(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled client was never conflated");
    }
    // Now the stalled client reads: its old frames, then a gap notice and the
    // newest values flagged `conflated`, never a duplicate or reordered seq.
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let (mut gaps, mut conflated) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while gaps == 0 || conflated == 0 {
        assert!(Instant::now() < deadline, "no gap/conflated frames: gaps {gaps}, conflated {conflated}");
        let (op, payload) = read_frame(&mut stalled);
        if op != 0x1 {
            continue;
        }
        let v: Value = serde_json::from_slice(&payload).unwrap();
        match v["type"].as_str() {
            Some("gap") => {
                let (from, to) = (v["from_seq"].as_u64().unwrap(), v["to_seq"].as_u64().unwrap());
                assert!(from <= to, "{v}");
                gaps += 1;
            }
            Some("market_data") => {
                let (token, seq) = (v["token"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
                if let Some(prev) = last_seq.insert(token, seq) {
                    assert!(seq > prev, "duplicate or reordered seq {seq} after {prev} for {token}");
                }
                if v["conflated"] == true {
                    conflated += 1;
                }
            }
            _ => {}
        }
    }
    // The server counts what it sent: at least every gap notice this client
    // read (counters are published every 0.5 s, so wait for them).
    s.status_until(&format!("gaps_sent >= {gaps} (the notices the stalled client read)"), |st| {
        st["counters"]["gaps_sent"].as_u64().unwrap_or(0) >= gaps
    });
}

#[test]
fn lossless_subscription_of_a_stalled_client_closes_1013() {
    let s = Server::start(&["--feed", "sim:rate=20000", "--out-buffer-bytes", "65536"]);
    s.warm();
    let mut stalled = stalled_client(&s, json!({"delivery": "lossless"}));
    s.status_until("the slow consumer disconnected", |st| {
        st["counters"]["slow_consumer_disconnects"].as_u64() >= Some(1)
    });
    let (code, reason) = util::read_close(&mut stalled);
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
}

#[test]
fn slow_consumer_disconnect_policy_applies_by_default() {
    let s =
        Server::start(&["--feed", "sim:rate=20000", "--out-buffer-bytes", "65536", "--slow-consumer", "disconnect"]);
    s.warm();
    let mut stalled = stalled_client(&s, json!({}));
    assert_eq!(util::read_close(&mut stalled).0, 1013);
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut a = AlignedVec::new();
    a.extend_from_slice(bytes);
    a
}

#[test]
fn rkyv_frames_decode_zero_copy_and_match_json() {
    let s = Server::sim();
    let mut bin = s.connect("/stream?format=rkyv");
    let w = bin.recv_json();
    assert_eq!(w["format"], "rkyv");
    let mut txt = s.native();
    bin.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    bin.request(json!({"action": "subscribe", "tokens": [11536], "mode": "quote"}), 2);
    bin.request(json!({"action": "subscribe", "tokens": [1594], "mode": "ltp"}), 3);
    txt.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    let mut by_seq: HashMap<u64, f64> = HashMap::new();
    let mut seen = [false; 3];
    let mut matched = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.iter().all(|&s| s) && matched >= 3) {
        assert!(Instant::now() < deadline, "seen {seen:?}, matched {matched}");
        let m = bin.recv();
        let Message::Binary(b) = m else { continue };
        let buf = aligned(&b);
        match buf[4] {
            1 => {
                let h = rkyv::access::<ArchivedWireHeader, rkyv::rancor::Error>(&buf).unwrap();
                assert_eq!((h.token.to_native(), buf.len()), (1594, 32));
                seen[0] = true;
            }
            2 => {
                let q = rkyv::access::<ArchivedWireQuote, rkyv::rancor::Error>(&buf).unwrap();
                assert_eq!(q.h.token, 11536);
                assert!(q.bid < q.ask && q.volume > 0);
                seen[1] = true;
            }
            3 => {
                let d = rkyv::access::<ArchivedWireDepth, rkyv::rancor::Error>(&buf).unwrap();
                assert_eq!((d.q.h.token.to_native(), d.q.depth_levels.to_native()), (2885, 5));
                assert_eq!(d.q.h.price_decimals, 2);
                assert!(d.bids[0].price < d.asks[0].price);
                by_seq.insert(d.q.h.seq.to_native(), d.q.h.ltp.to_native() as f64 / 100.0);
                seen[2] = true;
                // Match against the JSON stream of the same instrument.
                while let Ok(Message::Text(t)) = txt.ws.read() {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "market_data" {
                        continue;
                    }
                    let seq = v["seq"].as_u64().unwrap();
                    if let Some(ltp) = by_seq.get(&seq) {
                        assert!((v["data"]["ltp"].as_f64().unwrap() - ltp).abs() < 1e-9, "seq {seq}: {v} vs {ltp}");
                        matched += 1;
                    }
                    if seq >= d.q.h.seq.to_native() {
                        break;
                    }
                }
            }
            other => panic!("unknown mode byte {other}"),
        }
    }
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut s = Server::sim();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    c.recv_type("market_data");
    s.terminate();
    let (code, reason) = c.recv_close();
    assert_eq!(code, 1001, "{reason}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn several_workers_share_the_port_and_all_serve_data() {
    let s = Server::start(&["--workers", "2", "--feed", "sim:rate=5000"]);
    s.warm();
    let mut clients: Vec<_> = (0..24).map(|_| s.native()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.request(json!({"action": "subscribe", "tokens": [2885, 11536]}), i as u64);
    }
    for c in &mut clients {
        c.recv_type("market_data");
    }
    let st = s.status_until("both workers busy", |st| st["connections"] == 24);
    let per: Vec<u64> = st["workers"].as_array().unwrap().iter().map(|w| w["connections"].as_u64().unwrap()).collect();
    assert_eq!(per.len(), 2);
    assert!(per.iter().all(|&n| n > 0), "SO_REUSEPORT spreads connections: {per:?}");
}

#[test]
fn a_kite_master_is_served_by_instrument_token() {
    let dir = std::env::temp_dir().join(format!("tickcast-kite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let master = dir.join("instruments.csv");
    std::fs::write(
        &master,
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n\
         738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE\n\
         2953217,11536,TCS,TATA CONSULTANCY SERV LT,0,,0,0.05,1,EQ,NSE,NSE\n",
    )
    .unwrap();
    let s = Server::start(&["--master", master.to_str().unwrap()]);
    let mut c = s.native();
    let r = c.request(json!({"action": "subscribe", "tokens": [738561], "mode": "quote"}), 1);
    assert_eq!(r["data"]["subscribed"][0]["symbol"], "RELIANCE");
    let f = c.recv_until("a RELIANCE tick", |v| v["type"] == "market_data");
    assert_eq!(f["token"], 738561);
}

#[test]
fn config_file_and_flag_errors() {
    let dir = std::env::temp_dir().join(format!("tickcast-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tickcast.toml");
    std::fs::write(&file, "feed = [\"sim:rate=3000\"]\nheartbeat-ms = 150\n").unwrap();
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let mut c = s.native();
    assert_eq!(c.recv_type("heartbeat")["feeds"][0]["name"], "sim");

    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_tickcast")).args(args).output().unwrap();
    let out = run(&["--idle", "nap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--idle `nap`"));
    let out = run(&["--master", "/nonexistent/master.csv", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading instrument master /nonexistent/master.csv"));
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--master",
        "--feed",
        "--workers",
        "--cpus",
        "--idle",
        "--slow-consumer",
        "--max-connections",
        "--max-subscriptions",
        "--heartbeat-ms",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
    // A port in use is an error, not a silent share.
    let out = run(&["--listen", &s.addr.to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pinned_spinning_and_hybrid_workers_serve_data() {
    for idle in ["spin", "hybrid"] {
        let s = Server::start(&["--idle", idle, "--cpus", "0,1", "--feed", "sim:rate=5000"]);
        s.warm();
        let mut c = s.native();
        c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
        c.recv_type("market_data");
    }
}
