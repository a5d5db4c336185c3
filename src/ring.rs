//! Feed → worker hand-off: one lock-free SPSC ring (rtrb) per (feed, worker),
//! per-slot interest bits so a feed only pushes to workers that have a
//! subscriber, and the wake protocol that lets an idle worker sleep in epoll.
//!
//! `rtrb` is used rather than a hand-rolled ring: `benches/ring.rs` measures
//! it, and nothing here would beat it by enough to justify new unsafe code.
//!
//! Wake protocol (a Dekker pair, both sides SeqCst):
//! - worker: `sleeping = true`; fence; re-check its rings; only then poll.
//! - feed: push; fence; if `sleeping.swap(false)` then `waker.wake()`.
//!
//! Either the worker sees the pushed tick on its re-check, or the feed sees
//! `sleeping` and wakes it: a tick can never sit in a ring while its worker
//! sleeps.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::channel::ChannelMsg;
use crate::instrument::Slot;
use crate::tick::Tick;

/// Most workers one process runs (interest bits are one `u64` per slot).
pub const MAX_WORKERS: usize = 64;

/// Channel messages each publisher→worker ring holds.
const CHANNEL_RING: usize = 8192;

/// Per-key bitmask of workers with at least one subscriber; keys are
/// instrument slots or channel ids (anything `Into<usize>`).
pub struct Interest {
    /// Bit `w` set: worker `w` wants ticks for this slot.
    bits: Box<[AtomicU64]>,
}

impl Interest {
    /// No interest anywhere, for `slots` slots.
    pub fn new(slots: usize) -> Interest {
        Interest { bits: (0..slots).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Worker `w` now has a subscriber on `slot`. SeqCst: orders the bit
    /// before the worker's following last-value read (see `lvc`), so no
    /// tick falls between the snapshot and the stream.
    pub fn set(&self, key: impl Into<usize>, w: usize) {
        debug_assert!(w < MAX_WORKERS);
        self.bits[key.into()].fetch_or(1 << w, Ordering::SeqCst);
    }

    /// Worker `w` has no subscriber left on `slot`.
    pub fn clear(&self, key: impl Into<usize>, w: usize) {
        debug_assert!(w < MAX_WORKERS);
        self.bits[key.into()].fetch_and(!(1 << w), Ordering::SeqCst);
    }

    /// Workers interested in `slot`.
    #[inline]
    pub fn get(&self, key: impl Into<usize>) -> u64 {
        self.bits[key.into()].load(Ordering::SeqCst)
    }
}

/// How a feed wakes a parked worker.
pub struct WorkerSignal {
    /// True while the worker is (about to be) blocked in `poll`.
    pub sleeping: AtomicBool,
    /// Set by a feed whose push to this worker's ring failed: ticks were
    /// lost, and the worker must resynchronise its subscribers from the
    /// last-value cache (Release here, Acquire in the worker).
    pub overrun: AtomicBool,
    /// Wakes the worker's `mio::Poll`.
    pub waker: mio::Waker,
}

impl WorkerSignal {
    /// The worker's half of the wake protocol: announce the sleep, then look
    /// for work once more (`pending`: are any of its rings non-empty?).
    /// Returns whether it may park; if not, the announcement is withdrawn.
    /// A feed pushes, then [`WorkerSignal::notify`]s; the SeqCst store and
    /// fence here and the fence there mean that either this check sees the
    /// push or the feed sees `sleeping` and wakes the poll.
    #[inline]
    pub fn may_park(&self, pending: impl FnOnce() -> bool) -> bool {
        may_park(&self.sleeping, fence, pending)
    }

    /// Wake the worker if it is parked. Called after pushes are visible.
    #[inline]
    pub fn notify(&self) {
        if must_wake(&self.sleeping, fence) {
            // A failed wake (eventfd full) means a wake is already pending.
            let _ = self.waker.wake();
        }
    }
}

/// The flag of the wake protocol, so that its two halves are written once
/// and run both on std's atomics (the server) and on loom's (the model
/// check: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`).
pub(crate) trait WakeFlag {
    fn store(&self, v: bool, order: Ordering);
    fn load(&self, order: Ordering) -> bool;
    fn swap(&self, v: bool, order: Ordering) -> bool;
}

impl WakeFlag for AtomicBool {
    #[inline(always)]
    fn store(&self, v: bool, order: Ordering) {
        AtomicBool::store(self, v, order);
    }
    #[inline(always)]
    fn load(&self, order: Ordering) -> bool {
        AtomicBool::load(self, order)
    }
    #[inline(always)]
    fn swap(&self, v: bool, order: Ordering) -> bool {
        AtomicBool::swap(self, v, order)
    }
}

/// The worker's half: `sleeping = true`; fence; re-check (see [`WorkerSignal::may_park`]).
#[inline(always)]
pub(crate) fn may_park<F: WakeFlag>(sleeping: &F, fence: fn(Ordering), pending: impl FnOnce() -> bool) -> bool {
    sleeping.store(true, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if pending() {
        sleeping.store(false, Ordering::Relaxed);
        return false;
    }
    true
}

/// The feed's half, after its push: fence; must it wake the worker?
#[inline(always)]
pub(crate) fn must_wake<F: WakeFlag>(sleeping: &F, fence: fn(Ordering)) -> bool {
    fence(Ordering::SeqCst);
    sleeping.load(Ordering::Relaxed) && sleeping.swap(false, Ordering::SeqCst)
}

/// Wake every worker whose bit is set in `mask` (if it is parked).
#[inline]
fn wake(signals: &[Arc<WorkerSignal>], mut mask: u64) {
    while mask != 0 {
        let w = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        signals[w].notify();
    }
}

/// Counters a feed keeps about its pushes.
#[derive(Default)]
pub struct PushStats {
    /// Ticks dropped because a worker's ring was full.
    pub overruns: AtomicU64,
}

/// The feed side: one producer per worker.
pub struct Fanout {
    producers: Vec<rtrb::Producer<Tick>>,
    signals: Vec<Arc<WorkerSignal>>,
    interest: Arc<Interest>,
    lvc: Arc<crate::lvc::LastValues>,
    stats: Arc<PushStats>,
    /// This feed's ring in the shared-memory region (`--shm`).
    shm: Option<crate::shm::RingWriter>,
    /// Workers pushed to since the last `flush`.
    pending: u64,
    /// Pushes since the last `flush`.
    unflushed: u32,
}

/// A source that never drains its input (sustained load) still wakes its
/// workers at least this often, in pushes.
const FLUSH_EVERY: u32 = 256;

impl Fanout {
    /// Publish a complete tick: cache it, then push it to every interested
    /// worker. Never blocks: a full ring counts an overrun (the value is
    /// still in the cache, so a later snapshot or conflation recovers it).
    /// A tick older than the cached one (a slower A/B feed) goes nowhere;
    /// returns false for it.
    #[inline]
    pub fn publish(&mut self, tick: &Tick) -> bool {
        let slot = Slot(tick.slot);
        if !self.lvc.store(slot, tick) {
            return false;
        }
        // After the last value (a joining reader relies on that order).
        if let Some(shm) = &mut self.shm {
            shm.append(tick);
        }
        // Pairs with the worker's `Interest::set` then `LastValues::load`.
        fence(Ordering::SeqCst);
        let mut mask = self.interest.get(slot);
        while mask != 0 {
            let w = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(p) = self.producers.get_mut(w) {
                if p.push(*tick).is_err() {
                    self.stats.overruns.fetch_add(1, Ordering::Relaxed);
                    self.signals[w].overrun.store(true, Ordering::Release);
                }
                self.pending |= 1 << w;
            }
        }
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            self.flush();
        }
        true
    }

    /// Free slots in the fullest ring: a non-live source (a replay) waits
    /// for room instead of overrunning.
    pub fn min_free(&self) -> usize {
        self.producers.iter().map(rtrb::Producer::slots).min().unwrap_or(usize::MAX)
    }

    /// Which workers want which slots.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Wake the workers pushed to since the last call (end of a feed batch;
    /// `publish` also calls it every `FLUSH_EVERY` pushes).
    #[inline]
    pub fn flush(&mut self) {
        self.unflushed = 0;
        wake(&self.signals, std::mem::take(&mut self.pending));
        if let Some(shm) = &mut self.shm {
            shm.flush();
        }
    }
}

/// The publisher side of channel rings: one producer per worker.
pub struct ChannelFanout {
    producers: Vec<rtrb::Producer<ChannelMsg>>,
    signals: Vec<Arc<WorkerSignal>>,
    interest: Arc<Interest>,
    stats: Arc<PushStats>,
    pending: u64,
    unflushed: u32,
}

impl ChannelFanout {
    /// Push `msg` to every worker with a subscriber on its channel (the
    /// frame is shared, not copied). A full ring counts an overrun.
    pub fn publish(&mut self, msg: &ChannelMsg) {
        let mut mask = self.interest.get(msg.channel);
        while mask != 0 {
            let w = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(p) = self.producers.get_mut(w) {
                if p.push(msg.clone()).is_err() {
                    // Lost for this worker: its subscribers see the hole in
                    // the channel's seq and get a `gap` notice.
                    self.stats.overruns.fetch_add(1, Ordering::Relaxed);
                }
                self.pending |= 1 << w;
            }
        }
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Which workers want which channels.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Wake the workers pushed to since the last call.
    pub fn flush(&mut self) {
        self.unflushed = 0;
        wake(&self.signals, std::mem::take(&mut self.pending));
    }
}

/// Shared state from which feeds and workers get their ring ends.
pub struct Hub {
    /// Per-slot worker interest.
    pub interest: Arc<Interest>,
    /// Per-channel worker interest.
    pub channel_interest: Arc<Interest>,
    /// Per-slot newest tick.
    pub lvc: Arc<crate::lvc::LastValues>,
    /// The shared-memory region (`--shm`): its last-value table is `lvc`.
    pub shm: Option<crate::shm::Region>,
    /// Local demand on a limited upstream (a `kite://` source), if there is one.
    pub demand: Option<Arc<crate::demand::Demand>>,
    signals: Vec<Arc<WorkerSignal>>,
    capacity: usize,
}

impl Hub {
    /// A hub for `slots` instruments and the given worker signals.
    pub fn new(slots: usize, signals: Vec<Arc<WorkerSignal>>, capacity: usize) -> Hub {
        Hub::with_channels(slots, 0, signals, capacity, None)
    }

    /// A hub for `slots` instruments, `channels` named channels and the
    /// given worker signals; with a shared-memory region, its last-value
    /// table is the cache and feed `i` also writes its ring `i`.
    pub fn with_channels(
        slots: usize,
        channels: usize,
        signals: Vec<Arc<WorkerSignal>>,
        capacity: usize,
        shm: Option<crate::shm::Region>,
    ) -> Hub {
        assert!(signals.len() <= MAX_WORKERS, "at most {MAX_WORKERS} workers");
        let lvc = match &shm {
            Some(region) => region.last_values(),
            None => crate::lvc::LastValues::new(slots),
        };
        Hub {
            interest: Arc::new(Interest::new(slots)),
            channel_interest: Arc::new(Interest::new(channels)),
            lvc: Arc::new(lvc),
            shm,
            demand: None,
            signals,
            capacity,
        }
    }

    /// Channel rings for one publisher: its `ChannelFanout` and one consumer
    /// per worker (index = worker id).
    pub fn connect_channels(&self, stats: Arc<PushStats>) -> (ChannelFanout, Vec<rtrb::Consumer<ChannelMsg>>) {
        let (producers, consumers) = (0..self.signals.len()).map(|_| rtrb::RingBuffer::new(CHANNEL_RING)).unzip();
        let fanout = ChannelFanout {
            producers,
            signals: self.signals.clone(),
            interest: self.channel_interest.clone(),
            stats,
            pending: 0,
            unflushed: 0,
        };
        (fanout, consumers)
    }

    /// New rings for feed `feed` (its index in `--feed` order): its
    /// `Fanout` (writing shared-memory ring `feed` too, with `--shm`) and one
    /// consumer per worker (index = worker id), which the caller hands to
    /// the workers.
    pub fn connect_feed(&self, feed: usize, stats: Arc<PushStats>) -> (Fanout, Vec<rtrb::Consumer<Tick>>) {
        let (producers, consumers) = (0..self.signals.len()).map(|_| rtrb::RingBuffer::new(self.capacity)).unzip();
        let fanout = Fanout {
            producers,
            signals: self.signals.clone(),
            interest: self.interest.clone(),
            lvc: self.lvc.clone(),
            stats,
            shm: self.shm.as_ref().map(|r| r.ring_writer(feed)),
            pending: 0,
            unflushed: 0,
        };
        (fanout, consumers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Stress the wake protocol: a worker that parks in a real `mio::Poll`
    /// with no timeout must still receive every tick, in order.
    #[test]
    fn parked_worker_never_misses_a_tick() {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let signal =
            Arc::new(WorkerSignal { sleeping: AtomicBool::new(false), overrun: AtomicBool::new(false), waker });
        let hub = Hub::new(1, vec![signal.clone()], 64);
        hub.interest.set(Slot(0), 0);
        let (mut fanout, mut consumers) = hub.connect_feed(0, Arc::new(PushStats::default()));
        let mut rx = consumers.pop().unwrap();
        const N: u64 = 100_000;
        let worker = std::thread::spawn(move || {
            let mut poll = poll;
            let mut events = mio::Events::with_capacity(8);
            let mut next = 1;
            while next <= N {
                while let Ok(t) = rx.pop() {
                    assert_eq!(t.seq, next);
                    next += 1;
                }
                // The worker's own park check (`Worker::park_timeout`).
                if next <= N && signal.may_park(|| !rx.is_empty()) {
                    poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
                    assert!(!events.is_empty() || !rx.is_empty(), "lost wake-up: parked 10 s with ticks pending");
                }
                signal.sleeping.store(false, Ordering::Relaxed);
            }
        });
        let mut seq = 1;
        while seq <= N {
            let t = Tick { seq, ..Tick::default() };
            if fanout.producers[0].slots() > 0 {
                fanout.publish(&t);
                seq += 1;
            }
            if seq % 7 == 0 {
                fanout.flush();
            }
        }
        fanout.flush();
        worker.join().unwrap();
    }
}

/// Model check of the wake protocol with loom: every interleaving (and
/// every weak-memory outcome loom models) of a feed's push-then-notify
/// against a worker's announce-then-recheck. The property: a worker that
/// parks with a tick pending is always woken. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    use loom::sync::Arc;

    use super::{may_park, must_wake, WakeFlag};

    impl WakeFlag for AtomicBool {
        fn store(&self, v: bool, order: Ordering) {
            AtomicBool::store(self, v, order);
        }
        fn load(&self, order: Ordering) -> bool {
            AtomicBool::load(self, order)
        }
        fn swap(&self, v: bool, order: Ordering) -> bool {
            AtomicBool::swap(self, v, order)
        }
    }

    /// `feeds` feeds each push one tick (a Release store of the ring's
    /// tail, as rtrb does) and notify; the worker drains (Acquire), then
    /// announces and re-checks. If it parks, some feed must have woken it.
    fn no_lost_wake(feeds: usize) {
        loom::model(move || {
            let sleeping = Arc::new(AtomicBool::new(false));
            let tails: Vec<_> = (0..feeds).map(|_| Arc::new(AtomicUsize::new(0))).collect();
            let woken = Arc::new(AtomicBool::new(false)); // the eventfd
            let handles: Vec<_> = tails
                .iter()
                .map(|tail| {
                    let (sleeping, tail, woken) = (sleeping.clone(), tail.clone(), woken.clone());
                    loom::thread::spawn(move || {
                        tail.store(1, Ordering::Release);
                        if must_wake(&*sleeping, fence) {
                            woken.store(true, Ordering::Release);
                        }
                    })
                })
                .collect();
            let mut seen = vec![0; feeds];
            let drain = |seen: &mut Vec<usize>| {
                for (i, t) in tails.iter().enumerate() {
                    seen[i] = t.load(Ordering::Acquire);
                }
            };
            drain(&mut seen);
            let pending = || tails.iter().zip(&seen).any(|(t, s)| t.load(Ordering::Acquire) != *s);
            let parked = may_park(&*sleeping, fence, pending);
            for h in handles {
                h.join().unwrap();
            }
            if parked {
                let missed = tails.iter().zip(&seen).any(|(t, s)| t.load(Ordering::Acquire) != *s);
                assert!(!missed || woken.load(Ordering::Acquire), "lost wake-up: parked with a tick pending");
            }
        });
    }

    #[test]
    fn loom_one_feed_never_loses_a_wake() {
        no_lost_wake(1);
    }

    #[test]
    fn loom_two_feeds_never_lose_a_wake() {
        no_lost_wake(2);
    }
}
