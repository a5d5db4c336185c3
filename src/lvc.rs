//! Last-value cache: the newest `Tick` of every slot, written by the feed
//! threads and read by any worker (snapshots, conflation).
//!
//! Each entry is a [`TickCell`]: a seqlock over `TICK_WORDS` `AtomicU64`
//! words, so readers never block writers and no access is a data race: a
//! torn read is impossible to observe because the version is checked around
//! the copy. With `--shm` the cells live in the shared-memory region (its
//! last-value table, [`crate::shm`]), so co-located readers see exactly
//! what the workers see, at no extra write per tick.
//!
//! Writers: usually one feed owns a slot, but two sources may carry the same
//! instrument (A/B feeds), so a writer takes the entry by moving `version`
//! from even to odd with a CAS (uncontended: one atomic op, as before) and
//! a store whose `seq` is not newer than the cached one is skipped, so the
//! cache never goes back in time.
//!
//! Ordering: the writer's CAS (Acquire, so it sees the previous writer's
//! words) is followed by a Release fence before the word stores, and it
//! publishes with a Release store of the even version; the reader's Acquire
//! load of `version` pairs with that Release store, and its Acquire fence
//! after the word loads pairs with the writer's fence (the classic Boehm
//! seqlock recipe).

use std::sync::atomic::{fence, Ordering};

use crate::instrument::Slot;
use crate::sys::SharedView;
use crate::tick::{Tick, TickCell};

const _: () = assert!(std::mem::offset_of!(Tick, seq) == 8, "store() reads seq as word 1");

/// Where the cells live: on the heap, or in a mapped shared-memory region.
enum Cells {
    Heap(Box<[TickCell]>),
    Shared(SharedView<TickCell>),
}

impl Cells {
    #[inline]
    fn get(&self) -> &[TickCell] {
        match self {
            Cells::Heap(b) => b,
            Cells::Shared(s) => s.as_slice(),
        }
    }
}

/// Per-slot newest tick. Single writer per slot (its feed), many readers.
pub struct LastValues {
    entries: Cells,
}

impl LastValues {
    /// A cache for `slots` instruments, all empty (`seq == 0`).
    pub fn new(slots: usize) -> LastValues {
        let entries = (0..slots).map(|_| TickCell::default()).collect();
        LastValues { entries: Cells::Heap(entries) }
    }

    /// A cache whose cells are the last-value table of a shared-memory
    /// region (all zero when created: every slot empty).
    pub fn in_region(cells: SharedView<TickCell>) -> LastValues {
        LastValues { entries: Cells::Shared(cells) }
    }

    /// Store `tick` as the newest value of `slot`, unless the cache already
    /// holds a newer `seq`. Returns whether it was stored.
    pub fn store(&self, slot: Slot, tick: &Tick) -> bool {
        let e = &self.entries.get()[slot.idx()];
        let v = loop {
            let v = e.word.load(Ordering::Relaxed);
            if v & 1 == 0 && e.word.compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break v;
            }
            std::hint::spin_loop();
        };
        fence(Ordering::Release);
        // `seq` is word 1 of a `Tick` (after token and slot).
        let newer = tick.seq > e.tick[1].load(Ordering::Relaxed);
        if newer {
            e.put(tick);
        }
        e.word.store(v + 2, Ordering::Release);
        newer
    }

    /// The newest tick of `slot`, or `None` if it never ticked.
    pub fn load(&self, slot: Slot) -> Option<Tick> {
        let e = &self.entries.get()[slot.idx()];
        loop {
            if let Some(t) = read_stable(e) {
                return (t.seq != 0).then_some(t);
            }
            std::hint::spin_loop();
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.entries.get().len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.entries.get().is_empty()
    }
}

/// One attempt at a consistent read of a last-value cell: the tick, or
/// `None` when a write was in progress or overlapped the copy (try again).
/// Shared-memory readers use it with a bound on the attempts, since the
/// writer is another process that may have died mid-write.
#[inline]
pub fn read_stable(e: &TickCell) -> Option<Tick> {
    // A Relaxed load and a fence rather than an Acquire load: the same
    // ordering, and what std allows on a read-only mapping (shm readers).
    let v1 = e.word.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    if v1 & 1 == 1 {
        return None;
    }
    let t = e.get();
    fence(Ordering::Acquire);
    (e.word.load(Ordering::Relaxed) == v1).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn empty_until_stored() {
        let lv = LastValues::new(2);
        assert!(lv.load(Slot(0)).is_none());
        let t = Tick { token: 5, seq: 9, ltp: 100, ..Tick::default() };
        lv.store(Slot(1), &t);
        assert_eq!(lv.load(Slot(1)), Some(t));
        assert!(lv.load(Slot(0)).is_none());
    }

    #[test]
    fn older_seq_never_replaces_newer() {
        let lv = LastValues::new(1);
        assert!(lv.store(Slot(0), &Tick { seq: 5, ltp: 5, ..Tick::default() }));
        assert!(!lv.store(Slot(0), &Tick { seq: 4, ltp: 4, ..Tick::default() }));
        assert_eq!(lv.load(Slot(0)).unwrap().ltp, 5);
    }

    /// Stress: two writers race on one slot; every read is one whole tick
    /// and the cached seq never goes back. The writers keep writing until
    /// the reader has made its reads, so the reads overlap the writes (a
    /// fixed count of writes could be over before the first read).
    #[test]
    fn two_writers_never_tear() {
        /// Stops the writers however the reader's loop ends (a failed
        /// assertion included).
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let lv = Arc::new(LastValues::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_guard = StopOnDrop(stop.clone());
        let writers: Vec<_> = (0..2u64)
            .map(|k| {
                let (lv, stop) = (lv.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut s = 2 + k;
                    while !stop.load(Ordering::Relaxed) {
                        lv.store(Slot(0), &Tick { seq: s, ltp: s as i64, volume: s, oi: s, ..Tick::default() });
                        s += 2;
                        // Back-to-back writes would keep the version odd
                        // nearly all the time and starve the reader.
                        std::thread::yield_now();
                    }
                    s - 2
                })
            })
            .collect();
        let (mut last, mut reads, mut changes) = (0, 0u64, 0u64);
        while reads < 20_000 || changes < 500 {
            if let Some(t) = lv.load(Slot(0)) {
                assert_eq!((t.ltp as u64, t.volume, t.oi), (t.seq, t.seq, t.seq), "torn");
                assert!(t.seq >= last, "seq went back: {} < {last}", t.seq);
                changes += u64::from(t.seq != last);
                last = t.seq;
                reads += 1;
            }
        }
        drop(stop_guard);
        let newest = writers.into_iter().map(|w| w.join().unwrap()).max().unwrap();
        assert_eq!(lv.load(Slot(0)).unwrap().seq, newest, "the newest store won");
    }

    /// Stress: one writer stores ticks whose every field equals `seq`;
    /// readers must never see a mix of two writes, and `seq` never goes
    /// back. The writer runs until every reader has seen many different
    /// values, so the test cannot pass without reads racing writes.
    #[test]
    fn readers_never_see_torn_ticks() {
        let lv = Arc::new(LastValues::new(1));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let lv = lv.clone();
                std::thread::spawn(move || {
                    let (mut last, mut reads, mut changes) = (0, 0u64, 0u64);
                    while reads < 20_000 || changes < 500 {
                        if let Some(t) = lv.load(Slot(0)) {
                            let s = t.seq;
                            assert!(s >= last, "seq went back: {s} < {last}");
                            assert_eq!(
                                (t.ltp as u64, t.volume, t.oi, t.depth.asks[4].price as u64),
                                (s, s, s, s),
                                "torn read"
                            );
                            changes += u64::from(s != last);
                            last = s;
                            reads += 1;
                        }
                    }
                })
            })
            .collect();
        let mut s = 1u64;
        // Until every reader is done (or has failed: join reports it).
        while readers.iter().any(|r| !r.is_finished()) {
            let mut t = Tick { seq: s, ltp: s as i64, volume: s, oi: s, ..Tick::default() };
            t.depth.asks[4].price = s as i64;
            lv.store(Slot(0), &t);
            s += 1;
            std::thread::yield_now();
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(lv.load(Slot(0)).unwrap().seq, s - 1);
    }
}
