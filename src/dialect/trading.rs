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

use serde_json::json;
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, ChanKind, Dialect, Host};
use crate::encode::dialects::{iso_json, trading_symbol, write_iso};
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
    host.set_client_id(client_id.clone(), req.param("client_id").is_some());
    let mut st = State::default();
    let hello = json!({"type": "connected", "client_id": client_id, "market_open": host.market_open(), "timestamp": iso_json(now)});
    super::reply_json(host, &hello, now);
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
    v["timestamp"] = iso_json(now);
    super::reply_json(host, &v, now);
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
        let why = crate::demand::reason(why_refused, host.config().max_subscriptions);
        let msg = format!("Not subscribed to {}: {why}", refused.join(", "));
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
    json!({"type": "market_status", "market_open": open, "timestamp": iso_json(now)}).to_string().into_bytes()
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
        host.ping(b"", now);
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
    let v = json!({"type": "error", "error": msg, "timestamp": iso_json(now)});
    super::reply_json(host, &v, now);
}

#[cfg(test)]
mod tests {
    use super::super::pair::{did, too_deep, Action, Did, Pair};
    use super::*;
    use crate::auth::User;
    use crate::encode::dialects::iso_string;
    use crate::session::SavedSub;
    use serde_json::Value;

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

    /// `text` as a complete text frame (what a held channel holds).
    fn framed(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let start = frame::begin(&mut out);
        out.extend_from_slice(text.as_bytes());
        let r = frame::finish(&mut out, start, frame::OP_TEXT);
        out[r].to_vec()
    }

    /// A test host with the anonymous user (as the server has without an
    /// auth file), not yet opened.
    fn pair() -> Pair {
        let mut p = Pair::new();
        p.user = Some(User::anonymous());
        p
    }

    /// Opened at `/ws`, the greeting and MVP streams taken.
    fn connected() -> Pair {
        let mut p = pair();
        p.open("/ws", Dialect::Trading).unwrap();
        p.take();
        p
    }

    fn ts(p: &Pair) -> Value {
        json!(iso_string(p.now))
    }

    fn reliance(p: &mut Pair) {
        // The module example's entry: a quote with OHLC from the feed.
        let mut t = p.value(2885, 1, 285_050);
        t.close = 284_500;
        t.open = 282_000;
        t.high = 286_000;
        t.low = 281_500;
        t.volume = 1_500_000;
        t.flags = crate::tick::FLAG_OHLC;
        p.values.insert(p.slot(2885), t);
    }

    /// Opened at `/ws` (greeting and streams taken) with last values for
    /// RELIANCE (the module example) and TCS (4123.45).
    fn priced() -> Pair {
        let mut p = pair();
        reliance(&mut p);
        p.value(11536, 1, 412_345);
        p.open("/ws", Dialect::Trading).unwrap();
        p.take();
        p
    }

    /// The module example's RELIANCE entry (seed shape, with OHLC).
    fn reliance_entry() -> Value {
        json!({"price":2850.5,"change":5.5,"change_pct":0.19,"volume":1500000,"high":2860.0,"low":2815.0,"open":2820.0,"close":2850.5})
    }

    /// The seed's session: connect with a client id, ping, subscribe to
    /// price updates, unsubscribe.
    #[test]
    fn seed_session() {
        let mut p = pair();
        p.open("/ws?client_id=my-client-id", Dialect::Trading).unwrap();
        let t = json!("2026-01-05T03:45:00.000Z");
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Accept(Dialect::Trading)),
                Did::Reply(json!({"type":"connected","client_id":"my-client-id","market_open":true,"timestamp":t})),
                // The seed's MVP: every client gets every stream.
                Did::Act(Action::Join("signals".into(), ChanKind::Raw)),
                Did::Act(Action::Join("trades".into(), ChanKind::Raw)),
                Did::Act(Action::Join("private:anonymous:portfolio".into(), ChanKind::Held)),
                Did::Act(Action::WatchAll(true)),
            ]
        );
        assert_eq!(p.client_id, "my-client-id");

        p.send("{\n  \"type\": \"ping\"\n}");
        assert_eq!(did(p.take()), [Did::Reply(json!({"type": "pong"}))]);

        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        p.send(r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","TCS"]}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::WatchAll(false)),
                Did::Act(Action::Subscribe(rel, BATCHED, Delivery::Conflate)),
                Did::Act(Action::Subscribe(tcs, BATCHED, Delivery::Conflate)),
                Did::Reply(
                    json!({"type":"subscribed","channel":"price_updates","symbols":["RELIANCE","TCS"],"timestamp":t})
                ),
            ]
        );

        p.send("{\n  \"type\": \"unsubscribe\",\n  \"channel\": \"price_updates\",\n  \"symbols\": [\"TCS\"]\n}");
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Unsubscribe(tcs)),
                Did::Reply(json!({"type":"unsubscribed","channel":"price_updates","symbols":["TCS"],"timestamp":t})),
            ]
        );
        assert_eq!(p.slots, [rel]);
        assert!(p.open);
    }

    /// The seed's own examples name US symbols the master lacks: an error
    /// naming them, and the client keeps receiving everything.
    #[test]
    fn seed_examples_with_symbols_not_in_the_master() {
        let mut p = connected();
        p.send(
            "{\n  \"type\": \"subscribe\",\n  \"channel\": \"price_updates\",\n  \"symbols\": [\"AAPL\", \"MSFT\"]\n}",
        );
        let msg = "Unknown symbols: AAPL, MSFT (not in the instrument master; use a symbol such as RELIANCE, EXCHANGE:SYMBOL or an ISIN)";
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::BadRequest(msg.into())),
                Did::Reply(json!({"type":"error","error":msg,"timestamp":ts(&p)}))
            ]
        );
        assert!(p.slots.is_empty());
        // Still watching everything: a tick goes out in the next batch.
        p.value(11536, 1, 412_345);
        p.changed = vec![p.slot(11536)];
        p.advance(100);
        assert_eq!(
            did(p.take()),
            [Did::Data(
                json!({"type":"price_update","symbols":{"TCS":{"price":4123.45,"change":0.0,"change_pct":0.0,"volume":0}},"timestamp":ts(&p)})
            )]
        );
        assert!(p.open);
    }

    /// Watch-all before the first subscribe: one `price_update` per
    /// interval (3 s by default) with the newest value of everything that
    /// changed; nothing when nothing changed; a change after a quiet spell
    /// goes out at the next pass.
    #[test]
    fn price_updates_are_batched_on_the_interval() {
        let mut p = priced();
        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        assert_eq!(p.changed, [rel.min(tcs), rel.max(tcs)], "watch-all starts with every last value");

        p.advance(100);
        let Did::Data(batch) = &did(p.take())[0] else { panic!("no batch") };
        assert_eq!(
            *batch,
            json!({
                "type": "price_update",
                "symbols": {
                    "RELIANCE": reliance_entry(),
                    "TCS": {"price": 4123.45, "change": 0.0, "change_pct": 0.0, "volume": 0}
                },
                "timestamp": "2026-01-05T03:45:00.100Z"
            })
        );
        assert!(p.changed.is_empty());

        // TCS ticks twice before the next batch: its newest value, once.
        p.value(11536, 8, 412_400);
        p.value(11536, 9, 412_500);
        p.changed = vec![tcs];
        p.advance(2_999);
        assert_eq!(p.take(), [], "the interval is 3 s");
        assert_eq!(p.changed, [tcs], "not taken before it is due");
        p.advance(1);
        assert_eq!(
            did(p.take()),
            [Did::Data(
                json!({"type":"price_update","symbols":{"TCS":{"price":4125.0,"change":0.0,"change_pct":0.0,"volume":0}},"timestamp":"2026-01-05T03:45:03.100Z"})
            )]
        );

        // Nothing changed: nothing sent, however long.
        p.advance(5_000);
        p.advance(5_000);
        assert_eq!(p.take(), []);
        // Then a change goes out at the next pass (the interval long passed).
        p.value(2885, 2, 285_100);
        p.changed = vec![rel];
        p.advance(100);
        let acts = did(p.take());
        assert!(matches!(&acts[..], [Did::Data(v)] if v["symbols"]["RELIANCE"]["price"] == json!(2851.0)), "{acts:?}");
    }

    /// After the first subscribe only the chosen symbols are batched; one
    /// unsubscribed since it changed is left out, and a batch of nothing is
    /// not sent (nor does it start the interval).
    #[test]
    fn subscribed_symbols_only() {
        let mut p = priced();
        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        p.send(r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","TCS"]}"#);
        assert!(p.changed.is_empty(), "watch-all's pending changes are dropped");
        p.send(r#"{"type":"unsubscribe","channel":"price_updates","symbols":["TCS"]}"#);
        p.take();
        p.changed = vec![tcs];
        p.advance(100);
        assert_eq!(p.take(), [], "TCS was unsubscribed");
        p.changed = vec![rel, tcs];
        p.advance(100);
        assert_eq!(
            did(p.take()),
            [Did::Data(json!({"type":"price_update","symbols":{"RELIANCE":reliance_entry()},"timestamp":ts(&p)}))]
        );
    }

    /// `unsubscribe` from `price_updates` without `symbols` stops every
    /// price update, watch-all and symbols alike.
    #[test]
    fn unsubscribe_without_symbols_stops_prices() {
        let mut p = connected();
        p.send(r#"{"type":"unsubscribe","channel":"price_updates"}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::WatchAll(false)),
                Did::Reply(json!({"type":"unsubscribed","channel":"price_updates","timestamp":ts(&p)})),
            ]
        );

        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        // Not watching everything any more: nothing to stop.
        p.send(r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","TCS","RELIANCE"]}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, BATCHED, Delivery::Conflate)),
                Did::Act(Action::Subscribe(tcs, BATCHED, Delivery::Conflate)),
                Did::Reply(
                    json!({"type":"subscribed","channel":"price_updates","symbols":["RELIANCE","TCS"],"timestamp":ts(&p)})
                ),
            ],
            "a repeat is subscribed once"
        );
        p.send(r#"{"type":"unsubscribe","channel":"price_updates"}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::WatchAll(false)),
                Did::Act(Action::Unsubscribe(rel)),
                Did::Act(Action::Unsubscribe(tcs)),
                Did::Reply(json!({"type":"unsubscribed","channel":"price_updates","timestamp":ts(&p)})),
            ]
        );
        reliance(&mut p);
        p.changed = vec![rel];
        p.advance(100);
        assert_eq!(p.take(), []);
    }

    /// Signals, trades and the portfolio: joined at open, left and joined
    /// again on request (`symbols` does not filter them).
    #[test]
    fn named_channels() {
        let mut p = connected();
        for (name, channel, kind) in [
            ("signals", "signals", ChanKind::Raw),
            ("trades", "trades", ChanKind::Raw),
            ("private:anonymous:portfolio", "portfolio", ChanKind::Held),
        ] {
            let ch = p.channels.lookup(name).expect("joined at open");
            p.send(&json!({"type":"unsubscribe","channel":channel}).to_string());
            assert_eq!(
                did(p.take()),
                [
                    Did::Act(Action::Leave(ch)),
                    Did::Reply(json!({"type":"unsubscribed","channel":channel,"timestamp":ts(&p)})),
                ]
            );
            p.send(&json!({"type":"subscribe","channel":channel,"symbols":["RELIANCE"]}).to_string());
            assert_eq!(
                did(p.take()),
                [
                    Did::Act(Action::Join(name.into(), kind)),
                    Did::Reply(json!({"type":"subscribed","channel":channel,"timestamp":ts(&p)})),
                ]
            );
            // Again: already in, still acknowledged.
            p.send(&json!({"type":"subscribe","channel":channel}).to_string());
            assert_eq!(did(p.take()), [Did::Reply(json!({"type":"subscribed","channel":channel,"timestamp":ts(&p)}))]);
        }
        assert!(p.slots.is_empty(), "symbols of a named channel subscribe no prices");
    }

    /// Portfolio updates are held and sent on their own schedule (5 s by
    /// default): verbatim, the newest only.
    #[test]
    fn portfolio_updates_on_their_interval() {
        let seed = r#"{"type":"portfolio_update","channel":"portfolio","timestamp":"2024-12-19T12:00:00Z","data":{"positions":{"AAPL":{"symbol":"AAPL","quantity":10,"average_price":150.25,"market_price":151.50,"unrealized_pnl":12.50,"unrealized_pnl_pct":0.83}},"total_pnl":12.50,"position_count":1}}"#;
        let mut p = connected();
        p.held = Some(framed(seed).into());
        p.advance(100);
        assert_eq!(p.take(), [Action::Data(framed(seed))], "relayed verbatim");
        assert!(p.held.is_none());

        let (a, b) = (seed.replace("12.50", "13.00"), seed.replace("12.50", "14.00"));
        p.held = Some(framed(&a).into());
        p.advance(4_999);
        assert_eq!(p.take(), [], "the interval is 5 s");
        p.held = Some(framed(&b).into()); // the worker keeps the newest only
        p.advance(1);
        assert_eq!(p.take(), [Action::Data(framed(&b))]);

        // Nothing held: nothing sent; the next one goes at the next pass.
        p.advance(6_000);
        assert_eq!(p.take(), []);
        p.held = Some(framed(&a).into());
        p.advance(100);
        assert_eq!(p.take(), [Action::Data(framed(&a))]);

        // Leaving the portfolio drops what is held.
        p.held = Some(framed(seed).into());
        p.send(r#"{"type":"unsubscribe","channel":"portfolio"}"#);
        assert!(p.held.is_none());
        p.take();
        p.advance(10_000);
        assert_eq!(p.take(), []);
    }

    /// A ping frame to a client idle for `WEBSOCKET_PING_INTERVAL` (30 s)
    /// whose queue is written; no pong timeout (the seed has none).
    #[test]
    fn pings_when_idle() {
        let mut p = connected();
        assert_eq!(p.due_in(30_000), [Action::Ping]);
        // Anything sent restarts the idle time.
        p.advance(20_000);
        p.send(r#"{"type":"ping"}"#);
        assert_eq!(did(p.take()), [Did::Reply(json!({"type":"pong"}))]);
        assert_eq!(p.due_in(30_000), [Action::Ping]);
        // Not while the queue is not written.
        p.drained = false;
        p.advance(60_000);
        assert_eq!(p.take(), []);
        p.drained = true;
        // Never a pong: pings go on, the connection stays.
        assert_eq!(p.last_pong_ns, 0);
        for _ in 0..20 {
            p.advance(30_000);
            assert_eq!(p.take(), [Action::Ping]);
        }
        assert!(p.open);
    }

    /// A congested client gets nothing (no batch, no portfolio, no ping)
    /// until it drains, then the newest values.
    #[test]
    fn congested_client_is_held_back() {
        let mut p = connected();
        p.congested = true;
        p.value(11536, 1, 412_345);
        p.value(11536, 2, 412_500);
        p.changed = vec![p.slot(11536)];
        p.held = Some(framed(r#"{"type":"portfolio_update"}"#).into());
        p.advance(60_000);
        assert_eq!(p.take(), []);
        p.congested = false;
        p.advance(100);
        assert_eq!(
            did(p.take()),
            [
                Did::Data(
                    json!({"type":"price_update","symbols":{"TCS":{"price":4125.0,"change":0.0,"change_pct":0.0,"volume":0}},"timestamp":ts(&p)})
                ),
                Did::Data(json!({"type":"portfolio_update"})),
            ]
        );
    }

    /// A reconnect with the same client id gets its symbols back instead
    /// of everything; tokens no longer in the master are skipped.
    #[test]
    fn restores_a_session() {
        let saved = |token| SavedSub { token, mode: Mode::Quote, delivery: Delivery::Conflate };
        let mut p = pair();
        let rel = p.slot(2885);
        p.saved = Some(vec![saved(2885), saved(999_999_999)]);
        p.open("/ws?client_id=a", Dialect::Trading).unwrap();
        let acts = p.take();
        assert_eq!(acts[acts.len() - 1], Action::Subscribe(rel, BATCHED, Delivery::Conflate));
        assert!(!acts.contains(&Action::WatchAll(true)), "{acts:?}");
        assert_eq!(p.slots, [rel]);
        // Symbols, not everything: unsubscribing one works.
        p.send(r#"{"type":"unsubscribe","channel":"price_updates","symbols":["RELIANCE"]}"#);
        assert_eq!(p.take()[0], Action::Unsubscribe(rel));

        // Nothing restorable: everything, as a new client.
        let mut p = pair();
        p.saved = Some(vec![saved(999_999_999)]);
        p.open("/ws?client_id=a", Dialect::Trading).unwrap();
        assert_eq!(p.take().last(), Some(&Action::WatchAll(true)));
        assert!(p.slots.is_empty());
    }

    /// Without a client id one is generated (a UUID, as the seed says) and
    /// told in the greeting; a bad one refuses the upgrade.
    #[test]
    fn client_ids() {
        let mut p = pair();
        p.open("/ws", Dialect::Trading).unwrap();
        let hello = &p.replies()[0];
        assert_eq!(hello["client_id"], json!(p.client_id));
        assert_eq!(p.client_id.len(), 36, "{}", p.client_id);
        for bad in ["/ws?client_id=", &format!("/ws?client_id={}", "x".repeat(129)), "/ws?client_id=a%0Ab"] {
            let mut p = pair();
            let (status, err) = p.open(bad, Dialect::Trading).unwrap_err();
            assert_eq!(status, 400);
            assert!(err.contains("client_id must be"), "{bad}: {err}");
            assert_eq!(p.take(), [], "{bad}: not accepted");
        }
    }

    /// The market opening or closing is announced; the greeting says which.
    #[test]
    fn market_status_notices() {
        let mut p = pair();
        p.market_open = false;
        p.open("/ws?client_id=c", Dialect::Trading).unwrap();
        assert_eq!(p.replies()[0]["market_open"], json!(false));
        for open in [true, false] {
            let v: Value = serde_json::from_slice(&market_status(open, p.now)).unwrap();
            assert_eq!(v, json!({"type":"market_status","market_open":open,"timestamp":"2026-01-05T03:45:00.000Z"}));
        }
    }

    /// Every bad request: an error (the seed's shape), counted, the
    /// connection open, nothing subscribed or dropped.
    #[test]
    fn bad_requests() {
        let deep = too_deep();
        let many = json!({"type":"subscribe","channel":"price_updates","symbols":vec!["X"; 3001]}).to_string();
        let cases: [(&str, &str); 20] = [
            ("not json", "Invalid message format: malformed JSON"),
            (&deep, "Invalid message format: JSON nested deeper than"),
            ("[1,2]", "Invalid message format: expected a JSON object with a `type` (ping, subscribe or unsubscribe)"),
            ("\"ping\"", "Invalid message format: expected a JSON object"),
            ("{}", "Invalid message format: missing field `type` (ping, subscribe or unsubscribe)"),
            (r#"{"type":1}"#, "Invalid message format: field `type` must be a string"),
            (r#"{"type":"dance"}"#, "Unknown message type `dance` (expected ping, subscribe or unsubscribe)"),
            (r#"{"type":"PING"}"#, "Unknown message type `PING`"),
            (r#"{"type":"subscribe"}"#, "Invalid message format: missing field `channel`"),
            (r#"{"type":"subscribe","channel":5}"#, "Invalid message format: field `channel` must be a string"),
            (
                r#"{"type":"subscribe","channel":"news"}"#,
                "Unknown channel `news` (expected price_updates, signals, trades or portfolio)",
            ),
            (
                r#"{"type":"unsubscribe","channel":"price_updates|signals|trades|portfolio"}"#,
                "Unknown channel `price_updates|signals|trades|portfolio`",
            ),
            (r#"{"type":"subscribe","channel":"price_updates"}"#, "subscribing to price_updates needs `symbols`"),
            (r#"{"type":"subscribe","channel":"price_updates","symbols":[]}"#, "needs `symbols`, a non-empty array"),
            (
                r#"{"type":"subscribe","channel":"price_updates","symbols":"RELIANCE"}"#,
                "must be an array of symbol strings",
            ),
            (r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE",1]}"#, "array of symbol strings"),
            (r#"{"type":"subscribe","channel":"signals","symbols":{}}"#, "array of symbol strings"),
            (&many, "3001 symbols in one request; at most 3000"),
            (r#"{"type":"unsubscribe","channel":"price_updates","symbols":[]}"#, "`symbols` is empty"),
            (
                r#"{"type":"unsubscribe","channel":"price_updates","symbols":["RELIANCE"]}"#,
                "You receive every symbol until you subscribe to price_updates with `symbols`",
            ),
        ];
        for (request, want) in cases {
            let mut p = connected();
            let (msg, reply) = p.refuse(request);
            assert!(msg.contains(want), "{request}: {msg}");
            assert_eq!(reply, json!({"type":"error","error":msg,"timestamp":ts(&p)}), "{request}");
            assert!(p.open, "{request} closed the connection");
            assert!(p.slots.is_empty() && p.channel_ids.len() == 3, "{request} changed subscriptions");
        }
    }

    /// Errors that depend on what is subscribed: unknown symbols beside
    /// known ones, symbols not subscribed, the subscription limit, a
    /// channel that cannot be joined, a binary message.
    #[test]
    fn errors_in_context() {
        let unknown = |names: &str, rest: &str| {
            format!("Unknown symbols: {names} (not in the instrument master; use a symbol such as RELIANCE, EXCHANGE:SYMBOL or an ISIN){rest}")
        };
        let mut p = connected();
        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        // Known and unknown: the known ones subscribed, the rest an error.
        p.send(r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","AAPL"]}"#);
        let msg = unknown("AAPL", "; the others were subscribed");
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::WatchAll(false)),
                Did::Act(Action::Subscribe(rel, BATCHED, Delivery::Conflate)),
                Did::Reply(
                    json!({"type":"subscribed","channel":"price_updates","symbols":["RELIANCE"],"timestamp":ts(&p)})
                ),
                Did::Act(Action::BadRequest(msg.clone())),
                Did::Reply(json!({"type":"error","error":msg,"timestamp":ts(&p)})),
            ]
        );
        // The seed's unsubscribe example, AAPL, and TCS, never subscribed.
        p.send(r#"{"type":"unsubscribe","channel":"price_updates","symbols":["AAPL","TCS"]}"#);
        let (e1, e2) = (unknown("AAPL", ""), "Not subscribed to TCS".to_string());
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::BadRequest(e1.clone())),
                Did::Reply(json!({"type":"error","error":e1,"timestamp":ts(&p)})),
                Did::Act(Action::BadRequest(e2.clone())),
                Did::Reply(json!({"type":"error","error":e2,"timestamp":ts(&p)})),
            ]
        );
        // Past 20 unknown names the rest are counted; long names clipped.
        let mut names: Vec<String> = (0..25).map(|i| format!("NOPE{i}")).collect();
        names[0] = "Z".repeat(100);
        p.send(&json!({"type":"subscribe","channel":"price_updates","symbols":names}).to_string());
        let r = &p.replies()[0];
        let e = r["error"].as_str().unwrap();
        assert!(e.starts_with(&format!("Unknown symbols: {}, NOPE1, ", "Z".repeat(64))), "{e}");
        assert!(e.contains("NOPE19, and 5 more (not in"), "{e}");
        assert!(!e.contains("NOPE20"), "{e}");
        assert_eq!(p.slots, [rel]);

        // The subscription limit (instruments and channels together).
        p.config.max_subscriptions = 4; // 3 channels + RELIANCE
        p.send(r#"{"type":"subscribe","channel":"price_updates","symbols":["RELIANCE","TCS"]}"#);
        let msg = "Not subscribed to TCS: subscription limit reached (4 per connection)";
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, BATCHED, Delivery::Conflate)),
                Did::Reply(
                    json!({"type":"subscribed","channel":"price_updates","symbols":["RELIANCE"],"timestamp":ts(&p)})
                ),
                Did::Act(Action::BadRequest(msg.into())),
                Did::Reply(json!({"type":"error","error":msg,"timestamp":ts(&p)})),
            ]
        );
        assert!(!p.slots.contains(&tcs));

        // Binary messages are refused in the dialect's terms.
        p.send_binary();
        let msg = "binary messages are not accepted; send requests as JSON text frames";
        assert_eq!(p.refusal(), (msg.into(), json!({"type":"error","error":msg,"timestamp":ts(&p)})));
        assert!(p.open);

        // No room for the portfolio channel: said at open and on request.
        let mut p = pair();
        p.channels = crate::channel::Channels::new(2);
        p.open("/ws", Dialect::Trading).unwrap();
        let msg = "Not subscribed to portfolio: channel limit reached";
        let acts = did(p.take());
        assert_eq!(
            acts[4..],
            [
                Did::Act(Action::BadRequest(msg.into())),
                Did::Reply(json!({"type":"error","error":msg,"timestamp":ts(&p)})),
                Did::Act(Action::WatchAll(true)),
            ]
        );
        p.send(r#"{"type":"subscribe","channel":"portfolio"}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::BadRequest(msg.into())),
                Did::Reply(json!({"type":"error","error":msg,"timestamp":ts(&p)}))
            ]
        );
        assert!(p.open);
    }
}
