//! The server's flags ([`Flags`]: command line, environment, TOML file) →
//! one validated [`Config`]. The command line itself (subcommands) is
//! `cli`, next to `main.rs`.
//!
//! Every flag is also a key of the optional TOML file given by `--config`
//! (same name, kebab-case: `max-connections = 5000`), and a few also read an
//! environment variable (clap's `env`, shown in `--help`). Precedence: a
//! flag on the command line, then its environment variable, then the file,
//! then the built-in default.
//!
//! Errors name where the bad value came from ([`Sources`]): `--idle`, the
//! environment variable `WEBSOCKET_MAX_CONNECTIONS`, or the file and key
//! (`config file /etc/tickcast.toml, key idle`); an operator fixes the
//! place named, not a flag they never typed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use serde::{Deserialize, Deserializer};

use crate::feed::spec::{FeedSpec, Secret, DEFAULT_KITE_CONNECTIONS, DEFAULT_KITE_INSTRUMENTS, DEFAULT_SIM_RATE};

/// Declares [`Flags`] and its merge from one list of fields (each an
/// `Option`): a flag given on the command line wins over the file's.
macro_rules! flags {
    ($(#[$sm:meta])* pub struct Flags { $( $(#[$fm:meta])* pub $f:ident : Option<$t:ty>, )* }) => {
        $(#[$sm])* pub struct Flags { $( $(#[$fm])* pub $f: Option<$t>, )* }

        impl Flags {
            /// These values over `file`'s: each flag given wins.
            pub fn over(self, file: Flags) -> Flags {
                Flags { $( $f: self.$f.or(file.$f), )* }
            }
        }
    };
}

flags! {
/// The server's flags, as given; each `None` falls back to the file, then
/// the default.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Flags {
    /// TOML file whose keys are these flags' names (`listen = "0.0.0.0:8080"`); a flag, then its environment variable, wins over the file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address for WebSocket and HTTP [default: 127.0.0.1:8080]. Port 0 picks a free port (printed at start).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    #[serde(default, deserialize_with = "deserialize_addr")]
    pub listen: Option<SocketAddr>,

    /// Instrument master CSV: the native layout or a Kite `instruments.csv` dump [default: bundled NIFTY 50 + indices].
    #[arg(long, value_name = "PATH")]
    pub master: Option<PathBuf>,

    /// Feed source, repeatable: `sim[:rate=N,seed=S]` (ticks/s over the whole master), `udp://HOST:PORT[?iface=IP]` (TCF1 datagrams; multicast HOST joins the group), `tcp://HOST:PORT` (listen for TCF1 publishers), `redis://HOST:PORT` (ticks and channels from Redis pub/sub, following local interest), `kite://ws.kite.trade[?api_key=K&access_token=T&user=NAME&ca=PEM]` (Kite Connect's ticker over TLS, following local interest; `kite+ws://HOST:PORT/PATH?…` for plain WebSocket, such as another tickcast's `/kite`), `replay:PATH[?speed=N|max]` [default: sim:rate=2000].
    #[arg(long = "feed", value_name = "SPEC")]
    pub feed: Option<Vec<String>>,

    /// Worker threads, each with its own event loop and listener [default: cores − 1, at least 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// CPUs to pin threads to, e.g. `0,1` or `0-3`: feed threads first, then workers, wrapping around; the http thread (/status, /metrics) goes to the first CPU not listed [default: no pinning].
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,

    /// How an idle worker waits: `park` (block in epoll, woken by feeds), `spin` (busy-poll a dedicated core) or `hybrid` (busy-poll for 200 µs after the last work, then park) [default: park].
    #[arg(long, value_name = "park|spin|hybrid")]
    pub idle: Option<String>,

    /// Where UDP feeds are read: `thread` (a feed thread hands ticks to the workers through their rings), `worker` (read inside a worker's own event loop: no thread hand-off, no wake-up per packet), or `auto` (`worker` when there is one worker, else `thread`) [default: auto].
    #[arg(long, value_name = "auto|thread|worker")]
    pub feed_poll: Option<String>,

    /// Default delivery when a client's out-buffer passes its limit: `conflate` (newest value per instrument, with a gap notice) or `disconnect` (close 1013) [default: conflate].
    #[arg(long, value_name = "conflate|disconnect")]
    pub slow_consumer: Option<String>,

    /// Most concurrent connections; more are answered 503 [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most subscriptions per connection [default: 3000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Idle connections get a heartbeat with feed health this often [default: 1000].
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// A feed that has delivered nothing, or nothing for this long, while the market is open is `stale`, not `live` (/status, heartbeats, /metrics, /healthz) [default: 5].
    #[arg(long, value_name = "SECS")]
    pub stale_after: Option<f64>,

    /// How long a disconnected client_id keeps its subscriptions for a reconnect [default: 600].
    #[arg(long, value_name = "SECS")]
    pub session_ttl_secs: Option<u64>,

    /// Keep client_id sessions across a restart: written here on SIGTERM/SIGINT, read back on start (a bad file is logged and ignored) [default: off].
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Largest client message accepted; larger closes with 1009 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Per-client out-buffer limit before the slow-consumer policy applies [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub out_buffer_bytes: Option<usize>,

    /// Ticks each feed→worker ring holds [default: 65536].
    #[arg(long, value_name = "N")]
    pub ring_capacity: Option<usize>,

    /// Where co-located processes publish newline-delimited JSON: `{"channel":"signals","data":{…}}` and `{"tick":{"token":2885,"ltp":2850.5,…}}` [default: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    #[serde(default, deserialize_with = "deserialize_addr")]
    pub publish_listen: Option<SocketAddr>,

    /// Mirror every ingested tick (TCF1 on `tcf1:<token>`) and channel message to Redis pub/sub, for edge instances running `--feed redis://…` [default: off].
    #[arg(long, value_name = "redis://HOST:PORT")]
    pub publish: Option<String>,

    /// Publish every tick into a shared-memory region for co-located readers: a name (`demo` → /dev/shm/tickcast-demo) or a file path. Read it with `tickcast tail --shm NAME`, the Rust `tickcast::shm::Reader` or clients/python/tickcast_shm.py [default: off].
    #[arg(long, value_name = "NAME|PATH")]
    pub shm: Option<String>,

    /// Permission bits of the region file, octal; readers need read, parking readers read and write [default: 0600].
    #[arg(long, value_name = "MODE")]
    pub shm_mode: Option<String>,

    /// Group of the region file (name or gid), with --shm-mode 0640 or 0660 to let that group read it [default: the server's].
    #[arg(long, value_name = "GROUP")]
    pub shm_group: Option<String>,

    /// Records in each feed's shared-memory ring, a power of two (320 bytes each); a reader more than this far behind is lapped and resynchronised [default: 65536].
    #[arg(long, value_name = "N")]
    pub shm_capacity: Option<usize>,

    /// Most named channels [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,

    /// API keys: a TOML file of users, their hashed keys (`tickcast hash-key`), roles and limits. Without it every client is anonymous [default: none].
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,

    /// Serve a non-loopback address without an auth file (anyone who can reach it may connect) [default: refuse].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,

    /// TLS certificate chain (PEM) for the main listener: it serves `https://` and `wss://`; needs --tls-key. The OpenAlgo and Kite listeners share it unless given their own pair or `--*-plain`. Reloaded on SIGHUP [default: plain].
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// TLS certificate chain (PEM) for the OpenAlgo listener, when it should not share --tls-cert; needs --openalgo-tls-key.
    #[arg(long, value_name = "PEM", requires = "openalgo_tls_key")]
    pub openalgo_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --openalgo-tls-cert.
    #[arg(long, value_name = "PEM", requires = "openalgo_tls_cert")]
    pub openalgo_tls_key: Option<PathBuf>,

    /// Keep the OpenAlgo listener plain even when the main listener has TLS [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub openalgo_plain: Option<bool>,

    /// TLS certificate chain (PEM) for the Kite listener, when it should not share --tls-cert; needs --kite-tls-key.
    #[arg(long, value_name = "PEM", requires = "kite_tls_key")]
    pub kite_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --kite-tls-cert.
    #[arg(long, value_name = "PEM", requires = "kite_tls_cert")]
    pub kite_tls_key: Option<PathBuf>,

    /// Keep the Kite listener plain even when the main listener has TLS [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub kite_plain: Option<bool>,

    /// The OpenAlgo-compatible listener (any path, `authenticate` first), or `off` [default: 127.0.0.1:8765].
    #[arg(long, value_name = "ADDR|off")]
    pub openalgo_listen: Option<String>,

    /// Campus prices (`/api/ws/prices`): close a connection that sent nothing for this long [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub campus_idle_timeout_secs: Option<u64>,

    /// OpenAlgo: seconds between WebSocket pings to each client [default: 5].
    #[arg(long, value_name = "SECS")]
    pub openalgo_ping_interval: Option<f64>,

    /// OpenAlgo: seconds a client may take to answer a ping before it is closed (1011) [default: 10].
    #[arg(long, value_name = "SECS")]
    pub openalgo_ping_timeout: Option<f64>,

    /// OpenAlgo: seconds a connection may stay open without authenticating before it is closed (1008) [default: 15].
    #[arg(long, value_name = "SECS")]
    pub openalgo_auth_timeout: Option<f64>,

    /// OpenAlgo: most concurrent clients on the OpenAlgo listener; more get an error and close 1013 [default: 1000].
    #[arg(long, value_name = "N")]
    pub openalgo_max_clients: Option<usize>,

    /// A listener serving the Kite ticker dialect at `/` (for KiteTicker clients whose URL cannot change), or `off`; the main port serves it at `/kite` either way [default: off].
    #[arg(long, value_name = "ADDR|off")]
    pub kite_listen: Option<String>,

    /// Kite (`/kite`): most instruments one connection may subscribe to, as Kite allows [default: 3000].
    #[arg(long, value_name = "N")]
    pub kite_max_instruments: Option<usize>,

    /// Trading WS (`/ws`): serve the endpoint [default: true].
    #[arg(long, env = "WEBSOCKET_ENABLED", value_name = "BOOL")]
    pub websocket_enabled: Option<bool>,

    /// Trading WS: seconds between server pings to idle `/ws` clients [default: 30].
    #[arg(long, env = "WEBSOCKET_PING_INTERVAL", value_name = "SECS")]
    pub websocket_ping_interval: Option<f64>,

    /// Trading WS: seconds between batched `price_update` messages [default: 3].
    #[arg(long, env = "WEBSOCKET_PRICE_UPDATE_INTERVAL", value_name = "SECS")]
    pub websocket_price_update_interval: Option<f64>,

    /// Trading WS: seconds between `portfolio_update` messages per user (the newest wins) [default: 5].
    #[arg(long, env = "WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", value_name = "SECS")]
    pub websocket_portfolio_update_interval: Option<f64>,

    /// Trading WS: most concurrent `/ws` connections [default: 100].
    #[arg(long, env = "WEBSOCKET_MAX_CONNECTIONS", value_name = "N")]
    pub websocket_max_connections: Option<usize>,

    /// Kite upstream: the API key, when the `kite://` spec has no `api_key=` [default: none].
    #[arg(long, env = "KITE_API_KEY", value_name = "KEY")]
    pub kite_api_key: Option<String>,

    /// Kite upstream: the access token, when the `kite://` spec has no `access_token=` (keep it off command lines: use the environment or the config file) [default: none].
    #[arg(long, env = "KITE_ACCESS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub kite_access_token: Option<String>,

    /// Kite upstream: most WebSocket connections opened (Kite allows 3 per API key) [default: 3].
    #[arg(long, value_name = "N")]
    pub kite_upstream_connections: Option<usize>,

    /// Kite upstream: most instruments per connection (Kite allows 3000); clients past connections × this are refused [default: 3000].
    #[arg(long, value_name = "N")]
    pub kite_upstream_instruments: Option<usize>,

    /// Kite upstream: the user whose channel `private:USER:orders` gets order postbacks, when the spec has no `user=` [default: none: postbacks are counted and dropped].
    #[arg(long, value_name = "USER")]
    pub kite_order_user: Option<String>,

    /// When the market is open: `always`, `nse` (09:15–15:30 Asia/Kolkata, Mon–Fri), or `SESSIONS[@ZONE][;days=DAYS][;holidays=DATES]` like `09:30-16:00@America/New_York;days=mon-fri;holidays=2026-07-03` (zone: IANA name or ±HH:MM, default UTC; days default every day); `nse;holidays=2026-01-26,…` adds holidays. In the file, also a `[market-hours]` table (time-zone, sessions, weekdays, holidays, preset). Closed: the simulator pauses and clients get `market_status` [default: always].
    #[arg(long, value_name = "SPEC")]
    pub market_hours: Option<crate::market::HoursSpec>,
}
}

/// A certificate chain and its key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPair {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Which listeners speak TLS, with which pair (`None`: plain).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The main listener.
    pub main: Option<TlsPair>,
    /// The OpenAlgo listener.
    pub openalgo: Option<TlsPair>,
    /// The Kite listener.
    pub kite: Option<TlsPair>,
}

/// One listener's pair from its flags: its own, else the main one unless
/// asked to stay plain.
///
/// # Errors
/// Half a pair, or a pair given with `--NAME-plain`.
fn listener_tls(
    name: &str,
    (cert, key, plain): (Option<PathBuf>, Option<PathBuf>, Option<bool>),
    main: &Option<TlsPair>,
    src: &Sources,
) -> Result<Option<TlsPair>> {
    match (tls_pair(&format!("{name}-"), cert, key, src)?, plain.unwrap_or(false)) {
        (Some(_), true) => {
            bail!("{} and {}: choose one", src.name(&format!("{name}-tls-cert")), src.name(&format!("{name}-plain")))
        }
        (Some(own), false) => Ok(Some(own)),
        (None, true) => Ok(None),
        (None, false) => Ok(main.clone()),
    }
}

/// The pair `--PREFIXtls-cert` and `--PREFIXtls-key` give, if any.
///
/// # Errors
/// Half a pair.
fn tls_pair(prefix: &str, cert: Option<PathBuf>, key: Option<PathBuf>, src: &Sources) -> Result<Option<TlsPair>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsPair { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("{} needs --{prefix}tls-key", src.name(&format!("{prefix}tls-cert"))),
        (None, Some(_)) => bail!("{} needs --{prefix}tls-cert", src.name(&format!("{prefix}tls-key"))),
    }
}

/// Where one setting's value came from, so that an error names what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--KEY` on the command line.
    Flag,
    /// This environment variable (the flag's clap `env`).
    Env(String),
    /// A key of this `--config` file.
    File(PathBuf),
}

/// Each given setting's [`Source`], by key (the flag's long name, which is
/// also its TOML key). A key not listed was not given: its default applies.
#[derive(Clone, Debug, Default)]
pub struct Sources(BTreeMap<String, Source>);

impl Sources {
    /// Where clap found each argument of `cmd` in `matches`: on the command
    /// line or in the environment.
    pub fn of_command_line(cmd: &clap::Command, matches: &clap::ArgMatches) -> Sources {
        use clap::parser::ValueSource;
        let mut given = BTreeMap::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let source = match (matches.value_source(arg.get_id().as_str()), arg.get_env()) {
                (Some(ValueSource::CommandLine), _) => Source::Flag,
                (Some(ValueSource::EnvVariable), Some(var)) => Source::Env(var.to_string_lossy().into_owned()),
                _ => continue,
            };
            given.insert(long.to_string(), source);
        }
        Sources(given)
    }

    /// `keys` come from the file at `path`, unless a flag or the
    /// environment gave them (they win over the file).
    pub fn add_file(&mut self, path: &Path, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            self.0.entry(key).or_insert_with(|| Source::File(path.to_path_buf()));
        }
    }

    /// How an error names `key`: `--idle` (a flag, or not given),
    /// `environment variable WEBSOCKET_MAX_CONNECTIONS`, or
    /// `config file /etc/tickcast.toml, key idle`.
    pub fn name(&self, key: &str) -> String {
        match self.0.get(key) {
            None | Some(Source::Flag) => format!("--{key}"),
            Some(Source::Env(var)) => format!("environment variable {var}"),
            Some(Source::File(path)) => format!("config file {}, key {key}", path.display()),
        }
    }
}

/// Parse `args` (the program name first) as `P`, a command line that
/// flattens [`Flags`], and say where each of its settings came from.
///
/// # Errors
/// clap's error (help and version included, as clap's `parse` has them); a
/// bad value of an environment variable names the variable, not the flag.
pub fn parse_args<P: clap::Parser>(args: Vec<OsString>) -> Result<(P, Sources), clap::Error> {
    let mut cmd = P::command();
    let matches = cmd.try_get_matches_from_mut(&args).map_err(|e| env_error(e, &cmd, &args))?;
    let parsed = P::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    Ok((parsed, Sources::of_command_line(&cmd, &matches)))
}

/// clap's error for a bad value, restated as the environment variable's
/// when that is where the value came from (clap itself names the flag,
/// which the user never typed).
fn env_error(e: clap::Error, cmd: &clap::Command, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return e;
    }
    let (Some(ContextValue::String(shown)), Some(ContextValue::String(value))) =
        (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
    else {
        return e;
    };
    // `--websocket-max-connections <N>` → `websocket-max-connections`.
    let long = shown.trim_start_matches('-').split([' ', '=']).next().unwrap_or_default();
    let Some(var) = cmd.get_arguments().find(|a| a.get_long() == Some(long)).and_then(|a| a.get_env()) else {
        return e;
    };
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if on_command_line || std::env::var_os(var).as_deref() != Some(std::ffi::OsStr::new(value)) {
        return e;
    }
    let reason = match (std::error::Error::source(&e), e.get(ContextKind::ValidValue)) {
        (Some(why), _) => why.to_string(),
        (None, Some(ContextValue::Strings(valid))) => format!("expected one of {}", valid.join(", ")),
        _ => "not a valid value".to_string(),
    };
    let var = var.to_string_lossy();
    cmd.clone().error(
        ErrorKind::ValueValidation,
        format!("environment variable {var}=`{value}`: {reason} (it sets {flag}; correct or unset it)"),
    )
}

/// A listening address, `IP:PORT`, as `--listen` and the other `*-listen`
/// settings take it.
///
/// # Errors
/// Anything else (a host name included: it is not resolved), saying what
/// is expected.
pub fn parse_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "expected HOST:PORT such as 127.0.0.1:8080 (an IP address and a port; port 0 picks a free one)".to_string()
    })
}

/// [`parse_addr`] for a TOML key.
fn deserialize_addr<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_addr(&s).map(Some).map_err(|why| serde::de::Error::custom(format!("`{s}`: {why}")))
}

/// How an idle worker waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Block in epoll; feeds wake the worker through its `mio::Waker`.
    Park,
    /// Poll with a zero timeout in a loop (a dedicated core).
    Spin,
    /// Spin for a short window after the last work, then park: a steady
    /// feed keeps the worker awake (no wake-up latency per packet), a
    /// quiet one costs no CPU.
    Hybrid,
}

/// Where feeds that can be polled (UDP) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedPoll {
    /// On a feed thread of their own, handing ticks to workers via rings.
    Thread,
    /// Inside a worker's event loop (feed `i` on worker `i % workers`).
    Worker,
}

/// Default delivery policy under slow-consumer pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Keep only the newest value per instrument until the client drains.
    Conflate,
    /// Close with 1013.
    Disconnect,
}

/// The validated configuration everything else runs on.
#[derive(Clone, Debug)]
pub struct Config {
    /// WebSocket + HTTP listen address.
    pub listen: SocketAddr,
    /// Instrument master; `None` = bundled.
    pub master: Option<PathBuf>,
    /// Feed sources.
    pub feeds: Vec<FeedSpec>,
    /// Worker threads.
    pub workers: usize,
    /// CPUs to pin to (feed threads first, then workers); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Idle strategy.
    pub idle: Idle,
    /// Where pollable feeds are read.
    pub feed_poll: FeedPoll,
    /// Default slow-consumer policy.
    pub slow_consumer: SlowConsumer,
    /// Connection cap.
    pub max_connections: usize,
    /// Per-connection subscription cap.
    pub max_subscriptions: usize,
    /// Heartbeat period for idle connections.
    pub heartbeat: Duration,
    /// A feed silent this long while the market is open is `stale`.
    pub stale_after: Duration,
    /// Session retention after disconnect.
    pub session_ttl: Duration,
    /// Where sessions are kept across a restart (`None`: not kept).
    pub state_file: Option<PathBuf>,
    /// Largest accepted client message.
    pub max_message_bytes: usize,
    /// Per-client out-buffer high-water mark.
    pub out_buffer_bytes: usize,
    /// Ring capacity per (feed, worker).
    pub ring_capacity: usize,
    /// Market hours.
    pub market_hours: crate::market::Schedule,
    /// Publish port address, if any.
    pub publish_listen: Option<SocketAddr>,
    /// Channel table size.
    pub max_channels: usize,
    /// Redis URL to mirror everything to.
    pub publish: Option<String>,
    /// Users and API keys (`None`: anonymous).
    pub auth_file: Option<PathBuf>,
    /// Allow a non-loopback listener without an auth file.
    pub allow_anonymous: bool,
    /// OpenAlgo listener (`None`: off).
    pub openalgo_listen: Option<SocketAddr>,
    /// `openalgo_listen` is the default, not asked for: a port already in
    /// use leaves it off with a warning instead of failing the start (a
    /// second instance on one host starts with only `--listen` changed).
    pub openalgo_listen_default: bool,
    /// OpenAlgo dialect settings.
    pub openalgo: OpenAlgoConfig,
    /// The Kite listener (`None`: off; `/kite` on the main port either way).
    pub kite_listen: Option<SocketAddr>,
    /// TLS certificate pairs per listener (`None`: plain).
    pub tls: TlsConfig,
    /// Most instruments per Kite connection.
    pub kite_max_instruments: usize,
    /// Trading WS (`/ws`) settings.
    pub trading: TradingConfig,
    /// Campus prices: idle connections are closed after this long, seconds.
    pub campus_idle_timeout: Duration,
    /// The shared-memory region to publish into (`--shm`), if any.
    pub shm: Option<crate::shm::RegionOptions>,
}

/// Settings of the Trading WS dialect (`/ws`), named after the seed's
/// environment variables.
#[derive(Clone, Debug, PartialEq)]
pub struct TradingConfig {
    /// `WEBSOCKET_ENABLED`.
    pub enabled: bool,
    /// `WEBSOCKET_PING_INTERVAL`.
    pub ping_interval: Duration,
    /// `WEBSOCKET_PRICE_UPDATE_INTERVAL`.
    pub price_update_interval: Duration,
    /// `WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL`.
    pub portfolio_update_interval: Duration,
    /// `WEBSOCKET_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

/// Settings of the OpenAlgo dialect, defaults from the seed's
/// `WebSocketConfig` (ping 5 s, ping timeout 10 s, 1000 clients).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAlgoConfig {
    /// Between server pings.
    pub ping_interval: Duration,
    /// How long a ping may stay unanswered.
    pub ping_timeout: Duration,
    /// How long a connection may stay unauthenticated.
    pub auth_timeout: Duration,
    /// Most concurrent OpenAlgo clients.
    pub max_clients: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config::from_flags(Flags::default(), &Sources::default()).expect("defaults are valid")
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).clamp(1, 8)
}

/// Parse `0,2,4-6` into CPU ids.
///
/// # Errors
/// Anything that is not a comma list of ids and ranges (the caller names
/// the flag and quotes the list).
pub fn parse_cpus(list: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("`{part}` is not a CPU id or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().with_context(bad)?, b.trim().parse().with_context(bad)?);
                if a > b {
                    bail!(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(bad)?),
        }
    }
    Ok(out)
}

impl Config {
    /// Validate `flags` over the `--config` file's keys; `given` says
    /// where each flag came from (the command line or the environment).
    ///
    /// # Errors
    /// Unreadable/invalid file, or an invalid value (the message names its
    /// source: flag, environment variable, or file and key).
    pub fn load(flags: Flags, mut given: Sources) -> Result<Config> {
        let file = match &flags.config {
            Some(path) => {
                let (file, keys) = read_file(path)?;
                given.add_file(path, keys);
                file
            }
            None => Flags::default(),
        };
        Config::from_flags(flags.over(file), &given)
    }

    /// Validate merged arguments, filling defaults.
    ///
    /// # Errors
    /// An invalid value; the message names where it came from (`src`) and
    /// the accepted values.
    pub fn from_flags(a: Flags, src: &Sources) -> Result<Config> {
        let feeds = match &a.feed {
            Some(list) if !list.is_empty() => {
                list.iter().map(|s| FeedSpec::parse(s).with_context(|| src.name("feed"))).collect::<Result<_>>()?
            }
            _ => vec![FeedSpec::Sim { rate: DEFAULT_SIM_RATE, seed: None }],
        };
        let idle = match a.idle.as_deref() {
            None | Some("park") => Idle::Park,
            Some("spin") => Idle::Spin,
            Some("hybrid") => Idle::Hybrid,
            Some(o) => bail!("{} `{o}`: expected `park`, `spin` or `hybrid`", src.name("idle")),
        };
        let slow_consumer = match a.slow_consumer.as_deref() {
            None | Some("conflate") => SlowConsumer::Conflate,
            Some("disconnect") => SlowConsumer::Disconnect,
            Some(o) => bail!("{} `{o}`: expected `conflate` or `disconnect`", src.name("slow-consumer")),
        };
        let workers = a.workers.unwrap_or_else(default_workers);
        let feed_poll = match a.feed_poll.as_deref() {
            None | Some("auto") if workers == 1 => FeedPoll::Worker,
            None | Some("auto" | "thread") => FeedPoll::Thread,
            Some("worker") => FeedPoll::Worker,
            Some(o) => bail!("{} `{o}`: expected `auto`, `thread` or `worker`", src.name("feed-poll")),
        };
        if workers == 0 || workers > crate::ring::MAX_WORKERS {
            bail!("{} {workers}: must be 1..={}", src.name("workers"), crate::ring::MAX_WORKERS);
        }
        let cpus = match &a.cpus {
            Some(list) => parse_cpus(list).with_context(|| format!("{} `{list}`", src.name("cpus")))?,
            None => Vec::new(),
        };
        let positive = |name: &str, v: Option<usize>, default: usize| -> Result<usize> {
            match v {
                Some(0) => bail!("{} must be at least 1", src.name(name)),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let seconds = |name: &str, v: Option<f64>, default: f64| -> Result<Duration> {
            match v {
                Some(s) if !(0.01..=86_400.0).contains(&s) => {
                    bail!("{} {s}: must be 0.01 to 86400 seconds", src.name(name))
                }
                Some(s) => Ok(Duration::from_secs_f64(s)),
                None => Ok(Duration::from_secs_f64(default)),
            }
        };
        let kite_limits = (
            positive("kite-upstream-connections", a.kite_upstream_connections, DEFAULT_KITE_CONNECTIONS)?,
            positive("kite-upstream-instruments", a.kite_upstream_instruments, DEFAULT_KITE_INSTRUMENTS)?,
        );
        let feeds = kite_credentials(feeds, &a, src, kite_limits)?;
        let heartbeat_ms = a.heartbeat_ms.unwrap_or(1000);
        if heartbeat_ms == 0 {
            bail!("{} must be at least 1", src.name("heartbeat-ms"));
        }
        let ring_capacity = positive("ring-capacity", a.ring_capacity, 65536)?;
        let listen = a.listen.unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal address"));
        let listener = |key: &str, given: Option<&str>, default: &str| -> Result<Option<SocketAddr>> {
            match given.unwrap_or(default) {
                "off" => Ok(None),
                addr => parse_addr(addr)
                    .map(Some)
                    .map_err(|why| anyhow::anyhow!("{} `{addr}`: {why}, or off", src.name(key))),
            }
        };
        let openalgo_listen = listener("openalgo-listen", a.openalgo_listen.as_deref(), "127.0.0.1:8765")?;
        let kite_listen = listener("kite-listen", a.kite_listen.as_deref(), "off")?;
        let main_tls = tls_pair("", a.tls_cert, a.tls_key, src)?;
        let tls = TlsConfig {
            openalgo: listener_tls(
                "openalgo",
                (a.openalgo_tls_cert, a.openalgo_tls_key, a.openalgo_plain),
                &main_tls,
                src,
            )?,
            kite: listener_tls("kite", (a.kite_tls_cert, a.kite_tls_key, a.kite_plain), &main_tls, src)?,
            main: main_tls,
        };
        let allow_anonymous = a.allow_anonymous.unwrap_or(false);
        let exposed = [("listen", Some(listen)), ("openalgo-listen", openalgo_listen), ("kite-listen", kite_listen)]
            .into_iter()
            .find_map(|(key, l)| l.filter(|l| !l.ip().is_loopback()).map(|l| (key, l)));
        if let (Some((key, addr)), None, false) = (exposed, &a.auth_file, allow_anonymous) {
            bail!(
                "refusing to serve {addr} ({}; not loopback) without API keys: give --auth-file PATH, or --allow-anonymous to let anyone who can reach it connect",
                src.name(key)
            );
        }
        let shm = match &a.shm {
            Some(name) => Some(crate::shm::RegionOptions {
                path: crate::shm::region_path(name).with_context(|| src.name("shm"))?,
                mode: {
                    let mode = a.shm_mode.as_deref().unwrap_or("0600");
                    parse_mode(mode).with_context(|| format!("{} `{mode}`", src.name("shm-mode")))?
                },
                group: match a.shm_group.as_deref() {
                    Some(g) => Some(
                        crate::shm::writer::parse_group(g)
                            .with_context(|| format!("{} `{g}`", src.name("shm-group")))?,
                    ),
                    None => None,
                },
                capacity: match a.shm_capacity {
                    None => crate::shm::DEFAULT_CAPACITY,
                    Some(n) if n.is_power_of_two() && (2..=1 << 30).contains(&n) => n,
                    Some(n) => bail!("{} {n}: must be a power of two from 2 to 2^30", src.name("shm-capacity")),
                },
            }),
            None => {
                let given = [
                    ("shm-mode", a.shm_mode.is_some()),
                    ("shm-group", a.shm_group.is_some()),
                    ("shm-capacity", a.shm_capacity.is_some()),
                ];
                let given: Vec<String> = given.iter().filter(|(_, g)| *g).map(|(key, _)| src.name(key)).collect();
                if !given.is_empty() {
                    bail!("{}: need --shm NAME (they configure its region)", given.join(", "));
                }
                None
            }
        };
        Ok(Config {
            shm,
            listen,
            master: a.master,
            feeds,
            workers,
            cpus,
            idle,
            feed_poll,
            slow_consumer,
            max_connections: positive("max-connections", a.max_connections, 100_000)?,
            max_subscriptions: positive("max-subscriptions", a.max_subscriptions, 3000)?,
            heartbeat: Duration::from_millis(heartbeat_ms),
            stale_after: seconds("stale-after", a.stale_after, 5.0)?,
            session_ttl: Duration::from_secs(a.session_ttl_secs.unwrap_or(600)),
            state_file: a.state_file,
            max_message_bytes: positive("max-message-bytes", a.max_message_bytes, 64 * 1024)?,
            out_buffer_bytes: positive("out-buffer-bytes", a.out_buffer_bytes, 4 * 1024 * 1024)?,
            ring_capacity,
            market_hours: crate::market::Schedule::from_spec(a.market_hours.as_ref())
                .with_context(|| src.name("market-hours"))?,
            publish_listen: a.publish_listen,
            publish: match a.publish {
                Some(url) if !url.starts_with("redis://") => {
                    bail!("{} `{url}`: expected redis://HOST:PORT", src.name("publish"))
                }
                other => other,
            },
            max_channels: positive("max-channels", a.max_channels, 4096)?,
            auth_file: a.auth_file,
            allow_anonymous,
            openalgo_listen,
            openalgo_listen_default: a.openalgo_listen.is_none(),
            kite_listen,
            tls,
            kite_max_instruments: positive("kite-max-instruments", a.kite_max_instruments, 3000)?,
            openalgo: OpenAlgoConfig {
                ping_interval: seconds("openalgo-ping-interval", a.openalgo_ping_interval, 5.0)?,
                ping_timeout: seconds("openalgo-ping-timeout", a.openalgo_ping_timeout, 10.0)?,
                auth_timeout: seconds("openalgo-auth-timeout", a.openalgo_auth_timeout, 15.0)?,
                max_clients: positive("openalgo-max-clients", a.openalgo_max_clients, 1000)?,
            },
            trading: TradingConfig {
                enabled: a.websocket_enabled.unwrap_or(true),
                ping_interval: seconds("websocket-ping-interval", a.websocket_ping_interval, 30.0)?,
                price_update_interval: seconds(
                    "websocket-price-update-interval",
                    a.websocket_price_update_interval,
                    3.0,
                )?,
                portfolio_update_interval: seconds(
                    "websocket-portfolio-update-interval",
                    a.websocket_portfolio_update_interval,
                    5.0,
                )?,
                max_connections: positive("websocket-max-connections", a.websocket_max_connections, 100)?,
            },
            campus_idle_timeout: Duration::from_secs(positive(
                "campus-idle-timeout-secs",
                a.campus_idle_timeout_secs.map(|s| s as usize),
                3600,
            )? as u64),
        })
    }
}

/// Fill each `kite` spec's missing credentials and order user from their
/// flags (environment, file) and set its limits, (connections, instruments
/// per connection); at most one `kite` feed.
///
/// # Errors
/// A second `kite` feed, missing credentials, too many connections or a bad user.
fn kite_credentials(
    mut feeds: Vec<FeedSpec>,
    a: &Flags,
    src: &Sources,
    limits: (usize, usize),
) -> Result<Vec<FeedSpec>> {
    let kites = feeds.iter().filter(|f| matches!(f, FeedSpec::Kite(_))).count();
    if kites > 1 {
        bail!(
            "{}: at most one kite feed per server (Kite limits connections per API key; got {kites})",
            src.name("feed")
        );
    }
    let (connections, instruments) = limits;
    if kites == 1 && connections > 64 {
        bail!("{} {connections}: at most 64", src.name("kite-upstream-connections"));
    }
    for f in &mut feeds {
        let FeedSpec::Kite(k) = f else { continue };
        let shown = format!("kite feed {}", k.redacted());
        if k.api_key.is_empty() {
            k.api_key = a.kite_api_key.clone().unwrap_or_default();
        }
        if k.access_token.0.is_empty() {
            k.access_token = Secret(a.kite_access_token.clone().unwrap_or_default());
        }
        if k.api_key.is_empty() {
            bail!("{shown}: no API key: add api_key= to the spec, or give --kite-api-key, KITE_API_KEY or kite-api-key in the config file");
        }
        if k.access_token.0.is_empty() {
            bail!("{shown}: no access token: give KITE_ACCESS_TOKEN, kite-access-token in the config file, or access_token= in the spec");
        }
        if k.user.is_none() {
            if let Some(u) = &a.kite_order_user {
                if !crate::feed::spec::KiteSpec::valid_user(u) {
                    bail!("{} `{u}`: cannot name a channel (letters, digits, _ @ . | -)", src.name("kite-order-user"));
                }
                k.user = Some(u.clone());
            }
        }
        (k.connections, k.instruments) = (connections, instruments);
    }
    Ok(feeds)
}

/// Parse permission bits in octal (`0640`, `640`, `0o640`).
///
/// # Errors
/// Not octal, beyond 0777, or writable by others (anyone could corrupt the
/// region); the caller names the setting and quotes the value.
fn parse_mode(s: &str) -> Result<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777);
    let Some(mode) = mode else { bail!("expected octal permission bits like 0600 or 0640") };
    if mode & 0o002 != 0 {
        bail!("others may not write the region (anyone could corrupt what readers see); use a group");
    }
    if mode & 0o600 != 0o600 {
        bail!("the owner needs read and write (0600 at least)");
    }
    Ok(mode)
}

/// The `--config` file's flags, and the keys it gives.
///
/// # Errors
/// Unreadable, not TOML (with the line), or a bad key or value (naming the
/// file and the key).
fn read_file(path: &Path) -> Result<(Flags, Vec<String>)> {
    let shown = || format!("config file {}", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", shown()))?;
    let table: toml::Table = text.parse().with_context(shown)?;
    let keys = table.keys().cloned().collect();
    // One key at a time, so that a bad value's error names its key.
    let mut flags = Flags::default();
    for (key, value) in table {
        let one: Flags = toml::Value::Table(toml::Table::from_iter([(key.clone(), value)]))
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}, key {key}: {}", shown(), e.message().trim()))?;
        flags = one.over(flags);
    }
    Ok((flags, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's flags alone, as `cli` flattens them.
    #[derive(clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        flags: Flags,
    }

    fn parse(argv: &[&str]) -> Result<Config> {
        let args = std::iter::once("tickcast").chain(argv.iter().copied()).map(OsString::from).collect();
        let (cli, given) = parse_args::<TestCli>(args)?;
        Config::load(cli.flags, given)
    }

    #[test]
    fn defaults_serve_the_simulator_on_8080() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.feeds, vec![FeedSpec::Sim { rate: 2000, seed: None }]);
        assert_eq!((c.max_subscriptions, c.heartbeat, c.out_buffer_bytes), (3000, Duration::from_secs(1), 4 << 20));
        assert_eq!((c.idle, c.slow_consumer), (Idle::Park, SlowConsumer::Conflate));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("tickcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nworkers = 3\nfeed = [\"sim:rate=50\"]\nmax-subscriptions = 10\n",
        )
        .unwrap();
        let c = parse(&["--config", file.to_str().unwrap(), "--workers", "2"]).unwrap();
        assert_eq!((c.listen.port(), c.workers, c.max_subscriptions), (9000, 2, 10));
        assert_eq!(c.feeds, vec![FeedSpec::Sim { rate: 50, seed: None }]);
        std::fs::write(&file, "listn = 1\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `listn`"), "{err:#}");
    }

    #[test]
    fn openalgo_settings_default_to_the_seed_and_are_checked() {
        let c = parse(&[]).unwrap();
        let secs = Duration::from_secs;
        let want = OpenAlgoConfig {
            ping_interval: secs(5),
            ping_timeout: secs(10),
            auth_timeout: secs(15),
            max_clients: 1000,
        };
        assert_eq!(c.openalgo, want, "the seed's WebSocketConfig defaults");
        let c = parse(&["--openalgo-ping-interval", "0.5", "--openalgo-max-clients", "3"]).unwrap();
        assert_eq!((c.openalgo.ping_interval, c.openalgo.max_clients), (Duration::from_millis(500), 3));
        for (argv, want) in [
            (["--openalgo-ping-timeout", "0"], "--openalgo-ping-timeout 0"),
            (["--openalgo-auth-timeout", "90000"], "--openalgo-auth-timeout 90000"),
            (["--openalgo-max-clients", "0"], "--openalgo-max-clients must be at least 1"),
        ] {
            let err = parse(&argv).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{argv:?}: {err:#}");
        }
    }

    #[test]
    fn feed_poll_auto_reads_in_the_worker_only_when_there_is_one() {
        let poll = |argv: &[&str]| parse(argv).unwrap().feed_poll;
        assert_eq!(poll(&["--workers", "1"]), FeedPoll::Worker);
        assert_eq!(poll(&["--workers", "2"]), FeedPoll::Thread);
        assert_eq!(poll(&["--workers", "1", "--feed-poll", "thread"]), FeedPoll::Thread);
        assert_eq!(poll(&["--workers", "3", "--feed-poll", "worker"]), FeedPoll::Worker);
        assert_eq!(poll(&["--workers", "2", "--feed-poll", "auto"]), FeedPoll::Thread);
    }

    #[test]
    fn stale_after_is_seconds_five_by_default() {
        assert_eq!(parse(&[]).unwrap().stale_after, Duration::from_secs(5));
        assert_eq!(parse(&["--stale-after", "0.5"]).unwrap().stale_after, Duration::from_millis(500));
        let err = parse(&["--stale-after", "0"]).unwrap_err();
        assert!(format!("{err:#}").contains("--stale-after 0: must be 0.01 to 86400 seconds"), "{err:#}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--idle", "nap"], "--idle `nap`"),
            (&["--idle", "nap"], "expected `park`, `spin` or `hybrid`"),
            (&["--feed", "carrier-pigeon"], "unknown source `carrier-pigeon`"),
            (&["--feed", "sim:rate=0"], "rate must be a positive integer"),
            (&["--feed", "sim:speed=3"], "unknown option `speed=3`"),
            (&["--cpus", "3-1"], "--cpus `3-1`"),
            (&["--workers", "0"], "--workers 0"),
            (&["--slow-consumer", "pray"], "--slow-consumer `pray`"),
            (&["--feed-poll", "sometimes"], "--feed-poll `sometimes`"),
            (&["--shm", "a b"], "shm name `a b`"),
            (&["--shm", "x", "--shm-mode", "0666"], "others may not write"),
            (&["--shm", "x", "--shm-mode", "rw"], "--shm-mode `rw`"),
            (&["--shm", "x", "--shm-mode", "0400"], "owner needs read and write"),
            (&["--shm", "x", "--shm-capacity", "1000"], "--shm-capacity 1000"),
            (&["--shm", "x", "--shm-group", "no-such-group-here"], "--shm-group `no-such-group-here`"),
            (&["--shm-capacity", "1024"], "need --shm NAME"),
        ];
        for (argv, want) in cases {
            let err = parse(argv).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{argv:?}: {err:#}");
        }
    }

    #[test]
    fn shm_defaults_and_forms() {
        assert_eq!(parse(&[]).unwrap().shm, None);
        let c = parse(&["--shm", "demo"]).unwrap().shm.unwrap();
        let want = crate::shm::RegionOptions {
            path: "/dev/shm/tickcast-demo".into(),
            mode: 0o600,
            group: None,
            capacity: 65536,
        };
        assert_eq!(c, want);
        let c =
            parse(&["--shm", "/tmp/r", "--shm-mode", "0640", "--shm-group", "0", "--shm-capacity", "1024"]).unwrap();
        let want = crate::shm::RegionOptions { path: "/tmp/r".into(), mode: 0o640, group: Some(0), capacity: 1024 };
        assert_eq!(c.shm.unwrap(), want);
        let file = std::env::temp_dir().join(format!("tickcast-cfg-shm-{}.toml", std::process::id()));
        std::fs::write(&file, "shm = \"demo\"\nshm-mode = \"0660\"\nshm-capacity = 4096\n").unwrap();
        let c = parse(&["--config", file.to_str().unwrap()]).unwrap().shm.unwrap();
        assert_eq!((c.path.to_str(), c.mode, c.capacity), (Some("/dev/shm/tickcast-demo"), 0o660, 4096), "TOML keys");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn kite_credentials_come_from_the_spec_the_flags_or_the_file() {
        let kite = |c: &Config| match &c.feeds[0] {
            FeedSpec::Kite(k) => k.clone(),
            other => panic!("{other:?}"),
        };
        let c = parse(&["--feed", "kite://ws.kite.trade?api_key=a&access_token=t&user=alice"]).unwrap();
        let k = kite(&c);
        assert_eq!((k.api_key.as_str(), k.access_token.0.as_str(), k.user.as_deref()), ("a", "t", Some("alice")));
        assert_eq!((k.connections, k.instruments), (3, 3000));
        let c = parse(&[
            "--feed",
            "kite://ws.kite.trade",
            "--kite-api-key",
            "fk",
            "--kite-access-token",
            "ft",
            "--kite-upstream-connections",
            "1",
            "--kite-upstream-instruments",
            "2",
            "--kite-order-user",
            "bob",
        ])
        .unwrap();
        let k = kite(&c);
        assert_eq!((k.api_key.as_str(), k.access_token.0.as_str(), k.user.as_deref()), ("fk", "ft", Some("bob")));
        assert_eq!((k.connections, k.instruments), (1, 2));
        assert!(!format!("{c:?}").contains("ft\""), "the token stays out of Debug: {c:?}");
        let file = std::env::temp_dir().join(format!("tickcast-cfg-kite-{}.toml", std::process::id()));
        std::fs::write(&file, "feed = [\"kite://ws.kite.trade\"]\nkite-api-key = \"ck\"\nkite-access-token = \"ct\"\n")
            .unwrap();
        let k = kite(&parse(&["--config", file.to_str().unwrap()]).unwrap());
        assert_eq!((k.api_key.as_str(), k.access_token.0.as_str()), ("ck", "ct"), "TOML keys");
        let _ = std::fs::remove_file(&file);
        let cases: &[(&[&str], &str)] = &[
            (&["--feed", "kite://h?api_key=a"], "no access token"),
            (&["--feed", "kite://h?access_token=t"], "no API key"),
            (
                &["--feed", "kite://h?api_key=a&access_token=t", "--feed", "kite+ws://h:1/?api_key=a&access_token=t"],
                "at most one kite feed",
            ),
            (
                &["--feed", "kite://h?api_key=a&access_token=t", "--kite-upstream-connections", "0"],
                "--kite-upstream-connections must be at least 1",
            ),
            (&["--feed", "kite://h?api_key=a&access_token=t", "--kite-order-user", "a b"], "--kite-order-user `a b`"),
        ];
        for (argv, want) in cases {
            let err = parse(argv).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(want), "{argv:?}: {text}");
            assert!(!text.contains("=t&") && !text.ends_with("=t"), "token in error text: {text}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0,2,4-6").unwrap(), vec![0, 2, 4, 5, 6]);
        assert!(parse_cpus("x").is_err());
    }
}
