//! Trading WS (seed `001_…`), `GET /ws[?client_id=]`: the real-time
//! streaming endpoint of a trading application. Prices arrive as one
//! `price_update` per interval holding every instrument that changed
//! (conflated: the newest value of each); signals and trade executions are
//! relayed verbatim from the named channels `signals` and `trades`; each
//! user's portfolio arrives from its private channel, newest only, once
//! per interval.
//!
//! ```json
//! {"type":"ping"}
//! {"type":"pong"}
//! {"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","TCS"]}
//! {"type":"subscribed","channel":"price_updates","symbols":["RELIANCE","TCS"],"timestamp":"2024-12-19T12:00:00.000Z"}
//! {"type":"price_update","symbols":{"RELIANCE":{"price":2850.5,"change":5.5,"change_pct":0.19,"volume":1500000,"high":2860.0,"low":2815.0,"open":2820.0,"close":2850.5}},"timestamp":"2024-12-19T12:00:00.000Z"}
//! {"type":"signal","signal_type":"BUY","symbol":"RELIANCE","price":2850.5,"quantity":10,"confidence":0.85,"timestamp":"2024-12-19T12:00:00Z"}
//! {"type":"error","error":"Unknown channel `news` (expected price_updates, signals, trades or portfolio)","timestamp":"2024-12-19T12:00:00.000Z"}
//! ```
//!
//! As in the seed's MVP, a new connection receives everything: every
//! instrument ([`Host::watch_all`]), `signals`, `trades` and its
//! user's portfolio. Its first `subscribe` to `price_updates` narrows prices
//! to the symbols it names. Choices where the seed is silent: a
//! `{"type":"connected","client_id":…}` greeting (the seed generates an id
//! the client could not otherwise learn), `subscribed` / `unsubscribed`
//! acknowledgements, `market_status` on market open and close, WebSocket
//! ping frames to idle clients every `WEBSOCKET_PING_INTERVAL` (the seed's
//! client already sends JSON pings; control frames are answered by every
//! WebSocket stack without code). Errors keep the connection open.

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, ChanKind, Dialect, Host};
use crate::encode::dialects::{iso_string, trading_symbol, write_iso};
use crate::encode::{Encoding, Format};
use crate::instrument::{Registry, Slot};
use crate::subs::Delivery;
use crate::tick::Mode;
use crate::ws::frame;
use crate::ws::handshake::Request;

/// Named channel relayed as `signal` messages.
const SIGNALS: &str = "signals";
/// Named channel relayed as `trade_executed` messages.
const TRADES: &str = "trades";
/// The channels a client may name, for error messages.
const CHANNELS: &str = "price_updates, signals, trades or portfolio";
/// The message types a client may send, for error messages.
const TYPES: &str = "ping, subscribe or unsubscribe";
/// Unknown symbols named one by one in an error (the rest are counted).
const MAX_NAMED: usize = 20;

/// Trading WS per-connection state. The instruments that changed since the
/// last `price_update` and the held portfolio update are the host's
/// (batched delivery, a held channel); this is the schedule.
#[derive(Default)]
pub struct State {
    /// Receiving every instrument (the seed's MVP) until the first
    /// `price_updates` subscribe names symbols.
    all: bool,
    /// Earliest time of the next `price_update`, ns since epoch.
    next_price_ns: u64,
    /// Earliest time of the next `portfolio_update`, ns since epoch.
    next_portfolio_ns: u64,
    /// Scratch: the changed instruments of one batch (capacity kept).
    changed: Vec<Slot>,
    /// Scratch: one batch's frame (capacity kept).
    frame: Vec<u8>,
}

/// The streams a client can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    /// Batched `price_update`s.
    Prices,
    /// The named channel `signals`.
    Signals,
    /// The named channel `trades`.
    Trades,
    /// The user's private channel `private:<user>:portfolio`.
    Portfolio,
}

impl Channel {
    fn parse(s: &str) -> Option<Channel> {
        match s {
            "price_updates" => Some(Channel::Prices),
            "signals" => Some(Channel::Signals),
            "trades" => Some(Channel::Trades),
            "portfolio" => Some(Channel::Portfolio),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Channel::Prices => "price_updates",
            Channel::Signals => "signals",
            Channel::Trades => "trades",
            Channel::Portfolio => "portfolio",
        }
    }
}

/// The named channel behind a stream (not `Prices`), and how it is received.
fn named(host: &dyn Host, ch: Channel) -> (String, ChanKind) {
    match ch {
        Channel::Signals => (SIGNALS.into(), ChanKind::Raw),
        Channel::Trades => (TRADES.into(), ChanKind::Raw),
        _ => {
            let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
            (format!("private:{user}:portfolio"), ChanKind::Held)
        }
    }
}

/// A random version-4 UUID, the id of a client that gave none.
fn uuid_v4() -> String {
    let a = (fastrand::u64(..) & !0xf000) | 0x4000; // version 4
    let b = (fastrand::u64(..) & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// `"2024-12-19T12:00:00.123Z"` for `ns`, as a JSON value.
fn iso(ns: u64) -> Value {
    Value::String(iso_string(ns))
}

/// Accept the upgrade: greeting, the seed's MVP streams (or a restored
/// session's symbols).
///
/// # Errors
/// A bad `client_id`; the connection limit reached by a race between
/// workers (the handshake's 503 check is the usual refusal).
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<State, String> {
    let client_id = match req.param("client_id") {
        Some(_) => super::client_id(req)?,
        None => uuid_v4(),
    };
    host.accept(req, Dialect::Trading)?;
    host.set_client_id(client_id.clone());
    let mut st = State::default();
    let hello =
        json!({"type": "connected", "client_id": client_id, "market_open": host.market_open(), "timestamp": iso(now)});
    host.reply(hello.to_string().as_bytes(), now);
    for ch in [Channel::Signals, Channel::Trades, Channel::Portfolio] {
        let (name, kind) = named(host, ch);
        if let Err(why) = host.join_channel(&name, kind) {
            reply_error(host, &format!("Not subscribed to {}: {why}", ch.name()), now);
        }
    }
    // A reconnect with the same client_id gets its symbols back.
    let mut restored = false;
    if let Some(saved) = host.restore() {
        for s in saved {
            if let Some(slot) = host.registry().slot_of_token(s.token) {
                restored |= host.subscribe(slot, BATCHED, Delivery::Conflate, now).is_ok();
            }
        }
    }
    if !restored {
        host.watch_all();
        st.all = true;
    }
    Ok(st)
}

/// Every price subscription is this encoding: the worker batches them.
const BATCHED: Encoding = Encoding { format: Format::Batched, mode: Mode::Quote };

/// Stop every price update: leave "everything", drop the symbols.
fn stop_prices(st: &mut State, host: &mut dyn Host) {
    host.unwatch_all();
    for slot in host.slots().to_vec() {
        host.unsubscribe(slot);
    }
    st.all = false;
    host.take_changed(&mut st.changed);
    st.changed.clear();
}

/// Handle one text message.
pub(crate) fn handle(st: &mut State, host: &mut dyn Host, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(host, &format!("Invalid message format: {msg}"), now),
    };
    if let Err(msg) = dispatch(st, host, &v, now) {
        reply_error(host, &msg, now);
    }
}

fn dispatch(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), String> {
    if v.as_object().is_none() {
        return Err(format!("Invalid message format: expected a JSON object with a `type` ({TYPES})"));
    }
    let ty = match v.get("type") {
        None => return Err(format!("Invalid message format: missing field `type` ({TYPES})")),
        Some(t) => {
            t.as_str().ok_or_else(|| format!("Invalid message format: field `type` must be a string ({TYPES})"))?
        }
    };
    match ty {
        "ping" => {
            host.reply(br#"{"type":"pong"}"#, now);
            Ok(())
        }
        "subscribe" => subscribe(st, host, v, now),
        "unsubscribe" => unsubscribe(st, host, v, now),
        other => Err(format!("Unknown message type `{}` (expected {TYPES})", clip(other))),
    }
}

/// The `channel` and `symbols` of a (un)subscribe request.
fn request<'v>(host: &dyn Host, v: &'v BorrowedValue) -> Result<(Channel, Option<Vec<&'v str>>), String> {
    let channel = match v.get("channel") {
        None => return Err(format!("Invalid message format: missing field `channel` ({CHANNELS})")),
        Some(c) => c
            .as_str()
            .ok_or_else(|| format!("Invalid message format: field `channel` must be a string ({CHANNELS})"))?,
    };
    let channel =
        Channel::parse(channel).ok_or_else(|| format!("Unknown channel `{}` (expected {CHANNELS})", clip(channel)))?;
    let symbols = match v.get("symbols") {
        None => None,
        Some(list) => {
            const MSG: &str = "Invalid message format: field `symbols` must be an array of symbol strings";
            let arr = list.as_array().ok_or(MSG)?;
            let limit = host.config().max_subscriptions.max(1000);
            if arr.len() > limit {
                return Err(format!("{} symbols in one request; at most {limit}", arr.len()));
            }
            Some(arr.iter().map(|s| s.as_str().ok_or(MSG)).collect::<Result<Vec<_>, _>>()?)
        }
    };
    Ok((channel, symbols))
}

/// Resolve symbols to slots, duplicates folded; unknown names are
/// returned as given.
fn resolve<'v>(reg: &Registry, symbols: &[&'v str]) -> (Vec<Slot>, Vec<&'v str>) {
    let (mut found, mut unknown) = (Vec::new(), Vec::new());
    for &s in symbols {
        match reg.slot_of_symbol(s) {
            Some(slot) => found.push(slot),
            None => unknown.push(s),
        }
    }
    super::first_of_each(&mut found, |s| Some(*s));
    (found, unknown)
}

/// The key an instrument has in `price_update.symbols`.
fn key(reg: &Registry, slot: Slot) -> String {
    let ins = reg.get(slot);
    if &*ins.exchange == crate::instrument::DEFAULT_EXCHANGE {
        ins.symbol.to_string()
    } else {
        format!("{}:{}", ins.exchange, ins.symbol)
    }
}

/// `Unknown symbols: A, B (…)`, naming at most `MAX_NAMED`.
fn unknown_error(unknown: &[&str], some_done: bool) -> String {
    let mut names: Vec<String> = unknown.iter().take(MAX_NAMED).map(|s| clip(s)).collect();
    if unknown.len() > MAX_NAMED {
        names.push(format!("and {} more", unknown.len() - MAX_NAMED));
    }
    let rest = if some_done { "; the others were subscribed" } else { "" };
    format!(
        "Unknown symbols: {} (not in the instrument master; use a symbol such as RELIANCE, EXCHANGE:SYMBOL or an ISIN){rest}",
        names.join(", ")
    )
}

/// `{"type":"subscribed"|"unsubscribed","channel":…[,"symbols":[…]],"timestamp":…}`.
fn ack(host: &mut dyn Host, ty: &str, ch: Channel, symbols: Option<Vec<String>>, now: u64) {
    let mut v = json!({"type": ty, "channel": ch.name()});
    if let Some(s) = symbols {
        v["symbols"] = json!(s);
    }
    v["timestamp"] = iso(now);
    host.reply(v.to_string().as_bytes(), now);
}

fn subscribe(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), String> {
    let (channel, symbols) = request(host, v)?;
    if channel != Channel::Prices {
        // `symbols` does not filter signals, trades or the portfolio.
        let (name, kind) = named(host, channel);
        host.join_channel(&name, kind).map_err(|why| format!("Not subscribed to {}: {why}", channel.name()))?;
        ack(host, "subscribed", channel, None, now);
        return Ok(());
    }
    let symbols = symbols.filter(|s| !s.is_empty()).ok_or(
        "Invalid message format: subscribing to price_updates needs `symbols`, a non-empty array such as [\"RELIANCE\",\"TCS\"]",
    )?;
    let (found, unknown) = resolve(host.registry(), &symbols);
    if !found.is_empty() && st.all {
        // The first choice replaces "everything".
        stop_prices(st, host);
    }
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    let mut why_refused = "";
    for slot in found {
        match host.subscribe(slot, BATCHED, Delivery::Conflate, now) {
            Ok(()) => done.push(key(host.registry(), slot)),
            Err(why) => {
                why_refused = why;
                refused.push(key(host.registry(), slot));
            }
        }
    }
    let some_done = !done.is_empty();
    if some_done {
        ack(host, "subscribed", channel, Some(done), now);
    }
    if !unknown.is_empty() {
        reply_error(host, &unknown_error(&unknown, some_done), now);
    }
    if !refused.is_empty() {
        let max = host.config().max_subscriptions;
        let msg = format!("Not subscribed to {}: {why_refused} ({max} per connection)", refused.join(", "));
        reply_error(host, &msg, now);
    }
    Ok(())
}

fn unsubscribe(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), String> {
    let (channel, symbols) = request(host, v)?;
    if channel != Channel::Prices {
        let (name, _) = named(host, channel);
        if let Some(ch) = host.channels().lookup(&name) {
            host.leave_channel(ch);
        }
        if channel == Channel::Portfolio {
            host.take_held();
        }
        ack(host, "unsubscribed", channel, None, now);
        return Ok(());
    }
    let Some(symbols) = symbols else {
        stop_prices(st, host);
        ack(host, "unsubscribed", channel, None, now);
        return Ok(());
    };
    if symbols.is_empty() {
        return Err("Invalid message format: `symbols` is empty: name the symbols to stop, or leave `symbols` out to stop every price update".into());
    }
    if st.all {
        return Err("You receive every symbol until you subscribe to price_updates with `symbols`: subscribe to the ones you want, or unsubscribe without `symbols` to stop price updates".into());
    }
    let (found, unknown) = resolve(host.registry(), &symbols);
    let (mut done, mut absent) = (Vec::new(), Vec::new());
    for slot in found {
        if host.unsubscribe(slot) {
            done.push(key(host.registry(), slot));
        } else {
            absent.push(key(host.registry(), slot));
        }
    }
    if !done.is_empty() {
        ack(host, "unsubscribed", channel, Some(done), now);
    }
    if !unknown.is_empty() {
        reply_error(host, &unknown_error(&unknown, false), now);
    }
    if !absent.is_empty() {
        reply_error(host, &format!("Not subscribed to {}", absent.join(", ")), now);
    }
    Ok(())
}

/// `{"type":"market_status","market_open":…,"timestamp":…}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    json!({"type": "market_status", "market_open": open, "timestamp": iso(now)}).to_string().into_bytes()
}

/// About every 100 ms: the price batch and the portfolio update when due
/// (intervals are therefore at least that long), a ping frame to an idle
/// client.
pub(crate) fn housekeeping(st: &mut State, host: &mut dyn Host, now: u64) {
    let cfg = &host.config().trading;
    let ns = crate::tick::ns;
    let (price_ns, portfolio_ns, ping_ns) =
        (ns(cfg.price_update_interval), ns(cfg.portfolio_update_interval), ns(cfg.ping_interval));
    if host.congested() {
        return; // held back (conflated) until the client drains
    }
    if now >= st.next_price_ns && flush_prices(st, host, now) {
        st.next_price_ns = now + price_ns;
    }
    if now >= st.next_portfolio_ns {
        if let Some(raw) = host.take_held() {
            st.next_portfolio_ns = now + portfolio_ns;
            host.data_frame(&raw, now);
        }
    }
    if host.idle_ns(now) >= ping_ns && host.drained() {
        host.control_frame(frame::OP_PING, b"", now);
    }
}

/// Send one `price_update` with the newest value of every changed
/// instrument the client still receives. Returns whether one was sent.
fn flush_prices(st: &mut State, host: &mut dyn Host, now: u64) -> bool {
    host.take_changed(&mut st.changed);
    if st.changed.is_empty() {
        return false;
    }
    let out = &mut st.frame;
    out.clear();
    let start = frame::begin(out);
    out.extend_from_slice(b"{\"type\":\"price_update\",\"symbols\":{");
    let mut n = 0;
    for &slot in &st.changed {
        if !st.all && host.subscription(slot).is_none() {
            continue; // unsubscribed since it changed
        }
        let Some(t) = host.last_value(slot) else { continue };
        if n > 0 {
            out.push(b',');
        }
        trading_symbol(out, &t, host.registry().get(slot));
        n += 1;
    }
    out.extend_from_slice(b"},\"timestamp\":\"");
    write_iso(out, now, 0, true, b"Z\"}");
    let r = frame::finish(out, start, frame::OP_TEXT);
    st.changed.clear();
    if n == 0 {
        return false;
    }
    host.data_frame(&st.frame[r], now);
    true
}

/// Send `{"type":"error","error":…,"timestamp":…}`; the connection stays open.
pub(crate) fn reply_error(host: &mut dyn Host, msg: &str, now: u64) {
    host.bad_request(msg);
    let v = json!({"type": "error", "error": msg, "timestamp": iso(now)});
    host.reply(v.to_string().as_bytes(), now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_are_version_4_uuids() {
        for _ in 0..100 {
            let id = uuid_v4();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
            assert!(parts[2].starts_with('4'), "version nibble: {id}");
            assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "variant: {id}");
        }
    }

    #[test]
    fn channels_parse_by_their_seed_names() {
        for ch in [Channel::Prices, Channel::Signals, Channel::Trades, Channel::Portfolio] {
            assert_eq!(Channel::parse(ch.name()), Some(ch));
        }
        assert_eq!(Channel::parse("PRICE_UPDATES"), None);
    }
}
