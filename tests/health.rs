//! Health that tells the truth: a feed whose source is up but that has
//! delivered nothing, or nothing for `--stale-after`, while the market is
//! open, is `stale` in `/status`, client heartbeats and `/metrics`, and
//! `/healthz` answers 503 naming it; outside market hours `/healthz` says
//! `market closed`. Real binary, real UDP packets, an injected clock.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tickcast::feed::tcf1;
use tickcast::tick::Tick;
use util::Server;

fn udp_addr(s: &Server) -> SocketAddr {
    s.status()["feeds"][0]["address"].as_str().unwrap().parse().unwrap()
}

fn state(st: &Value) -> &str {
    st["feeds"][0]["state"].as_str().unwrap_or("")
}

/// Send a RELIANCE tick (each with the next `seq`) to `addr` every 50 ms
/// until the flag is cleared.
fn keep_sending(addr: SocketAddr) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let on = Arc::new(AtomicBool::new(true));
    let flag = on.clone();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let handle = std::thread::spawn(move || {
        let mut seq = 0;
        while flag.load(Ordering::SeqCst) {
            seq += 1;
            let t = Tick { token: 2885, seq, ltp: 285_000 + seq as i64, ..Tick::default() };
            let mut p = Vec::new();
            tcf1::write_packet(&mut p, seq, &[t]);
            tx.send_to(&p, addr).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (on, handle)
}

#[test]
fn a_udp_feed_is_stale_until_it_delivers_and_again_after_stale_after_of_silence() {
    let s = Server::start(&["--feed", "udp://127.0.0.1:0", "--stale-after", "1", "--heartbeat-ms", "200"]);
    let st = s.status();
    assert_eq!(state(&st), "stale", "bound but never fed: {st}");
    assert_eq!(st["stale_after_s"], 1.0);
    let (code, body) = s.get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "no live feed\nudp: stale (nothing delivered yet; limit 1 s)\n");
    assert!(s.get("/metrics").1.contains("tickcast_feed_up{feed=\"udp\"} 0\n"));
    let ws: Value = serde_json::from_str(&s.get("/websocket/status").1).unwrap();
    assert_eq!(ws["stream_health"]["price_updates"]["is_healthy"], false, "{ws}");
    let mut c = s.native();
    let hb = c.recv_type("heartbeat");
    assert_eq!(hb["feeds"][0]["state"], "stale", "clients are told: {hb}");

    let (sending, sender) = keep_sending(udp_addr(&s));
    s.status_until("the feed live once packets arrive", |st| state(st) == "live");
    assert_eq!(s.get("/healthz"), (200, "ok\n".to_string()));
    assert!(s.get("/metrics").1.contains("tickcast_feed_up{feed=\"udp\"} 1\n"));
    c.recv_until("a heartbeat saying live", |v| v["type"] == "heartbeat" && v["feeds"][0]["state"] == "live");

    sending.store(false, Ordering::SeqCst);
    sender.join().unwrap();
    s.status_until("stale after a second of silence", |st| state(st) == "stale");
    let (code, body) = s.get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("no live feed\nudp: stale (nothing delivered for "), "{body}");
    assert!(body.ends_with(" s; limit 1 s)\n"), "{body}");
    c.recv_until("a heartbeat saying stale", |v| v["type"] == "heartbeat" && v["feeds"][0]["state"] == "stale");
}

#[test]
fn one_live_feed_keeps_healthz_up_and_names_the_others() {
    let s = Server::start(&["--feed", "sim:rate=1000", "--feed", "udp://127.0.0.1:0"]);
    let st = s.status_until("the simulator live", |st| st["feeds"][0]["state"] == "live");
    assert_eq!(st["feeds"][1]["state"], "stale", "{st}");
    let (code, body) = s.get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok: 1 of 2 feeds live\nudp: stale (nothing delivered yet; limit 5 s)\n"));
}

#[test]
fn outside_market_hours_healthz_says_market_closed() {
    let out = std::process::Command::new("mktemp").args(["-d", "-t", "tickcast-health.XXXXXX"]).output().unwrap();
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let clock = dir.join("clock");
    let set_clock = |time: &str| {
        let tmp = clock.with_extension("tmp");
        std::fs::write(&tmp, time).unwrap();
        std::fs::rename(&tmp, &clock).unwrap();
    };
    set_clock("2026-01-26T11:00:00+05:30"); // a holiday below: closed all day
    let s = Server::start_with_env(
        &["--feed", "udp://127.0.0.1:0", "--market-hours", "nse;holidays=2026-01-26"],
        &[("TICKCAST_CLOCK", &format!("@{}", clock.display()))],
    );
    let st = s.status_until("the market closed", |st| st["market_open"] == false);
    assert_eq!(state(&st), "paused", "quiet while closed is not stale: {st}");
    assert_eq!(s.get("/healthz"), (200, "market closed\n".to_string()));
    assert!(s.get("/metrics").1.contains("tickcast_market_open 0\n"));

    set_clock("2026-01-27T10:00:00+05:30"); // the next morning: open
    let st = s.status_until("the market open", |st| st["market_open"] == true);
    assert_eq!(state(&st), "stale", "{st}");
    let (code, body) = s.get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("udp: stale"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
