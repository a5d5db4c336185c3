//! The shared-memory path end to end: the real server with `--shm`, and
//! real reader processes (the Rust example `shm_reader`, the pure-Python
//! `clients/python/tickcast_shm.py`, `tickcast tail`), fed known TCF1
//! packets over UDP or the simulator.

mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickcast::feed::tcf1;
use tickcast::tick::{Level, Tick, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};
use util::Server;

/// A region path unique to this test, removed on drop.
struct Region(PathBuf);

impl Region {
    fn new() -> Region {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Region(PathBuf::from(format!("/dev/shm/tickcast-test-{}-{n}", std::process::id())))
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(tickcast::shm::writer::wait_path(&self.0));
    }
}

/// The example reader, built on first use (`cargo test --all-targets`
/// builds examples as test harnesses, not as the program).
fn shm_reader_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = Path::new(env!("CARGO_BIN_EXE_tickcast"));
            let profile_dir = bin.parent().unwrap();
            let target_dir = profile_dir.parent().unwrap();
            let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            cmd.args(["build", "--quiet", "--example", "shm_reader", "--target-dir"]).arg(target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("running cargo build --example");
            assert!(st.success(), "cargo build --example shm_reader failed");
            profile_dir.join("examples/shm_reader")
        })
        .clone()
}

fn python_reader() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/tickcast_shm.py")
}

/// A reader process whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, what: what.to_string() }
    }

    fn rust(region: &Region, args: &[&str]) -> Proc {
        let mut cmd = Command::new(shm_reader_bin());
        cmd.arg(region.arg()).args(args);
        Proc::spawn(cmd, "examples/shm_reader")
    }

    fn python(region: &Region, args: &[&str]) -> Proc {
        let mut cmd = Command::new("python3");
        cmd.arg(python_reader()).arg(region.arg()).arg("--json").args(args);
        Proc::spawn(cmd, "tickcast_shm.py")
    }

    fn tail(region: &Region, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
        cmd.args(["tail", "--shm", region.arg()]).args(args);
        Proc::spawn(cmd, "tickcast tail")
    }

    /// The next line as JSON (fails after 20 s, or if the process ended).
    fn next(&mut self) -> Value {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => serde_json::from_str(&l).unwrap_or_else(|e| panic!("{}: not JSON: {l}: {e}", self.what)),
            Err(RecvTimeoutError::Timeout) => panic!("{}: nothing for 20 s", self.what),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{}: ended ({:?})", self.what, self.child.wait().map(|s| s.to_string()))
            }
        }
    }

    /// Lines until one whose `type` is `ty` (the others are returned too).
    fn until(&mut self, ty: &str) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let v = self.next();
            if v["type"] == ty {
                return (before, v);
            }
            before.push(v);
        }
    }

    /// Wait for the process to end; its exit status and remaining output lines as JSON.
    fn finish(self) -> (std::process::ExitStatus, Vec<Value>) {
        let what = self.what.clone();
        let (status, lines) = self.finish_lines();
        let json = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON: {l}: {e}")))
            .collect();
        (status, json)
    }

    /// Wait for the process to end; its exit status and remaining output lines.
    fn finish_lines(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{} did not finish", self.what);
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reading thread ends with the pipe, after the process.
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            rest.push(l);
        }
        (status, rest)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A full RELIANCE tick with `seq`, ltp 2850.50 + seq paise (as in tests/feeds.rs).
fn tick(seq: u64) -> Tick {
    let mut t = Tick {
        token: 2885,
        seq,
        ts_ns: 1_763_712_000_000_000_000 + seq,
        ltp: 285050 + seq as i64,
        ltq: 10,
        volume: 1000 * seq,
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
        t.depth.bids[i] = Level { price: 285045 - 5 * i as i64, qty: 100, orders: 1 };
        t.depth.asks[i] = Level { price: 285055 + 5 * i as i64, qty: 200, orders: 2 };
    }
    t
}

fn send(addr: SocketAddr, packet_seq: u64, ticks: &[Tick]) {
    let mut out = Vec::new();
    tcf1::write_packet(&mut out, packet_seq, ticks);
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&out, addr).unwrap();
}

fn udp_server(region: &Region, extra: &[&str]) -> (Server, SocketAddr) {
    let s = Server::start(&[&["--feed", "udp://127.0.0.1:0", "--shm", region.arg()], extra].concat());
    let addr = s.status()["feeds"][0]["address"].as_str().unwrap().parse().unwrap();
    (s, addr)
}

/// What the Rust example prints for `tick(seq)` as RELIANCE (slot from the bundled master).
fn rust_json(kind: &str, seq: u64) -> Value {
    let t = tick(seq);
    json!({"type": kind, "token": 2885, "seq": seq, "ts": t.ts_ns, "ltp": t.ltp, "bid": 285045, "ask": 285055,
        "volume": 1000 * seq, "ohlc": [282000, 286000, 281500, 284825],
        "bids": (0..5).map(|i| json!([285045 - 5 * i, 100, 1])).collect::<Vec<_>>(),
        "asks": (0..5).map(|i| json!([285055 + 5 * i, 200, 2])).collect::<Vec<_>>()})
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
    v
}

#[test]
fn udp_ticks_reach_rust_and_python_readers_exactly() {
    let region = Region::new();
    let (s, udp) = udp_server(&region, &[]);
    send(udp, 1, &[tick(7)]);
    s.status_until("the first tick", |st| st["feeds"][0]["ticks"] == 1);
    let mut copy = Proc::rust(&region, &["--wait", "park"]);
    let mut zero_copy = Proc::rust(&region, &["--wait", "spin", "--zero-copy"]);
    let mut py = Proc::python(&region, &["--wait", "park"]);
    // Late joiners: the current value first.
    for r in [&mut copy, &mut zero_copy] {
        let v = r.next();
        assert_eq!(without(v.clone(), &["slot", "prev_seq"]), rust_json("snapshot", 7), "{}", r.what);
        assert_eq!(v["prev_seq"], 0);
    }
    let p = py.next();
    assert_eq!((p["snapshot"].as_bool(), p["seq"].as_u64(), p["prev_seq"].as_u64()), (Some(true), Some(7), Some(0)));
    assert_eq!(p["data"]["ltp"], 2850.57, "Python scales by the table's price_decimals");
    // Then live ticks, in order, state merged across records as the feed does.
    send(udp, 2, &[tick(8), Tick { flags: 0, ..tick(9) }]);
    for r in [&mut copy, &mut zero_copy] {
        for seq in [8, 9] {
            assert_eq!(without(r.next(), &["slot"]), rust_json("tick", seq), "{}", r.what);
        }
    }
    for (seq, ltp) in [(8, 2850.58), (9, 2850.59)] {
        let p = py.next();
        assert_eq!(
            (p["type"].as_str(), p["seq"].as_u64(), p["snapshot"].as_bool()),
            (Some("market_data"), Some(seq), None)
        );
        let d = &p["data"];
        assert_eq!(
            (d["ltp"].as_f64(), d["bid"].as_f64(), d["volume"].as_u64()),
            (Some(ltp), Some(2850.45), Some(seq * 1000))
        );
        assert_eq!(d["depth"]["sell"][4], json!({"price": 2850.75, "quantity": 200, "orders": 2}));
        assert_eq!(p["ts"], 1_763_712_000_000_000_000u64 + seq);
    }
    let st = s.status();
    assert_eq!(st["shm"]["path"], region.arg());
    assert_eq!(st["shm"]["rings"], json!([{"feed": "udp", "written": 3}]));
    let (_, metrics) = s.get("/metrics");
    assert!(metrics.contains("tickcast_shm_records_total{feed=\"udp\"} 3"), "{metrics}");
}

/// Per instrument, every tick follows the one before by exactly one `seq`,
/// unless a gap was reported and a current value says where it resumed.
fn check_continuity(events: &[Value]) -> (usize, usize) {
    let mut last: HashMap<u64, u64> = HashMap::new();
    let (mut ticks, mut gaps) = (0, 0);
    for ev in events {
        match ev["type"].as_str().unwrap() {
            "snapshot" => {
                let (token, seq, prev) =
                    (ev["token"].as_u64().unwrap(), ev["seq"].as_u64().unwrap(), ev["prev_seq"].as_u64().unwrap());
                assert_eq!(
                    prev,
                    last.get(&token).copied().unwrap_or(0),
                    "a current value names the last seq given: {ev}"
                );
                assert!(seq > prev, "{ev}");
                last.insert(token, seq);
                ticks += 1;
            }
            "tick" => {
                let (token, seq) = (ev["token"].as_u64().unwrap(), ev["seq"].as_u64().unwrap());
                let want = last.get(&token).map_or(seq, |l| l + 1);
                assert_eq!(seq, want, "token {token}: a hole or a duplicate without a gap notice");
                last.insert(token, seq);
                ticks += 1;
            }
            "gap" => gaps += 1,
            other => panic!("unexpected {other}: {ev}"),
        }
    }
    (ticks, gaps)
}

#[test]
fn a_late_reader_stitches_current_values_and_live_ticks_without_holes_or_duplicates() {
    let region = Region::new();
    let s = Server::start(&["--feed", "sim:rate=20000", "--shm", region.arg()]);
    s.warm();
    for zero_copy in [false, true] {
        let args: &[&str] = if zero_copy { &["--count", "4000", "--zero-copy"] } else { &["--count", "4000"] };
        let r = Proc::rust(&region, args);
        let (status, events) = r.finish();
        assert!(status.success());
        assert_eq!(events[0]["type"], "snapshot");
        let snapshots = events.iter().take_while(|e| e["type"] == "snapshot").count();
        assert_eq!(snapshots, 54, "every instrument of the warm master has a current value");
        let (ticks, _) = check_continuity(&events);
        assert_eq!(ticks, 4000);
    }
}

#[test]
fn a_slow_reader_is_lapped_told_exactly_what_it_lost_and_carries_on() {
    let region = Region::new();
    let s = Server::start(&["--feed", "sim:rate=20000", "--shm", region.arg(), "--shm-capacity", "64"]);
    s.warm();
    let r = Proc::rust(&region, &["--count", "300", "--slow-us", "2000"]);
    let (status, events) = r.finish();
    assert!(status.success());
    let (ticks, gaps) = check_continuity(&events);
    assert!(gaps > 0, "2 ms per tick against 20k ticks/s and a 64-record ring must be lapped");
    assert_eq!(ticks, 300);
    for (i, g) in events.iter().enumerate().filter(|(_, e)| e["type"] == "gap") {
        let lost = g["lost"].as_u64().unwrap();
        assert_eq!(lost, g["to_pos"].as_u64().unwrap() - g["from_pos"].as_u64().unwrap());
        assert!(lost >= 64, "lapped means at least a ring's worth behind: {g}");
        assert!(
            events.get(i + 1).is_none_or(|n| n["type"] == "snapshot" || n["type"] == "gap"),
            "current values follow a gap"
        );
    }
}

#[test]
fn the_python_reader_reports_a_lap_exactly_and_resyncs() {
    let region = Region::new();
    let (s, udp) = udp_server(&region, &["--shm-capacity", "16"]);
    let mut py = Proc::python(&region, &["--wait", "park"]);
    s.status_until("the reader parked", |st| st["shm"]["parked_readers"] == 1);
    // One packet of 32 ticks for one instrument: 32 records into a 16-record
    // ring before the reader is even woken (at the end of the batch).
    let burst: Vec<Tick> = (1..=32).map(tick).collect();
    send(udp, 1, &burst);
    let (before, gap) = py.until("gap");
    let mut last = 0;
    for t in &before {
        assert_eq!(t["seq"], last + 1, "in order before the lap: {t}");
        last += 1;
    }
    assert!(gap["lost"].as_u64().unwrap() >= 16, "{gap}");
    let resync = py.next();
    assert_eq!((resync["snapshot"].as_bool(), resync["prev_seq"].as_u64()), (Some(true), Some(last)), "{resync}");
    assert_eq!(resync["seq"], 32, "resynchronised to the newest value");
    send(udp, 2, &[tick(33)]);
    assert_eq!(py.next()["seq"], 33, "and carries on live");
}

#[test]
fn readers_reattach_when_the_server_restarts_cleanly_or_after_a_crash() {
    let region = Region::new();
    let (mut a, udp) = udp_server(&region, &[]);
    send(udp, 1, &[tick(7)]);
    a.status_until("a tick", |st| st["feeds"][0]["ticks"] == 1);
    let mut rust = Proc::rust(&region, &["--wait", "park"]);
    let mut py = Proc::python(&region, &["--wait", "park"]);
    assert_eq!(rust.next()["seq"], 7);
    assert_eq!(py.next()["seq"], 7);
    a.terminate();
    a.child.wait().unwrap();
    assert!(!region.0.exists(), "a clean stop removes the region");
    assert_eq!(rust.next(), json!({"type": "writer_down", "reason": "closed"}));
    assert_eq!(py.next()["reason"], "closed");
    // A new server: the readers find it and take its current values.
    let (b, udp) = udp_server(&region, &[]);
    send(udp, 1, &[tick(20)]);
    let re = rust.next();
    assert_eq!(re["type"], "reattached");
    // A current value if the tick was in before the reader attached, else live.
    let first = rust.next();
    assert!(first["type"] == "snapshot" || first["type"] == "tick", "{first}");
    assert_eq!(first["seq"], 20);
    assert_eq!(py.until("reattached").1["type"], "reattached");
    assert_eq!(py.next()["seq"], 20);
    // A crash: the region stays, marked live, its heartbeat stops.
    let mut b = b;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    assert!(region.0.exists());
    assert_eq!(rust.next()["reason"], "silent");
    assert_eq!(py.next()["reason"], "silent");
    let (_c, udp) = udp_server(&region, &[]);
    send(udp, 1, &[tick(30)]);
    let re2 = rust.next();
    assert_eq!(re2["type"], "reattached");
    assert_ne!(re2["epoch"], re["epoch"]);
    assert_eq!(rust.next()["seq"], 30);
    assert_eq!(py.until("reattached").1["type"], "reattached");
    assert_eq!(py.next()["seq"], 30);
}

#[test]
fn a_second_server_cannot_take_a_running_servers_region() {
    let region = Region::new();
    let a = Server::start(&["--shm", region.arg()]);
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off", "--shm", region.arg()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use by a running tickcast") && err.contains(&format!("pid {}", a.child.id())), "{err}");
    assert!(a.status()["shm"].is_object(), "the first is untouched");
}

#[test]
fn a_killed_reader_disturbs_neither_the_server_nor_other_readers() {
    let region = Region::new();
    let (s, udp) = udp_server(&region, &[]);
    let mut victim = Proc::rust(&region, &["--wait", "park"]);
    let mut other = Proc::python(&region, &["--wait", "park"]);
    s.status_until("two parked readers", |st| st["shm"]["parked_readers"] == 2);
    victim.child.kill().unwrap(); // SIGKILL while parked: its parked bit stays set
    victim.child.wait().unwrap();
    s.status_until("the dead reader's bit reaped", |st| st["shm"]["parked_readers"] == 1);
    for seq in 1..=3 {
        send(udp, seq, &[tick(seq)]);
        assert_eq!(other.next()["seq"], seq);
    }
    let st = s.status();
    assert_eq!(st["shm"]["rings"][0]["written"], 3);
    assert!(st["shm"]["wakes"].as_u64().unwrap() <= 3, "at most one wake-up per batch: {st}");
}

#[test]
fn bad_regions_are_refused_clearly_by_every_reader() {
    let region = Region::new();
    let s = Server::start(&["--shm", region.arg()]);
    s.warm();
    let good = std::fs::read(&region.0).unwrap();
    drop(s);
    let bad = Region::new();
    let mut v2 = good.clone();
    v2[8] = 2; // layout version
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("foreign", b"not a region at all".repeat(500), "not a tickcast shared-memory region"),
        ("version", v2, "layout version 2"),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
    ];
    for (label, bytes, want) in cases {
        std::fs::write(&bad.0, bytes).unwrap();
        let runs: [(&str, Command); 3] = [
            ("rust", {
                let mut c = Command::new(shm_reader_bin());
                c.arg(bad.arg());
                c
            }),
            ("python", {
                let mut c = Command::new("python3");
                c.arg(python_reader()).arg(bad.arg());
                c
            }),
            ("tail", {
                let mut c = Command::new(env!("CARGO_BIN_EXE_tickcast"));
                c.args(["tail", "--shm", bad.arg()]);
                c
            }),
        ];
        for (who, mut cmd) in runs {
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{label}/{who} accepted it");
            assert!(err.contains(want), "{label}/{who}: {err}");
        }
    }
}

#[test]
fn permissions_are_what_the_docs_say() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let region = Region::new();
    let s = Server::start(&["--shm", region.arg()]);
    let md = std::fs::metadata(&region.0).unwrap();
    let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "owner only by default");
    assert_eq!(md.uid().to_string(), me.trim());
    drop(s);
    let region = Region::new();
    let s = Server::start(&["--shm", region.arg(), "--shm-mode", "0640", "--shm-group", "65534"]);
    s.warm();
    let md = std::fs::metadata(&region.0).unwrap();
    assert_eq!((md.permissions().mode() & 0o777, md.gid()), (0o640, 65534));
    let wait = tickcast::shm::writer::wait_path(&region.0);
    assert_eq!(std::fs::metadata(&wait).unwrap().permissions().mode() & 0o777, 0o640, "the group may not park");
    if me.trim() != "0" {
        return; // reading as another user needs root to switch to it; the bits above are the contract
    }
    // As `nobody` (group 65534: may read, not write): a spinning reader
    // reads, a parking one is refused with the reason, tail falls back.
    // The programs are copied where `nobody` can reach them (the checkout
    // may be under a private home), run by the system's Python.
    let dir = std::env::temp_dir().join(format!("tickcast-shm-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (py, tc) = (dir.join("tickcast_shm.py"), dir.join("tickcast"));
    std::fs::copy(python_reader(), &py).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tickcast"), &tc).unwrap();
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let (py, tc) = (py.to_str().unwrap(), tc.to_str().unwrap());
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .output()
            .expect("setpriv (util-linux)")
    };
    let out = as_nobody(&[python, py, region.arg(), "--wait", "spin", "--count", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"snapshot\": true"));
    let out = as_nobody(&[python, py, region.arg(), "--wait", "park", "--count", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no write access"), "{out:?}");
    let out = as_nobody(&[tc, "tail", "--shm", region.arg(), "--count", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no write access to the region, so no parking"));
    // `0660`: the group may park (write the wait file), still not write the region.
    drop(s);
    let region = Region::new();
    let s = Server::start(&["--shm", region.arg(), "--shm-mode", "0660", "--shm-group", "65534"]);
    s.warm();
    assert_eq!(std::fs::metadata(&region.0).unwrap().permissions().mode() & 0o777, 0o640);
    let out = as_nobody(&[python, py, region.arg(), "--wait", "park", "--count", "1", "--json"]);
    assert!(out.status.success(), "the group parks: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"snapshot\": true"));
    // Others: not even read.
    drop(s);
    let region = Region::new();
    let _s = Server::start(&["--shm", region.arg()]);
    let out = as_nobody(&[python, py, region.arg()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no permission to read"), "{out:?}");
}

#[test]
fn tail_prints_the_ticks_it_should() {
    let region = Region::new();
    let (s, udp) = udp_server(&region, &[]);
    send(udp, 1, &[tick(7)]);
    s.status_until("a tick", |st| st["feeds"][0]["ticks"] == 1);
    let json = Proc::tail(&region, &["--json", "--mode", "ltp", "--symbols", "RELIANCE", "--count", "2"]);
    let text = Proc::spawn(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tickcast"));
            c.args(["tail", "--shm", region.arg(), "--tokens", "2885", "--mode", "depth", "--count", "2"]);
            c
        },
        "tail (text)",
    );
    let want = |seq: u64, snap: &str| {
        format!(
            r#"{{"type":"market_data","token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":1,"seq":{seq},"ts":{}{snap},"data":{{"ltp":2850.{}}}}}"#,
            1_763_712_000_000_000_000u64 + seq,
            50 + seq
        )
    };
    assert_eq!(json.lines.recv_timeout(Duration::from_secs(20)).unwrap(), want(7, r#","snapshot":true"#));
    let first = text.lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("NSE:RELIANCE") && first.contains("2850.57") && first.contains("seq 7"), "{first}");
    assert!(first.contains("(current value)") && first.contains("bid 2850.45 x500"), "{first}");
    let depth: Vec<String> = (0..2).map(|_| text.lines.recv_timeout(Duration::from_secs(20)).unwrap()).collect();
    assert!(depth[0].contains("buy  2850.45 x100 (1)") && depth[1].contains("sell 2850.55 x200 (2)"), "{depth:?}");
    send(udp, 2, &[tick(8)]);
    assert_eq!(json.lines.recv_timeout(Duration::from_secs(20)).unwrap(), want(8, ""));
    let live = text.lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(live.contains("seq 8") && live.contains("+") && live.contains("us"), "{live}");
    assert!(json.finish().0.success() && text.finish_lines().0.success(), "--count ends them");
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["tail", "--shm", region.arg(), "--symbols", "NOPE"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbol `NOPE` is not in the region"), "{out:?}");
}
