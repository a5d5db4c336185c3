//! Multi-process stress of the shared-memory protocol: one writer (this
//! process) and reader processes (this test binary again, in the reader
//! role) on a small ring, so the writer laps them all the time.
//!
//! Every field of every tick is derived from its (slot, seq), so a torn
//! record shows; every instrument's `seq` goes up by one per tick, so a
//! lost tick shows unless a gap was reported and a current value says
//! where the stream resumed. Readers spin, park and sleep, and pause at
//! random to get lapped more; two are the Python reader
//! (`tests/python/shm_stress_reader.py`), which is lapped all the time.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tickcast::instrument::{Registry, Slot};
use tickcast::shm::{Down, Event, Options, Region, RegionOptions, Wait};
use tickcast::tick::Tick;

const ROLE: &str = "TICKCAST_SHM_STRESS_READER";
const RECORDS: u64 = 3_000_000;
const CAPACITY: usize = 256;

fn tick_for(reg: &Registry, slot: u32, seq: u64) -> Tick {
    let s = u64::from(slot);
    let mut t = Tick {
        token: reg.get(Slot(slot)).token,
        slot,
        seq,
        ts_ns: seq ^ (s << 40),
        ts_recv_ns: seq.wrapping_mul(31),
        ltp: (seq * 7 + s) as i64,
        volume: seq + s,
        bid: seq as i64,
        ask: -(seq as i64),
        oi: seq.rotate_left(7),
        depth_levels: 5,
        ..Tick::default()
    };
    for i in 0..5 {
        t.depth.bids[i].price = (seq + i as u64) as i64;
        t.depth.asks[i].qty = (seq as u32).wrapping_add(i as u32);
    }
    t
}

/// Reader role: read until the writer closes, check everything, print a summary.
fn read(path: &str, wait: &str) {
    let reg = Registry::bundled();
    let wait = Wait::parse(wait).unwrap();
    let mut r = tickcast::shm::Reader::open(path, Options { wait, ..Options::default() }).unwrap();
    println!("ready");
    let mut last = vec![0u64; reg.len()];
    let (mut ticks, mut gaps, mut closed) = (0u64, 0u64, false);
    let mut rng = fastrand::Rng::with_seed(u64::from(std::process::id()));
    loop {
        let ev = if closed {
            match r.try_next() {
                Some(ev) => ev,
                None => break,
            }
        } else {
            r.wait(Some(Duration::from_secs(30))).expect("the writer went quiet without closing")
        };
        match ev {
            Event::Tick(t) | Event::Snapshot { tick: t, .. } => {
                assert_eq!(t, tick_for(&reg, t.slot, t.seq), "torn record");
                let s = t.slot as usize;
                if let Event::Snapshot { prev_seq, .. } = ev {
                    assert_eq!(prev_seq, last[s], "a current value names the last seq given");
                    assert!(t.seq > last[s]);
                } else {
                    assert_eq!(t.seq, last[s] + 1, "slot {s}: a hole without a gap notice");
                }
                last[s] = t.seq;
                ticks += 1;
                if rng.u32(..1000) == 0 {
                    let pause = Instant::now() + Duration::from_micros(rng.u64(10..300));
                    while Instant::now() < pause {
                        std::hint::spin_loop();
                    }
                }
            }
            Event::Gap(g) => {
                assert!(g.lost() >= CAPACITY as u64, "lapped means a ring behind: {g:?}");
                gaps += 1;
            }
            Event::WriterDown(Down::Closed) => closed = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Everything written is accounted for: each instrument ends at its final seq.
    let n = reg.len() as u64;
    for (s, l) in last.iter().enumerate() {
        let want = RECORDS / n + u64::from((s as u64) < RECORDS % n);
        assert_eq!(*l, want, "slot {s} ends at its last seq");
    }
    println!("{{\"ticks\":{ticks},\"gaps\":{gaps},\"lost\":{}}}", r.lost());
}

#[test]
fn readers_in_other_processes_never_see_a_torn_record_or_a_silent_lap() {
    if let Ok(spec) = std::env::var(ROLE) {
        let (path, wait) = spec.split_once('|').unwrap();
        return read(path, wait);
    }
    let reg = Registry::bundled();
    let path = PathBuf::from(format!("/dev/shm/tickcast-stress-{}", std::process::id()));
    let opts = RegionOptions { path: path.clone(), mode: 0o600, group: None, capacity: CAPACITY };
    let region = Region::create(&opts, &reg, vec!["stress".into()]).unwrap();
    let lvc = region.last_values();
    let mut ring = region.ring_writer(0);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/shm_stress_reader.py");
    let mut readers: Vec<_> = ["spin", "spin", "park", "hybrid", "sleep", "python spin", "python park"]
        .iter()
        .map(|wait| {
            let mut cmd = match wait.strip_prefix("python ") {
                Some(w) => {
                    let mut c = Command::new("python3");
                    c.arg(&script).arg(&path).arg(w).arg(RECORDS.to_string());
                    c
                }
                None => {
                    let mut c = Command::new(std::env::current_exe().unwrap());
                    c.args([
                        "--exact",
                        "readers_in_other_processes_never_see_a_torn_record_or_a_silent_lap",
                        "--nocapture",
                    ])
                    .env(ROLE, format!("{}|{wait}", path.display()));
                    c
                }
            };
            let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    // Start writing once every reader is attached (each says so).
    for (_, out) in &mut readers {
        let mut line = String::new();
        while line.trim() != "ready" {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "a reader ended before attaching");
        }
    }
    let n = reg.len() as u64;
    for k in 0..RECORDS {
        let t = tick_for(&reg, (k % n) as u32, k / n + 1);
        assert!(lvc.store(Slot(t.slot), &t));
        ring.append(&t);
        if k % 64 == 63 {
            ring.flush();
        }
        if k % 65536 == 0 {
            region.heartbeat();
        }
    }
    ring.flush();
    region.close();
    let mut total_gaps = 0;
    for (mut child, mut out) in readers {
        let mut stdout = String::new();
        out.read_to_string(&mut stdout).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "a reader failed:\n{stdout}");
        let summary = stdout.lines().find(|l| l.starts_with("{\"ticks\"")).expect("a summary line");
        println!("reader: {summary}");
        let v: serde_json::Value = serde_json::from_str(summary).unwrap();
        assert!(v["ticks"].as_u64().unwrap() > 0, "{v}");
        total_gaps += v["gaps"].as_u64().unwrap();
    }
    assert!(total_gaps > 0, "the ring is small enough that readers get lapped");
}
