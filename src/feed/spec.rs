//! `--feed SPEC`: which source to run, parsed from its one-line form
//! (`sim:rate=N`, `udp://HOST:PORT?iface=IP`, `tcp://…`, `redis://…`,
//! `kite://…`, `kite+ws://…`, `replay:PATH?speed=N|max`). [`super::build`]
//! turns specs into sources.
//!
//! A `kite` spec may carry an access token: it is a [`Secret`], and error
//! texts quote the spec with the token redacted.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// A feed source, parsed from `--feed`.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedSpec {
    /// Built-in random-walk simulator at `rate` ticks per second in total.
    Sim {
        /// Ticks per second over the whole master.
        rate: u64,
        /// Random seed (`None`: a fresh one per run).
        seed: Option<u64>,
    },
    /// TCF1 datagrams on a UDP address (multicast: the group to join).
    Udp {
        /// Address to bind (or group to join).
        addr: SocketAddr,
        /// Interface address for the multicast join.
        iface: Option<std::net::Ipv4Addr>,
    },
    /// TCF1 publishers connecting to a TCP listener.
    Tcp {
        /// Address to listen on.
        addr: SocketAddr,
    },
    /// Ticks and channels from Redis pub/sub.
    Redis {
        /// `redis://HOST:PORT`.
        url: String,
    },
    /// Kite Connect's ticker WebSocket (or another tickcast's `/kite`).
    Kite(KiteSpec),
    /// A recorded TCF1 file.
    Replay {
        /// The file.
        path: PathBuf,
        /// Speed factor; `None` = as fast as possible.
        speed: Option<f64>,
    },
}

/// Text that must stay out of logs, `/status` and `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Default upstream connections of a `kite` feed (Kite allows 3 per API key).
pub const DEFAULT_KITE_CONNECTIONS: usize = 3;
/// Default instruments per connection (Kite allows 3,000).
pub const DEFAULT_KITE_INSTRUMENTS: usize = 3000;

/// Where and as whom a `kite` source connects:
/// `kite://ws.kite.trade?api_key=K&access_token=T` (TLS, port 443, path `/`)
/// or `kite+ws://HOST:PORT/PATH?api_key=K&access_token=T` (plain WebSocket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KiteSpec {
    /// `wss` (`kite://`) rather than `ws` (`kite+ws://`).
    pub tls: bool,
    /// Host name (checked against the certificate with TLS).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, from `/`.
    pub path: String,
    /// `api_key=`, else `--kite-api-key` / `KITE_API_KEY` (filled by `config`).
    pub api_key: String,
    /// `access_token=`, else `--kite-access-token` / `KITE_ACCESS_TOKEN`.
    pub access_token: Secret,
    /// `ca=PATH`: a PEM file of extra trusted roots (private upstreams, tests).
    pub ca: Option<PathBuf>,
    /// `user=NAME`: order postbacks go to channel `private:NAME:orders`.
    pub user: Option<String>,
    /// Upstream connections at most (`--kite-upstream-connections`).
    pub connections: usize,
    /// Instruments per connection at most (`--kite-upstream-instruments`).
    pub instruments: usize,
}

impl KiteSpec {
    /// The WebSocket URL with credentials (for the handshake only; never log it).
    pub fn url(&self) -> String {
        self.url_with(&self.access_token.0)
    }

    /// The URL with the access token shown as `***` (logs, `/status`).
    pub fn redacted(&self) -> String {
        self.url_with(if self.access_token.0.is_empty() { "" } else { "***" })
    }

    fn url_with(&self, token: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{scheme}://{}:{}{}{sep}api_key={}&access_token={token}", self.host, self.port, self.path, self.api_key)
    }

    /// Can `user` own the order channel `private:USER:orders`?
    pub fn valid_user(user: &str) -> bool {
        !user.contains(':') && crate::channel::valid_name(&format!("private:{user}:orders"))
    }

    /// The `private:USER:orders` channel order postbacks go to, if a user is set.
    pub fn orders_channel(&self) -> Option<String> {
        self.user.as_ref().map(|u| format!("private:{u}:orders"))
    }

    /// Parse the part after `kite://` (`tls`) or `kite+ws://`; `shown` is
    /// the spec as error texts quote it (token redacted). Connection limits
    /// are the defaults here; `config` sets them from their flags.
    fn parse(rest: &str, tls: bool, shown: &str) -> Result<KiteSpec> {
        let (target, opts) = split_query(rest);
        let (authority, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        // `[::1]:443`, `host:443`, `host`.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
            _ => (authority, None),
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            bail!("feed `{shown}`: expected a host name, as in kite://ws.kite.trade?api_key=K&access_token=T");
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => {
                p.parse().ok().filter(|&p| p > 0).with_context(|| format!("feed `{shown}`: `{p}` is not a port"))?
            }
        };
        let mut k = KiteSpec {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
            api_key: String::new(),
            access_token: Secret::default(),
            ca: None,
            user: None,
            connections: DEFAULT_KITE_CONNECTIONS,
            instruments: DEFAULT_KITE_INSTRUMENTS,
        };
        for (key, v) in opts {
            let empty = || anyhow::anyhow!("feed `{shown}`: `{key}=` needs a value");
            match key {
                "api_key" if !v.is_empty() => k.api_key = v.to_string(),
                "access_token" if !v.is_empty() => k.access_token = Secret(v.to_string()),
                "ca" if !v.is_empty() => k.ca = Some(v.into()),
                "user" if !v.is_empty() => {
                    if !KiteSpec::valid_user(v) {
                        bail!("feed `{shown}`: user `{v}` cannot name a channel (letters, digits, _ @ . | -)");
                    }
                    k.user = Some(v.to_string());
                }
                "api_key" | "access_token" | "ca" | "user" => return Err(empty()),
                _ => bail!(
                    "feed `{shown}`: unknown option `{key}` (kite takes `api_key=K`, `access_token=T`, `ca=PEM`, `user=NAME`)"
                ),
            }
        }
        if k.ca.is_some() && !tls {
            bail!("feed `{shown}`: `ca=` is for kite:// (TLS); kite+ws:// is plain");
        }
        Ok(k)
    }
}

/// `spec` with the value of any `access_token=` replaced by `***`.
fn redact(spec: &str) -> String {
    match spec.find("access_token=") {
        None => spec.to_string(),
        Some(i) => {
            let start = i + "access_token=".len();
            let end = spec[start..].find('&').map_or(spec.len(), |j| start + j);
            format!("{}***{}", &spec[..start], redact(&spec[end..]))
        }
    }
}

/// Split `a?k=v&k2=v2` into `a` and its options.
fn split_query(s: &str) -> (&str, Vec<(&str, &str)>) {
    match s.split_once('?') {
        None => (s, Vec::new()),
        Some((a, q)) => {
            (a, q.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).collect())
        }
    }
}

impl FeedSpec {
    /// Parse one `--feed` value.
    ///
    /// # Errors
    /// Unknown kinds or options, with the accepted forms.
    pub fn parse(spec: &str) -> Result<FeedSpec> {
        let addr = |a: &str| -> Result<SocketAddr> {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs()
                .ok()
                .and_then(|mut i| i.next())
                .with_context(|| format!("feed `{spec}`: `{a}` is not a HOST:PORT address"))
        };
        if let Some(rest) = spec.strip_prefix("udp://") {
            let (a, opts) = split_query(rest);
            let mut iface = None;
            for (k, v) in opts {
                match k {
                    "iface" => {
                        iface =
                            Some(v.parse().with_context(|| format!("feed `{spec}`: iface must be an IPv4 address"))?)
                    }
                    _ => bail!("feed `{spec}`: unknown option `{k}` (udp takes `iface=IP`)"),
                }
            }
            return Ok(FeedSpec::Udp { addr: addr(a)?, iface });
        }
        if let Some(rest) = spec.strip_prefix("tcp://") {
            let (a, opts) = split_query(rest);
            if let Some((k, _)) = opts.first() {
                bail!("feed `{spec}`: unknown option `{k}` (tcp takes none)");
            }
            return Ok(FeedSpec::Tcp { addr: addr(a)? });
        }
        if let Some(rest) = spec.strip_prefix("redis://") {
            let (a, _) = split_query(rest);
            addr(a.trim_end_matches('/'))?;
            return Ok(FeedSpec::Redis { url: spec.to_string() });
        }
        for (prefix, tls) in [("kite://", true), ("kite+ws://", false)] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                return Ok(FeedSpec::Kite(KiteSpec::parse(rest, tls, &redact(spec))?));
            }
        }
        if let Some(rest) = spec.strip_prefix("replay:") {
            let (path, opts) = split_query(rest);
            let mut speed = Some(1.0);
            for (k, v) in opts {
                match (k, v) {
                    ("speed", "max") => speed = None,
                    ("speed", v) => {
                        let s = v.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0);
                        speed = Some(
                            s.with_context(|| format!("feed `{spec}`: speed must be a positive number or `max`"))?,
                        );
                    }
                    _ => bail!("feed `{spec}`: unknown option `{k}` (replay takes `speed=N|max`)"),
                }
            }
            if path.is_empty() {
                bail!("feed `{spec}`: replay needs a file path");
            }
            return Ok(FeedSpec::Replay { path: path.into(), speed });
        }
        let (kind, opts) = spec.split_once(':').unwrap_or((spec, ""));
        match kind {
            "sim" => {
                let (mut rate, mut seed) = (DEFAULT_SIM_RATE, None);
                for kv in opts.split(',').filter(|s| !s.is_empty()) {
                    match kv.split_once('=') {
                        Some(("rate", v)) => {
                            let r = v.parse().ok().filter(|&r| r > 0);
                            rate = r.with_context(|| {
                                format!("feed `{spec}`: rate must be a positive integer, got `{v}`")
                            })?;
                        }
                        Some(("seed", v)) => {
                            seed = Some(v.parse().with_context(|| format!("feed `{spec}`: seed must be an integer"))?)
                        }
                        _ => bail!("feed `{spec}`: unknown option `{kv}` (sim takes `rate=N,seed=S`)"),
                    }
                }
                Ok(FeedSpec::Sim { rate, seed })
            }
            _ => {
                let kinds: Vec<String> = KINDS.iter().map(|(_, example)| format!("`{example}`")).collect();
                bail!("feed `{spec}`: unknown source `{kind}` (supported, for example: {})", kinds.join(", "))
            }
        }
    }
}

/// Every kind of source `--feed` takes, as (how its spec begins, an example
/// spec). A new kind goes here: the unknown-source error lists these, a unit
/// test parses each example, and a test holds `tickcast --help` to the list.
pub const KINDS: [(&str, &str); 7] = [
    ("sim", "sim:rate=1000,seed=7"),
    ("udp://", "udp://127.0.0.1:9000?iface=127.0.0.1"),
    ("tcp://", "tcp://127.0.0.1:7000"),
    ("redis://", "redis://127.0.0.1:6379"),
    ("kite://", "kite://ws.kite.trade?api_key=K&access_token=T"),
    ("kite+ws://", "kite+ws://127.0.0.1:8080/kite?api_key=K&access_token=T"),
    ("replay:", "replay:session.tcf1?speed=max"),
];

/// Default simulator rate, ticks per second.
pub const DEFAULT_SIM_RATE: u64 = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_specs() {
        let cases: &[(&str, FeedSpec)] = &[
            ("sim:rate=10,seed=3", FeedSpec::Sim { rate: 10, seed: Some(3) }),
            ("udp://127.0.0.1:9000", FeedSpec::Udp { addr: "127.0.0.1:9000".parse().unwrap(), iface: None }),
            (
                "udp://239.1.1.1:9000?iface=127.0.0.1",
                FeedSpec::Udp { addr: "239.1.1.1:9000".parse().unwrap(), iface: Some("127.0.0.1".parse().unwrap()) },
            ),
            ("tcp://0.0.0.0:7000", FeedSpec::Tcp { addr: "0.0.0.0:7000".parse().unwrap() }),
            ("replay:/tmp/a.tcf1?speed=max", FeedSpec::Replay { path: "/tmp/a.tcf1".into(), speed: None }),
            ("replay:a.tcf1", FeedSpec::Replay { path: "a.tcf1".into(), speed: Some(1.0) }),
            ("replay:a.tcf1?speed=2.5", FeedSpec::Replay { path: "a.tcf1".into(), speed: Some(2.5) }),
        ];
        for (spec, want) in cases {
            assert_eq!(&FeedSpec::parse(spec).unwrap(), want, "{spec}");
        }
        for (prefix, example) in KINDS {
            assert!(example.starts_with(prefix), "{example}");
            FeedSpec::parse(example).unwrap_or_else(|e| panic!("{example}: {e:#}"));
        }
        let err = format!("{:#}", FeedSpec::parse("nats://h:1").unwrap_err());
        assert!(KINDS.iter().all(|(_, example)| err.contains(example)), "{err}");
        let bad = [
            ("udp://nowhere", "not a HOST:PORT"),
            ("udp://1.2.3.4:5?x=1", "unknown option `x`"),
            ("replay:", "needs a file path"),
            ("replay:a?speed=0", "speed must be"),
            ("tcp://1.2.3.4:5?y", "unknown option `y`"),
        ];
        for (spec, why) in bad {
            let err = FeedSpec::parse(spec).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{spec}: {err:#}");
        }
    }

    #[test]
    fn kite_specs() {
        let kite = |tls, host: &str, port, path: &str| KiteSpec {
            tls,
            host: host.into(),
            port,
            path: path.into(),
            api_key: String::new(),
            access_token: Secret::default(),
            ca: None,
            user: None,
            connections: 3,
            instruments: 3000,
        };
        let cases: &[(&str, KiteSpec)] = &[
            (
                "kite://ws.kite.trade?api_key=abc&access_token=s3cret",
                KiteSpec {
                    api_key: "abc".into(),
                    access_token: Secret("s3cret".into()),
                    ..kite(true, "ws.kite.trade", 443, "/")
                },
            ),
            ("kite://ws.kite.trade", kite(true, "ws.kite.trade", 443, "/")),
            (
                "kite://localhost:8443/?ca=/tmp/c.pem",
                KiteSpec { ca: Some("/tmp/c.pem".into()), ..kite(true, "localhost", 8443, "/") },
            ),
            (
                "kite+ws://127.0.0.1:9000/kite?user=alice",
                KiteSpec { user: Some("alice".into()), ..kite(false, "127.0.0.1", 9000, "/kite") },
            ),
            ("kite+ws://[::1]:9000/", kite(false, "[::1]", 9000, "/")),
            ("kite+ws://edge", kite(false, "edge", 80, "/")),
        ];
        for (spec, want) in cases {
            assert_eq!(&FeedSpec::parse(spec).unwrap(), &FeedSpec::Kite(want.clone()), "{spec}");
        }
        let bad = [
            ("kite://?api_key=a", "expected a host name"),
            ("kite+ws://h:port/", "`port` is not a port"),
            ("kite+ws://h:0/", "`0` is not a port"),
            ("kite://h?token=x", "unknown option `token`"),
            ("kite://h?api_key=", "`api_key=` needs a value"),
            ("kite://h?user=a:b", "user `a:b` cannot name a channel"),
            ("kite://h?user=a%20b", "cannot name a channel"),
            ("kite+ws://h:1/?ca=c.pem", "`ca=` is for kite://"),
        ];
        for (spec, why) in bad {
            let err = FeedSpec::parse(spec).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{spec}: {err:#}");
        }
        // The token never shows in an error, the URL for logs, or Debug.
        let err = FeedSpec::parse("kite://h?access_token=s3cret&bogus=1").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("access_token=***&bogus") && !text.contains("s3cret"), "{text}");
        let FeedSpec::Kite(k) = FeedSpec::parse("kite+ws://h:1/kite?api_key=k&access_token=s3cret").unwrap() else {
            panic!()
        };
        assert_eq!(k.url(), "ws://h:1/kite?api_key=k&access_token=s3cret");
        assert_eq!(k.redacted(), "ws://h:1/kite?api_key=k&access_token=***");
        assert!(!format!("{k:?}").contains("s3cret"));
        assert_eq!(redact("a?access_token=1&b=2&access_token=3"), "a?access_token=***&b=2&access_token=***");
    }
}
