//! Counters and latency histograms, and their two renderings: the `/status`
//! JSON document and the `/metrics` Prometheus text.
//!
//! Counters are relaxed atomics bumped off the per-client path (once per
//! event or per loop turn). Latency (source `ts` → bytes handed to the
//! kernel) is recorded by each worker twice, both without locks: into its
//! own HDR `Histogram` (fine percentiles for `/status`) and into fixed
//! Prometheus buckets ([`LatencyBuckets`], a plain array). About twice a
//! second the worker adds both to what it shares: the buckets to
//! cumulative atomics (`tickcast_delivery_latency_seconds`, counted since
//! start as Prometheus expects), the histogram to a [`LatencyWindow`] of two
//! 30 s slices (`/status` percentiles over the last 30–60 s).
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Server-wide event counters.
#[derive(Default)]
pub struct Counters {
    /// Connections accepted (all time).
    pub connections_total: AtomicU64,
    /// Connections refused at the cap (503).
    pub connections_rejected: AtomicU64,
    /// Connections that never completed a valid handshake.
    pub handshake_failures: AtomicU64,
    /// Client requests answered with an `error` frame.
    pub bad_requests: AtomicU64,
    /// Connections closed for WebSocket protocol violations (1002/1007).
    pub protocol_errors: AtomicU64,
    /// Connections closed for oversized messages (1009).
    pub oversized: AtomicU64,
    /// Connections closed for policy violations (1008).
    pub policy_closes: AtomicU64,
    /// Times a client crossed its out-buffer limit and was conflated.
    pub slow_conflations: AtomicU64,
    /// Clients closed with 1013 as slow consumers.
    pub slow_disconnects: AtomicU64,
    /// `gap` notices sent.
    pub gaps_sent: AtomicU64,
    /// Data frames queued to clients.
    pub frames_sent: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_written: AtomicU64,
    /// `write`/`writev` calls to client sockets that wrote something.
    pub write_calls: AtomicU64,
    /// Sessions restored by a reconnect with the same `client_id`.
    pub sessions_restored: AtomicU64,
    /// Connections refused for a missing, wrong or under-privileged API key.
    pub auth_failures: AtomicU64,
    /// Connections refused at a user's or dialect's connection limit.
    pub limit_rejections: AtomicU64,
    /// Episodes of `accept` failing (out of file descriptors): connections
    /// waited in the backlog until descriptors freed up.
    pub accept_failures: AtomicU64,
}

impl Counters {
    /// Add `n` to a counter.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Add one to a counter.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One `/metrics` family's `# HELP` and `# TYPE` lines (`tickcast_` + `name`).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP tickcast_{name} {help}\n# TYPE tickcast_{name} {kind}");
}

/// Latency histogram range: 1 ns .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Upper bounds (`le`) of the delivery latency buckets, ns: 10 µs to
/// 2.5 s, the range of market-data latency from a colocated feed to a
/// congested client; beyond the last is `+Inf`.
pub const LATENCY_BUCKETS_NS: [u64; 17] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Buckets with `+Inf`.
const BUCKETS: usize = LATENCY_BUCKETS_NS.len() + 1;

/// A worker's delivery latencies since its last publish, in the
/// Prometheus buckets (each sample counted in the first bucket it fits,
/// not cumulatively) and their sum. Plain integers: the worker owns it.
#[derive(Default)]
pub struct LatencyBuckets {
    counts: [u64; BUCKETS],
    sum_ns: u64,
}

impl LatencyBuckets {
    /// Count one latency of `ns` (a binary search over 17 bounds).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[LATENCY_BUCKETS_NS.partition_point(|&le| le < ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Add these to `g`'s totals and start again from zero.
    pub fn publish(&mut self, g: &WorkerGauges) {
        for (total, n) in g.latency_buckets.iter().zip(&mut self.counts) {
            Counters::add(total, std::mem::take(n));
        }
        Counters::add(&g.latency_sum_ns, std::mem::take(&mut self.sum_ns));
    }
}

/// Length of one slice of the `/status` latency window.
pub const WINDOW_SLICE_NS: u64 = 30_000_000_000;

/// One worker's HDR latency histogram over the current and the previous
/// wall-clock-aligned 30 s slice (`now / WINDOW_SLICE_NS`): every worker's
/// slices cover the same periods, so merging them is exact.
pub struct LatencyWindow {
    current: (u64, Histogram<u64>),
    previous: (u64, Histogram<u64>),
}

impl LatencyWindow {
    /// An empty window.
    pub fn new() -> LatencyWindow {
        LatencyWindow { current: (0, new_histogram()), previous: (0, new_histogram()) }
    }

    /// Add `h`, recorded up to `now_ns`, to the current slice, moving on
    /// to a new slice first if `now_ns` is past it.
    pub fn add(&mut self, h: &Histogram<u64>, now_ns: u64) {
        let slice = now_ns / WINDOW_SLICE_NS;
        if slice != self.current.0 {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.1.reset();
            self.current.0 = slice;
        }
        let _ = self.current.1.add(h);
    }

    /// Add the slices within the window at `now_ns` to `out`.
    pub fn merge_into(&self, out: &mut Histogram<u64>, now_ns: u64) {
        let slice = now_ns / WINDOW_SLICE_NS;
        for (s, h) in [&self.current, &self.previous] {
            if *s == slice || *s + 1 == slice {
                let _ = out.add(h);
            }
        }
    }

    /// How far back the window reaches at `now_ns`: from the start of the
    /// previous slice, 30 to 60 s.
    pub fn span_ns(now_ns: u64) -> u64 {
        now_ns % WINDOW_SLICE_NS + WINDOW_SLICE_NS
    }
}

impl Default for LatencyWindow {
    fn default() -> LatencyWindow {
        LatencyWindow::new()
    }
}

/// What one worker publishes for the status endpoints.
#[derive(Default)]
pub struct WorkerGauges {
    /// Open connections on this worker.
    pub connections: AtomicU64,
    /// Subscriptions on this worker.
    pub subscriptions: AtomicU64,
    /// Latency (source ts → written) over the last 30–60 s, ns.
    pub latency: Mutex<LatencyWindow>,
    /// Latencies since start per Prometheus bucket (not cumulative across
    /// buckets; the last is `+Inf`).
    pub latency_buckets: [AtomicU64; BUCKETS],
    /// Sum of the latencies since start, ns.
    pub latency_sum_ns: AtomicU64,
    /// Time spent in turns that found work since start, ns.
    pub busy_ns: AtomicU64,
}

/// Percentiles reported everywhere, as (label, quantile).
pub const PERCENTILES: [(&str, f64); 5] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99_9", 0.999), ("max", 1.0)];

/// Latency percentiles of `h` in ns, as (label, value) pairs.
pub fn percentiles(h: &Histogram<u64>) -> [(&'static str, u64); 5] {
    PERCENTILES.map(|(l, q)| (l, if q >= 1.0 { h.max() } else { h.value_at_quantile(q) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_that_holds_it() {
        let mut b = LatencyBuckets::default();
        for ns in [1, 10_000, 10_001, 2_500_000_000, 2_500_000_001, u64::MAX] {
            b.record(ns);
        }
        assert_eq!(b.counts[0], 2, "≤ 10 µs, the bound included");
        assert_eq!(b.counts[1], 1);
        assert_eq!(b.counts[BUCKETS - 2], 1, "≤ 2.5 s");
        assert_eq!(b.counts[BUCKETS - 1], 2, "+Inf");
        assert_eq!(b.sum_ns, u64::MAX, "the sum saturates");
        let g = WorkerGauges::default();
        b.publish(&g);
        b.record(30_000);
        b.publish(&g);
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((l(&g.latency_buckets[0]), l(&g.latency_buckets[2])), (2, 1));
        assert_eq!(b.counts, [0; BUCKETS], "published counts start again");
    }

    #[test]
    fn the_window_keeps_the_current_and_previous_slices() {
        let s = WINDOW_SLICE_NS;
        let mut one = new_histogram();
        one.record(1_000).unwrap();
        let mut w = LatencyWindow::new();
        w.add(&one, 10 * s + 1);
        w.add(&one, 11 * s + 1);
        w.add(&one, 11 * s + 2);
        let count = |w: &LatencyWindow, now| {
            let mut h = new_histogram();
            w.merge_into(&mut h, now);
            h.len()
        };
        assert_eq!(count(&w, 11 * s + 5), 3, "both slices");
        assert_eq!(count(&w, 12 * s), 2, "the oldest slice left the window");
        assert_eq!(count(&w, 13 * s), 0, "an idle worker's old slices are not reported");
        w.add(&one, 20 * s);
        assert_eq!(count(&w, 20 * s), 1, "a jump forward drops what is no longer in the window");
        assert_eq!(LatencyWindow::span_ns(20 * s + 7), s + 7);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p[0].0, "p50");
        assert!((499_000..=501_000).contains(&p[0].1), "{p:?}");
        assert!((989_000..=991_000).contains(&p[2].1), "{p:?}");
        assert!((999_000..=1_001_000).contains(&p[4].1), "{p:?}");
    }
}
