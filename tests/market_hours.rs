//! Market hours with an injected clock: the real binary evaluates its
//! schedule on `TICKCAST_CLOCK` (a fixed start, or `@FILE` re-read on every
//! check), so the tests move time by rewriting a file instead of waiting for
//! the wall clock. Nothing here asserts a duration: every wait polls with a
//! generous deadline.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use util::{Client, Server};

/// Start the binary with `TICKCAST_CLOCK=clock`.
fn start(clock: &str, args: &[&str]) -> Server {
    Server::start_with_env(args, &[("TICKCAST_CLOCK", clock)])
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-market-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Set the file clock atomically (the server may read it at any moment).
fn set_clock(path: &Path, time: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, time).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn feed<'a>(st: &'a Value, key: &str) -> &'a Value {
    &st["feeds"][0][key]
}

/// Read up to a heartbeat stamped after `after_ns`, then (so that any tick
/// drained in that same turn has gone out) up to the next heartbeat.
fn quiet(c: &mut Client, after_ns: u64) {
    c.recv_until("a heartbeat after the pause", |v| v["type"] == "heartbeat" && v["ts"].as_u64() > Some(after_ns));
    c.recv_type("heartbeat");
}

#[test]
fn a_session_closes_and_reopens_on_the_same_connection() {
    let dir = scratch("reopen");
    let clock = dir.join("clock");
    set_clock(&clock, "2026-01-05T10:00:00+05:30"); // a Monday, in session
    let config = dir.join("tickcast.toml");
    std::fs::write(
        &config,
        r#"
[market-hours]
time-zone = "Asia/Kolkata"
sessions = ["09:15-15:30"]
weekdays = ["mon-fri"]
holidays = ["2026-01-06"]
"#,
    )
    .unwrap();
    let s = start(
        &format!("@{}", clock.display()),
        &["--config", config.to_str().unwrap(), "--feed", "sim:rate=2000", "--heartbeat-ms", "200"],
    );
    let mut c = s.native_with(|w| assert_eq!(w["market_open"], true, "{w}"));
    let r = c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}), 1);
    assert_eq!(r["data"]["total_subscribed"], 1, "{r}");
    let before = c.recv_until("data while open", |v| v["type"] == "market_data" && v["token"] == 2885);

    // 15:30 IST: the close.
    set_clock(&clock, "2026-01-05T15:30:00+05:30");
    let closed = c.recv_type("market_status");
    assert_eq!(closed["market_open"], false, "{closed}");
    s.status_until("the simulator paused", |st| st["market_open"] == false && feed(st, "state") == "paused");
    let paused_at = now_ns();
    quiet(&mut c, paused_at);
    let ticks = feed(&s.status(), "ticks").as_u64().expect("tick counter");
    // The next day is a holiday: still closed. (Whether or not the server
    // has read this yet, nothing may change on the connection.)
    set_clock(&clock, "2026-01-06T10:00:00+05:30");
    for _ in 0..3 {
        let v = c.recv_json();
        assert_eq!(v["type"], "heartbeat", "nothing but heartbeats while closed: {v}");
        assert_eq!((v["market_open"].as_bool(), v["feeds"][0]["state"].as_str()), (Some(false), Some("paused")), "{v}");
    }
    let st = s.status();
    assert_eq!(feed(&st, "ticks").as_u64(), Some(ticks), "the simulator produced nothing while closed: {st}");
    assert_eq!(st["subscriptions"], 1, "the subscription is kept through the close: {st}");

    // Wednesday 09:15 IST: open again, same connection, same subscription.
    set_clock(&clock, "2026-01-07T09:15:00+05:30");
    let opened = c.recv_until("the open", |v| {
        assert_ne!(v["type"], "market_data", "no data before the open notice: {v}");
        v["type"] == "market_status"
    });
    assert_eq!(opened["market_open"], true, "{opened}");
    let after = c.recv_until("data after the open", |v| v["type"] == "market_data" && v["token"] == 2885);
    assert!(after["seq"].as_u64() > before["seq"].as_u64(), "the walk resumes: {before} then {after}");
    let subs = c.request(json!({"action": "get_subscriptions"}), 2);
    assert_eq!(subs["data"]["total_subscribed"], 1, "{subs}");
    s.status_until("ticks again", |st| {
        st["market_open"] == true && feed(st, "state") == "live" && feed(st, "ticks").as_u64() > Some(ticks)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_flag_form_with_a_shifted_clock() {
    let hours = "nse;holidays=2026-01-26";
    // Republic Day, mid-morning: closed all day.
    let holiday = start("2026-01-26T11:00:00+05:30", &["--market-hours", hours]);
    holiday.native_with(|w| assert_eq!(w["market_open"], false, "{w}"));
    holiday.status_until("a paused simulator", |st| st["market_open"] == false && feed(st, "state") == "paused");
    // The next morning, as Unix seconds: open.
    let open = start("1769488200", &["--market-hours", hours]); // 2026-01-27T10:00:00+05:30
    open.native_with(|w| assert_eq!(w["market_open"], true, "{w}"));
    open.status_until("a live simulator", |st| st["market_open"] == true && feed(st, "ticks").as_u64() > Some(0));
}

#[test]
fn bad_schedules_and_clocks_are_refused_at_start() {
    let run = |clock: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
        cmd.args(["--listen", "127.0.0.1:0", "--openalgo-listen", "127.0.0.1:0"]).args(args);
        if let Some(c) = clock {
            cmd.env("TICKCAST_CLOCK", c);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(None, &["--market-hours", "09:15-15:30@Mars/Olympus"]);
    assert!(err.contains("unknown time zone `Mars/Olympus`"), "{err}");
    let err = run(None, &["--market-hours", "nse;holidays=2026-13-01"]);
    assert!(err.contains("not a date"), "{err}");
    let err = run(Some("next tuesday"), &[]);
    assert!(err.contains("TICKCAST_CLOCK"), "{err}");
}
