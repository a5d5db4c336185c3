//! What a `kite` source reports: `/status` (`kite`) and `/metrics`
//! (`tickcast_kite_*`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::feed::FeedHealth;
use crate::kite::DecodeError;
use crate::metrics::family;

/// What a `kite` source reports beyond [`FeedHealth`] (`/status` `kite`,
/// `/metrics` `tickcast_kite_*`). Its state and `reconnects` (links lost)
/// are the feed's own.
#[derive(Default)]
pub struct KiteHealth {
    /// Upstream connections open now.
    pub connections_open: AtomicU64,
    /// Most connections (`--kite-upstream-connections`).
    pub connections_max: AtomicU64,
    /// Instruments subscribed upstream now.
    pub subscribed: AtomicU64,
    /// Most instruments: connections × instruments per connection.
    pub capacity: AtomicU64,
    /// Frames (or packets, `unknown_length`) dropped, by [`DecodeError`] kind.
    pub decode_errors: [AtomicU64; DecodeError::NAMES.len()],
    /// Packets for instrument tokens the master does not have.
    pub unknown_tokens: AtomicU64,
    /// Handshakes refused with an HTTP status (403: wrong or expired token).
    pub handshake_refusals: AtomicU64,
    /// Connection attempts that failed otherwise (TCP, TLS, timeout).
    pub connect_failures: AtomicU64,
    /// Links closed after [`super::STALL`] without a frame.
    pub stalls: AtomicU64,
    /// Order postbacks relayed to `private:USER:orders`.
    pub orders: AtomicU64,
    /// Order postbacks dropped (no user configured, or no room for the channel).
    pub orders_dropped: AtomicU64,
    /// `{"type":"error"}` messages from upstream.
    pub upstream_errors: AtomicU64,
    /// Other text messages, ignored.
    pub text_ignored: AtomicU64,
    /// The newest connection failure or upstream error (empty: none).
    pub last_error: Mutex<String>,
}

impl KiteHealth {
    /// The `kite` object of this feed in `/status`.
    pub fn status(&self) -> Value {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let decode: serde_json::Map<String, Value> =
            DecodeError::NAMES.iter().zip(&self.decode_errors).map(|(n, c)| ((*n).to_string(), json!(l(c)))).collect();
        json!({
            "connections_open": l(&self.connections_open), "connections_max": l(&self.connections_max),
            "instruments_subscribed": l(&self.subscribed), "instruments_capacity": l(&self.capacity),
            "decode_errors": decode, "unknown_tokens": l(&self.unknown_tokens),
            "handshake_refusals": l(&self.handshake_refusals), "connect_failures": l(&self.connect_failures),
            "stalls": l(&self.stalls), "orders": l(&self.orders), "orders_dropped": l(&self.orders_dropped),
            "upstream_errors": l(&self.upstream_errors), "text_ignored": l(&self.text_ignored),
            "last_error": self.last_error.lock().clone(),
        })
    }

    pub(super) fn error(&self, text: String) {
        *self.last_error.lock() = text;
    }
}

/// Append the `tickcast_kite_*` families for every `kite` feed in `feeds`.
pub fn metrics(out: &mut String, feeds: &[Arc<FeedHealth>]) {
    use std::fmt::Write as _;
    let kites: Vec<(&str, &KiteHealth, &FeedHealth)> =
        feeds.iter().filter_map(|f| f.kite.as_ref().map(|k| (f.name.as_str(), k, &**f))).collect();
    if kites.is_empty() {
        return;
    }
    type Get = fn(&KiteHealth, &FeedHealth) -> u64;
    fn l(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    let families: [(&str, &str, &str, Get); 12] =
        [
            ("connections_open", "gauge", "Upstream Kite connections open", |k, _| l(&k.connections_open)),
            ("connections_max", "gauge", "Most upstream Kite connections", |k, _| l(&k.connections_max)),
            ("instruments_subscribed", "gauge", "Instruments subscribed upstream", |k, _| l(&k.subscribed)),
            ("instruments_capacity", "gauge", "Most instruments the upstream takes", |k, _| l(&k.capacity)),
            ("reconnects_total", "counter", "Upstream links lost (each is reopened)", |_, f| l(&f.reconnects)),
            ("stalls_total", "counter", "Upstream links closed after 3 s without a frame", |k, _| l(&k.stalls)),
            ("handshake_refusals_total", "counter", "Upstream handshakes refused (403: bad token)", |k, _| {
                l(&k.handshake_refusals)
            }),
            (
                "connect_failures_total",
                "counter",
                "Upstream connection attempts that failed (TCP, TLS, timeout)",
                |k, _| l(&k.connect_failures),
            ),
            ("unknown_tokens_total", "counter", "Packets for tokens not in the master", |k, _| l(&k.unknown_tokens)),
            ("orders_total", "counter", "Order postbacks relayed to private:USER:orders", |k, _| l(&k.orders)),
            ("orders_dropped_total", "counter", "Order postbacks dropped (no user configured)", |k, _| {
                l(&k.orders_dropped)
            }),
            ("upstream_errors_total", "counter", "Error messages from upstream", |k, _| l(&k.upstream_errors)),
        ];
    for (name, kind, help, get) in families {
        family(out, &format!("kite_{name}"), kind, help);
        for (feed, k, f) in &kites {
            let _ = writeln!(out, "tickcast_kite_{name}{{feed=\"{feed}\"}} {}", get(k, f));
        }
    }
    family(out, "kite_decode_errors_total", "counter", "Frames or packets from upstream dropped, by kind");
    for (feed, k, _) in &kites {
        for (kind, c) in DecodeError::NAMES.iter().zip(&k.decode_errors) {
            let _ = writeln!(out, "tickcast_kite_decode_errors_total{{feed=\"{feed}\",kind=\"{kind}\"}} {}", l(c));
        }
    }
}
