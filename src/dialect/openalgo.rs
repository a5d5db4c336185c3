//! OpenAlgo (seed `003_…`): any path on `--openalgo-listen`. A drop-in for
//! the OpenAlgo WebSocket proxy that the official `openalgo` Python SDK
//! speaks to. Replies go on the control lane; market data is
//! `Format::OpenAlgo` (`encode::dialects::openalgo`).
//!
//! ```json
//! {"action":"authenticate","api_key":"…"}
//! {"type":"auth","status":"success","message":"Authentication successful","broker":"tickcast","user_id":"alice","supported_features":{"ltp":true,"quote":true,"depth":true}}
//! {"type":"auth_response","status":"success","message":"Authentication successful"}
//! {"action":"subscribe","symbols":[{"symbol":"RELIANCE","exchange":"NSE"}],"mode":"Quote"}
//! {"type":"subscribe","status":"success","subscriptions":[{"symbol":"RELIANCE","exchange":"NSE","status":"success","mode":"Quote","depth":5}],"message":"Subscription processing complete","broker":"tickcast"}
//! {"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":2,"data":{"ltp":2850.5,…,"timestamp":"2024-12-04T10:30:00"}}
//! {"action":"unsubscribe","symbols":[{"symbol":"RELIANCE","exchange":"NSE"}]}
//! {"type":"unsubscribe","status":"success","message":"Unsubscription processing complete","successful":[{"symbol":"RELIANCE","exchange":"NSE","status":"success"}],"failed":[],"broker":"tickcast"}
//! {"type":"error","status":"error","code":"NOT_AUTHENTICATED","message":"You must authenticate first"}
//! ```
//!
//! Both authentication replies go out: the SDK waits for `auth` (what the
//! real server sends), the seed documents `auth_response`. The SDK sends one
//! message per instrument (`symbol`, `exchange`, numeric `mode`); the seed
//! a `symbols` list with a mode name: both are accepted. A connection may
//! hold an instrument in several modes at once and gets one frame per mode
//! (`Format::OpenAlgo` mode bits). An instrument held in LTP mode only is
//! rate-capped to one frame per 50 ms on the trailing edge, so the newest
//! price always arrives; with Quote or Depth as well, its LTP frames ride
//! with every quote.
//!
//! Errors are the real server's `{"status":"error","code":…,"message":…}`
//! plus `"type":"error"`; the connection stays open. Nothing but
//! `authenticate` and `ping` is served before authentication. The server
//! pings every client (`--openalgo-ping-interval`) and closes one that does
//! not answer (`--openalgo-ping-timeout`, 1011) or does not authenticate
//! in time (`--openalgo-auth-timeout`, 1008).

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, owned, reply_json, Count, Dialect, Host};
use crate::encode::dialects::openalgo_mode;
use crate::encode::{Encoding, Format};
use crate::instrument::{Registry, Slot};
use crate::subs::Delivery;
use crate::tick::{Mode, DEPTH_LEVELS};
use crate::ws::close;
use crate::ws::handshake::Request;

/// What the `broker` fields say.
const BROKER: &str = "tickcast";

/// The seed's LTP throttle: one update per instrument per 50 ms.
const LTP_INTERVAL_NS: u64 = 50_000_000;

/// Wrong or missing keys in a row before the connection is closed.
const MAX_AUTH_FAILURES: u8 = 5;

/// Close code for an unanswered ping, as the `websockets` library the real
/// server runs on sends it.
const KEEPALIVE_TIMEOUT: u16 = 1011;

/// The actions served, for error messages.
const ACTIONS: &str =
    "authenticate, subscribe, unsubscribe, unsubscribe_all, ping, get_broker_info, get_supported_brokers";

/// OpenAlgo per-connection state.
#[derive(Default)]
pub struct State {
    /// `authenticate` succeeded (or a key came with the upgrade request).
    authed: bool,
    /// Wrong or missing keys since the last success.
    auth_failures: u8,
    /// Upgrade time, ns (authentication deadline).
    opened_ns: u64,
    /// When the last ping went out, ns.
    last_ping_ns: u64,
    /// When the unanswered ping went out, ns (0: none outstanding).
    ping_outstanding_ns: u64,
}

/// A request refused as a whole: error frame with this code and message.
struct Refusal(&'static str, String);

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal("INVALID_PARAMETERS", msg.into())
}

/// Accept the upgrade. Over `--openalgo-max-clients` the client gets an
/// error and close 1013 (in protocol terms, so the SDK's log says why).
///
/// # Errors
/// None of its own: OpenAlgo takes no query parameters besides the API key
/// the worker already checked.
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<State, String> {
    host.accept(req, Dialect::OpenAlgo)?;
    // Counted at the accept first, then compared: concurrent upgrades on
    // other workers can only make this refuse, never over-admit.
    let open = host.open_connections(Dialect::OpenAlgo);
    let max = host.config().openalgo.max_clients;
    let st = State { authed: host.user().is_some(), opened_ns: now, last_ping_ns: now, ..State::default() };
    if open > max as u64 {
        host.count(Count::ConnectionRejected);
        let msg = format!("the server is at its OpenAlgo client limit ({max}); try again later");
        reply_json(host, &error_frame("MAX_CLIENTS", &msg), now);
        host.close(close::TRY_AGAIN_LATER, "OpenAlgo client limit reached");
    }
    Ok(st)
}

/// Handle one text message.
pub(crate) fn handle(st: &mut State, host: &mut dyn Host, payload: &mut [u8], now: u64) {
    if !host.is_open() {
        return; // refused at `open` (client limit): nothing may follow the close frame
    }
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(e) => return reply_error(host, "INVALID_JSON", &format!("Invalid JSON message: {e}"), now),
    };
    if let Err(Refusal(code, msg)) = dispatch(st, host, &v, now) {
        reply_error(host, code, &msg, now);
    }
}

fn dispatch(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), Refusal> {
    if v.as_object().is_none() {
        return Err(Refusal("INVALID_MESSAGE", "a message must be a JSON object with an `action`".into()));
    }
    // The real server also takes `type` for `action`.
    let action = match v.get("action").or_else(|| v.get("type")) {
        None => return Err(Refusal("INVALID_ACTION", format!("missing field `action` (one of {ACTIONS})"))),
        Some(a) => a.as_str().ok_or_else(|| Refusal("INVALID_ACTION", "field `action` must be a string".into()))?,
    };
    let authed = st.authed;
    match action {
        "authenticate" | "auth" => {
            authenticate(st, host, v, now);
            Ok(())
        }
        "ping" => {
            pong(host, v, now);
            Ok(())
        }
        "subscribe" | "unsubscribe" | "unsubscribe_all" | "get_broker_info" | "get_supported_brokers" if !authed => {
            Err(Refusal("NOT_AUTHENTICATED", "You must authenticate first".into()))
        }
        "subscribe" => subscribe(host, v, now),
        "unsubscribe" => unsubscribe(host, v, false, now),
        "unsubscribe_all" => unsubscribe(host, v, true, now),
        "get_broker_info" => {
            let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
            let reply = json!({"type": "broker_info", "status": "success", "broker": BROKER,
                "adapter_status": "connected", "user_id": user});
            reply_json(host, &reply, now);
            Ok(())
        }
        "get_supported_brokers" => {
            let reply = json!({"type": "supported_brokers", "status": "success", "brokers": [BROKER], "count": 1});
            reply_json(host, &reply, now);
            Ok(())
        }
        other => Err(Refusal("INVALID_ACTION", format!("Invalid action: {} (expected one of {ACTIONS})", clip(other)))),
    }
}

// ── authentication ─────────────────────────────────────────────────────

/// `authenticate`: the key is checked like an upgrade's (`Host::authenticate`:
/// hashed lookup, subscribe role, the user's connection limit).
fn authenticate(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) {
    let key = match v.get("api_key").or_else(|| v.get("apikey")) {
        None => None,
        Some(k) => match k.as_str() {
            Some(k) if !k.is_empty() => Some(k),
            Some(_) => None,
            None => return refuse_auth(st, host, "field `api_key` must be a string", now),
        },
    };
    let Some(key) = key else {
        return refuse_auth(st, host, "API key is required", now);
    };
    if let Some(user) = host.user().map(|u| u.id.to_string()) {
        // Authenticated already (by an earlier message or the upgrade's
        // key): the same user's key is acknowledged again, without taking
        // another connection slot.
        match host.same_user(key) {
            Some(true) => return auth_ok(st, host, &user, now),
            Some(false) => return refuse_auth(st, host, "this connection is authenticated as another user", now),
            None => return refuse_auth(st, host, "Invalid API key", now),
        }
    }
    match host.authenticate(key) {
        Ok(()) => {
            let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
            auth_ok(st, host, &user, now);
        }
        Err((status, why)) => {
            // `Host::authenticate` counted it (auth_failures or limit_rejections).
            let msg = if status == 401 && why.starts_with("invalid") { "Invalid API key" } else { why.trim_end() };
            // A user at its connection limit gave a valid key: not a guess.
            auth_error(st, host, msg, status == 401, now);
        }
    }
}

fn auth_ok(st: &mut State, host: &mut dyn Host, user: &str, now: u64) {
    st.authed = true;
    st.auth_failures = 0;
    const OK: &str = "Authentication successful";
    let market_open = host.market_open();
    let auth = json!({"type": "auth", "status": "success", "message": OK, "broker": BROKER, "user_id": user,
        "supported_features": {"ltp": true, "quote": true, "depth": true}, "market_open": market_open});
    reply_json(host, &auth, now);
    reply_json(host, &json!({"type": "auth_response", "status": "success", "message": OK}), now);
}

/// Refuse an `authenticate` this module judged itself (counted here).
fn refuse_auth(st: &mut State, host: &mut dyn Host, msg: &str, now: u64) {
    host.count(Count::AuthFailure);
    auth_error(st, host, msg, true, now);
}

/// The seed's `auth_response` error and the real server's error frame.
/// After `MAX_AUTH_FAILURES` refused keys in a row (`guess`: a wrong or
/// missing key) the connection is closed (1008).
fn auth_error(st: &mut State, host: &mut dyn Host, msg: &str, guess: bool, now: u64) {
    log::info!("OpenAlgo client refused: {msg}");
    reply_json(host, &json!({"type": "auth_response", "status": "error", "message": msg}), now);
    reply_json(host, &error_frame("AUTHENTICATION_ERROR", msg), now);
    st.auth_failures = st.auth_failures.saturating_add(u8::from(guess));
    if st.auth_failures >= MAX_AUTH_FAILURES {
        host.close(close::POLICY, "too many failed authentication attempts");
    }
}

fn pong(host: &mut dyn Host, v: &BorrowedValue, now: u64) {
    let mut reply = json!({"type": "pong", "status": "success", "server_timestamp": now / 1_000_000});
    // Echoed for the client's latency measurement, as the real server does.
    if let Some(ts) = v.get("timestamp") {
        reply["client_timestamp"] = owned(ts);
    }
    if let Some(ping_id) = v.get("_pingId") {
        reply["_pingId"] = owned(ping_id);
    }
    reply_json(host, &reply, now);
}

// ── subscriptions ──────────────────────────────────────────────────────

/// The mode names OpenAlgo replies with.
fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Ltp => "LTP",
        Mode::Quote => "Quote",
        Mode::Depth => "Depth",
    }
}

/// `1`/`2`/`3` or `"LTP"`/`"Quote"`/`"Depth"` (any case).
fn parse_mode(m: &BorrowedValue) -> Result<Mode, Refusal> {
    let by_name = |s: &str| Mode::ALL.into_iter().find(|&m| s.trim().eq_ignore_ascii_case(mode_name(m)));
    let mode = match (m.as_bool(), m.as_u64(), m.as_str()) {
        (None, Some(n @ 1..=3), _) => Some(Mode::ALL[n as usize - 1]),
        (None, _, Some(s)) => by_name(s),
        _ => None,
    };
    mode.ok_or_else(|| {
        let shown = clip(&simd_json::to_string(m).unwrap_or_default());
        Refusal("INVALID_MODE", format!("Invalid mode {shown}; expected 1 (LTP), 2 (Quote) or 3 (Depth), or the name"))
    })
}

/// The modes of `id`'s subscription to `slot` (0: none).
fn modes_of(host: &dyn Host, slot: Slot) -> u8 {
    match host.subscription(slot).map(|(enc, _)| enc.format) {
        Some(Format::OpenAlgo(bits)) => bits,
        _ => 0,
    }
}

/// The encoding and delivery of a subscription to `modes`: LTP alone is
/// rate-capped (the seed's 50 ms throttle); Quote and Depth are not.
fn encoding(host: &dyn Host, modes: u8) -> (Encoding, Delivery) {
    let mode = Mode::ALL.into_iter().rev().find(|&m| modes & openalgo_mode::bit(m) != 0).unwrap_or(Mode::Ltp);
    let delivery = if modes == openalgo_mode::LTP {
        Delivery::MaxRate { interval_ns: LTP_INTERVAL_NS }
    } else {
        host.default_delivery()
    };
    (Encoding { format: Format::OpenAlgo(modes), mode }, delivery)
}

/// One instrument named by a request, as the client spelled it.
struct Named<'v> {
    symbol: &'v str,
    exchange: &'v str,
    /// Its own `mode` (unsubscribe entries may carry one).
    mode: Option<Mode>,
}

/// The instruments of a request: the seed's `symbols` list, or the SDK's
/// single `symbol` + `exchange`.
fn named<'v>(host: &dyn Host, v: &'v BorrowedValue) -> Result<Vec<Named<'v>>, Refusal> {
    const SHAPE: &str = "field `symbols` must be an array of {\"symbol\": string, \"exchange\": string} objects";
    let field = |o: &'v BorrowedValue, k: &str| -> Result<&'v str, Refusal> {
        match o.get(k) {
            None => Err(invalid(format!("every instrument needs `symbol` and `exchange` (missing `{k}`)"))),
            Some(s) => s
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("field `{k}` must be a non-empty string"))),
        }
    };
    let mut out = Vec::new();
    match v.get("symbols") {
        Some(list) => {
            let arr = list.as_array().ok_or_else(|| invalid(SHAPE))?;
            for e in arr {
                if e.as_object().is_none() {
                    return Err(invalid(SHAPE));
                }
                let mode = e.get("mode").map(parse_mode).transpose()?;
                out.push(Named { symbol: field(e, "symbol")?, exchange: field(e, "exchange")?, mode });
            }
        }
        None if v.get("symbol").is_some() || v.get("exchange").is_some() => {
            out.push(Named { symbol: field(v, "symbol")?, exchange: field(v, "exchange")?, mode: None });
        }
        None => {}
    }
    let limit = host.config().max_subscriptions.max(1000);
    if out.len() > limit {
        return Err(invalid(format!("{} instruments in one request; at most {limit}", out.len())));
    }
    Ok(out)
}

/// The instrument `symbol` on `exchange` (any case). Indices are on
/// `NSE_INDEX` (OpenAlgo's name for the index segment), everything else
/// on its exchange.
fn resolve(reg: &Registry, n: &Named) -> Result<Slot, String> {
    let short = clip;
    let exch = n.exchange.to_ascii_uppercase();
    let (base, index) = match exch.strip_suffix("_INDEX") {
        Some(base) => (base, true),
        None => (exch.as_str(), false),
    };
    let unknown = || format!("unknown symbol {}:{}", short(n.exchange), short(n.symbol));
    if n.symbol.contains(':') || base.contains(':') {
        return Err(unknown());
    }
    let slot = reg.slot_of_symbol(&format!("{base}:{}", n.symbol)).ok_or_else(unknown)?;
    let ins = reg.get(slot);
    match (index, ins.isin.is_empty()) {
        (true, false) => Err(format!("{} is not an index: subscribe on exchange {}", ins.symbol, ins.exchange)),
        (false, true) => Err(format!("{} is an index: subscribe on exchange {}_INDEX", ins.symbol, ins.exchange)),
        _ => Ok(slot),
    }
}

/// `{"symbol","exchange"}` of a slot, spelled as its frames spell it.
fn canonical(reg: &Registry, slot: Slot) -> Value {
    let ins = reg.get(slot);
    let exchange = if ins.isin.is_empty() { format!("{}_INDEX", ins.exchange) } else { ins.exchange.to_string() };
    json!({"symbol": &*ins.symbol, "exchange": exchange})
}

/// `{"symbol","exchange","status":"error","message"}` as the client spelled it.
fn failed(n: &Named, msg: String) -> Value {
    json!({"symbol": clip(n.symbol), "exchange": clip(n.exchange), "status": "error", "message": msg})
}

fn subscribe(host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), Refusal> {
    let mode = v.get("mode").map(parse_mode).transpose()?.unwrap_or(Mode::Quote);
    let depth = match v.get("depth") {
        None => DEPTH_LEVELS,
        Some(d) => d
            .as_u64()
            .filter(|d| (1..=50).contains(d))
            .ok_or_else(|| invalid("field `depth` must be an integer from 1 to 50 (levels per side)"))?
            .min(DEPTH_LEVELS as u64) as usize,
    };
    let list = named(host, v)?;
    if list.is_empty() {
        return Err(invalid("At least one symbol must be specified (`symbols` list, or `symbol` and `exchange`)"));
    }
    let mut results = Vec::with_capacity(list.len());
    let mut ok = 0;
    for n in &list {
        let slot = match resolve(host.registry(), n) {
            Ok(slot) => slot,
            Err(msg) => {
                results.push(failed(n, msg));
                continue;
            }
        };
        let before = modes_of(host, slot);
        let after = before | openalgo_mode::bit(mode);
        let (enc, delivery) = encoding(host, after);
        match host.subscribe(slot, enc, delivery, now) {
            Ok(()) => {
                if before != 0 && after != before {
                    snapshot(host, slot, after & !before, now);
                }
                let mut e = canonical(host.registry(), slot);
                e["status"] = json!("success");
                e["mode"] = json!(mode_name(mode));
                e["depth"] = json!(depth);
                results.push(e);
                ok += 1;
            }
            Err(why) => {
                let msg = crate::demand::reason(why, host.config().max_subscriptions);
                results.push(failed(n, msg));
            }
        }
    }
    let status = status_of(ok, results.len() - ok);
    let reply = json!({"type": "subscribe", "status": status, "subscriptions": results,
        "message": "Subscription processing complete", "broker": BROKER});
    reply_json(host, &reply, now);
    Ok(())
}

/// The cached last value in the modes just added to a subscription (a new
/// subscription gets its snapshot from `Host::subscribe`).
fn snapshot(host: &mut dyn Host, slot: Slot, modes: u8, now: u64) {
    host.snapshot(slot, Encoding { format: Format::OpenAlgo(modes), mode: Mode::Ltp }, now);
}

fn status_of(ok: usize, failed: usize) -> &'static str {
    match (ok, failed) {
        (_, 0) => "success",
        (0, _) => "error",
        _ => "partial",
    }
}

/// `unsubscribe` (the instruments named, in the mode named per entry or
/// for the request, else every mode) or `unsubscribe_all`.
fn unsubscribe(host: &mut dyn Host, v: &BorrowedValue, all: bool, now: u64) -> Result<(), Refusal> {
    let (mut done, mut failures) = (Vec::new(), Vec::new());
    if all {
        for slot in host.slots().to_vec() {
            if host.unsubscribe(slot) {
                let mut e = canonical(host.registry(), slot);
                e["status"] = json!("success");
                done.push(e);
            }
        }
    } else {
        let mode = v.get("mode").map(parse_mode).transpose()?;
        let list = named(host, v)?;
        if list.is_empty() {
            return Err(invalid("Either symbols or unsubscribe_all is required"));
        }
        for n in &list {
            let slot = match resolve(host.registry(), n) {
                Ok(slot) => slot,
                Err(msg) => {
                    failures.push(failed(n, msg));
                    continue;
                }
            };
            let mode = n.mode.or(mode);
            let remove =
                mode.map_or(openalgo_mode::LTP | openalgo_mode::QUOTE | openalgo_mode::DEPTH, openalgo_mode::bit);
            let before = modes_of(host, slot);
            if before & remove == 0 {
                let msg = match mode {
                    Some(m) => format!("not subscribed in {} mode", mode_name(m)),
                    None => "not subscribed".to_string(),
                };
                failures.push(failed(n, msg));
                continue;
            }
            let after = before & !remove;
            if after == 0 {
                host.unsubscribe(slot);
            } else {
                let (enc, delivery) = encoding(host, after);
                // An update in place: it cannot hit a limit.
                let _ = host.subscribe(slot, enc, delivery, now);
            }
            let mut e = canonical(host.registry(), slot);
            e["status"] = json!("success");
            if let Some(m) = mode {
                e["mode"] = json!(mode_name(m));
            }
            done.push(e);
        }
    }
    let status = status_of(done.len(), failures.len());
    let reply = json!({"type": "unsubscribe", "status": status, "message": "Unsubscription processing complete",
        "successful": done, "failed": failures, "broker": BROKER});
    reply_json(host, &reply, now);
    Ok(())
}

// ── replies, keepalive ─────────────────────────────────────────────────

/// The real server's error shape, with a `type` so clients that dispatch
/// on it see errors too.
fn error_frame(code: &str, message: &str) -> Value {
    json!({"type": "error", "status": "error", "code": code, "message": message})
}

/// Send an error frame (counted as a bad request); the connection stays open.
pub(crate) fn reply_error(host: &mut dyn Host, code: &str, message: &str, now: u64) {
    host.bad_request(&format!("{code}: {message}"));
    reply_json(host, &error_frame(code, message), now);
}

/// `{"type":"market_status","market_open":…,"timestamp":…}` on each transition.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    // The SDK ignores message types it does not know, so the notice is safe.
    let ts = crate::encode::dialects::iso_string(now);
    json!({"type": "market_status", "market_open": open, "timestamp": ts}).to_string().into_bytes()
}

/// Keepalive and the authentication deadline: ping every
/// `ping_interval`; close a client whose ping stays unanswered past
/// `ping_timeout` (1011), or that has not authenticated within
/// `auth_timeout` (1008).
pub(crate) fn housekeeping(st: &mut State, host: &mut dyn Host, now: u64) {
    let cfg = &host.config().openalgo;
    let ns = crate::tick::ns;
    let (interval, timeout, auth) = (ns(cfg.ping_interval), ns(cfg.ping_timeout), ns(cfg.auth_timeout));
    if !st.authed && now.saturating_sub(st.opened_ns) > auth {
        return host
            .close(close::POLICY, "not authenticated in time: send {\"action\":\"authenticate\",\"api_key\":…} first");
    }
    if st.ping_outstanding_ns != 0 && host.last_pong_ns() >= st.ping_outstanding_ns {
        st.ping_outstanding_ns = 0;
    }
    if st.ping_outstanding_ns != 0 {
        if now.saturating_sub(st.ping_outstanding_ns) > timeout {
            host.close(KEEPALIVE_TIMEOUT, "keepalive ping timeout");
        }
        return;
    }
    if now.saturating_sub(st.last_ping_ns) >= interval {
        st.last_ping_ns = now;
        st.ping_outstanding_ns = now;
        host.ping(b"tickcast", now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::pair::{text_frames, too_deep, Action, Pair};
    use super::super::{Count, Dialect};
    use crate::auth::{hash_line, Auth, User};
    use crate::encode::dialects::openalgo_mode::{DEPTH, LTP, QUOTE};
    use crate::encode::{Encoding, Format};
    use crate::subs::Delivery;
    use crate::tick::{Mode, Tick};
    use crate::ws::close;

    /// The seed's LTP throttle as a delivery.
    const THROTTLED: Delivery = Delivery::MaxRate { interval_ns: 50_000_000 };

    fn enc(bits: u8, mode: Mode) -> Encoding {
        Encoding { format: Format::OpenAlgo(bits), mode }
    }

    /// Connected, not authenticated, nothing recorded yet.
    fn connected() -> Pair {
        let mut p = Pair::new();
        p.open("/", Dialect::OpenAlgo).unwrap();
        assert_eq!(p.take(), [Action::Accept(Dialect::OpenAlgo)], "no greeting: the client speaks first");
        p
    }

    /// Connected and authenticated (open auth: anonymous), nothing recorded.
    fn authed() -> Pair {
        let mut p = connected();
        p.send(r#"{"action":"authenticate","api_key":"k"}"#);
        assert_eq!(p.replies().len(), 2);
        p
    }

    /// Users alice and bob, one key each.
    fn keyed() -> Auth {
        let text = format!(
            "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"bob\"\nkeys = [\"{}\"]\n",
            hash_line("alice-key"),
            hash_line("bob-key")
        );
        Auth::parse(&text).unwrap()
    }

    /// The JSON of one reply action.
    fn reply(a: &Action) -> Value {
        match a {
            Action::Reply(t) => serde_json::from_str(t).unwrap(),
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// The payloads of the data frames among `acts`, as JSON.
    fn data(acts: &[Action]) -> Vec<Value> {
        acts.iter().flat_map(|a| if let Action::Data(f) = a { text_frames(f) } else { Vec::new() }).collect()
    }

    /// The one reply among `acts` (other actions allowed).
    fn only_reply(acts: &[Action]) -> Value {
        let r: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::Reply(_))).collect();
        assert_eq!(r.len(), 1, "{acts:?}");
        reply(r[0])
    }

    /// An error frame with this code; counted as a bad request; still open.
    fn assert_refused(p: &mut Pair, request: &str, code: &str, want: &str) {
        let (counted, r) = p.refuse(request);
        assert!(counted.starts_with(code), "{request}: {counted}");
        assert_eq!(
            (&r["type"], &r["status"], &r["code"]),
            (&json!("error"), &json!("error"), &json!(code)),
            "{request}"
        );
        let msg = r["message"].as_str().unwrap();
        assert!(msg.contains(want), "{request}: {msg}");
        assert!(p.open, "{request} closed the connection");
    }

    /// The seed's messages in order: authenticate, subscribe (its NFO
    /// option is not in the bundled master), unsubscribe.
    #[test]
    fn seed_session() {
        let mut p = connected();
        let (reliance, tcs) = (p.slot(2885), p.slot(11536));

        p.send(r#"{"action":"authenticate","api_key":"your-openalgo-api-key"}"#);
        let ok = "Authentication successful";
        assert_eq!(
            p.replies(),
            [
                json!({"type":"auth","status":"success","message":ok,"broker":"tickcast","user_id":"anonymous",
                    "supported_features":{"ltp":true,"quote":true,"depth":true},"market_open":true}),
                json!({"type":"auth_response","status":"success","message":"Authentication successful"}),
            ]
        );

        p.send(
            r#"{
                "action": "subscribe",
                "symbols": [
                    {"symbol": "RELIANCE", "exchange": "NSE"},
                    {"symbol": "TCS", "exchange": "NSE"},
                    {"symbol": "NIFTY28DEC2425000CE", "exchange": "NFO"}
                ],
                "mode": "Quote"
            }"#,
        );
        let acts = p.take();
        let quote = enc(QUOTE, Mode::Quote);
        assert_eq!(
            acts[..2],
            [Action::Subscribe(reliance, quote, Delivery::Conflate), Action::Subscribe(tcs, quote, Delivery::Conflate)]
        );
        assert_eq!(acts.len(), 3, "{acts:?}");
        assert_eq!(
            reply(&acts[2]),
            json!({"type":"subscribe","status":"partial","subscriptions":[
                {"symbol":"RELIANCE","exchange":"NSE","status":"success","mode":"Quote","depth":5},
                {"symbol":"TCS","exchange":"NSE","status":"success","mode":"Quote","depth":5},
                {"symbol":"NIFTY28DEC2425000CE","exchange":"NFO","status":"error","message":"unknown symbol NFO:NIFTY28DEC2425000CE"}
            ],"message":"Subscription processing complete","broker":"tickcast"})
        );

        p.send(r#"{"action": "unsubscribe", "symbols": [{"symbol": "RELIANCE", "exchange": "NSE"}]}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Unsubscribe(reliance));
        assert_eq!(
            only_reply(&acts),
            json!({"type":"unsubscribe","status":"success","message":"Unsubscription processing complete",
                "successful":[{"symbol":"RELIANCE","exchange":"NSE","status":"success"}],"failed":[],"broker":"tickcast"})
        );
        assert_eq!(p.slots, [tcs]);
    }

    /// Adding Quote to an LTP subscription sends the cached value in Quote
    /// mode: the seed's `market_data` example (plus the SDK's fields). A new
    /// subscription gets its snapshot from the host, not the dialect.
    #[test]
    fn market_data_snapshot_is_the_seeds_example() {
        let mut p = authed();
        let reliance = p.slot(2885);
        let t = p.value(2885, 7, 285_050);
        let seed_ts = 1_733_288_400_000_000_000; // 2024-12-04T10:30:00 IST
        let t = Tick {
            open: 282_000,
            high: 286_000,
            low: 281_500,
            close: 284_825,
            volume: 1_500_000,
            bid: 285_045,
            ask: 285_055,
            bid_qty: 500,
            ask_qty: 750,
            ltq: 10,
            ts_ns: seed_ts,
            ..t
        };
        p.values.insert(reliance, t);

        p.send(r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":1}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP, Mode::Ltp), THROTTLED));
        assert!(data(&acts).is_empty(), "a new subscription's snapshot is the host's: {acts:?}");
        assert_eq!(only_reply(&acts)["subscriptions"][0]["mode"], "LTP");

        p.send(r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":2}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP | QUOTE, Mode::Quote), Delivery::Conflate));
        assert_eq!(
            data(&acts),
            [json!({
                "type": "market_data",
                "symbol": "RELIANCE",
                "exchange": "NSE",
                "mode": 2,
                "data": {
                    "ltp": 2850.50,
                    "open": 2820.00,
                    "high": 2860.00,
                    "low": 2815.00,
                    "close": 2848.25,
                    "volume": 1500000,
                    "bid": 2850.45,
                    "ask": 2850.55,
                    "bid_qty": 500,
                    "ask_qty": 750,
                    "oi": 0,
                    "prev_oi": 0,
                    "last_trade_quantity": 10,
                    "change": 2.25,
                    "change_percent": 0.08,
                    "timestamp": "2024-12-04T10:30:00"
                }
            })]
        );
        assert_eq!(only_reply(&acts)["subscriptions"][0]["mode"], "Quote");

        // The same mode again: no new data, nothing changes.
        p.send(r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":2}"#);
        let acts = p.take();
        assert!(data(&acts).is_empty(), "{acts:?}");
        assert_eq!(p.subs[&reliance], (enc(LTP | QUOTE, Mode::Quote), Delivery::Conflate));

        // Congested: no snapshot (the next delivery carries the value).
        p.congested = true;
        p.send(r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":3}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP | QUOTE | DEPTH, Mode::Depth), Delivery::Conflate));
        assert!(data(&acts).is_empty(), "{acts:?}");
    }

    /// Modes by number or name (any case); none is Quote. LTP alone is
    /// throttled to the seed's 50 ms; `depth` is levels per side, capped.
    #[test]
    fn subscribe_in_each_mode() {
        let cases = [
            (r#","mode":1"#, LTP, Mode::Ltp, THROTTLED, "LTP", 5),
            (r#","mode":2"#, QUOTE, Mode::Quote, Delivery::Conflate, "Quote", 5),
            (r#","mode":3"#, DEPTH, Mode::Depth, Delivery::Conflate, "Depth", 5),
            (r#","mode":"LTP""#, LTP, Mode::Ltp, THROTTLED, "LTP", 5),
            (r#","mode":"quote""#, QUOTE, Mode::Quote, Delivery::Conflate, "Quote", 5),
            (r#","mode":" DEPTH ""#, DEPTH, Mode::Depth, Delivery::Conflate, "Depth", 5),
            ("", QUOTE, Mode::Quote, Delivery::Conflate, "Quote", 5),
            (r#","mode":3,"depth":20"#, DEPTH, Mode::Depth, Delivery::Conflate, "Depth", 5),
            (r#","mode":3,"depth":2"#, DEPTH, Mode::Depth, Delivery::Conflate, "Depth", 2),
        ];
        for (extra, bits, mode, delivery, name, depth) in cases {
            let mut p = authed();
            let tcs = p.slot(11536);
            let request = format!(r#"{{"action":"subscribe","symbols":[{{"symbol":"TCS","exchange":"NSE"}}]{extra}}}"#);
            p.send(&request);
            let acts = p.take();
            assert_eq!(acts[0], Action::Subscribe(tcs, enc(bits, mode), delivery), "{request}");
            assert_eq!(
                only_reply(&acts)["subscriptions"],
                json!([{"symbol":"TCS","exchange":"NSE","status":"success","mode":name,"depth":depth}]),
                "{request}"
            );
        }
    }

    /// Modes are kept per instrument: an unsubscribe may name one (per
    /// request or per entry); dropping Quote from LTP + Quote throttles again.
    #[test]
    fn unsubscribe_by_mode() {
        let mut p = authed();
        let (reliance, tcs, infy) = (p.slot(2885), p.slot(11536), p.slot(1594));
        for m in [1, 2, 3] {
            p.send(&format!(r#"{{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":{m}}}"#));
        }
        p.send(r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":"Quote"}"#);
        p.take();
        assert_eq!(p.subs[&reliance], (enc(LTP | QUOTE | DEPTH, Mode::Depth), Delivery::Conflate));

        // Per-entry mode wins over the request's.
        p.send(r#"{"action":"unsubscribe","symbols":[{"symbol":"RELIANCE","exchange":"NSE","mode":3}],"mode":1}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP | QUOTE, Mode::Quote), Delivery::Conflate));
        assert_eq!(
            only_reply(&acts)["successful"],
            json!([{"symbol":"RELIANCE","exchange":"NSE","status":"success","mode":"Depth"}])
        );

        p.send(r#"{"action":"unsubscribe","symbol":"RELIANCE","exchange":"NSE","mode":"Quote"}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP, Mode::Ltp), THROTTLED));

        // Not held in that mode, not held at all, unknown: failed, nothing changes.
        p.send(
            r#"{"action":"unsubscribe","mode":"Depth","symbols":[{"symbol":"RELIANCE","exchange":"NSE"},{"symbol":"INFY","exchange":"NSE"}]}"#,
        );
        let acts = p.take();
        assert_eq!(
            only_reply(&acts),
            json!({"type":"unsubscribe","status":"error","message":"Unsubscription processing complete","successful":[],"failed":[
                {"symbol":"RELIANCE","exchange":"NSE","status":"error","message":"not subscribed in Depth mode"},
                {"symbol":"INFY","exchange":"NSE","status":"error","message":"not subscribed in Depth mode"}
            ],"broker":"tickcast"})
        );
        assert_eq!(acts.len(), 1, "{acts:?}");
        p.send(r#"{"action":"unsubscribe","symbols":[{"symbol":"INFY","exchange":"NSE"},{"symbol":"NOPE","exchange":"NSE"},{"symbol":"TCS","exchange":"NSE"}]}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Unsubscribe(tcs));
        let r = only_reply(&acts);
        assert_eq!(r["status"], "partial");
        assert_eq!(r["successful"], json!([{"symbol":"TCS","exchange":"NSE","status":"success"}]));
        assert_eq!(
            r["failed"],
            json!([
                {"symbol":"INFY","exchange":"NSE","status":"error","message":"not subscribed"},
                {"symbol":"NOPE","exchange":"NSE","status":"error","message":"unknown symbol NSE:NOPE"}
            ])
        );
        assert_eq!(p.slots, [reliance]);
        assert!(!p.subs.contains_key(&infy));
    }

    /// `unsubscribe_all` drops everything, in subscription order.
    #[test]
    fn unsubscribe_all() {
        let mut p = authed();
        let (reliance, tcs, nifty) = (p.slot(2885), p.slot(11536), p.slot(26000));
        p.send(
            r#"{"action":"subscribe","mode":1,"symbols":[{"symbol":"TCS","exchange":"NSE"},{"symbol":"NIFTY","exchange":"NSE_INDEX"},{"symbol":"RELIANCE","exchange":"NSE"}]}"#,
        );
        p.take();
        p.send(r#"{"action":"unsubscribe_all"}"#);
        let acts = p.take();
        assert_eq!(acts[..3], [Action::Unsubscribe(tcs), Action::Unsubscribe(nifty), Action::Unsubscribe(reliance)]);
        assert_eq!(
            only_reply(&acts),
            json!({"type":"unsubscribe","status":"success","message":"Unsubscription processing complete","successful":[
                {"symbol":"TCS","exchange":"NSE","status":"success"},
                {"symbol":"NIFTY","exchange":"NSE_INDEX","status":"success"},
                {"symbol":"RELIANCE","exchange":"NSE","status":"success"}
            ],"failed":[],"broker":"tickcast"})
        );
        assert!(p.slots.is_empty() && p.subs.is_empty());
        p.send(r#"{"action":"unsubscribe_all"}"#);
        assert_eq!(p.replies()[0]["successful"], json!([]));
    }

    /// Indices are on `NSE_INDEX`, equities on their exchange; names in any
    /// case are answered as the frames spell them.
    #[test]
    fn instruments_resolve_by_exchange() {
        let mut p = authed();
        let (reliance, nifty) = (p.slot(2885), p.slot(26000));
        p.send(
            r#"{"action":"subscribe","mode":"LTP","symbols":[
                {"symbol":"NIFTY","exchange":"NSE_INDEX"},
                {"symbol":"reliance","exchange":"nse"},
                {"symbol":"NIFTY","exchange":"NSE"},
                {"symbol":"TCS","exchange":"NSE_INDEX"},
                {"symbol":"NSE:TCS","exchange":"NSE"},
                {"symbol":"TCS","exchange":"BSE"}
            ]}"#,
        );
        let acts = p.take();
        assert_eq!(
            acts[..2],
            [
                Action::Subscribe(nifty, enc(LTP, Mode::Ltp), THROTTLED),
                Action::Subscribe(reliance, enc(LTP, Mode::Ltp), THROTTLED)
            ]
        );
        let r = only_reply(&acts);
        assert_eq!(r["status"], "partial");
        assert_eq!(
            r["subscriptions"],
            json!([
                {"symbol":"NIFTY","exchange":"NSE_INDEX","status":"success","mode":"LTP","depth":5},
                {"symbol":"RELIANCE","exchange":"NSE","status":"success","mode":"LTP","depth":5},
                {"symbol":"NIFTY","exchange":"NSE","status":"error","message":"NIFTY is an index: subscribe on exchange NSE_INDEX"},
                {"symbol":"TCS","exchange":"NSE_INDEX","status":"error","message":"TCS is not an index: subscribe on exchange NSE"},
                {"symbol":"NSE:TCS","exchange":"NSE","status":"error","message":"unknown symbol NSE:NSE:TCS"},
                {"symbol":"TCS","exchange":"BSE","status":"error","message":"unknown symbol BSE:TCS"}
            ])
        );
        // Nothing resolves: the whole request is an error (not a bad request).
        p.send(r#"{"action":"subscribe","symbol":"NOPE","exchange":"NSE"}"#);
        let acts = p.take();
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(reply(&acts[0])["status"], "error");
    }

    /// `max_subscriptions` per connection, and per request (at least 1000).
    #[test]
    fn limits() {
        let mut p = authed();
        p.config.max_subscriptions = 2;
        let reliance = p.slot(2885);
        p.send(
            r#"{"action":"subscribe","mode":1,"symbols":[{"symbol":"RELIANCE","exchange":"NSE"},{"symbol":"TCS","exchange":"NSE"},{"symbol":"INFY","exchange":"NSE"}]}"#,
        );
        let acts = p.take();
        assert_eq!(acts.iter().filter(|a| matches!(a, Action::Subscribe(..))).count(), 2);
        let r = only_reply(&acts);
        assert_eq!(r["status"], "partial");
        assert_eq!(
            r["subscriptions"][2],
            json!({"symbol":"INFY","exchange":"NSE","status":"error","message":"subscription limit reached (2 per connection)"})
        );
        // Another mode of a held instrument takes no new slot.
        p.send(r#"{"action":"subscribe","symbol":"RELIANCE","exchange":"NSE","mode":2}"#);
        let acts = p.take();
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(LTP | QUOTE, Mode::Quote), Delivery::Conflate));
        assert_eq!(only_reply(&acts)["status"], "success");

        let many = |n: usize| {
            let list: Vec<Value> = (0..n).map(|_| json!({"symbol":"RELIANCE","exchange":"NSE"})).collect();
            json!({"action":"subscribe","symbols":list}).to_string()
        };
        assert_refused(&mut p, &many(1001), "INVALID_PARAMETERS", "1001 instruments in one request; at most 1000");
        p.config.max_subscriptions = 3000;
        assert_refused(&mut p, &many(3001), "INVALID_PARAMETERS", "3001 instruments in one request; at most 3000");
        p.send(&many(3000));
        assert_eq!(p.replies()[0]["status"], "success", "repeats of one instrument take one slot");
    }

    /// Over `max_clients`: an error, then close 1013; nothing after it.
    #[test]
    fn client_limit() {
        let mut p = Pair::new();
        p.config.openalgo.max_clients = 0;
        p.open("/", Dialect::OpenAlgo).unwrap();
        let acts = p.take();
        assert_eq!(acts[..2], [Action::Accept(Dialect::OpenAlgo), Action::Count(Count::ConnectionRejected)]);
        assert_eq!(
            reply(&acts[2]),
            json!({"type":"error","status":"error","code":"MAX_CLIENTS",
                "message":"the server is at its OpenAlgo client limit (0); try again later"})
        );
        assert_eq!(acts[3], Action::Close(close::TRY_AGAIN_LATER, "OpenAlgo client limit reached".into()));
        assert_eq!(acts.len(), 4);
        p.send(r#"{"action":"authenticate","api_key":"k"}"#);
        assert_eq!(p.take(), []);
    }

    /// Refused keys: the seed's `auth_response` error and the error frame,
    /// counted as auth failures; the connection stays open and unauthenticated.
    #[test]
    fn refused_keys() {
        let cases = [
            (r#"{"action":"authenticate","api_key":"wrong"}"#, "Invalid API key"),
            (r#"{"action":"authenticate","apikey":"wrong"}"#, "Invalid API key"),
            (r#"{"action":"authenticate"}"#, "API key is required"),
            (r#"{"action":"authenticate","api_key":""}"#, "API key is required"),
            (r#"{"action":"authenticate","api_key":5}"#, "field `api_key` must be a string"),
        ];
        for (request, msg) in cases {
            let mut p = Pair::new();
            p.auth = keyed();
            p.open("/", Dialect::OpenAlgo).unwrap();
            p.take();
            p.send(request);
            let acts = p.take();
            assert_eq!(acts.len(), 3, "{request}: {acts:?}");
            assert!(acts.contains(&Action::Count(Count::AuthFailure)), "{request}: {acts:?}");
            let replies: Vec<Value> = acts.iter().filter(|a| matches!(a, Action::Reply(_))).map(reply).collect();
            assert_eq!(
                replies,
                [
                    json!({"type":"auth_response","status":"error","message":msg}),
                    json!({"type":"error","status":"error","code":"AUTHENTICATION_ERROR","message":msg}),
                ],
                "{request}"
            );
            assert!(p.open && p.user.is_none(), "{request}");
            assert_refused(
                &mut p,
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE"}"#,
                "NOT_AUTHENTICATED",
                "authenticate first",
            );
        }
    }

    /// A user's key authenticates as that user; later keys must be the same
    /// user's (acknowledged again), another user's is refused.
    #[test]
    fn authenticate_with_keys() {
        let mut p = Pair::new();
        p.auth = keyed();
        p.open("/", Dialect::OpenAlgo).unwrap();
        p.take();
        p.send(r#"{"action":"authenticate","api_key":"alice-key"}"#);
        let r = p.replies();
        assert_eq!((&r[0]["type"], &r[0]["user_id"]), (&json!("auth"), &json!("alice")));
        assert_eq!(r[1], json!({"type":"auth_response","status":"success","message":"Authentication successful"}));

        let cases = [
            ("alice-key", None),
            ("bob-key", Some("this connection is authenticated as another user")),
            ("nope", Some("Invalid API key")),
        ];
        for (key, refused) in cases {
            p.send(&json!({"action":"auth","api_key":key}).to_string());
            let acts = p.take();
            let r: Vec<Value> = acts.iter().filter(|a| matches!(a, Action::Reply(_))).map(reply).collect();
            match refused {
                None => {
                    assert_eq!(r[0]["user_id"], "alice", "{key}");
                    assert_eq!(r[1]["status"], "success", "{key}");
                    assert!(!acts.iter().any(|a| matches!(a, Action::Count(_))), "{key}: {acts:?}");
                }
                Some(msg) => {
                    assert_eq!(r[0], json!({"type":"auth_response","status":"error","message":msg}), "{key}");
                    assert_eq!(r[1]["code"], "AUTHENTICATION_ERROR", "{key}");
                    assert!(acts.contains(&Action::Count(Count::AuthFailure)), "{key}: {acts:?}");
                }
            }
            assert_eq!(&*p.user.as_ref().unwrap().id, "alice", "{key}");
        }
        // Still authenticated as alice.
        p.send(r#"{"action":"get_broker_info"}"#);
        assert_eq!(p.replies()[0]["user_id"], "alice");
    }

    /// Five wrong keys in a row close the connection (1008); a success
    /// starts the count again.
    #[test]
    fn repeated_wrong_keys_close() {
        let mut p = Pair::new();
        p.auth = keyed();
        p.open("/", Dialect::OpenAlgo).unwrap();
        let wrong = r#"{"action":"authenticate","api_key":"guess"}"#;
        for _ in 0..4 {
            p.send(wrong);
        }
        p.send(r#"{"action":"authenticate","api_key":"alice-key"}"#);
        for _ in 0..4 {
            p.send(wrong);
        }
        assert!(p.open, "a success resets the count");
        p.take();
        p.send(wrong);
        let acts = p.take();
        assert_eq!(acts.last(), Some(&Action::Close(close::POLICY, "too many failed authentication attempts".into())));
        assert!(!p.open);
        p.send(r#"{"action":"ping"}"#);
        assert_eq!(p.take(), [], "nothing after the close");
    }

    /// A key on the upgrade authenticates the connection: no message needed,
    /// no auth deadline.
    #[test]
    fn key_on_the_upgrade() {
        let mut p = Pair::new();
        p.user = Some(User::anonymous());
        p.open("/", Dialect::OpenAlgo).unwrap();
        p.take();
        p.send(r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":2}"#);
        assert_eq!(p.replies()[0]["status"], "success");
        p.advance(20_000);
        assert!(p.open);
        p.send(r#"{"action":"authenticate","api_key":"again"}"#);
        assert_eq!(p.replies()[1]["status"], "success", "the same user's key is acknowledged");
    }

    /// Not authenticated within `auth_timeout` (15 s): close 1008.
    #[test]
    fn auth_timeout() {
        let mut p = connected();
        p.advance(15_000);
        assert!(!p.take().iter().any(|a| matches!(a, Action::Close(..))), "not past the deadline yet");
        p.advance(1);
        let acts = p.take();
        assert!(
            matches!(&acts[..], [Action::Close(close::POLICY, why)] if why.starts_with("not authenticated in time")),
            "{acts:?}"
        );

        let mut p = authed();
        p.advance(16_000);
        assert!(p.open, "authenticated in time");
    }

    /// A ping every `ping_interval` (5 s) while the last was answered; an
    /// answer not within `ping_timeout` (10 s) closes with 1011.
    #[test]
    fn keepalive() {
        let mut p = authed();
        assert_eq!(p.due_in(5_000), [Action::Ping]);
        p.last_pong_ns = p.now + 2_000_000; // answered 2 ms later
        p.advance(1_000);
        assert_eq!(p.due_in(4_000), [Action::Ping], "the next ping, 5 s after the last");
        p.advance(5_000);
        assert_eq!(p.take(), [], "one ping outstanding at a time");
        p.advance(5_000);
        assert_eq!(p.take(), [], "at the timeout, not past it");
        p.advance(1);
        assert_eq!(p.take(), [Action::Close(1011, "keepalive ping timeout".into())]);
    }

    /// Application-level ping (before authentication too): server time in
    /// ms, the client's timestamp and id echoed.
    #[test]
    fn ping_pong() {
        let mut p = connected();
        let ms = p.now / 1_000_000;
        p.send(r#"{"action":"ping"}"#);
        assert_eq!(p.replies(), [json!({"type":"pong","status":"success","server_timestamp":ms})]);
        p.send(r#"{"type":"ping","timestamp":1733288400123,"_pingId":"p-7"}"#);
        assert_eq!(
            p.replies(),
            [
                json!({"type":"pong","status":"success","server_timestamp":ms,"client_timestamp":1733288400123_u64,"_pingId":"p-7"})
            ]
        );
    }

    #[test]
    fn broker_info() {
        let mut p = authed();
        p.send(r#"{"action":"get_broker_info"}"#);
        assert_eq!(
            p.replies(),
            [
                json!({"type":"broker_info","status":"success","broker":"tickcast","adapter_status":"connected","user_id":"anonymous"})
            ]
        );
        p.send(r#"{"action":"get_supported_brokers"}"#);
        assert_eq!(
            p.replies(),
            [json!({"type":"supported_brokers","status":"success","brokers":["tickcast"],"count":1})]
        );
    }

    /// Only `authenticate` and `ping` before authentication.
    #[test]
    fn not_authenticated() {
        let mut p = connected();
        for action in ["subscribe", "unsubscribe", "unsubscribe_all", "get_broker_info", "get_supported_brokers"] {
            let request = format!(r#"{{"action":"{action}","symbol":"TCS","exchange":"NSE"}}"#);
            assert_refused(&mut p, &request, "NOT_AUTHENTICATED", "You must authenticate first");
        }
        assert!(p.slots.is_empty());
    }

    /// Every bad request gets an error frame with its code; the connection stays open.
    #[test]
    fn bad_requests() {
        let deep = too_deep();
        let cases: &[(&str, &str, &str)] = &[
            ("not json", "INVALID_JSON", "Invalid JSON message: malformed JSON"),
            (&deep, "INVALID_JSON", "nested deeper"),
            ("[1,2]", "INVALID_MESSAGE", "must be a JSON object"),
            (r#""subscribe""#, "INVALID_MESSAGE", "must be a JSON object"),
            ("{}", "INVALID_ACTION", "missing field `action`"),
            (r#"{"action":7}"#, "INVALID_ACTION", "`action` must be a string"),
            (
                r#"{"action":"dance"}"#,
                "INVALID_ACTION",
                "Invalid action: dance (expected one of authenticate, subscribe",
            ),
            (r#"{"action":"subscribe"}"#, "INVALID_PARAMETERS", "At least one symbol must be specified"),
            (r#"{"action":"subscribe","symbols":[]}"#, "INVALID_PARAMETERS", "At least one symbol"),
            (r#"{"action":"subscribe","symbols":"RELIANCE"}"#, "INVALID_PARAMETERS", "`symbols` must be an array"),
            (r#"{"action":"subscribe","symbols":["RELIANCE"]}"#, "INVALID_PARAMETERS", "`symbols` must be an array"),
            (r#"{"action":"subscribe","symbols":[{"symbol":"TCS"}]}"#, "INVALID_PARAMETERS", "(missing `exchange`)"),
            (r#"{"action":"subscribe","symbol":"TCS"}"#, "INVALID_PARAMETERS", "(missing `exchange`)"),
            (r#"{"action":"subscribe","exchange":"NSE"}"#, "INVALID_PARAMETERS", "(missing `symbol`)"),
            (
                r#"{"action":"subscribe","symbol":"","exchange":"NSE"}"#,
                "INVALID_PARAMETERS",
                "`symbol` must be a non-empty string",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":1}"#,
                "INVALID_PARAMETERS",
                "`exchange` must be a non-empty string",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","depth":0}"#,
                "INVALID_PARAMETERS",
                "`depth` must be an integer from 1 to 50",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","depth":51}"#,
                "INVALID_PARAMETERS",
                "from 1 to 50",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","depth":"5"}"#,
                "INVALID_PARAMETERS",
                "from 1 to 50",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":0}"#,
                "INVALID_MODE",
                "Invalid mode 0; expected 1 (LTP), 2 (Quote) or 3 (Depth)",
            ),
            (r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":4}"#, "INVALID_MODE", "Invalid mode 4"),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":"Full"}"#,
                "INVALID_MODE",
                r#"Invalid mode "Full""#,
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":true}"#,
                "INVALID_MODE",
                "Invalid mode true",
            ),
            (
                r#"{"action":"subscribe","symbol":"TCS","exchange":"NSE","mode":2.0}"#,
                "INVALID_MODE",
                "Invalid mode 2.0",
            ),
            (r#"{"action":"unsubscribe"}"#, "INVALID_PARAMETERS", "Either symbols or unsubscribe_all is required"),
            (
                r#"{"action":"unsubscribe","symbol":"TCS","exchange":"NSE","mode":"x"}"#,
                "INVALID_MODE",
                r#"Invalid mode "x""#,
            ),
            (
                r#"{"action":"unsubscribe","symbols":[{"symbol":"TCS","exchange":"NSE","mode":9}]}"#,
                "INVALID_MODE",
                "Invalid mode 9",
            ),
        ];
        for &(request, code, want) in cases {
            let mut p = authed();
            assert_refused(&mut p, request, code, want);
            assert!(p.slots.is_empty(), "{request}");
        }
        let mut p = authed();
        p.send_binary();
        let (counted, r) = p.refusal();
        assert!(counted.starts_with("INVALID_MESSAGE"), "{counted}");
        assert_eq!(
            r,
            json!({"type":"error","status":"error","code":"INVALID_MESSAGE",
                "message":"binary messages are not accepted; send requests as JSON text frames"})
        );
        assert!(p.open);
    }

    /// The market open/close notice, and `market_open` in the auth reply.
    #[test]
    fn market_status() {
        let mut p = Pair::new();
        let notice: Value = serde_json::from_slice(&super::market_status(false, p.now)).unwrap();
        assert_eq!(notice, json!({"type":"market_status","market_open":false,"timestamp":"2026-01-05T03:45:00.000Z"}));
        let notice: Value = serde_json::from_slice(&super::market_status(true, p.now + 1_500_000)).unwrap();
        assert_eq!(notice["market_open"], true);
        assert_eq!(notice["timestamp"], "2026-01-05T03:45:00.001Z");
        p.market_open = false;
        p.open("/", Dialect::OpenAlgo).unwrap();
        p.send(r#"{"action":"authenticate","api_key":"k"}"#);
        assert_eq!(p.replies()[0]["market_open"], false);
    }
}
