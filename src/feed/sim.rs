//! The built-in simulator: a random walk per instrument that looks like a
//! market (moves in multiples of the tick size, a one-tick spread, running
//! OHLC, cumulative volume, five levels of depth) at a fixed total rate.
//!
//! Pacing is open-loop: at any instant the number of ticks sent is
//! `elapsed × rate`, generated in batches, so the same source serves as a
//! demo at 2,000 ticks/s and as benchmark load at millions.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{stopping, FeedCtx, Source, STATE_DOWN, STATE_LIVE, STATE_PAUSED};
use crate::instrument::{Registry, Slot};
use crate::tick::{now_ns, Level, Tick, DEPTH_LEVELS, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};

/// Most ticks generated between two wake-ups of the workers.
const MAX_BATCH: u64 = 1024;

/// One instrument's walk.
struct Walk {
    tick: Tick,
    /// Price step, minor units.
    step: i64,
    /// Lot size.
    lot: u32,
}

/// Simulator over the slots `i` with `i % of == index`.
pub struct Sim {
    walks: Vec<Walk>,
    rate: u64,
    rng: fastrand::Rng,
}

impl Sim {
    /// A simulator producing `rate` ticks/s over its share of `registry`.
    pub fn new(registry: &Registry, rate: u64, index: usize, of: usize, seed: u64) -> Sim {
        let rng = fastrand::Rng::with_seed(seed);
        let walks = registry
            .iter()
            .filter(|(slot, _)| slot.idx() % of.max(1) == index)
            .map(|(slot, ins)| {
                let step = ins.tick_size.max(1);
                let scale = 10i64.pow(u32::from(ins.price_decimals));
                let start = if ins.ref_price > 0 { ins.ref_price } else { (100 + i64::from(ins.token % 4000)) * scale };
                let ltp = (start / step).max(1) * step;
                let tick = Tick {
                    token: ins.token,
                    slot: slot.0,
                    ltp,
                    open: ltp,
                    high: ltp,
                    low: ltp,
                    close: ltp,
                    flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
                    depth_levels: DEPTH_LEVELS as u8,
                    ..Tick::default()
                };
                Walk { tick, step, lot: ins.lot_size.max(1) }
            })
            .collect();
        Sim { walks, rate, rng }
    }

    /// Slots this simulator writes.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.walks.iter().map(|w| Slot(w.tick.slot))
    }

    /// Advance a random instrument by one tick stamped `ts_ns`.
    pub fn next_tick(&mut self, ts_ns: u64) -> &Tick {
        let i = self.rng.usize(..self.walks.len());
        let w = &mut self.walks[i];
        let rng = &mut self.rng;
        let t = &mut w.tick;
        t.ltp = (t.ltp + w.step * rng.i64(-2..=2)).max(w.step);
        t.high = t.high.max(t.ltp);
        t.low = t.low.min(t.ltp);
        t.ltq = w.lot * rng.u32(1..=50);
        t.volume += u64::from(t.ltq);
        t.bid = (t.ltp - w.step).max(w.step);
        t.ask = t.ltp + w.step;
        for (i, (b, a)) in t.depth.bids.iter_mut().zip(t.depth.asks.iter_mut()).enumerate() {
            let i = i as i64;
            *b = Level {
                price: (t.bid - i * w.step).max(w.step),
                qty: w.lot * rng.u32(1..=500),
                orders: rng.u32(1..=20),
            };
            *a = Level { price: t.ask + i * w.step, qty: w.lot * rng.u32(1..=500), orders: rng.u32(1..=20) };
        }
        t.bid_qty = t.depth.bids[0].qty;
        t.ask_qty = t.depth.asks[0].qty;
        t.seq += 1;
        t.ts_ns = ts_ns;
        t.ts_recv_ns = ts_ns;
        t
    }
}

impl Source for Sim {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        if self.walks.is_empty() {
            ctx.health.state.store(STATE_DOWN, Relaxed);
            return;
        }
        let mut start = Instant::now();
        let mut sent: u64 = 0;
        while !stopping(&ctx.shutdown) {
            if !ctx.market_open.load(std::sync::atomic::Ordering::Acquire) {
                // Market closed: no ticks; pace afresh from the reopen.
                ctx.health.state.store(STATE_PAUSED, Relaxed);
                std::thread::sleep(Duration::from_millis(10));
                (start, sent) = (Instant::now(), 0);
                continue;
            }
            // Tick `k` is due at k / rate s: the first at once, so the
            // simulator is live (it has delivered) from its first turn.
            let elapsed = start.elapsed().as_nanos() as u64;
            let due = ((u128::from(elapsed) * u128::from(self.rate) / 1_000_000_000) as u64 + 1).saturating_sub(sent);
            if due == 0 {
                let next_ns = (u128::from(sent) * 1_000_000_000 / u128::from(self.rate)) as u64;
                std::thread::sleep(Duration::from_nanos(next_ns.saturating_sub(elapsed).min(1_000_000)));
                continue;
            }
            let n = due.min(MAX_BATCH);
            let mut ts = 0;
            for _ in 0..n {
                ts = now_ns();
                let t = *self.next_tick(ts);
                ctx.fanout.publish(&t);
            }
            ctx.fanout.flush();
            ctx.health.published(n, ts);
            ctx.health.state.store(STATE_LIVE, Relaxed);
            sent += n;
        }
        ctx.health.state.store(STATE_DOWN, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_is_believable() {
        let reg = Registry::bundled();
        let mut sim = Sim::new(&reg, 1000, 0, 1, 42);
        let mut last_seq = std::collections::HashMap::new();
        for i in 0..20_000 {
            let t = *sim.next_tick(1_000 + i);
            let ins = reg.get(Slot(t.slot));
            assert_eq!(reg.slot_of_token(t.token), Some(Slot(t.slot)));
            assert_eq!(t.ltp % ins.tick_size, 0, "moves in tick multiples");
            assert!(t.bid < t.ltp && t.ltp < t.ask, "bid < ltp < ask");
            assert!(t.low <= t.ltp && t.ltp <= t.high);
            assert!(t.depth.bids.windows(2).all(|w| w[0].price >= w[1].price));
            assert!(t.depth.asks.windows(2).all(|w| w[0].price < w[1].price));
            let prev = last_seq.insert(t.token, (t.seq, t.volume));
            if let Some((s, v)) = prev {
                assert_eq!(t.seq, s + 1, "seq is per instrument and contiguous");
                assert!(t.volume > v, "volume is cumulative");
            }
        }
        assert!(last_seq.len() > 50, "ticks spread over the master");
    }

    #[test]
    fn simulators_split_the_master() {
        let reg = Registry::bundled();
        let a: Vec<_> = Sim::new(&reg, 1, 0, 2, 1).slots().collect();
        let b: Vec<_> = Sim::new(&reg, 1, 1, 2, 1).slots().collect();
        assert_eq!(a.len() + b.len(), reg.len());
        assert!(a.iter().all(|s| !b.contains(s)));
    }
}
