//! Exchange streams (seed `004_…`): a Binance-style stream server at `/` on
//! the main port. Clients name streams `<type>@<market>` and the server
//! answers requests the way Binance market streams do:
//!
//! ```json
//! {"method":"SUBSCRIBE","params":["trade@TATA_INR","depth@TATA_INR"],"id":1}
//! {"result":null,"id":1}
//! {"method":"LIST_SUBSCRIPTIONS","id":3}
//! {"result":["trade@TATA_INR","depth@TATA_INR"],"id":3}
//! {"method":"SUBSCRIBE","params":["kline@TATA_INR"],"id":4}
//! {"error":{"code":2,"msg":"Invalid request: unknown stream type `kline` in `kline@TATA_INR` (expected trade, ticker or depth)"},"id":4}
//! {"stream":"trade@TATA_INR","data":{"e":"trade","t":12345,"m":false,"p":"1000.50","q":"10","s":"TATA_INR"}}
//! ```
//!
//! Where a stream's data comes from depends on its market:
//! - a market in the instrument master (`RELIANCE`, `nse:reliance`, an
//!   ISIN; canonical name `RELIANCE`, or `BSE:RELIANCE` off NSE) is derived
//!   from that instrument's ticks. A connection holds one subscription per
//!   instrument whose `Format::Exchange` bits are the union of its streams
//!   (`trade@X` + `depth@X` = one subscription, one frame set per tick,
//!   one unit of `--max-subscriptions`);
//! - any other market is the named channel of the same name, relayed
//!   verbatim (`ChanKind::Raw`): the seed's trading engine publishes the
//!   whole `{"stream":…,"data":…}` message on the Redis channel
//!   `trade@TATA_INR`, which `--feed redis://…` consumes, as does the
//!   publish port (`--publish-listen`).
//!
//! Errors never close the connection. Error codes are Binance's: 2 an
//! invalid request (wrong types, unknown method, bad stream names, limits),
//! 3 a message that is not JSON (or a binary frame). A request is checked
//! as a whole (names, the per-connection limit) before anything changes,
//! so such a refused `SUBSCRIBE` subscribes nothing; a limit only the
//! server can find mid-way (the channel table full, the user's own limit)
//! keeps the streams before it, and the error says which one failed. Idle connections get a WebSocket ping every `--heartbeat-ms`
//! (answered by every client library, invisible to applications); market
//! open/close is not announced (Binance-style clients have no such message).

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, ChanKind, Host};
use crate::encode::dialects::stream::{DEPTH, TICKER, TRADE};
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::tick::Mode;
use crate::ws::handshake::Request;

/// Binance error codes of market-stream requests.
mod code {
    /// `Invalid request: …`: wrong types, unknown method, bad stream names.
    pub const INVALID_REQUEST: u16 = 2;
    /// `Invalid JSON: …`: the message does not parse (or is binary).
    pub const INVALID_JSON: u16 = 3;
}

/// The methods a client may send, for error messages.
const METHODS: &str = "SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS";

/// The stream types, for error messages.
const TYPES: &str = "trade, ticker or depth";

/// Stream types by bit, in the order `LIST_SUBSCRIPTIONS` lists them.
const STREAMS: [(u8, &str); 3] = [(TRADE, "trade"), (TICKER, "ticker"), (DEPTH, "depth")];

/// A refused request: `{"error":{"code":…,"msg":…},"id":…}`.
struct Refusal(u16, String);

fn invalid(msg: impl std::fmt::Display) -> Refusal {
    Refusal(code::INVALID_REQUEST, format!("Invalid request: {msg}"))
}

/// Accept the upgrade. The seed's server sends nothing on connect, and
/// neither does this one: the first frame a client sees answers its first
/// request.
///
/// # Errors
/// None of its own (no query parameters); the host's refusal.
pub(crate) fn open(host: &mut dyn Host, req: &Request, _now: u64) -> Result<(), String> {
    host.accept(req, super::Dialect::Exchange)
}

/// Handle one text message (a request).
pub(crate) fn handle(host: &mut dyn Host, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(e) => return error(host, Value::Null, code::INVALID_JSON, &format!("Invalid JSON: {e}"), now),
    };
    if v.as_object().is_none() {
        let msg = format!("Invalid request: a request is a JSON object with a `method` ({METHODS})");
        return error(host, Value::Null, code::INVALID_REQUEST, &msg, now);
    }
    let req_id = match request_id(&v) {
        Ok(i) => i,
        Err(Refusal(code, msg)) => return error(host, Value::Null, code, &msg, now),
    };
    if let Err(Refusal(code, msg)) = dispatch(host, &v, &req_id, now) {
        error(host, req_id, code, &msg, now);
    }
}

/// The request's `id` (an integer, a string or null; null when absent), echoed in the reply.
fn request_id(v: &BorrowedValue) -> Result<Value, Refusal> {
    match v.get("id") {
        None => Ok(Value::Null),
        Some(i) => {
            if let Some(n) = i.as_u64() {
                Ok(json!(n))
            } else if let Some(n) = i.as_i64() {
                Ok(json!(n))
            } else if let Some(s) = i.as_str() {
                Ok(json!(s))
            } else if i.is_null() {
                Ok(Value::Null)
            } else {
                Err(invalid("request ID must be an integer, a string or null"))
            }
        }
    }
}

fn dispatch(host: &mut dyn Host, v: &BorrowedValue, req_id: &Value, now: u64) -> Result<(), Refusal> {
    let method = match v.get("method") {
        None => return Err(invalid(format!("missing field `method` (one of {METHODS})"))),
        Some(m) => m.as_str().ok_or_else(|| invalid("field `method` must be a string"))?,
    };
    // Binance spells methods in capitals; any case is accepted.
    if method.eq_ignore_ascii_case("SUBSCRIBE") {
        let streams = streams(host, v)?;
        subscribe(host, &streams, now)?;
        super::reply_json(host, &json!({"result": null, "id": req_id}), now);
    } else if method.eq_ignore_ascii_case("UNSUBSCRIBE") {
        let streams = streams(host, v)?;
        unsubscribe(host, &streams, now);
        super::reply_json(host, &json!({"result": null, "id": req_id}), now);
    } else if method.eq_ignore_ascii_case("LIST_SUBSCRIPTIONS") {
        let list = list(host);
        super::reply_json(host, &json!({"result": list, "id": req_id}), now);
    } else {
        return Err(invalid(format!("unknown method `{}` (expected one of {METHODS})", clip(method))));
    }
    Ok(())
}

/// One stream a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stream {
    /// Derived from an instrument's ticks: its slot and stream bit.
    Ticks(Slot, u8),
    /// Relayed from the named channel (`trade@TATA_INR`).
    Channel(String),
}

/// The request's `params`, parsed; any bad name refuses the whole request.
fn streams(host: &dyn Host, v: &BorrowedValue) -> Result<Vec<Stream>, Refusal> {
    const SHAPE: &str = "field `params` must be an array of stream names like \"trade@RELIANCE\"";
    let params = v
        .get("params")
        .ok_or_else(|| invalid("missing field `params` (an array of stream names like \"trade@RELIANCE\")"))?;
    let arr = params.as_array().ok_or_else(|| invalid(SHAPE))?;
    // One request cannot stall a worker: the per-connection limit bounds
    // what can succeed anyway.
    let max = host.config().max_subscriptions.max(1000);
    if arr.len() > max {
        return Err(invalid(format!("too many parameters ({}; at most {max})", arr.len())));
    }
    let has_channels = host.has_channel_source();
    arr.iter()
        .map(|p| {
            let name = p.as_str().ok_or_else(|| invalid(SHAPE))?;
            parse_stream(host.registry(), name, has_channels).map_err(invalid)
        })
        .collect()
}

/// Parse `<type>@<market>`. A market in the master names an instrument;
/// anything else names a channel, which needs a channel source
/// (`has_channels`) and a valid channel name.
fn parse_stream(reg: &crate::instrument::Registry, name: &str, has_channels: bool) -> Result<Stream, String> {
    let Some((kind, market)) = name.split_once('@') else {
        return Err(format!("stream `{}` is not `<type>@<market>` (type {TYPES})", clip(name)));
    };
    let Some(&(bit, kind)) = STREAMS.iter().find(|(_, k)| k.eq_ignore_ascii_case(kind)) else {
        return Err(format!("unknown stream type `{}` in `{}` (expected {TYPES})", clip(kind), clip(name)));
    };
    if market.is_empty() {
        return Err(format!("stream `{}` names no market", clip(name)));
    }
    if let Some(slot) = reg.slot_of_symbol(market) {
        return Ok(Stream::Ticks(slot, bit));
    }
    if !has_channels {
        return Err(format!(
            "unknown market `{}` in `{}`: not in the instrument master, and no channel source (--feed redis://…, --publish-listen) is configured",
            clip(market),
            clip(name)
        ));
    }
    // The type in lower case (as published), the market verbatim: channel
    // names are case-sensitive, like the Redis channels they come from.
    let channel = format!("{kind}@{market}");
    if !crate::channel::valid_name(&channel) {
        return Err(format!(
            "unknown market `{}` in `{}`: not in the instrument master, and not a channel name ({})",
            clip(market),
            clip(name),
            crate::channel::ChannelError::BadName.message()
        ));
    }
    Ok(Stream::Channel(channel))
}

/// The exchange stream bits `id` holds on `slot` (0: none).
fn bits(host: &dyn Host, slot: Slot) -> u8 {
    match host.subscription(slot).map(|(enc, _)| enc.format) {
        Some(Format::Exchange(b)) => b,
        _ => 0,
    }
}

/// The encoding of a stream set (the mode only labels saved sessions and
/// logs: the exchange encoder writes whatever the bits ask for).
fn encoding(bits: u8) -> Encoding {
    let mode = if bits & DEPTH != 0 { Mode::Depth } else { Mode::Quote };
    Encoding { format: Format::Exchange(bits), mode }
}

/// Per instrument, the union of the request's bits; channel names
/// deduplicated; both in order of first appearance (`LIST_SUBSCRIPTIONS`
/// lists streams in the order they were subscribed).
fn fold(streams: &[Stream]) -> (Vec<(Slot, u8)>, Vec<&str>) {
    let (mut slots, mut channels): (Vec<(Slot, u8)>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut at: rustc_hash::FxHashMap<Slot, usize> = Default::default();
    let mut seen: rustc_hash::FxHashSet<&str> = Default::default();
    for s in streams {
        match s {
            Stream::Ticks(slot, bit) => match at.entry(*slot) {
                std::collections::hash_map::Entry::Occupied(e) => slots[*e.get()].1 |= bit,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(slots.len());
                    slots.push((*slot, *bit));
                }
            },
            Stream::Channel(name) => {
                if seen.insert(name) {
                    channels.push(name);
                }
            }
        }
    }
    (slots, channels)
}

fn subscribe(host: &mut dyn Host, streams: &[Stream], now: u64) -> Result<(), Refusal> {
    let (slots, channels) = fold(streams);
    // Check the per-connection limit for the whole request first, so a
    // refusal leaves the subscriptions as they were.
    let limit = host.config().max_subscriptions;
    let new_slots = slots.iter().filter(|&&(s, _)| host.subscription(s).is_none()).count();
    let held = host.slots().len() + host.channel_ids().len();
    let held_channels: rustc_hash::FxHashSet<_> = host.channel_ids().iter().copied().collect();
    let new_channels =
        channels.iter().filter(|n| host.channels().lookup(n).is_none_or(|ch| !held_channels.contains(&ch))).count();
    if held + new_slots + new_channels > limit {
        return Err(invalid(format!(
            "subscription limit reached: at most {limit} markets and channels per connection ({held} held, this request adds {})",
            new_slots + new_channels
        )));
    }
    for (slot, add) in slots {
        let cur = bits(host, slot);
        if cur | add == cur {
            continue;
        }
        let delivery = host.subscription(slot).map_or(host.default_delivery(), |(_, d)| d);
        // Only the per-user limit can still refuse (checked at subscribe).
        host.subscribe(slot, encoding(cur | add), delivery, now)
            .map_err(|why| invalid(format!("{why}; streams before this market were subscribed")))?;
        if cur != 0 {
            snapshot_added(host, slot, add & !cur, now);
        }
    }
    for name in channels {
        host.join_channel(name, ChanKind::Raw)
            .map_err(|why| invalid(format!("stream `{name}`: {why}; streams before it were subscribed")))?;
    }
    Ok(())
}

/// The cached last value in the streams just added to an existing
/// subscription (a new subscription gets its snapshot from
/// `Host::subscribe`). A tick still in the worker's ring may then bring
/// those streams a value one tick older, right before the newest again:
/// the alternative, skipping ring ticks, would lose trades of the streams
/// already held.
fn snapshot_added(host: &mut dyn Host, slot: Slot, added: u8, now: u64) {
    host.snapshot(slot, encoding(added), now);
}

/// Remove the named streams; ones not subscribed are ignored (as Binance does).
fn unsubscribe(host: &mut dyn Host, streams: &[Stream], now: u64) {
    let (slots, channels) = fold(streams);
    for (slot, remove) in slots {
        let cur = bits(host, slot);
        let rest = cur & !remove;
        if rest == cur {
            continue;
        }
        if rest == 0 {
            host.unsubscribe(slot);
        } else {
            let delivery = host.subscription(slot).map_or(host.default_delivery(), |(_, d)| d);
            // An update in place: no limit applies.
            let _ = host.subscribe(slot, encoding(rest), delivery, now);
        }
    }
    for name in channels {
        if let Some(ch) = host.channels().lookup(name) {
            host.leave_channel(ch);
        }
    }
}

/// Canonical names of every stream `id` holds: instruments in subscription
/// order (trade, ticker, depth each), then channels in subscription order.
fn list(host: &dyn Host) -> Vec<String> {
    let mut out = Vec::new();
    let mut market = Vec::new();
    for &slot in host.slots() {
        let b = bits(host, slot);
        market.clear();
        crate::encode::dialects::exchange_market(&mut market, host.registry().get(slot));
        let market = String::from_utf8_lossy(&market);
        out.extend(STREAMS.iter().filter(|(bit, _)| b & bit != 0).map(|(_, kind)| format!("{kind}@{market}")));
    }
    out.extend(host.channel_ids().iter().filter_map(|&ch| host.channels().name(ch)).map(|n| n.to_string()));
    out
}

/// `{"error":{"code":…,"msg":…},"id":…}`; the connection stays open.
fn error(host: &mut dyn Host, req_id: Value, code: u16, msg: &str, now: u64) {
    host.bad_request(msg);
    super::reply_json(host, &json!({"error": {"code": code, "msg": msg}, "id": req_id}), now);
}

/// A message that is not a JSON request (a binary frame): code 3.
pub(crate) fn reply_error(host: &mut dyn Host, req_id: Option<Value>, msg: &str, now: u64) {
    error(host, req_id.unwrap_or(Value::Null), code::INVALID_JSON, &format!("Invalid JSON: {msg}"), now);
}

/// Nothing: Binance-style clients have no market-status message.
pub(crate) fn market_status(_open: bool, _now: u64) -> Vec<u8> {
    Vec::new()
}

/// A WebSocket ping to a connection idle for `--heartbeat-ms`: keeps proxies
/// and NATs from dropping quiet connections and finds dead peers, without
/// a message the seed's clients would have to understand.
pub(crate) fn housekeeping(host: &mut dyn Host, now: u64) {
    let idle_ns = crate::tick::ns(host.config().heartbeat);
    if host.idle_ns(now) >= idle_ns && host.drained() {
        host.ping(b"", now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::Registry;

    #[test]
    fn stream_names_parse_table() {
        let reg = Registry::bundled();
        let rel = reg.slot_of_symbol("RELIANCE").unwrap();
        let cases: &[(&str, &str, bool, Result<Stream, &str>)] = &[
            ("seed trade stream of a master instrument", "trade@RELIANCE", false, Ok(Stream::Ticks(rel, TRADE))),
            ("any case, exchange prefix", "DEPTH@nse:reliance", false, Ok(Stream::Ticks(rel, DEPTH))),
            ("ISIN", "ticker@INE002A01018", false, Ok(Stream::Ticks(rel, TICKER))),
            ("seed market, a channel", "trade@TATA_INR", true, Ok(Stream::Channel("trade@TATA_INR".into()))),
            ("type lower-cased, market kept", "Ticker@Tata_Inr", true, Ok(Stream::Channel("ticker@Tata_Inr".into()))),
            ("channel market without a channel source", "trade@TATA_INR", false, Err("no channel source")),
            ("unknown type", "kline@RELIANCE", true, Err("unknown stream type `kline`")),
            ("no @", "RELIANCE", true, Err("is not `<type>@<market>`")),
            ("no market", "trade@", true, Err("names no market")),
            ("bad channel name", "trade@has space", true, Err("not a channel name")),
        ];
        for (label, name, has_channels, want) in cases {
            let got = parse_stream(&reg, name, *has_channels);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{label}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{label}: {g}"),
                _ => panic!("{label}: {got:?}"),
            }
        }
    }

    #[test]
    fn fold_unions_bits_per_instrument() {
        let (a, b) = (Slot(3), Slot(1));
        let s = [
            Stream::Ticks(a, TRADE),
            Stream::Channel("trade@X".into()),
            Stream::Ticks(b, DEPTH),
            Stream::Ticks(a, DEPTH),
            Stream::Channel("trade@X".into()),
        ];
        let (slots, channels) = fold(&s);
        assert_eq!(slots, vec![(a, TRADE | DEPTH), (b, DEPTH)]);
        assert_eq!(channels, vec!["trade@X"]);
    }

    // ── the dialect driven through a host ───────────────────────────────

    use serde_json::json;

    use super::super::pair::{text_frames, too_deep, Action, Pair};
    use super::super::{ChanKind, Dialect};
    use crate::channel::Channels;
    use crate::subs::Delivery;
    use crate::tick::Tick;

    /// A `/` connection (nothing is sent on connect, as in the seed).
    fn open() -> Pair {
        let mut p = Pair::new();
        p.open("/", Dialect::Exchange).unwrap();
        assert_eq!(p.take(), [Action::Accept(Dialect::Exchange)], "the seed's server sends nothing on connect");
        p
    }

    /// Send `req`: its actions, and the one reply among them as JSON.
    fn call(p: &mut Pair, req: &str) -> (Vec<Action>, Value) {
        p.send(req);
        let acts = p.take();
        let replies: Vec<Value> = acts
            .iter()
            .filter_map(|a| if let Action::Reply(r) = a { serde_json::from_str(r).ok() } else { None })
            .collect();
        assert_eq!(replies.len(), 1, "{req}: {acts:?}");
        let r = replies.into_iter().next().unwrap();
        (acts, r)
    }

    fn ok(p: &mut Pair, req: &str) -> Vec<Action> {
        let (acts, r) = call(p, req);
        assert_eq!(r["result"], Value::Null, "{req}: {r}");
        assert!(r.get("error").is_none(), "{req}: {r}");
        acts
    }

    fn list(p: &mut Pair) -> Value {
        call(p, r#"{"method":"LIST_SUBSCRIPTIONS","id":0}"#).1["result"].clone()
    }

    fn changed(acts: &[Action]) -> bool {
        acts.iter().any(|a| {
            matches!(
                a,
                Action::Subscribe(..) | Action::Unsubscribe(_) | Action::Join(..) | Action::Leave(_) | Action::Data(_)
            )
        })
    }

    fn ex(bits: u8) -> Encoding {
        encoding(bits)
    }

    /// The module's example conversation on the seed's market (`TATA_INR`,
    /// not in the master: its streams are named channels, relayed raw).
    #[test]
    fn seed_conversation() {
        let mut p = open();
        let (acts, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@TATA_INR","depth@TATA_INR"],"id":1}"#);
        assert_eq!(r, json!({"result":null,"id":1}));
        assert_eq!(
            acts[..2],
            [
                Action::Join("trade@TATA_INR".into(), ChanKind::Raw),
                Action::Join("depth@TATA_INR".into(), ChanKind::Raw)
            ]
        );
        assert_eq!(
            call(&mut p, r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#).1,
            json!({"result":["trade@TATA_INR","depth@TATA_INR"],"id":3})
        );
        let (acts, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["kline@TATA_INR"],"id":4}"#);
        assert_eq!(
            r,
            json!({"error":{"code":2,"msg":"Invalid request: unknown stream type `kline` in `kline@TATA_INR` (expected trade, ticker or depth)"},"id":4})
        );
        assert!(matches!(&acts[0], Action::BadRequest(_)), "{acts:?}");
        let acts = ok(&mut p, r#"{"method":"UNSUBSCRIBE","params":["trade@TATA_INR"],"id":5}"#);
        let trade = p.channels.lookup("trade@TATA_INR").unwrap();
        assert_eq!(acts[0], Action::Leave(trade));
        assert_eq!(list(&mut p), json!(["depth@TATA_INR"]));
        assert!(p.open);
    }

    /// The streams of one instrument are one subscription whose bits are
    /// their union; adding and removing streams updates it in place; the
    /// last one removed drops it. Streams not held are ignored.
    #[test]
    fn streams_of_a_market_share_one_subscription() {
        let mut p = open();
        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        let acts = ok(
            &mut p,
            r#"{"method":"SUBSCRIBE","params":["trade@RELIANCE","depth@nse:reliance","ticker@TCS"],"id":1}"#,
        );
        assert_eq!(
            acts[..2],
            [
                Action::Subscribe(rel, ex(TRADE | DEPTH), Delivery::Conflate),
                Action::Subscribe(tcs, ex(TICKER), Delivery::Conflate)
            ]
        );
        assert_eq!(ex(TRADE | DEPTH).mode, Mode::Depth);
        assert_eq!(ex(TICKER).mode, Mode::Quote);
        assert_eq!(list(&mut p), json!(["trade@RELIANCE", "depth@RELIANCE", "ticker@TCS"]));

        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@INE002A01018"],"id":2}"#);
        assert_eq!(acts[0], Action::Subscribe(rel, ex(TRADE | TICKER | DEPTH), Delivery::Conflate));
        assert_eq!(p.slots, [rel, tcs], "one subscription per instrument");
        assert_eq!(list(&mut p), json!(["trade@RELIANCE", "ticker@RELIANCE", "depth@RELIANCE", "ticker@TCS"]));

        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@RELIANCE","TRADE@reliance"],"id":3}"#);
        assert!(!changed(&acts), "streams already held: {acts:?}");

        let acts = ok(
            &mut p,
            r#"{"method":"UNSUBSCRIBE","params":["depth@RELIANCE","depth@TCS","trade@INFY","trade@NOT_HELD"],"id":4}"#,
        );
        assert_eq!(acts[0], Action::Subscribe(rel, ex(TRADE | TICKER), Delivery::Conflate));
        assert!(!acts[1..].iter().any(|a| matches!(a, Action::Subscribe(..) | Action::Unsubscribe(_))), "{acts:?}");
        let acts = ok(&mut p, r#"{"method":"UNSUBSCRIBE","params":["trade@RELIANCE","ticker@RELIANCE"],"id":5}"#);
        assert_eq!(acts[0], Action::Unsubscribe(rel));
        assert_eq!(list(&mut p), json!(["ticker@TCS"]));
    }

    /// A held instrument's delivery is kept when streams are added.
    #[test]
    fn adding_streams_keeps_the_delivery() {
        let mut p = open();
        let rel = p.slot(2885);
        p.subs.insert(rel, (ex(TICKER), Delivery::Lossless));
        p.slots.push(rel);
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@RELIANCE"]}"#);
        assert_eq!(acts[0], Action::Subscribe(rel, ex(TRADE | TICKER), Delivery::Lossless));
        let acts = ok(&mut p, r#"{"method":"UNSUBSCRIBE","params":["ticker@RELIANCE"]}"#);
        assert_eq!(acts[0], Action::Subscribe(rel, ex(TRADE), Delivery::Lossless));
    }

    /// Streams added to a held instrument get the cached value in those
    /// streams only (a new subscription's snapshot is the host's); a
    /// snapshot never replays a trade; nothing while congested or before
    /// the first tick.
    #[test]
    fn streams_added_to_a_held_market_get_a_snapshot() {
        let mut p = open();
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@TCS"],"id":1}"#);
        assert!(!acts.iter().any(|a| matches!(a, Action::Data(_))), "no value yet: {acts:?}");
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS"],"id":2}"#);
        assert!(!acts.iter().any(|a| matches!(a, Action::Data(_))), "no value yet: {acts:?}");

        let mut t: Tick = p.value(11536, 12345, 100_050);
        (t.ltq, t.open, t.high, t.low, t.volume) = (10, 99_000, 101_000, 98_500, 777);
        t.depth_levels = 1;
        t.depth.asks[0].price = 100_100;
        t.depth.asks[0].qty = 50;
        t.depth.bids[0].price = 100_000;
        t.depth.bids[0].qty = 30;
        p.values.insert(p.slot(11536), t);

        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["depth@TCS","ticker@TCS","trade@TCS"],"id":3}"#);
        let data: Vec<&Vec<u8>> =
            acts.iter().filter_map(|a| if let Action::Data(d) = a { Some(d) } else { None }).collect();
        assert_eq!(data.len(), 1, "{acts:?}");
        assert_eq!(
            text_frames(data[0]),
            // The seed's depth example, on TCS (plus the market, `s`).
            [
                json!({"stream":"depth@TCS","data":{"e":"depth","a":[["1001.00","50"]],"b":[["1000.00","30"]],"s":"TCS"}})
            ]
        );
        let reply_at = acts.iter().position(|a| matches!(a, Action::Reply(_))).unwrap();
        let data_at = acts.iter().position(|a| matches!(a, Action::Data(_))).unwrap();
        assert!(data_at < reply_at, "the snapshot is queued before the reply: {acts:?}");

        let mut p = open();
        ok(&mut p, r#"{"method":"SUBSCRIBE","params":["depth@TCS"]}"#);
        p.values.insert(p.slot(11536), t);
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@TCS"]}"#);
        assert!(!acts.iter().any(|a| matches!(a, Action::Data(_))), "a trade is never replayed: {acts:?}");
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS"]}"#);
        let Some(Action::Data(d)) = acts.iter().find(|a| matches!(a, Action::Data(_))) else { panic!("{acts:?}") };
        assert_eq!(
            text_frames(d),
            [
                json!({"stream":"ticker@TCS","data":{"e":"ticker","c":"1000.50","o":"990.00","h":"1010.00","l":"985.00","v":"777","s":"TCS"}})
            ]
        );

        let mut p = open();
        ok(&mut p, r#"{"method":"SUBSCRIBE","params":["depth@TCS"]}"#);
        p.values.insert(p.slot(11536), t);
        p.congested = true;
        let acts = ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS"]}"#);
        assert!(!acts.iter().any(|a| matches!(a, Action::Data(_))), "nothing while congested: {acts:?}");
        assert_eq!(p.subs[&p.slot(11536)].0, ex(TICKER | DEPTH));
    }

    /// Request ids: an integer (any sign), a string or null, echoed; absent
    /// is null; methods in any case.
    #[test]
    fn request_ids_and_method_case() {
        let mut p = open();
        for (req, id) in [
            (r#"{"method":"LIST_SUBSCRIPTIONS","id":18446744073709551615}"#, json!(u64::MAX)),
            (r#"{"method":"list_subscriptions","id":-4}"#, json!(-4)),
            (r#"{"method":"List_Subscriptions","id":"abc"}"#, json!("abc")),
            (r#"{"method":"LIST_SUBSCRIPTIONS","id":null}"#, Value::Null),
            (r#"{"method":"LIST_SUBSCRIPTIONS"}"#, Value::Null),
        ] {
            assert_eq!(call(&mut p, req).1, json!({"result":[],"id":id}), "{req}");
        }
        assert_eq!(
            call(&mut p, r#"{"method":"subscribe","params":["ticker@tcs"],"id":"x"}"#).1,
            json!({"result":null,"id":"x"})
        );
        assert_eq!(
            call(&mut p, r#"{"method":"Unsubscribe","params":["ticker@TCS"],"id":7}"#).1,
            json!({"result":null,"id":7})
        );
        assert!(p.slots.is_empty());
    }

    /// The per-connection limit counts instruments and channels; a request
    /// past it is refused as a whole; streams added to held markets and
    /// channels already joined add nothing.
    #[test]
    fn subscription_limit() {
        let mut p = open();
        p.config.max_subscriptions = 2;
        ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@RELIANCE"]}"#);
        assert_eq!(
            p.refuse(r#"{"method":"SUBSCRIBE","params":["trade@TCS","trade@INFY"],"id":9}"#).1,
            json!({"error":{"code":2,"msg":"Invalid request: subscription limit reached: at most 2 markets and channels per connection (1 held, this request adds 2)"},"id":9})
        );
        ok(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@RELIANCE","depth@RELIANCE","trade@TATA_INR"]}"#);
        assert_eq!(list(&mut p), json!(["trade@RELIANCE", "ticker@RELIANCE", "depth@RELIANCE", "trade@TATA_INR"]));
        ok(&mut p, r#"{"method":"SUBSCRIBE","params":["trade@TATA_INR","ticker@RELIANCE"]}"#);
        let (acts, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["depth@TATA_INR"]}"#);
        assert!(!changed(&acts), "{acts:?}");
        assert!(r["error"]["msg"].as_str().unwrap().contains("(2 held, this request adds 1)"), "{r}");
    }

    /// Every refused request: Binance's error shape and code, the request
    /// id where it could be read, the bad request counted, nothing changed,
    /// the connection open.
    #[test]
    fn bad_requests() {
        let deep = too_deep();
        let many = json!({"method":"SUBSCRIBE","params":vec!["ticker@TCS"; 3001],"id":12}).to_string();
        let cases: &[(&str, u16, Value, &str)] = &[
            ("not json", 3, Value::Null, "Invalid JSON: malformed JSON"),
            (&deep, 3, Value::Null, "Invalid JSON: JSON nested deeper"),
            (r#"["SUBSCRIBE"]"#, 2, Value::Null, "Invalid request: a request is a JSON object with a `method`"),
            (r#""LIST_SUBSCRIPTIONS""#, 2, Value::Null, "a JSON object with a `method`"),
            (
                r#"{"method":"LIST_SUBSCRIPTIONS","id":1.5}"#,
                2,
                Value::Null,
                "request ID must be an integer, a string or null",
            ),
            (r#"{"method":"LIST_SUBSCRIPTIONS","id":[1]}"#, 2, Value::Null, "request ID must be"),
            (r#"{"method":"LIST_SUBSCRIPTIONS","id":true}"#, 2, Value::Null, "request ID must be"),
            (
                r#"{"id":1}"#,
                2,
                json!(1),
                "Invalid request: missing field `method` (one of SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS)",
            ),
            (r#"{"method":5,"id":2}"#, 2, json!(2), "field `method` must be a string"),
            (r#"{"method":"SET_PROPERTY","id":3}"#, 2, json!(3), "unknown method `SET_PROPERTY` (expected one of"),
            (r#"{"method":"SUBSCRIBE","id":"s"}"#, 2, json!("s"), "missing field `params`"),
            (r#"{"method":"UNSUBSCRIBE","id":4}"#, 2, json!(4), "missing field `params`"),
            (
                r#"{"method":"SUBSCRIBE","params":"trade@TCS","id":5}"#,
                2,
                json!(5),
                "field `params` must be an array of stream names",
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["trade@TCS",7],"id":6}"#,
                2,
                json!(6),
                "field `params` must be an array",
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["trade@TCS","RELIANCE"],"id":7}"#,
                2,
                json!(7),
                "stream `RELIANCE` is not `<type>@<market>`",
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["trade@TCS","kline@TCS"],"id":8}"#,
                2,
                json!(8),
                "unknown stream type `kline` in `kline@TCS`",
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["trade@TCS","trade@"],"id":9}"#,
                2,
                json!(9),
                "stream `trade@` names no market",
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["trade@TCS","trade@TATA INR"],"id":10}"#,
                2,
                json!(10),
                "not a channel name",
            ),
            (
                r#"{"method":"UNSUBSCRIBE","params":["ticker@RELIANCE","aggTrade@RELIANCE"],"id":11}"#,
                2,
                json!(11),
                "unknown stream type `aggTrade`",
            ),
            (&many, 2, json!(12), "too many parameters (3001; at most 3000)"),
        ];
        for (req, code, id, want) in cases {
            let mut p = open();
            ok(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@RELIANCE","trade@TATA_INR"]}"#);
            // Only a counted bad request and its reply: nothing changed.
            let (_, r) = p.refuse(req);
            let label = &req[..req.len().min(80)];
            assert_eq!(r["error"]["code"], *code, "{label}: {r}");
            assert_eq!(r["id"], *id, "{label}: {r}");
            assert!(r.get("result").is_none(), "{label}: {r}");
            let msg = r["error"]["msg"].as_str().unwrap();
            assert!(msg.contains(want), "{label}: {msg}");
            assert!(p.open, "{label} closed the connection");
            assert_eq!(list(&mut p), json!(["ticker@RELIANCE", "trade@TATA_INR"]), "{label}");
        }
        // Client text is echoed clipped.
        let mut p = open();
        let long = "x".repeat(500);
        let (_, r) = call(&mut p, &json!({"method": long, "id": 1}).to_string());
        let msg = r["error"]["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("`{}`", "x".repeat(64))) && !msg.contains(&"x".repeat(65)), "{msg}");
    }

    /// A binary frame: code 3, id null, the connection stays.
    #[test]
    fn binary_messages_are_refused() {
        let mut p = open();
        p.send_binary();
        assert_eq!(
            p.refusal().1,
            json!({"error":{"code":3,"msg":"Invalid JSON: binary messages are not accepted; send requests as JSON text frames"},"id":null})
        );
        assert!(p.open);
    }

    /// A full channel table refuses the channel; the streams before it in
    /// the request stay subscribed, as the error says.
    #[test]
    fn a_refused_channel_keeps_the_streams_before_it() {
        let mut p = open();
        p.channels = Channels::new(1);
        let (acts, r) =
            call(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@RELIANCE","trade@A_INR","trade@B_INR"],"id":1}"#);
        assert_eq!(
            r,
            json!({"error":{"code":2,"msg":"Invalid request: stream `trade@B_INR`: channel limit reached; streams before it were subscribed"},"id":1})
        );
        assert!(acts.iter().any(|a| matches!(a, Action::BadRequest(_))), "{acts:?}");
        assert_eq!(list(&mut p), json!(["ticker@RELIANCE", "trade@A_INR"]));
        assert!(p.open);
    }

    /// Without a channel source a market outside the master is an error
    /// (refusing the whole request); the master's markets still work.
    #[test]
    fn without_a_channel_source_unknown_markets_are_refused() {
        let mut p = open();
        p.channel_source = false;
        let (_, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS","trade@TATA_INR"],"id":1}"#);
        assert_eq!(r["error"]["code"], 2, "{r}");
        assert_eq!(r["id"], 1);
        let msg = r["error"]["msg"].as_str().unwrap();
        assert!(
            msg.contains("unknown market `TATA_INR` in `trade@TATA_INR`") && msg.contains("no channel source"),
            "{msg}"
        );
        assert!(p.slots.is_empty() && p.channel_ids.is_empty());
        let (_, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS"],"id":2}"#);
        assert_eq!(r, json!({"result":null,"id":2}));
        assert_eq!(p.slots, [p.slot(11536)]);
    }

    /// A per-user limit the host enforces (past one instrument here): the markets before the refused
    /// one stay subscribed, and the error says so.
    #[test]
    fn a_per_user_limit_keeps_the_markets_before_it() {
        let mut p = open();
        p.user_limit = 1;
        let (_, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["ticker@TCS","trade@RELIANCE"],"id":3}"#);
        assert_eq!(
            r,
            json!({"error":{"code":2,"msg":"Invalid request: the user's subscription limit is reached; streams before this market were subscribed"},"id":3})
        );
        assert_eq!(p.slots, [p.slot(11536)]);
        let (_, r) = call(&mut p, r#"{"method":"SUBSCRIBE","params":["depth@TCS"],"id":4}"#);
        assert_eq!(r, json!({"result":null,"id":4}), "adding a stream to a held market needs no new unit");
    }

    /// An idle, drained connection gets a WebSocket ping every `heartbeat`
    /// (nothing the seed's clients must understand); traffic restarts the
    /// wait; no market-status message.
    #[test]
    fn housekeeping_pings_idle_connections() {
        let mut p = open();
        // Nothing was sent on connect: the worker counts idleness from the
        // connection's start, as here.
        p.last_tx_ns = p.now;
        assert_eq!(p.due_in(1000), [Action::Ping]);
        assert_eq!(p.last_tx_ns, p.now, "a ping is traffic");
        p.advance(600);
        list(&mut p);
        p.advance(999);
        assert!(p.take().is_empty(), "a reply is traffic");
        assert_eq!(p.drained_after(3000), [Action::Ping]);
        assert!(market_status(true, p.now).is_empty() && market_status(false, p.now).is_empty());
    }
}
