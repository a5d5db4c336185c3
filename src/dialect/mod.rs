//! Client protocols, sans-IO: the native protocol and the five seed
//! protocols tickcast is a drop-in for. The upgrade path (or, for OpenAlgo,
//! the listener) picks a connection's [`Dialect`]; its per-connection state
//! is a [`Protocol`], driven by events (the upgrade, a text or binary
//! message, a housekeeping tick, the market opening) and `now`.
//!
//! A dialect never touches a socket, the clock or another connection. It
//! asks everything of its [`Host`]: the registry and configuration to read,
//! subscriptions to take, replies to queue, the connection to close. The
//! worker is the host in the server; `pair::Pair` is the host in unit
//! tests, recording what a dialect did, so every protocol is tested without
//! a network (the integration tests still run the real server).
//!
//! The host answers synchronously (a subscription can be refused at a
//! limit, and the dialect's reply must say so), so a dialect calls the host
//! rather than returning a list of actions; `Pair` records the calls as that
//! list.
//!
//! | dialect | endpoint | seed |
//! |---|---|---|
//! | native | `/stream` | `spec/protocol.md` |
//! | Odin | `/enhanced-stream`, `/live-stream` | `000_…` |
//! | Trading WS | `/ws` | `001_…` |
//! | Campus prices | `/api/ws/prices` | `002_…` |
//! | OpenAlgo | any path on `--openalgo-listen` | `003_…` |
//! | Exchange streams | `/` | `004_…` |
//! | Kite ticker | `/kite`, `/` on `--kite-listen` | `kiteconnect` (PyPI) |
//!
//! Adding a dialect: one file here with its `State` and functions on a
//! `&mut dyn Host`, a variant of [`Dialect`] and [`Protocol`], its frame shape
//! in `encode::dialects`, and table-driven tests with `pair::Pair`.

pub mod campus;
pub mod exchange;
pub mod kite;
pub mod native;
pub mod odin;
pub mod openalgo;
// The fuzz targets drive dialects through `Pair` too (`crate::fuzzing`);
// they use only part of it.
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod pair;
#[cfg(test)]
mod props;
pub mod trading;

use std::sync::Arc;

use crate::auth::User;
use crate::channel::{ChannelId, Channels};
use crate::config::Config;
use crate::encode::{Encoding, Format};
use crate::instrument::{Registry, Slot};
use crate::session::SavedSub;
use crate::subs::Delivery;
use crate::tick::Tick;
use crate::ws::handshake::Request;

/// A connection's client protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `/stream`.
    #[default]
    Native,
    /// Odin streamer (`/enhanced-stream`, `/live-stream`).
    Odin,
    /// Trading WS (`/ws`).
    Trading,
    /// Campus prices (`/api/ws/prices`).
    Campus,
    /// OpenAlgo (its own listener).
    OpenAlgo,
    /// Exchange streams (`/`).
    Exchange,
    /// Kite ticker (`/kite`; `--kite-listen`).
    Kite,
}

impl Dialect {
    /// Number of dialects (per-dialect counters).
    pub const COUNT: usize = 7;
    /// Every dialect, in index order.
    pub const ALL: [Dialect; Dialect::COUNT] = [
        Dialect::Native,
        Dialect::Odin,
        Dialect::Trading,
        Dialect::Campus,
        Dialect::OpenAlgo,
        Dialect::Exchange,
        Dialect::Kite,
    ];

    /// The dialect served at `path` on the main port.
    pub fn for_path(path: &str) -> Option<Dialect> {
        match path {
            "/stream" => Some(Dialect::Native),
            "/enhanced-stream" | "/live-stream" => Some(Dialect::Odin),
            "/ws" => Some(Dialect::Trading),
            "/api/ws/prices" => Some(Dialect::Campus),
            "/" => Some(Dialect::Exchange),
            "/kite" => Some(Dialect::Kite),
            _ => None,
        }
    }

    /// Name in `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Native => "native",
            Dialect::Odin => "odin",
            Dialect::Trading => "trading_ws",
            Dialect::Campus => "campus",
            Dialect::OpenAlgo => "openalgo",
            Dialect::Exchange => "exchange",
            Dialect::Kite => "kite",
        }
    }

    /// Does the dialect check the client's key itself when it opens
    /// (`key`: the handshake carried `api_key=` or a bearer token)?
    /// OpenAlgo clients may authenticate with their first message; Kite's
    /// key is its `access_token` and its refusal a 403.
    pub fn authenticates_itself(self, key: bool) -> bool {
        match self {
            Dialect::OpenAlgo => !key,
            Dialect::Kite => true,
            _ => false,
        }
    }

    /// Why this dialect's endpoint is switched off, if it is (answered 404):
    /// Trading WS with `WEBSOCKET_ENABLED=false`.
    pub fn disabled(self, config: &Config) -> Option<&'static str> {
        match self {
            Dialect::Trading if !config.trading.enabled => {
                Some("the Trading WS endpoint /ws is disabled (WEBSOCKET_ENABLED=false)\n")
            }
            _ => None,
        }
    }

    /// The most connections this dialect may have open at once, if the
    /// upgrade is refused past it (`WEBSOCKET_MAX_CONNECTIONS`: 503). (The
    /// OpenAlgo limit is answered in protocol terms after the upgrade.)
    pub fn connection_cap(self, config: &Config) -> Option<usize> {
        match self {
            Dialect::Trading => Some(config.trading.max_connections),
            _ => None,
        }
    }

    /// What a client refused at [`Dialect::connection_cap`] is told.
    pub fn refusal_at_cap(self, max: usize) -> String {
        match self {
            Dialect::Trading => format!(
                "the Trading WS endpoint /ws is at its connection limit ({max}, WEBSOCKET_MAX_CONNECTIONS); try again later\n"
            ),
            d => format!("the {} endpoint is at its connection limit ({max}); try again later\n", d.name()),
        }
    }
}

/// How a channel subscriber receives the channel's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanKind {
    /// The native envelope `{"type":"channel","channel":…,"data":…,"seq":…}`.
    Native,
    /// The payload verbatim (exchange streams, Trading WS signals).
    Raw,
    /// The payload verbatim, newest only, held until the dialect takes it
    /// on its own schedule ([`Host::take_held`]: Trading WS portfolio updates).
    Held,
    /// The payload between two fixed texts (Kite order postbacks:
    /// `{"type":"order","data":` … `}`).
    Enveloped {
        /// Text before the payload.
        before: &'static [u8],
        /// Text after it.
        after: &'static [u8],
    },
}

/// A counter a dialect bumps through its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// A key refused (in-band authentication).
    AuthFailure,
    /// A connection refused at a limit.
    ConnectionRejected,
}

/// The server, as one connection's dialect sees it: what it may read, and
/// what it may ask for. Everything a dialect does goes through here.
pub trait Host {
    // ── context ─────────────────────────────────────────────────────────
    /// The instruments.
    fn registry(&self) -> &Registry;
    /// The validated configuration.
    fn config(&self) -> &Config;
    /// The named channels (names ↔ ids).
    fn channels(&self) -> &Channels;
    /// The newest value of `slot`, if it ever ticked.
    fn last_value(&self, slot: Slot) -> Option<Tick>;
    /// Is the market open now?
    fn market_open(&self) -> bool;
    /// The delivery a subscription gets when it asks for none.
    fn default_delivery(&self) -> Delivery;
    /// Does a source publish named channels (`--publish-listen`, Redis)?
    fn has_channel_source(&self) -> bool;
    /// Connections open in `dialect`, all workers together.
    fn open_connections(&self, dialect: Dialect) -> u64;

    // ── this connection ─────────────────────────────────────────────────
    /// Its client id (given or generated at the upgrade).
    fn client_id(&self) -> &str;
    /// Set its client id; `resumable` (the client chose it) keeps its
    /// subscriptions after a disconnect for a reconnect with the same id
    /// (sessions are kept by user and client id; a generated id keeps none).
    fn set_client_id(&mut self, id: String, resumable: bool);
    /// The data frame format of native subscriptions.
    fn format(&self) -> Format;
    /// Set it (native `format=`).
    fn set_format(&mut self, format: Format);
    /// Subscribed instruments, in subscription order.
    fn slots(&self) -> &[Slot];
    /// How `slot` is subscribed, if it is.
    fn subscription(&self, slot: Slot) -> Option<(Encoding, Delivery)>;
    /// Subscribed named channels, in subscription order.
    fn channel_ids(&self) -> &[ChannelId];
    /// Who its API key belongs to (`None`: anonymous or not yet).
    fn user(&self) -> Option<&Arc<User>>;
    /// Nanoseconds since anything was last queued to it.
    fn idle_ns(&self, now: u64) -> u64;
    /// Is everything queued to it written?
    fn drained(&self) -> bool;
    /// Is it over its out-buffer limit (data held back)?
    fn congested(&self) -> bool;
    /// When its last pong arrived (0: none yet).
    fn last_pong_ns(&self) -> u64;
    /// Is it still open (no close frame queued)?
    fn is_open(&self) -> bool;

    // ── what a dialect asks for ─────────────────────────────────────────
    /// Answer the upgrade (101) as `dialect`; refused (an error for the
    /// client) when the dialect is at its connection cap.
    ///
    /// # Errors
    /// The dialect's connection limit, in words for the client.
    fn accept(&mut self, req: &Request, dialect: Dialect) -> Result<(), String>;
    /// Queue a text frame on the control lane (replies never wait behind data).
    fn reply(&mut self, text: &[u8], now: u64);
    /// Queue a WebSocket ping with `payload` (keep-alive) on the control lane.
    fn ping(&mut self, payload: &[u8], now: u64);
    /// Queue a complete data frame (built by the dialect) on the data lane;
    /// past the out-buffer limit the connection is marked congested, as
    /// fan-out does.
    fn data_frame(&mut self, frame: &[u8], now: u64);
    /// Queue the newest value of `slot` in `enc`, marked `snapshot` (the
    /// streams or modes just added to a subscription); nothing when it
    /// never ticked or the connection is congested (its next delivery
    /// carries the newest value).
    fn snapshot(&mut self, slot: Slot, enc: Encoding, now: u64);
    /// Queue a close frame; nothing more is sent or read.
    fn close(&mut self, code: u16, reason: &'static str);
    /// Subscribe `slot` in `enc`; a new subscription gets the newest value
    /// first (snapshot then live).
    ///
    /// # Errors
    /// A limit (per connection or per user), in words for the client.
    fn subscribe(&mut self, slot: Slot, enc: Encoding, delivery: Delivery, now: u64) -> Result<(), &'static str>;
    /// Drop the subscription to `slot`; false if there was none.
    fn unsubscribe(&mut self, slot: Slot) -> bool;
    /// Receive every instrument, batched (Trading WS before its first
    /// subscribe); false if it already did.
    fn watch_all(&mut self) -> bool;
    /// Stop receiving every instrument; false if it did not.
    fn unwatch_all(&mut self) -> bool;
    /// Instruments of batched subscriptions (and [`Host::watch_all`]) that
    /// ticked since the last call, each once, into `out`.
    fn take_changed(&mut self, out: &mut Vec<Slot>);
    /// Join the channel `name`, received as `kind`; `Ok(false)`: already in.
    ///
    /// # Errors
    /// A bad name, another user's private channel, a limit.
    fn join_channel(&mut self, name: &str, kind: ChanKind) -> Result<bool, String>;
    /// Leave channel `ch`; false if not in it.
    fn leave_channel(&mut self, ch: ChannelId) -> bool;
    /// The newest message of a [`ChanKind::Held`] channel since the last call.
    fn take_held(&mut self) -> Option<Arc<[u8]>>;
    /// The subscriptions a disconnected connection of this user and client
    /// id left, if it left any within the session TTL (taken: given once).
    fn restore(&mut self) -> Option<Vec<SavedSub>>;
    /// Authenticate in-band with `key` (subscribe role, the user's
    /// connection limit); counted when refused.
    ///
    /// # Errors
    /// The HTTP-style status and reason (401 unknown key, 429 at the limit).
    fn authenticate(&mut self, key: &str) -> Result<(), (u16, String)>;
    /// Is `key` a key of the user this connection is authenticated as?
    /// `None`: it is no valid key at all.
    fn same_user(&self, key: &str) -> Option<bool>;
    /// A bad client request: counted, and logged once per connection.
    fn bad_request(&mut self, what: &str);
    /// Bump a counter.
    fn count(&mut self, what: Count);
    /// Queue the native heartbeat (built once per housekeeping pass for
    /// every idle client).
    fn heartbeat(&mut self, now: u64);
}

/// A connection's dialect and its state.
#[derive(Default)]
pub enum Protocol {
    /// Before the upgrade.
    #[default]
    None,
    /// `/stream`.
    Native,
    /// Odin.
    Odin,
    /// Trading WS.
    Trading(Box<trading::State>),
    /// Campus prices.
    Campus(Box<campus::State>),
    /// OpenAlgo.
    OpenAlgo(Box<openalgo::State>),
    /// Exchange streams.
    Exchange,
    /// Kite ticker.
    Kite,
}

impl Protocol {
    /// Open the connection in `dialect`: answer the upgrade, greet, restore.
    ///
    /// # Errors
    /// The HTTP status and body to answer instead: a bad query parameter
    /// (400), a limit (503), a refused key (Kite: 403).
    pub fn open(host: &mut dyn Host, req: &Request, dialect: Dialect, now: u64) -> Result<Protocol, (u16, String)> {
        if dialect == Dialect::Kite {
            kite::open(host, req)?;
            return Ok(Protocol::Kite);
        }
        Protocol::open_json(host, req, dialect, now).map_err(|why| (400, why))
    }

    fn open_json(host: &mut dyn Host, req: &Request, dialect: Dialect, now: u64) -> Result<Protocol, String> {
        Ok(match dialect {
            Dialect::Native => {
                native::open(host, req, now)?;
                Protocol::Native
            }
            Dialect::Odin => {
                odin::open(host, req, now)?;
                Protocol::Odin
            }
            Dialect::Trading => Protocol::Trading(Box::new(trading::open(host, req, now)?)),
            Dialect::Campus => Protocol::Campus(Box::new(campus::open(host, req, now)?)),
            Dialect::OpenAlgo => Protocol::OpenAlgo(Box::new(openalgo::open(host, req, now)?)),
            Dialect::Exchange => {
                exchange::open(host, req, now)?;
                Protocol::Exchange
            }
            Dialect::Kite => unreachable!("opened above"),
        })
    }

    /// One complete text message (valid UTF-8).
    pub fn text(&mut self, host: &mut dyn Host, payload: &mut [u8], now: u64) {
        match self {
            Protocol::None => {}
            Protocol::Native => native::handle(host, payload, now),
            Protocol::Odin => odin::handle(host, payload, now),
            Protocol::Trading(st) => trading::handle(st, host, payload, now),
            Protocol::Campus(st) => campus::handle(st, host, payload, now),
            Protocol::OpenAlgo(st) => openalgo::handle(st, host, payload, now),
            Protocol::Exchange => exchange::handle(host, payload, now),
            Protocol::Kite => kite::handle(host, payload, now),
        }
    }

    /// A binary message: every dialect speaks JSON text; answer in its terms.
    pub fn binary(&mut self, host: &mut dyn Host, now: u64) {
        const MSG: &str = "binary messages are not accepted; send requests as JSON text frames";
        match self {
            Protocol::None => {}
            Protocol::Native => native::reply_error(host, None, "unsupported", MSG, now),
            Protocol::Odin => odin::reply_error(host, MSG, now),
            Protocol::Trading(_) => trading::reply_error(host, MSG, now),
            Protocol::Campus(_) => campus::reply_error(host, MSG, now),
            Protocol::OpenAlgo(_) => openalgo::reply_error(host, "INVALID_MESSAGE", MSG, now),
            Protocol::Exchange => exchange::reply_error(host, None, MSG, now),
            Protocol::Kite => kite::reply_error(host, MSG, now),
        }
    }

    /// About every 100 ms: heartbeats, pings, timeouts, batches that are due.
    pub fn housekeeping(&mut self, host: &mut dyn Host, now: u64) {
        match self {
            Protocol::None => {}
            Protocol::Native => native::housekeeping(host, now),
            Protocol::Odin => odin::housekeeping(host, now),
            Protocol::Trading(st) => trading::housekeeping(st, host, now),
            Protocol::Campus(st) => campus::housekeeping(st, host, now),
            Protocol::OpenAlgo(st) => openalgo::housekeeping(st, host, now),
            Protocol::Exchange => exchange::housekeeping(host, now),
            Protocol::Kite => kite::housekeeping(host, now),
        }
    }

    /// The notice for ticks skipped by the slow-consumer policy before a
    /// conflated value (`token`, seqs `from..=to`), if the dialect has one.
    pub fn gap_notice(&self, token: u32, from: u64, to: u64) -> Option<Vec<u8>> {
        match self {
            Protocol::Native => {
                let mut out = Vec::new();
                native::write_gap(&mut out, token, from, to);
                Some(out)
            }
            _ => None,
        }
    }
}

/// The notice a dialect's clients get when the market opens or closes.
pub fn market_status(dialect: Dialect, open: bool, now: u64) -> Vec<u8> {
    match dialect {
        Dialect::Native => native::market_status(open, now),
        Dialect::Odin => odin::market_status(open, now),
        Dialect::Trading => trading::market_status(open, now),
        Dialect::Campus => campus::market_status(open, now),
        Dialect::OpenAlgo => openalgo::market_status(open, now),
        Dialect::Exchange => exchange::market_status(open, now),
        Dialect::Kite => kite::market_status(open),
    }
}

/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 128;

/// The `client_id` query parameter, validated, or a fresh random one.
///
/// # Errors
/// Empty, too long or with control characters.
pub(crate) fn client_id(req: &Request) -> Result<String, String> {
    match req.param("client_id") {
        Some(cid) if cid.is_empty() || cid.len() > MAX_CLIENT_ID || cid.chars().any(char::is_control) => {
            Err(format!("client_id must be 1..={MAX_CLIENT_ID} printable characters"))
        }
        Some(cid) => Ok(cid),
        None => Ok(format!("{:016x}", fastrand::u64(..))),
    }
}

/// Parse a client message (after the nesting guard: simd-json recurses).
///
/// # Errors
/// The message for the client: too deep, or malformed with where.
pub(crate) fn parse_json(payload: &mut [u8]) -> Result<simd_json::BorrowedValue<'_>, String> {
    use crate::encode::json::{nesting_within, MAX_DEPTH};
    if !nesting_within(payload, MAX_DEPTH) {
        return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
    }
    simd_json::to_borrowed_value(payload).map_err(|e| format!("malformed JSON: {e}"))
}

/// The request loop of a dialect whose every failure is one error reply:
/// parse `payload`, run `dispatch`, answer a parse error or what
/// `dispatch` refused with `reply_error` (Odin, Kite).
pub(crate) fn handle_json(
    host: &mut dyn Host,
    payload: &mut [u8],
    now: u64,
    dispatch: fn(&mut dyn Host, &simd_json::BorrowedValue, u64) -> Result<(), String>,
    reply_error: fn(&mut dyn Host, &str, u64),
) {
    match parse_json(payload) {
        Ok(v) => {
            if let Err(msg) = dispatch(host, &v, now) {
                reply_error(host, &msg, now);
            }
        }
        Err(msg) => reply_error(host, &msg, now),
    }
}

/// A client's JSON value (simd-json, borrowed) as a serde_json one, to echo
/// it (a request `id`, a timestamp).
pub(crate) fn owned(v: &simd_json::BorrowedValue) -> serde_json::Value {
    serde_json::from_str(&simd_json::to_string(v).unwrap_or_default()).unwrap_or(serde_json::Value::Null)
}

/// Reply with the JSON value `v` on the control lane.
pub(crate) fn reply_json(host: &mut dyn Host, v: &serde_json::Value, now: u64) {
    host.reply(v.to_string().as_bytes(), now);
}

/// At most 64 characters of client text, for error messages and replies.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Keep the first of each item with a repeated slot, in order; items
/// without a slot stay (no hashing, no scratch shared with anything: one
/// sort of positions per request).
pub(crate) fn first_of_each<T>(items: &mut Vec<T>, slot: impl Fn(&T) -> Option<Slot>) {
    let mut order: Vec<(Slot, usize)> = items.iter().enumerate().filter_map(|(i, t)| slot(t).map(|s| (s, i))).collect();
    order.sort_unstable();
    let mut keep = vec![true; items.len()];
    for w in order.windows(2) {
        if w[0].0 == w[1].0 {
            keep[w[1].1] = false;
        }
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_of_each_keeps_order_and_drops_repeats() {
        let mut v: Vec<Option<u32>> = vec![Some(5), None, Some(3), Some(5), None, Some(1), Some(3), Some(9)];
        first_of_each(&mut v, |x| x.map(Slot));
        assert_eq!(v, [Some(5), None, Some(3), None, Some(1), Some(9)]);
    }

    #[test]
    fn paths_pick_dialects() {
        assert_eq!(Dialect::for_path("/stream"), Some(Dialect::Native));
        assert_eq!(Dialect::for_path("/live-stream"), Some(Dialect::Odin));
        assert_eq!(Dialect::for_path("/nope"), None);
    }
}
