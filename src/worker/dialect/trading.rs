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
//! instrument (the worker's `all_instruments`), `signals`, `trades` and its
//! user's portfolio. Its first `subscribe` to `price_updates` narrows prices
//! to the symbols it names. Choices where the seed is silent: a
//! `{"type":"connected","client_id":…}` greeting (the seed generates an id
//! the client could not otherwise learn), `subscribed` / `unsubscribed`
//! acknowledgements, `market_status` on market open and close, WebSocket
//! ping frames to idle clients every `WEBSOCKET_PING_INTERVAL` (the seed's
//! client already sends JSON pings; control frames are answered by every
//! WebSocket stack without code). Errors keep the connection open.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::super::conn::Conn;
use super::super::{ChanKind, Worker};
use super::{Dialect, Ext};
use crate::encode::dialects::{iso_string, trading_symbol, write_iso};
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::metrics::Counters;
use crate::shared::Shared;
use crate::subs::{ConnId, Delivery};
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

/// Trading WS per-connection state.
#[derive(Default)]
pub(crate) struct State {
    /// Bit per slot: in `changed` already.
    changed_bits: Vec<u64>,
    /// Instruments with a newer value since the last `price_update`.
    changed: Vec<Slot>,
    /// The newest portfolio update not yet sent.
    held: Option<Arc<[u8]>>,
    /// Receiving every instrument (the seed's MVP) until the first
    /// `price_updates` subscribe names symbols.
    all: bool,
    /// Earliest time of the next `price_update`, ns since epoch.
    next_price_ns: u64,
    /// Earliest time of the next `portfolio_update`, ns since epoch.
    next_portfolio_ns: u64,
}

/// A tick for `slot` reached a batched connection: remember the instrument
/// for its next `price_update` (once per batch; no allocation once the
/// bitset and list have grown to the instruments the client sees).
#[inline]
pub(crate) fn changed(c: &mut Conn, slot: Slot) {
    let Ext::Trading(st) = &mut c.ext else { return };
    let (word, bit) = (slot.idx() / 64, 1u64 << (slot.idx() % 64));
    if st.changed_bits.len() <= word {
        st.changed_bits.resize(word + 1, 0);
    }
    if st.changed_bits[word] & bit == 0 {
        st.changed_bits[word] |= bit;
        st.changed.push(slot);
    }
}

/// Keep the newest held channel message (a portfolio update) for the next interval.
pub(crate) fn hold(c: &mut Conn, raw: &Arc<[u8]>) {
    if let Ext::Trading(st) = &mut c.ext {
        st.held = Some(raw.clone());
    }
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
fn named(w: &mut Worker, id: ConnId, ch: Channel) -> (String, ChanKind) {
    match ch {
        Channel::Signals => (SIGNALS.into(), ChanKind::Raw),
        Channel::Trades => (TRADES.into(), ChanKind::Raw),
        _ => {
            let user = w.conn(id).and_then(|c| c.user.as_ref().map(|u| u.id.to_string())).unwrap_or_default();
            (format!("private:{user}:portfolio"), ChanKind::Held)
        }
    }
}

/// `/ws` is at `WEBSOCKET_MAX_CONNECTIONS` (the handshake answers 503).
pub(crate) fn at_capacity(shared: &Shared) -> bool {
    let open = shared.dialect_connections[Dialect::Trading as usize].load(Ordering::Acquire);
    open >= shared.config.trading.max_connections as u64
}

/// The refusal at the connection limit.
pub(crate) fn capacity_message(shared: &Shared) -> String {
    let max = shared.config.trading.max_connections;
    format!(
        "the Trading WS endpoint /ws is at its connection limit ({max}, WEBSOCKET_MAX_CONNECTIONS); try again later\n"
    )
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
pub(crate) fn open(w: &mut Worker, id: ConnId, req: &Request, now: u64) -> Result<(), String> {
    let client_id = match req.param("client_id") {
        Some(_) => super::client_id(req)?,
        None => uuid_v4(),
    };
    let shared = w.shared.clone();
    let open = &shared.dialect_connections[Dialect::Trading as usize];
    let max = shared.config.trading.max_connections as u64;
    // Workers admit in parallel: take the place atomically, then hand it
    // over to the count `accept_upgrade` keeps.
    if open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_err() {
        Counters::inc(&shared.counters.limit_rejections);
        return Err(capacity_message(&shared).trim_end().into());
    }
    w.accept_upgrade(id, req, Dialect::Trading);
    open.fetch_sub(1, Ordering::AcqRel);
    let market_open = shared.market_open.load(Ordering::Relaxed);
    let c = w.conn(id).expect("caller holds the connection");
    c.client_id = client_id.clone();
    c.ext = Ext::Trading(Box::default());
    let key = c.session_key();
    let hello = json!({"type": "connected", "client_id": client_id, "market_open": market_open, "timestamp": iso(now)});
    w.reply(id, hello.to_string().as_bytes(), now);
    for ch in [Channel::Signals, Channel::Trades, Channel::Portfolio] {
        let (name, kind) = named(w, id, ch);
        if let Err(why) = w.join_channel(id, &name, kind) {
            reply_error(w, id, &format!("Not subscribed to {}: {why}", ch.name()), now);
        }
    }
    // A reconnect with the same client_id gets its symbols back.
    let mut restored = false;
    if let Some(saved) = shared.sessions.take(&key, std::time::Instant::now()) {
        Counters::inc(&shared.counters.sessions_restored);
        for s in saved {
            if let Some(slot) = shared.registry.slot_of_token(s.token) {
                restored |= w.subscribe(id, slot, BATCHED, Delivery::Conflate, now).is_ok();
            }
        }
    }
    if !restored {
        enter_all(w, id);
    }
    Ok(())
}

/// Every price subscription is this encoding: the worker batches them.
const BATCHED: Encoding = Encoding { format: Format::Batched, mode: Mode::Quote };

/// Receive every instrument; the next batch carries every cached value.
fn enter_all(w: &mut Worker, id: ConnId) {
    w.join_all_instruments(id);
    let shared = w.shared.clone();
    let Some(c) = w.conn(id) else { return };
    if let Ext::Trading(st) = &mut c.ext {
        st.all = true;
    }
    for (slot, _) in shared.registry.iter() {
        if shared.hub.lvc.load(slot).is_some() {
            changed(c, slot);
        }
    }
}

/// Stop every price update: leave "everything", drop the symbols.
fn stop_prices(w: &mut Worker, id: ConnId) {
    w.leave_all_instruments(id);
    let slots = w.conn(id).map(|c| c.slots.clone()).unwrap_or_default();
    for slot in slots {
        w.unsubscribe(id, slot);
    }
    if let Some(c) = w.conn(id) {
        if let Ext::Trading(st) = &mut c.ext {
            st.all = false;
            clear_changed(st);
        }
    }
}

fn clear_changed(st: &mut State) {
    for s in st.changed.drain(..) {
        st.changed_bits[s.idx() / 64] &= !(1u64 << (s.idx() % 64));
    }
}

fn receives_all(w: &mut Worker, id: ConnId) -> bool {
    w.conn(id).is_some_and(|c| matches!(&c.ext, Ext::Trading(st) if st.all))
}

/// Handle one text message.
pub(crate) fn handle(w: &mut Worker, id: ConnId, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(w, id, &format!("Invalid message format: {msg}"), now),
    };
    if let Err(msg) = dispatch(w, id, &v, now) {
        reply_error(w, id, &msg, now);
    }
}

fn dispatch(w: &mut Worker, id: ConnId, v: &BorrowedValue, now: u64) -> Result<(), String> {
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
            w.reply(id, br#"{"type":"pong"}"#, now);
            Ok(())
        }
        "subscribe" => subscribe(w, id, v, now),
        "unsubscribe" => unsubscribe(w, id, v, now),
        other => Err(format!("Unknown message type `{}` (expected {TYPES})", clip(other))),
    }
}

/// At most 64 characters of client text, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The `channel` and `symbols` of a (un)subscribe request.
fn request<'v>(w: &Worker, v: &'v BorrowedValue) -> Result<(Channel, Option<Vec<&'v str>>), String> {
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
            let limit = w.shared.config.max_subscriptions.max(1000);
            if arr.len() > limit {
                return Err(format!("{} symbols in one request; at most {limit}", arr.len()));
            }
            Some(arr.iter().map(|s| s.as_str().ok_or(MSG)).collect::<Result<Vec<_>, _>>()?)
        }
    };
    Ok((channel, symbols))
}

/// Resolve symbols to slots, duplicates folded (by slot, with the worker's
/// scratch bitset); unknown names are returned as given.
fn resolve<'v>(w: &mut Worker, symbols: &[&'v str]) -> (Vec<Slot>, Vec<&'v str>) {
    let (mut found, mut unknown) = (Vec::new(), Vec::new());
    for &s in symbols {
        match w.shared.registry.slot_of_symbol(s) {
            Some(slot) => {
                let (word, bit) = (slot.idx() / 64, 1u64 << (slot.idx() % 64));
                if w.seen[word] & bit == 0 {
                    w.seen[word] |= bit;
                    found.push(slot);
                }
            }
            None => unknown.push(s),
        }
    }
    for slot in &found {
        w.seen[slot.idx() / 64] = 0;
    }
    (found, unknown)
}

/// The key an instrument has in `price_update.symbols`.
fn key(w: &Worker, slot: Slot) -> String {
    let ins = w.shared.registry.get(slot);
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
fn ack(w: &mut Worker, id: ConnId, ty: &str, ch: Channel, symbols: Option<Vec<String>>, now: u64) {
    let mut v = json!({"type": ty, "channel": ch.name()});
    if let Some(s) = symbols {
        v["symbols"] = json!(s);
    }
    v["timestamp"] = iso(now);
    w.reply(id, v.to_string().as_bytes(), now);
}

fn subscribe(w: &mut Worker, id: ConnId, v: &BorrowedValue, now: u64) -> Result<(), String> {
    let (channel, symbols) = request(w, v)?;
    if channel != Channel::Prices {
        // `symbols` does not filter signals, trades or the portfolio.
        let (name, kind) = named(w, id, channel);
        w.join_channel(id, &name, kind).map_err(|why| format!("Not subscribed to {}: {why}", channel.name()))?;
        ack(w, id, "subscribed", channel, None, now);
        return Ok(());
    }
    let symbols = symbols.filter(|s| !s.is_empty()).ok_or(
        "Invalid message format: subscribing to price_updates needs `symbols`, a non-empty array such as [\"RELIANCE\",\"TCS\"]",
    )?;
    let (found, unknown) = resolve(w, &symbols);
    if !found.is_empty() && receives_all(w, id) {
        // The first choice replaces "everything".
        stop_prices(w, id);
    }
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    let mut why_refused = "";
    for slot in found {
        match w.subscribe(id, slot, BATCHED, Delivery::Conflate, now) {
            Ok(()) => done.push(key(w, slot)),
            Err(why) => {
                why_refused = why;
                refused.push(key(w, slot));
            }
        }
    }
    let some_done = !done.is_empty();
    if some_done {
        ack(w, id, "subscribed", channel, Some(done), now);
    }
    if !unknown.is_empty() {
        reply_error(w, id, &unknown_error(&unknown, some_done), now);
    }
    if !refused.is_empty() {
        let max = w.shared.config.max_subscriptions;
        let msg = format!("Not subscribed to {}: {why_refused} ({max} per connection)", refused.join(", "));
        reply_error(w, id, &msg, now);
    }
    Ok(())
}

fn unsubscribe(w: &mut Worker, id: ConnId, v: &BorrowedValue, now: u64) -> Result<(), String> {
    let (channel, symbols) = request(w, v)?;
    if channel != Channel::Prices {
        let (name, _) = named(w, id, channel);
        if let Some(ch) = w.shared.channels.lookup(&name) {
            w.unsubscribe_channel(id, ch);
        }
        if channel == Channel::Portfolio {
            if let Some(Ext::Trading(st)) = w.conn(id).map(|c| &mut c.ext) {
                st.held = None;
            }
        }
        ack(w, id, "unsubscribed", channel, None, now);
        return Ok(());
    }
    let Some(symbols) = symbols else {
        stop_prices(w, id);
        ack(w, id, "unsubscribed", channel, None, now);
        return Ok(());
    };
    if symbols.is_empty() {
        return Err("Invalid message format: `symbols` is empty: name the symbols to stop, or leave `symbols` out to stop every price update".into());
    }
    if receives_all(w, id) {
        return Err("You receive every symbol until you subscribe to price_updates with `symbols`: subscribe to the ones you want, or unsubscribe without `symbols` to stop price updates".into());
    }
    let (found, unknown) = resolve(w, &symbols);
    let (mut done, mut absent) = (Vec::new(), Vec::new());
    for slot in found {
        if w.unsubscribe(id, slot) {
            done.push(key(w, slot));
        } else {
            absent.push(key(w, slot));
        }
    }
    if !done.is_empty() {
        ack(w, id, "unsubscribed", channel, Some(done), now);
    }
    if !unknown.is_empty() {
        reply_error(w, id, &unknown_error(&unknown, false), now);
    }
    if !absent.is_empty() {
        reply_error(w, id, &format!("Not subscribed to {}", absent.join(", ")), now);
    }
    Ok(())
}

/// `{"type":"market_status","market_open":…,"timestamp":…}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    json!({"type": "market_status", "market_open": open, "timestamp": iso(now)}).to_string().into_bytes()
}

/// About every 100 ms: the price batch and the portfolio update when due
/// (intervals are therefore at least that long), a ping frame to an idle
/// client, the slow-consumer mark.
pub(crate) fn housekeeping(w: &mut Worker, id: ConnId, now: u64) {
    let cfg = &w.shared.config.trading;
    let ns = crate::tick::ns;
    let (price_ns, portfolio_ns, ping_ns) =
        (ns(cfg.price_update_interval), ns(cfg.portfolio_update_interval), ns(cfg.ping_interval));
    let limit = w.shared.config.out_buffer_bytes;
    let Some(c) = w.conn(id) else { return };
    let Ext::Trading(st) = &mut c.ext else { return };
    if c.congested {
        return; // held back (conflated) until the client drains
    }
    if now >= st.next_price_ns && !st.changed.is_empty() && flush_prices(w, id, now) {
        if let Some(Ext::Trading(st)) = w.conn(id).map(|c| &mut c.ext) {
            st.next_price_ns = now + price_ns;
        }
    }
    let Some(c) = w.conn(id) else { return };
    let Ext::Trading(st) = &mut c.ext else { return };
    let mut sent = false;
    if now >= st.next_portfolio_ns {
        if let Some(raw) = st.held.take() {
            st.next_portfolio_ns = now + portfolio_ns;
            c.data_frame(&raw, now);
            w.frames += 1;
            sent = true;
        }
    }
    let Some(c) = w.conn(id) else { return };
    if now.saturating_sub(c.last_tx_ns) >= ping_ns && c.is_drained() {
        c.ctrl_frame(frame::OP_PING, b"");
        c.last_tx_ns = now;
        sent = true;
    }
    if c.data_pending() > limit {
        c.congested = true;
        Counters::inc(&w.shared.counters.slow_conflations);
    }
    if sent {
        w.mark_dirty(id);
    }
}

/// Send one `price_update` with the newest value of every changed
/// instrument the client still receives. Returns whether one was sent.
fn flush_prices(w: &mut Worker, id: ConnId, now: u64) -> bool {
    let Some(c) = w.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else { return false };
    let Ext::Trading(st) = &mut c.ext else { return false };
    let all = st.all;
    let mut changed = std::mem::take(&mut st.changed);
    for s in &changed {
        st.changed_bits[s.idx() / 64] &= !(1u64 << (s.idx() % 64));
    }
    let out = &mut w.scratch;
    out.clear();
    let start = frame::begin(out);
    out.extend_from_slice(b"{\"type\":\"price_update\",\"symbols\":{");
    let mut n = 0;
    for &slot in &changed {
        if !all && !w.subs.contains(slot, id) {
            continue; // unsubscribed since it changed
        }
        let Some(t) = w.shared.hub.lvc.load(slot) else { continue };
        if n > 0 {
            out.push(b',');
        }
        trading_symbol(out, &t, w.shared.registry.get(slot));
        n += 1;
    }
    out.extend_from_slice(b"},\"timestamp\":\"");
    write_iso(out, now, 0, true, b"Z\"}");
    let r = frame::finish(out, start, frame::OP_TEXT);
    changed.clear();
    if let Ext::Trading(st) = &mut c.ext {
        st.changed = changed; // keep the capacity
    }
    if n == 0 {
        return false;
    }
    c.data_frame(&w.scratch[r], now);
    w.frames += 1;
    w.mark_dirty(id);
    true
}

/// Send `{"type":"error","error":…,"timestamp":…}`; the connection stays open.
pub(crate) fn reply_error(w: &mut Worker, id: ConnId, msg: &str, now: u64) {
    Counters::inc(&w.shared.counters.bad_requests);
    if let Some(c) = w.conn(id) {
        if c.logged & crate::worker::conn::logged::BAD_REQUEST == 0 {
            c.logged |= crate::worker::conn::logged::BAD_REQUEST;
            log::info!("client {}: {msg}", c.client_id);
        }
    }
    let v = json!({"type": "error", "error": msg, "timestamp": iso(now)});
    w.reply(id, v.to_string().as_bytes(), now);
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
