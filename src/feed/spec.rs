//! `--feed SPEC`: which source to run, parsed from its one-line form
//! (`sim:rate=N`, `udp://HOST:PORT?iface=IP`, `tcp://…`, `redis://…`,
//! `replay:PATH?speed=N|max`). [`super::build`] turns specs into sources.

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
    /// A recorded TCF1 file.
    Replay {
        /// The file.
        path: PathBuf,
        /// Speed factor; `None` = as fast as possible.
        speed: Option<f64>,
    },
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
                            rate = r.with_context(|| format!("feed `{spec}`: rate must be a positive integer, got `{v}`"))?;
                        }
                        Some(("seed", v)) => seed = Some(v.parse().with_context(|| format!("feed `{spec}`: seed must be an integer"))?),
                        _ => bail!("feed `{spec}`: unknown option `{kv}` (sim takes `rate=N,seed=S`)"),
                    }
                }
                Ok(FeedSpec::Sim { rate, seed })
            }
            _ => bail!(
                "feed `{spec}`: unknown source `{kind}` (supported: `sim[:rate=N]`, `udp://HOST:PORT`, `tcp://HOST:PORT`, `redis://HOST:PORT`, `replay:PATH`)"
            ),
        }
    }
}

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
}
