//! TLS termination on the listeners (`https://` and `wss://`): rustls for
//! the handshake (TLS 1.2 and 1.3, the ring provider, ALPN `http/1.1`, no
//! renegotiation), then our own record layer so everything before the
//! encryption stays encode-once: a client's frames of a turn are sealed
//! together into one record in the buffer its one write goes from.
//!
//! - [`certs`]: PEM pairs, checked at load, swapped by a reload (`SIGHUP`).
//! - [`session`]: one connection, sans-IO (the worker does the socket).
//! - [`records`]: record sealing and opening after the handshake.
//!
//! [`Stats`] are what `/status` and `/metrics` show: handshakes by version,
//! failures by reason, reloads, and each certificate's expiry.

pub mod certs;
pub mod records;
pub mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::ServerConfig;

pub use certs::Cert;
pub use session::Session;

/// Why a TLS connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The first bytes were not a TLS handshake (plain HTTP, garbage).
    NotTls,
    /// The peer sent a fatal alert (it does not trust the certificate, for
    /// one): its description code.
    PeerAlert(u8),
    /// No protocol version or cipher suite in common.
    Incompatible,
    /// The peer went away during the handshake.
    Closed,
    /// Anything else the peer got wrong.
    Protocol(String),
    /// TLS 1.2 reached its cipher's record limit.
    KeyLimit,
}

impl Failure {
    /// Classify a rustls error.
    pub fn from_rustls(e: rustls::Error) -> Failure {
        match e {
            rustls::Error::AlertReceived(a) => Failure::PeerAlert(u8::from(a)),
            rustls::Error::PeerIncompatible(_) => Failure::Incompatible,
            e => Failure::Protocol(e.to_string()),
        }
    }

    /// The reason label in `/status` and `/metrics`.
    pub fn reason(&self) -> Reason {
        match self {
            Failure::NotTls => Reason::NotTls,
            Failure::PeerAlert(_) => Reason::PeerAlert,
            Failure::Incompatible => Reason::Incompatible,
            Failure::Closed => Reason::Closed,
            Failure::Protocol(_) => Reason::Protocol,
            Failure::KeyLimit => Reason::KeyLimit,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotTls => f.write_str("not a TLS handshake (plain HTTP on a TLS port?)"),
            Failure::PeerAlert(d) => write!(f, "the client sent alert {d} ({:?})", rustls::AlertDescription::from(*d)),
            Failure::Incompatible => f.write_str("no TLS version or cipher suite in common"),
            Failure::Closed => f.write_str("the client went away during the handshake"),
            Failure::Protocol(e) => write!(f, "TLS error: {e}"),
            Failure::KeyLimit => f.write_str("the TLS 1.2 cipher's record limit was reached"),
        }
    }
}

impl std::error::Error for Failure {}

/// Failure reasons, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    /// [`Failure::NotTls`]
    NotTls,
    /// [`Failure::PeerAlert`]
    PeerAlert,
    /// [`Failure::Incompatible`]
    Incompatible,
    /// [`Failure::Closed`]
    Closed,
    /// [`Failure::Protocol`]
    Protocol,
    /// The handshake did not finish within the handshake deadline.
    Timeout,
    /// [`Failure::KeyLimit`]
    KeyLimit,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 7] = [
        Reason::NotTls,
        Reason::PeerAlert,
        Reason::Incompatible,
        Reason::Closed,
        Reason::Protocol,
        Reason::Timeout,
        Reason::KeyLimit,
    ];

    /// Its label.
    pub fn name(self) -> &'static str {
        ["not_tls", "peer_alert", "incompatible", "closed", "protocol", "timeout", "key_limit"][self as usize]
    }
}

/// TLS counters and the certificates served.
#[derive(Default)]
pub struct Stats {
    /// Completed handshakes: TLS 1.2, TLS 1.3.
    pub handshakes: [AtomicU64; 2],
    /// Failures by [`Reason`].
    pub failures: [AtomicU64; 7],
    /// Certificate reloads that took, and that failed (old pair kept).
    pub reloads: AtomicU64,
    /// See `reloads`.
    pub reload_failures: AtomicU64,
    /// Every listener's certificate (one entry per pair; listeners sharing
    /// a pair share an entry).
    pub certs: Vec<Arc<Cert>>,
    /// When each reason was last logged, seconds since the epoch.
    logged: [AtomicU64; 7],
}

impl Stats {
    /// Count a completed handshake.
    pub fn handshake(&self, version: Option<rustls::ProtocolVersion>) {
        let i = usize::from(version == Some(rustls::ProtocolVersion::TLSv1_3));
        self.handshakes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a failure.
    pub fn failure(&self, r: Reason) {
        self.failures[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a failure for `r` should be logged now (once a minute).
    pub fn log_due(&self, r: Reason) -> bool {
        let now = unix_now() as u64;
        let last = self.logged[r as usize].load(Ordering::Relaxed);
        now >= last + 60
            && self.logged[r as usize].compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Reload every certificate; a pair that fails keeps the old one.
    /// Returns the errors, for the log.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for c in &self.certs {
            match c.reload() {
                Ok(()) => {
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    log::info!("TLS: reloaded the {} listener's certificate {}", c.listener, c.paths.0.display());
                }
                Err(e) => {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    let msg = format!("TLS: {e:#}; the {} listener keeps its current certificate", c.listener);
                    log::error!("{msg}");
                    errors.push(msg);
                }
            }
        }
        errors
    }
}

/// The crypto provider of the listeners and the bench's clients (the
/// `kite://` source, below `tls` in the module order, names the same one
/// itself): ring, not aws-lc-rs, so the
/// build needs no cmake or NASM. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange, which market data can do without; classical
/// ECDHE is still negotiated.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every listener's TLS and the counters: what [`crate::shared::Shared`] holds.
#[derive(Default)]
pub struct Tls {
    /// The main listener's, the OpenAlgo listener's, the Kite listener's.
    acceptors: [Option<Acceptor>; 3],
    /// Counters and certificates.
    pub stats: Stats,
}

impl Tls {
    /// Load the pair of every listener that is on (a pair named twice is
    /// loaded once and shared).
    ///
    /// # Errors
    /// A pair that does not load (the message says which and why).
    pub fn open(config: &crate::config::Config) -> anyhow::Result<Tls> {
        let mut tls = Tls::default();
        let t = &config.tls;
        let on = |l: &Option<std::net::SocketAddr>, p| if l.is_some() { p } else { &None };
        let pairs = [
            ("main", &t.main),
            ("openalgo", on(&config.openalgo_listen, &t.openalgo)),
            ("kite", on(&config.kite_listen, &t.kite)),
        ];
        let mut loaded: Vec<(&crate::config::TlsPair, Acceptor)> = Vec::new();
        for (i, (listener, pair)) in pairs.into_iter().enumerate() {
            let Some(pair) = pair else { continue };
            let acceptor = match loaded.iter().find(|(p, _)| *p == pair) {
                Some((_, a)) => a.clone(),
                None => {
                    let cert = Cert::open(listener, &pair.cert, &pair.key)?;
                    tls.stats.certs.push(cert.clone());
                    let a = Acceptor::new(cert)?;
                    loaded.push((pair, a.clone()));
                    a
                }
            };
            tls.acceptors[i] = Some(acceptor);
        }
        Ok(tls)
    }

    /// The acceptor of the main listener (`None`) or a dialect's own.
    pub fn acceptor(&self, port: Option<crate::dialect::Dialect>) -> Option<&Acceptor> {
        let i = match port {
            None => 0,
            Some(crate::dialect::Dialect::OpenAlgo) => 1,
            Some(_) => 2,
        };
        self.acceptors[i].as_ref()
    }
}

impl Tls {
    /// Whether any listener has TLS.
    pub fn enabled(&self) -> bool {
        self.acceptors.iter().any(Option::is_some)
    }

    /// `/status`'s `tls`: the listeners' certificates (expiry in seconds
    /// left) and the counters; `null` without TLS.
    pub fn status(&self) -> serde_json::Value {
        if !self.enabled() {
            return serde_json::Value::Null;
        }
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let now = unix_now();
        let listeners: Vec<&str> = ["main", "openalgo", "kite"]
            .iter()
            .zip(&self.acceptors)
            .filter_map(|(n, a)| a.as_ref().map(|_| *n))
            .collect();
        let certs: Vec<serde_json::Value> = self
            .stats
            .certs
            .iter()
            .map(|c| {
                serde_json::json!({"listener": c.listener, "cert": c.paths.0.display().to_string(),
                    "not_after": c.not_after(), "expires_in_s": c.not_after() - now})
            })
            .collect();
        let failures: serde_json::Map<String, serde_json::Value> =
            Reason::ALL.iter().map(|r| (r.name().to_string(), l(&self.stats.failures[*r as usize]).into())).collect();
        serde_json::json!({"listeners": listeners, "certificates": certs,
            "handshakes": {"TLSv1.2": l(&self.stats.handshakes[0]), "TLSv1.3": l(&self.stats.handshakes[1])},
            "failures": failures, "reloads": l(&self.stats.reloads), "reload_failures": l(&self.stats.reload_failures)})
    }

    /// The `tickcast_tls_*` families (none without TLS).
    pub fn metrics(&self, o: &mut String) {
        use std::fmt::Write as _;
        if !self.enabled() {
            return;
        }
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let family = crate::metrics::family;
        family(o, "tls_handshakes_total", "counter", "Completed TLS handshakes, by protocol version");
        for (v, n) in ["1.2", "1.3"].iter().zip(&self.stats.handshakes) {
            let _ = writeln!(o, "tickcast_tls_handshakes_total{{version=\"{v}\"}} {}", l(n));
        }
        family(
            o,
            "tls_failures_total",
            "counter",
            "TLS connections dropped for a TLS reason (in the handshake or after), by reason",
        );
        for r in Reason::ALL {
            let _ = writeln!(
                o,
                "tickcast_tls_failures_total{{reason=\"{}\"}} {}",
                r.name(),
                l(&self.stats.failures[r as usize])
            );
        }
        family(o, "tls_certificate_reloads_total", "counter", "Certificate reloads (SIGHUP), by result");
        let _ = writeln!(o, "tickcast_tls_certificate_reloads_total{{result=\"ok\"}} {}", l(&self.stats.reloads));
        let _ = writeln!(
            o,
            "tickcast_tls_certificate_reloads_total{{result=\"failed\"}} {}",
            l(&self.stats.reload_failures)
        );
        family(
            o,
            "tls_certificate_expiry_seconds",
            "gauge",
            "Seconds until the served certificate expires (negative: expired)",
        );
        let now = unix_now();
        for c in &self.stats.certs {
            let _ = writeln!(
                o,
                "tickcast_tls_certificate_expiry_seconds{{listener=\"{}\"}} {}",
                c.listener,
                c.not_after() - now
            );
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A listener's TLS: the rustls configuration its handshakes start from.
#[derive(Clone, Debug)]
pub struct Acceptor(pub Arc<ServerConfig>);

impl Acceptor {
    /// TLS 1.2 and 1.3, ALPN `http/1.1`, the certificate from `cert`.
    pub fn new(cert: Arc<Cert>) -> anyhow::Result<Acceptor> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certs::Resolver(cert)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The record layer after the handshake is ours (`records`).
        config.enable_secret_extraction = true;
        Ok(Acceptor(Arc::new(config)))
    }

    /// A new connection's session.
    ///
    /// # Errors
    /// rustls refused to start one.
    pub fn session(&self) -> Result<Session, rustls::Error> {
        Session::new(self.0.clone())
    }
}

#[cfg(test)]
mod tests;
