//! The region protocol in one process: stitching, laps, zero-copy reads,
//! parking, re-attaching, refusals. (Readers in other processes, and the
//! real server, are exercised by `tests/shm*.rs`.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use super::layout::{hdr, wait};
use super::*;
use crate::instrument::{Registry, Slot};
use crate::lvc::LastValues;
use crate::tick::Tick;

/// A unique region path under the temp dir, removed on drop.
struct TempRegion(PathBuf);

impl TempRegion {
    fn new() -> TempRegion {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempRegion(std::env::temp_dir().join(format!("tickcast-shm-unit-{}-{n}", std::process::id())))
    }
    fn name(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
    fn opts(&self, capacity: usize) -> RegionOptions {
        RegionOptions { path: self.0.clone(), mode: 0o600, group: None, capacity }
    }
}

impl Drop for TempRegion {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(writer::wait_path(&self.0));
    }
}

/// The server's write path: last value, then the ring record.
struct Feed {
    lvc: LastValues,
    ring: RingWriter,
    seqs: Vec<u64>,
}

impl Feed {
    fn new(region: &Region) -> Feed {
        Feed { lvc: region.last_values(), ring: region.ring_writer(0), seqs: vec![0; region.layout().instruments] }
    }
    /// Publish the next tick of `slot`: every field derived from (slot, seq).
    fn tick(&mut self, reg: &Registry, slot: u32) -> Tick {
        self.seqs[slot as usize] += 1;
        let t = tick_for(reg, slot, self.seqs[slot as usize]);
        assert!(self.lvc.store(Slot(slot), &t));
        self.ring.append(&t);
        t
    }
}

fn tick_for(reg: &Registry, slot: u32, seq: u64) -> Tick {
    let mut t = Tick {
        token: reg.get(Slot(slot)).token,
        slot,
        seq,
        ts_ns: seq * 1000 + u64::from(slot),
        ts_recv_ns: seq,
        ltp: (seq * 7 + u64::from(slot)) as i64,
        volume: seq * 3,
        depth_levels: 5,
        ..Tick::default()
    };
    t.depth.asks[4].price = seq as i64;
    t.depth.bids[2].qty = slot;
    t
}

fn ticks(events: &[Event]) -> Vec<(bool, u32, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Snapshot { tick, .. } => Some((true, tick.slot, tick.seq)),
            Event::Tick(t) => Some((false, t.slot, t.seq)),
            _ => None,
        })
        .collect()
}

fn drain(r: &mut Reader) -> Vec<Event> {
    std::iter::from_fn(|| r.try_next()).collect()
}

fn spin() -> Options {
    Options { wait: Wait::Spin, ..Options::default() }
}

#[test]
fn a_late_reader_gets_current_values_then_the_stream_without_duplicates() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(1024), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&region);
    for s in [0, 1, 0, 2] {
        feed.tick(&reg, s);
    }
    let mut r = Reader::open(&tmp.name(), spin()).unwrap();
    assert_eq!(r.feeds(), vec!["sim"]);
    assert_eq!(r.instrument(0).unwrap().token, reg.get(Slot(0)).token);
    // Written after the reader noted the ring's head but before it read the
    // last values: in both, and given once.
    feed.tick(&reg, 1);
    let first = drain(&mut r);
    assert_eq!(ticks(&first), vec![(true, 0, 2), (true, 1, 2), (true, 2, 1)], "current values, slot order");
    feed.tick(&reg, 0);
    let live = drain(&mut r);
    assert_eq!(ticks(&live), vec![(false, 0, 3)]);
    assert_eq!(live[0], Event::Tick(tick_for(&reg, 0, 3)), "every field as written");
    assert_eq!(r.stale(), 0, "the snapshot's overlap is not counted as stale");
}

#[test]
fn a_lapped_reader_learns_exactly_what_it_lost_and_resyncs() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(8), &reg, vec!["udp".into()]).unwrap();
    let mut feed = Feed::new(&region);
    let mut r = Reader::open(&tmp.name(), spin()).unwrap();
    assert!(drain(&mut r).is_empty(), "nothing has ticked");
    feed.tick(&reg, 0);
    assert_eq!(ticks(&drain(&mut r)), vec![(false, 0, 1)]);
    for i in 0..20 {
        feed.tick(&reg, i % 3);
    }
    let evs = drain(&mut r);
    let Event::Gap(g) = &evs[0] else { panic!("first a gap: {evs:?}") };
    assert_eq!((g.feed.as_str(), g.from_pos, g.to_pos, g.lost()), ("udp", 1, 21, 20));
    // Then the newest value of every instrument that moved, with the seq it
    // had before: the per-instrument range lost.
    let resync: Vec<_> = evs[1..]
        .iter()
        .map(|e| match e {
            Event::Snapshot { tick, prev_seq } => (tick.slot, *prev_seq, tick.seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(resync, vec![(0, 1, 8), (1, 0, 7), (2, 0, 6)]);
    assert_eq!(r.lost(), 20);
    feed.tick(&reg, 2);
    assert_eq!(ticks(&drain(&mut r)), vec![(false, 2, 7)], "and carries on live");
}

#[test]
fn zero_copy_reads_give_what_copies_give() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&region);
    let mut r = Reader::open(&tmp.name(), Options { snapshot: false, ..spin() }).unwrap();
    let t = feed.tick(&reg, 5);
    let got =
        r.read_with(|v| (v.token(), v.slot(), v.seq(), v.ltp(), v.volume(), v.ask_level(4), v.bid_level(2), v.tick()));
    let Read::Tick((token, slot, seq, ltp, volume, ask4, bid2, whole)) = got else { panic!("{got:?}") };
    assert_eq!((token, slot, seq, ltp, volume), (t.token, 5, 1, t.ltp, t.volume));
    assert_eq!((ask4, bid2), (Some(t.depth.asks[4]), Some(t.depth.bids[2])));
    assert_eq!(whole, t);
    assert!(matches!(r.read_with(|v| v.seq()), Read::Empty));
    for i in 0..100 {
        feed.tick(&reg, i % 2);
    }
    assert!(matches!(r.read_with(|v| v.seq()), Read::Event(Event::Gap(_))), "a lap comes as an event");
}

#[test]
fn filters_pick_instruments_and_unknown_ones_are_refused() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&region);
    let reliance = reg.slot_of_token(2885).unwrap().0;
    let tcs = reg.slot_of_symbol("TCS").unwrap().0;
    let opts = Options { tokens: vec![2885], symbols: vec!["nse:tcs".into()], ..spin() };
    let mut r = Reader::open(&tmp.name(), opts).unwrap();
    for s in [reliance, 0, tcs, 1] {
        feed.tick(&reg, s);
    }
    let got: Vec<u32> = ticks(&drain(&mut r)).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(got, vec![reliance, tcs]);
    let err = Reader::open(&tmp.name(), Options { tokens: vec![999_999_999], ..spin() }).err().unwrap();
    assert!(format!("{err:#}").contains("token 999999999 is not in the region"), "{err:#}");
    let err = Reader::open(&tmp.name(), Options { symbols: vec!["NOPE".into()], ..spin() }).err().unwrap();
    assert!(format!("{err:#}").contains("symbol `NOPE`"), "{err:#}");
}

#[test]
fn a_parked_reader_is_woken_by_the_batch_and_unparks() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&region);
    let name = tmp.name();
    let reader = std::thread::spawn(move || {
        let mut r = Reader::open(&name, Options { wait: Wait::Park, snapshot: false, ..Options::default() }).unwrap();
        r.wait(Some(Duration::from_secs(20)))
    });
    // Publish only once the reader is parked, so the wake-up is what ends its wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while region.parked_readers() == 0 {
        assert!(std::time::Instant::now() < deadline, "the reader never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = feed.tick(&reg, 3);
    feed.ring.flush();
    assert_eq!(reader.join().unwrap(), Some(Event::Tick(t)));
    assert_eq!(region.wakes(), 1, "one wake-up for the batch");
    assert_eq!(region.parked_readers(), 0, "it cleared its bit");
    feed.tick(&reg, 3);
    feed.ring.flush();
    assert_eq!(region.wakes(), 1, "no one parked: no wake-up");
}

#[test]
fn a_parked_bit_whose_reader_died_is_reaped() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let r = Reader::open(&tmp.name(), Options { wait: Wait::Park, ..Options::default() }).unwrap();
    // Slot 0 is the reader's (it holds the lock byte); mark it and slot 7 parked.
    let words = region_words(&tmp.0);
    words.fetch_or(1 | 1 << 7, Ordering::SeqCst);
    assert_eq!(region.parked_readers(), 2);
    assert_eq!(region.reap_parked(), 1, "slot 7 has no owner");
    assert_eq!(region.parked_readers(), 1);
    drop(r); // closing its file frees the lock byte
    assert_eq!(region.reap_parked(), 1);
    assert_eq!(region.parked_readers(), 0);
}

/// The first parked-bits word of the region at `path`, mapped writable.
fn region_words(path: &std::path::Path) -> &'static AtomicU32 {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(writer::wait_path(path)).unwrap();
    let m = Box::leak(Box::new(crate::sys::Mapping::map(&f, 0, layout::PAGE, true).unwrap()));
    m.at::<AtomicU32>(wait::PARKED)
}

#[test]
fn readers_take_distinct_park_slots_even_in_one_process() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let _region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let park = || Reader::open(&tmp.name(), Options { wait: Wait::Park, ..Options::default() }).unwrap();
    let (a, b) = (park(), park());
    assert_eq!((a.park_slot(), b.park_slot()), (Some(0), Some(1)));
    let spinner = Reader::open(&tmp.name(), spin()).unwrap();
    assert_eq!(spinner.park_slot(), None, "a spinning reader needs no slot");
}

#[test]
fn a_restarted_server_is_noticed_and_reattached() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let a = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&a);
    feed.tick(&reg, 0);
    let mut r =
        Reader::open(&tmp.name(), Options { wait: Wait::Sleep(Duration::from_millis(1)), ..Options::default() })
            .unwrap();
    let epoch = r.epoch();
    assert_eq!(ticks(&drain(&mut r)), vec![(true, 0, 1)]);
    drop(feed);
    a.close();
    assert!(!tmp.0.exists(), "a clean stop removes the region");
    assert_eq!(r.wait(Some(Duration::from_secs(5))), Some(Event::WriterDown(Down::Closed)));
    let b = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let mut feed = Feed::new(&b);
    feed.tick(&reg, 4);
    let ev = r.wait(Some(Duration::from_secs(5))).unwrap();
    let Event::Reattached { epoch: new } = ev else { panic!("{ev:?}") };
    assert_ne!(new, epoch);
    assert_eq!(ticks(&drain(&mut r)), vec![(true, 4, 1)], "the new server's values, seqs start afresh");
}

#[test]
fn a_second_writer_is_refused_and_a_dead_ones_region_replaced() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let a = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let err = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).err().unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("in use by a running tickcast") && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // A crash leaves the file (state live) and the kernel frees the lock.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tmp.0).unwrap());
    a.simulate_crash();
    assert!(tmp.0.exists(), "a crashed server's region stays");
    let b = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tmp.0).unwrap());
    assert_ne!(now, inode, "replaced by a new file");
    drop(b);
}

#[test]
fn foreign_truncated_and_other_version_regions_are_refused_with_reasons() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let good = std::fs::read(&tmp.0).unwrap();
    drop(region);
    let bad = TempRegion::new();
    let try_open = |bytes: &[u8]| {
        std::fs::write(&bad.0, bytes).unwrap();
        format!("{:#}", Reader::open(&bad.name(), spin()).err().expect("refused"))
    };
    let mut v2 = good.clone();
    v2[hdr::VERSION] = 2;
    let mut wrong_cell = good.clone();
    wrong_cell[hdr::CELL_SIZE] = 0;
    let cases: &[(&str, Vec<u8>, &str)] = &[
        ("empty", vec![], "truncated: 0 bytes"),
        ("random", vec![0xAB; 8192], "not a tickcast shared-memory region"),
        ("version", v2, "layout version 2; this reader reads version 1"),
        ("corrupt", wrong_cell, "corrupt header: cell_size is 256, the layout needs 320"),
        ("truncated", good[..good.len() - 4096].to_vec(), "truncated"),
    ];
    for (label, bytes, want) in cases {
        let err = try_open(bytes);
        assert!(err.contains(want), "{label}: {err}");
    }
    let err = format!("{:#}", Reader::open(&format!("{}-missing", tmp.name()), spin()).err().unwrap());
    assert!(err.contains("no shared-memory region at") && err.contains("--shm"), "{err}");
}

#[test]
fn the_region_is_created_with_the_asked_mode() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let mode = |m: u32| {
        let r = Region::create(&RegionOptions { mode: m, ..tmp.opts(64) }, &reg, vec!["sim".into()]).unwrap();
        let got = std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777;
        drop(r);
        got
    };
    assert_eq!(mode(0o600), 0o600);
    assert_eq!(mode(0o640), 0o640, "whatever the umask");
    assert_eq!(mode(0o660), 0o640, "the region is never writable but by its owner");
    let r = Region::create(&RegionOptions { mode: 0o660, ..tmp.opts(64) }, &reg, vec!["sim".into()]).unwrap();
    let wait = std::fs::metadata(writer::wait_path(&tmp.0)).unwrap().permissions().mode() & 0o777;
    assert_eq!(wait, 0o660, "the wait file is: the group may park");
    drop(r);
    assert!(!writer::wait_path(&tmp.0).exists(), "a clean stop removes both files");
}

#[test]
fn a_file_at_the_path_that_is_not_a_region_is_left_alone() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    std::fs::write(&tmp.0, b"precious data").unwrap();
    let err = format!("{:#}", Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).err().unwrap());
    assert!(err.contains("exists and is not a tickcast shared-memory region"), "{err}");
    assert_eq!(std::fs::read(&tmp.0).unwrap(), b"precious data");
}

#[test]
fn readers_refuse_a_region_others_may_write_or_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o622)).unwrap();
    let err = format!("{:#}", Reader::open(&tmp.name(), spin()).err().unwrap());
    assert!(err.contains("may be written by others than its owner"), "{err}");
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = TempRegion::new();
    std::os::unix::fs::symlink(&tmp.0, &link.0).unwrap();
    assert!(Reader::open(&link.name(), spin()).is_err(), "not through a symbolic link");
    drop(region);
}

#[test]
fn a_reader_without_write_access_to_the_wait_file_cannot_park_but_can_spin() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let _region = Region::create(&tmp.opts(64), &reg, vec!["sim".into()]).unwrap();
    let wait = writer::wait_path(&tmp.0);
    std::fs::set_permissions(&wait, std::fs::Permissions::from_mode(0o400)).unwrap();
    let refused = Reader::open(&tmp.name(), Options { wait: Wait::Park, ..Options::default() });
    // Root ignores permission bits: then the open succeeds, which is also right.
    if let Err(e) = refused {
        assert!(format!("{e:#}").contains("no write access") && format!("{e:#}").contains(".wait"), "{e:#}");
    }
    assert!(Reader::open(&tmp.name(), spin()).is_ok());
}

#[test]
fn a_tick_older_than_one_given_is_dropped_and_counted() {
    let reg = Registry::bundled();
    let tmp = TempRegion::new();
    let region = Region::create(&tmp.opts(64), &reg, vec!["a".into(), "b".into()]).unwrap();
    let lvc = region.last_values();
    let (mut a, mut b) = (region.ring_writer(0), region.ring_writer(1));
    let mut r = Reader::open(&tmp.name(), Options { snapshot: false, ..spin() }).unwrap();
    // Two feeds carrying slot 0: b's seq 2 reaches the reader before a's
    // seq 1 (published first, its record written late).
    let (t1, t2) = (tick_for(&reg, 0, 1), tick_for(&reg, 0, 2));
    lvc.store(Slot(0), &t1);
    lvc.store(Slot(0), &t2);
    b.append(&t2);
    assert_eq!(ticks(&drain(&mut r)), vec![(false, 0, 2)]);
    a.append(&t1);
    assert_eq!(ticks(&drain(&mut r)), vec![], "older than what was given: dropped");
    assert_eq!(r.stale(), 1);
}

#[test]
fn names_map_to_dev_shm_and_paths_stay() {
    assert_eq!(region_path("demo").unwrap(), PathBuf::from("/dev/shm/tickcast-demo"));
    assert_eq!(region_path("/tmp/x/r").unwrap(), PathBuf::from("/tmp/x/r"));
    assert_eq!(region_path("./r").unwrap(), PathBuf::from("./r"));
    for bad in ["", "a b", "..", ".hidden", "é", "demo.wait", "/tmp/x.wait"] {
        assert!(region_path(bad).is_err(), "{bad:?}");
    }
}
