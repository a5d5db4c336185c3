//! Counters and latency histograms, and their two renderings: the `/status`
//! JSON document and the `/metrics` Prometheus text.
//!
//! Counters are relaxed atomics bumped off the per-client path (once per
//! event or per loop turn). Latency (source `ts` → bytes handed to the
//! kernel) is recorded by each worker into its own `Histogram` and merged
//! into the shared one about once a second, so the hot path never locks.

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
    /// Sessions restored by a reconnect with the same `client_id`.
    pub sessions_restored: AtomicU64,
    /// Connections refused for a missing, wrong or under-privileged API key.
    pub auth_failures: AtomicU64,
    /// Connections refused at a user's or dialect's connection limit.
    pub limit_rejections: AtomicU64,
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

/// Latency histogram range: 1 ns .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What one worker publishes for the status endpoints.
pub struct WorkerGauges {
    /// Open connections on this worker.
    pub connections: AtomicU64,
    /// Subscriptions on this worker.
    pub subscriptions: AtomicU64,
    /// Merged latency since start (source ts → written), ns.
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for WorkerGauges {
    fn default() -> WorkerGauges {
        WorkerGauges {
            connections: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        }
    }
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
