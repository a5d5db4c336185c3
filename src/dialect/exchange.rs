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
//! as a whole before anything changes, so a refused `SUBSCRIBE` subscribes
//! nothing. Idle connections get a WebSocket ping every `--heartbeat-ms`
//! (answered by every client library, invisible to applications); market
//! open/close is not announced (Binance-style clients have no such message).

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{ChanKind, Host};
use crate::encode::dialects::stream::{DEPTH, TICKER, TRADE};
use crate::encode::{Encoding, Format, Marks};
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

/// WebSocket ping opcode (keep-alive of idle connections).
const OP_PING: u8 = 0x9;

/// Longest piece of client input echoed in an error message.
const ECHO: usize = 64;

/// Stream types by bit, in the order `LIST_SUBSCRIPTIONS` lists them.
const STREAMS: [(u8, &str); 3] = [(TRADE, "trade"), (TICKER, "ticker"), (DEPTH, "depth")];

/// A refused request: `{"error":{"code":…,"msg":…},"id":…}`.
struct Refusal(u16, String);

fn invalid(msg: impl std::fmt::Display) -> Refusal {
    Refusal(code::INVALID_REQUEST, format!("Invalid request: {msg}"))
}

/// At most [`ECHO`] characters of client input.
fn echo(s: &str) -> String {
    s.chars().take(ECHO).collect()
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
        reply(host, &json!({"result": null, "id": req_id}), now);
    } else if method.eq_ignore_ascii_case("UNSUBSCRIBE") {
        let streams = streams(host, v)?;
        unsubscribe(host, &streams, now);
        reply(host, &json!({"result": null, "id": req_id}), now);
    } else if method.eq_ignore_ascii_case("LIST_SUBSCRIPTIONS") {
        let list = list(host);
        reply(host, &json!({"result": list, "id": req_id}), now);
    } else {
        return Err(invalid(format!("unknown method `{}` (expected one of {METHODS})", echo(method))));
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
        return Err(format!("stream `{}` is not `<type>@<market>` (type {TYPES})", echo(name)));
    };
    let Some(&(bit, kind)) = STREAMS.iter().find(|(_, k)| k.eq_ignore_ascii_case(kind)) else {
        return Err(format!("unknown stream type `{}` in `{}` (expected {TYPES})", echo(kind), echo(name)));
    };
    if market.is_empty() {
        return Err(format!("stream `{}` names no market", echo(name)));
    }
    if let Some(slot) = reg.slot_of_symbol(market) {
        return Ok(Stream::Ticks(slot, bit));
    }
    if !has_channels {
        return Err(format!(
            "unknown market `{}` in `{}`: not in the instrument master, and no channel source (--feed redis://…, --publish-listen) is configured",
            echo(market),
            echo(name)
        ));
    }
    // The type in lower case (as published), the market verbatim: channel
    // names are case-sensitive, like the Redis channels they come from.
    let channel = format!("{kind}@{market}");
    if !crate::channel::valid_name(&channel) {
        return Err(format!(
            "unknown market `{}` in `{}`: not in the instrument master, and not a channel name ({})",
            echo(market),
            echo(name),
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
    let Some(t) = host.last_value(slot) else { return };
    let mut buf = Vec::new();
    let marks = Marks { snapshot: true, conflated: false };
    let r = crate::encode::encode(&mut buf, encoding(added), &t, host.registry().get(slot), marks);
    if !r.is_empty() && !host.congested() {
        host.data_frame(&buf[r], now);
    }
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

fn reply(host: &mut dyn Host, v: &Value, now: u64) {
    host.reply(v.to_string().as_bytes(), now);
}

/// `{"error":{"code":…,"msg":…},"id":…}`; the connection stays open.
fn error(host: &mut dyn Host, req_id: Value, code: u16, msg: &str, now: u64) {
    host.bad_request(msg);
    reply(host, &json!({"error": {"code": code, "msg": msg}, "id": req_id}), now);
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
        host.control_frame(OP_PING, b"", now);
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
}
