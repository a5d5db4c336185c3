//! Campus prices (seed `002_…`): `/api/ws/prices`, Upstox-style instrument
//! keys (`NSE_EQ|<ISIN>`, `NSE_INDEX|<SYMBOL>`) resolved through the master.
//!
//! ```json
//! {"action":"subscribe","instruments":["NSE_EQ|INE002A01018"]}
//! {"type":"price_update","instrument_key":"NSE_EQ|INE002A01018","data":{"last_price":2451.5,"timestamp":"…","change_percent":0.03,"volume":15000}}
//! {"type":"status","status":"connected","message":"Live market data connected"}
//! ```
//! The seed's limits hold: at most 100 subscriptions per connection (a
//! user's total over connections is its auth-file `max-subscriptions`), at
//! most 10 subscription changes per minute (the 11th is refused with an
//! error and the connection closed with 1008, a policy breach), and a
//! connection that sends nothing for an hour (`--campus-idle-timeout-secs`)
//! is closed with 1000.

use serde_json::{json, Value};
use simd_json::prelude::*;

use super::{clip, Dialect, Host};
use crate::encode::dialects::campus_key;
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::tick::Mode;
use crate::ws::close;
use crate::ws::handshake::Request;

const ENC: Encoding = Encoding { format: Format::Campus, mode: Mode::Quote };

/// Most subscriptions per connection (the seed's per-user limit).
const MAX_SUBSCRIPTIONS: usize = 100;
/// Most subscription changes per window.
const MAX_CHANGES: usize = 10;
/// The change-rate window.
const CHANGE_WINDOW_NS: u64 = 60_000_000_000;

/// Campus per-connection state.
#[derive(Default)]
pub struct State {
    /// Times of the last `MAX_CHANGES` subscription changes (a ring).
    changes: [u64; MAX_CHANGES],
    next_change: usize,
    /// Last message from the client, ns (idle timeout).
    last_rx_ns: u64,
}

/// `{"type":"status","status":…,"message":…}`.
fn status(status: &str, message: &str) -> Vec<u8> {
    json!({"type": "status", "status": status, "message": message}).to_string().into_bytes()
}

/// Upgrade and say whether live data is flowing.
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<State, String> {
    host.accept(req, Dialect::Campus)?;
    host.reply(&market_status(host.market_open(), now), now);
    Ok(State { last_rx_ns: now, ..State::default() })
}

/// Handle one request.
pub(crate) fn handle(st: &mut State, host: &mut dyn Host, payload: &mut [u8], now: u64) {
    st.last_rx_ns = now;
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(host, &msg, now),
    };
    if v.as_object().is_none() {
        return reply_error(host, "a request must be a JSON object with an `action`", now);
    }
    let action = match v.get("action").map(|a| a.as_str()) {
        None => return reply_error(host, "missing field `action` (subscribe or unsubscribe)", now),
        Some(None) => return reply_error(host, "field `action` must be a string", now),
        Some(Some(a)) => a,
    };
    let subscribe = match action {
        "subscribe" => true,
        "unsubscribe" => false,
        "ping" => {
            host.reply(br#"{"type":"pong"}"#, now);
            return;
        }
        other => {
            let msg = format!("unknown action `{}` (expected subscribe or unsubscribe)", clip(other));
            return reply_error(host, &msg, now);
        }
    };
    let keys: Vec<String> = match v.get("instruments").map(|i| i.as_array()) {
        None => return reply_error(host, "missing field `instruments` (keys like \"NSE_EQ|INE002A01018\")", now),
        Some(None) => return reply_error(host, "field `instruments` must be an array of instrument keys", now),
        Some(Some(arr)) => match arr.iter().map(|k| k.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>() {
            Some(keys) => keys,
            None => return reply_error(host, "field `instruments` must be an array of strings", now),
        },
    };
    if !take_change(st, now) {
        let msg = format!("rate limit: at most {MAX_CHANGES} subscription changes per minute");
        reply_error(host, &msg, now);
        host.close(close::POLICY, "subscription changes over the limit (10 per minute)");
        return;
    }
    // A key repeated in one request (in any spelling) is handled once.
    let mut targets: Vec<(&str, Option<Slot>)> = keys.iter().map(|k| (k.as_str(), resolve(host, k))).collect();
    super::first_of_each(&mut targets, |&(_, slot)| slot);
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for (key, slot) in targets {
        let Some(slot) = slot else {
            failed.push(json!({"instrument_key": clip(key), "reason": "unknown instrument key"}));
            continue;
        };
        let canonical = canonical_key(host, slot);
        if subscribe {
            let known = host.subscription(slot).is_some();
            if !known && host.slots().len() >= MAX_SUBSCRIPTIONS {
                let reason = format!("subscription limit reached ({MAX_SUBSCRIPTIONS} per user)");
                failed.push(json!({"instrument_key": canonical, "reason": reason}));
                continue;
            }
            let delivery = host.default_delivery();
            match host.subscribe(slot, ENC, delivery, now) {
                Ok(()) => done.push(json!(canonical)),
                Err(why) => failed.push(json!({"instrument_key": canonical, "reason": why})),
            }
        } else if host.unsubscribe(slot) {
            done.push(json!(canonical));
        } else {
            failed.push(json!({"instrument_key": canonical, "reason": "not subscribed"}));
        }
    }
    let total = host.slots().len();
    if !failed.is_empty() {
        host.bad_request(&format!("{} of {} instrument keys failed", failed.len(), keys.len()));
    }
    let reply =
        json!({"type": "subscription", "action": action, "instruments": done, "failed": failed, "total": total});
    super::reply_json(host, &reply, now);
}

/// Count a subscription change; false past `MAX_CHANGES` in the window.
fn take_change(st: &mut State, now: u64) -> bool {
    let oldest = st.changes[st.next_change];
    if oldest != 0 && now.saturating_sub(oldest) < CHANGE_WINDOW_NS {
        return false;
    }
    st.changes[st.next_change] = now;
    st.next_change = (st.next_change + 1) % MAX_CHANGES;
    true
}

/// `NSE_EQ|<ISIN>` (or `BSE_EQ|…`) → the instrument with that ISIN on that
/// exchange; `NSE_INDEX|<SYMBOL>` → the index.
fn resolve(host: &dyn Host, key: &str) -> Option<Slot> {
    let (segment, id) = key.split_once('|')?;
    let (exchange, kind) = segment.split_once('_')?;
    let reg = host.registry();
    let slot = match kind.to_ascii_uppercase().as_str() {
        "EQ" if id.len() == 12 => reg.slot_of_symbol(id)?,
        "INDEX" => reg.slot_of_symbol(&format!("{exchange}:{id}"))?,
        _ => return None,
    };
    reg.get(slot).exchange.eq_ignore_ascii_case(exchange).then_some(slot)
}

fn canonical_key(host: &dyn Host, slot: Slot) -> Value {
    let mut out = Vec::new();
    campus_key(&mut out, host.registry().get(slot));
    json!(String::from_utf8_lossy(&out))
}

/// `{"type":"error","message":…}`; the connection stays.
pub(crate) fn reply_error(host: &mut dyn Host, msg: &str, now: u64) {
    host.bad_request(msg);
    let reply = json!({"type": "error", "message": msg});
    super::reply_json(host, &reply, now);
}

/// A `status` message on each market transition.
pub(crate) fn market_status(open: bool, _now: u64) -> Vec<u8> {
    if open {
        status("connected", "Live market data connected")
    } else {
        status("market_closed", "Market closed: prices resume at the next open")
    }
}

/// Close a connection idle past the timeout.
pub(crate) fn housekeeping(st: &mut State, host: &mut dyn Host, now: u64) {
    let timeout = crate::tick::ns(host.config().campus_idle_timeout);
    if now.saturating_sub(st.last_rx_ns) >= timeout {
        host.reply(&status("disconnected", "Connection closed after an idle timeout"), now);
        host.close(close::NORMAL, "idle timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::super::pair::{did, too_deep, Action, Did, Pair};
    use super::*;
    use crate::instrument::{parse_master, Registry};
    use crate::subs::Delivery;

    const RELIANCE: &str = "NSE_EQ|INE002A01018";
    const TCS: &str = "NSE_EQ|INE467B01029";

    /// Opened at `/api/ws/prices`, the greeting taken.
    fn connected() -> Pair {
        let mut p = Pair::new();
        p.open("/api/ws/prices", Dialect::Campus).unwrap();
        p.take();
        p
    }

    fn subscription(action: &str, instruments: Value, failed: Value, total: usize) -> Did {
        Did::Reply(
            json!({"type":"subscription","action":action,"instruments":instruments,"failed":failed,"total":total}),
        )
    }

    /// The seed's flow: connect (the seed's status message), subscribe to
    /// its two instruments, unsubscribe one, the wscat example.
    #[test]
    fn seed_session() {
        let mut p = Pair::new();
        p.open("/api/ws/prices", Dialect::Campus).unwrap();
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Accept(Dialect::Campus)),
                Did::Reply(json!({"type": "status", "status": "connected", "message": "Live market data connected"})),
            ]
        );
        let (rel, tcs) = (p.slot(2885), p.slot(11536));
        p.send(
            "{\n  \"action\": \"subscribe\",\n  \"instruments\": [\n    \"NSE_EQ|INE002A01018\",\n    \"NSE_EQ|INE467B01029\"\n  ]\n}",
        );
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, ENC, Delivery::Conflate)),
                Did::Act(Action::Subscribe(tcs, ENC, Delivery::Conflate)),
                subscription("subscribe", json!([RELIANCE, TCS]), json!([]), 2),
            ]
        );
        p.send("{\n  \"action\": \"unsubscribe\",\n  \"instruments\": [\"NSE_EQ|INE002A01018\"]\n}");
        assert_eq!(
            did(p.take()),
            [Did::Act(Action::Unsubscribe(rel)), subscription("unsubscribe", json!([RELIANCE]), json!([]), 1)]
        );
        p.send(r#"{"action": "subscribe", "instruments": ["NSE_EQ|INE002A01018"]}"#);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, ENC, Delivery::Conflate)),
                subscription("subscribe", json!([RELIANCE]), json!([]), 2),
            ]
        );
        assert_eq!(p.slots, [tcs, rel]);
        p.send(r#"{"action":"ping"}"#);
        assert_eq!(did(p.take()), [Did::Reply(json!({"type":"pong"}))]);
        assert!(p.open);
    }

    /// Keys resolve through the master (any case, indices by symbol) and
    /// come back canonical; the ones that do not are listed with the
    /// reason, counted, and the rest still done.
    #[test]
    fn instrument_keys() {
        let mut p = connected();
        let (rel, nifty) = (p.slot(2885), p.slot(26000));
        let bad = [
            "NSE_EQ|INE000000000", // no such ISIN
            "INE002A01018",        // no segment
            "NSE|INE002A01018",    // no instrument type
            "NSE_FO|INE002A01018", // not EQ or INDEX
            "BSE_EQ|INE002A01018", // another exchange
            "NSE_EQ|RELIANCE",     // EQ keys are ISINs
            "NSE_INDEX|NOPE",
        ];
        let mut keys = vec!["nse_eq|ine002a01018", "NSE_INDEX|NIFTY"];
        keys.extend(bad);
        p.send(&json!({"action":"subscribe","instruments":keys}).to_string());
        let failed: Vec<Value> =
            bad.iter().map(|k| json!({"instrument_key": k, "reason": "unknown instrument key"})).collect();
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, ENC, Delivery::Conflate)),
                Did::Act(Action::Subscribe(nifty, ENC, Delivery::Conflate)),
                Did::Act(Action::BadRequest("7 of 9 instrument keys failed".into())),
                subscription("subscribe", json!([RELIANCE, "NSE_INDEX|NIFTY"]), json!(failed), 2),
            ]
        );
        // Unsubscribing what is not subscribed; a long key is clipped.
        let long = format!("NSE_EQ|{}", "X".repeat(100));
        p.send(&json!({"action":"unsubscribe","instruments":[TCS, "NSE_INDEX|NIFTY", long]}).to_string());
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Unsubscribe(nifty)),
                Did::Act(Action::BadRequest("2 of 3 instrument keys failed".into())),
                subscription(
                    "unsubscribe",
                    json!(["NSE_INDEX|NIFTY"]),
                    json!([
                        {"instrument_key": TCS, "reason": "not subscribed"},
                        {"instrument_key": long[..64], "reason": "unknown instrument key"}
                    ]),
                    1
                ),
            ]
        );
        assert!(p.open);
    }

    /// A key repeated in one request, in any spelling, is handled once.
    #[test]
    fn repeated_keys_count_once() {
        let mut p = connected();
        let rel = p.slot(2885);
        p.send(&json!({"action":"subscribe","instruments":[RELIANCE, "nse_eq|ine002a01018", RELIANCE]}).to_string());
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(rel, ENC, Delivery::Conflate)),
                subscription("subscribe", json!([RELIANCE]), json!([]), 1),
            ]
        );
        p.send(&json!({"action":"unsubscribe","instruments":[RELIANCE, RELIANCE]}).to_string());
        assert_eq!(
            did(p.take()),
            [Did::Act(Action::Unsubscribe(rel)), subscription("unsubscribe", json!([RELIANCE]), json!([]), 0)]
        );
    }

    /// What subscribing to `kept` (at `slot`) and `refused` does at a limit:
    /// `kept` subscribed (again), `refused` failed for `reason`, `total` held.
    fn one_of_two_at_the_limit(slot: Slot, kept: &str, refused: &str, reason: &str, total: usize) -> [Did; 3] {
        [
            Did::Act(Action::Subscribe(slot, ENC, Delivery::Conflate)),
            Did::Act(Action::BadRequest("1 of 2 instrument keys failed".into())),
            subscription("subscribe", json!([kept]), json!([{"instrument_key": refused, "reason": reason}]), total),
        ]
    }

    /// At most 100 subscriptions per connection (the seed's per-user
    /// limit); the host's own limit is reported the same way.
    #[test]
    fn subscription_limit() {
        let mut csv = String::from("token,exchange,symbol,name,isin,tick_size,lot_size,price_decimals,ref_price\n");
        for i in 1..=101 {
            csv.push_str(&format!("{i},NSE,S{i},Stock {i},INE{i:09},0.05,1,2,100.00\n"));
        }
        let mut p = Pair::new();
        p.registry = Registry::new(parse_master(csv.as_bytes()).unwrap()).unwrap();
        p.open("/api/ws/prices", Dialect::Campus).unwrap();
        p.take();
        let key = |i: u32| format!("NSE_EQ|INE{i:09}");
        let first: Vec<String> = (1..=100).map(key).collect();
        p.send(&json!({"action":"subscribe","instruments":first}).to_string());
        assert_eq!(did(p.take()).last(), Some(&subscription("subscribe", json!(first), json!([]), 100)));
        p.send(&json!({"action":"subscribe","instruments":[key(101), key(1)]}).to_string());
        assert_eq!(
            did(p.take()),
            one_of_two_at_the_limit(p.slot(1), &key(1), &key(101), "subscription limit reached (100 per user)", 100),
            "the 101st is refused, one already held is not"
        );

        let mut p = connected();
        p.config.max_subscriptions = 1;
        p.send(&json!({"action":"subscribe","instruments":[RELIANCE, TCS]}).to_string());
        assert_eq!(
            did(p.take()),
            one_of_two_at_the_limit(p.slot(2885), RELIANCE, TCS, "subscription limit reached", 1)
        );
        assert!(p.open);
    }

    /// At most 10 subscription changes a minute: the 11th is refused and the
    /// connection closed (1008); pings and bad requests are not changes; the
    /// window slides.
    #[test]
    fn subscription_change_rate() {
        let change = r#"{"action":"subscribe","instruments":["NSE_EQ|INE002A01018"]}"#;
        let refused = || {
            let msg = "rate limit: at most 10 subscription changes per minute";
            [
                Did::Act(Action::BadRequest(msg.into())),
                Did::Reply(json!({"type":"error","message":msg})),
                Did::Act(Action::Close(close::POLICY, "subscription changes over the limit (10 per minute)".into())),
            ]
        };
        // Ten at once, with pings and bad requests between: all answered.
        let mut p = connected();
        for _ in 0..10 {
            p.send(change);
            p.send(r#"{"action":"ping"}"#);
            p.send(r#"{"action":"subscribe"}"#);
        }
        let acts = did(p.take());
        assert!(!acts.iter().any(|a| matches!(a, Did::Act(Action::Close(..)))), "{acts:?}");
        p.advance(59_999);
        p.send(r#"{"action":"unsubscribe","instruments":["NSE_EQ|INE002A01018"]}"#);
        assert_eq!(did(p.take()), refused());
        assert!(!p.open);
        assert_eq!(p.slots, [p.slot(2885)], "the refused change is not made");

        // One a second: the 11th at 60 s is allowed (the first left the
        // window), a 12th then is not.
        let mut p = connected();
        for _ in 0..10 {
            p.send(change);
            p.advance(1_000);
        }
        p.advance(50_000);
        p.take();
        p.send(change);
        assert_eq!(
            did(p.take()),
            [
                Did::Act(Action::Subscribe(p.slot(2885), ENC, Delivery::Conflate)),
                subscription("subscribe", json!([RELIANCE]), json!([]), 1),
            ]
        );
        p.send(change);
        assert_eq!(did(p.take()), refused());
    }

    /// A connection that sends nothing for an hour is told and closed (1000);
    /// any message restarts the hour. No pings are sent meanwhile.
    #[test]
    fn idle_timeout() {
        let timed_out = [
            Did::Reply(
                json!({"type":"status","status":"disconnected","message":"Connection closed after an idle timeout"}),
            ),
            Did::Act(Action::Close(close::NORMAL, "idle timeout".into())),
        ];
        let mut p = connected();
        for _ in 0..35 {
            p.advance(100_000);
        }
        p.advance(99_999);
        assert_eq!(p.take(), [], "an hour less a millisecond: nothing");
        p.send("not json"); // still a message
        p.take();
        assert_eq!(did(p.due_in(3_600_000)), timed_out);
        assert!(!p.open);

        // `--campus-idle-timeout-secs`.
        let mut p = connected();
        p.config.campus_idle_timeout = std::time::Duration::from_secs(5);
        assert_eq!(did(p.due_in(5_000)), timed_out);
        assert_eq!(p.last_pong_ns, 0);
    }

    /// The status on each market transition; a connection opened while the
    /// market is closed is told so at once.
    #[test]
    fn market_status_notices() {
        let closed =
            json!({"type":"status","status":"market_closed","message":"Market closed: prices resume at the next open"});
        let parse = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).unwrap();
        assert_eq!(
            parse(market_status(true, 0)),
            json!({"type": "status", "status": "connected", "message": "Live market data connected"})
        );
        assert_eq!(parse(market_status(false, 0)), closed);
        let mut p = Pair::new();
        p.market_open = false;
        p.open("/api/ws/prices", Dialect::Campus).unwrap();
        assert_eq!(p.replies(), [closed]);
    }

    /// Every bad request: an error reply, counted, the connection open,
    /// no subscription change and no rate-limit change used.
    #[test]
    fn bad_requests() {
        let deep = too_deep();
        let cases: [(&str, &str); 10] = [
            ("not json", "malformed JSON"),
            (&deep, "JSON nested deeper than"),
            ("[1]", "a request must be a JSON object with an `action`"),
            (r#"{"instruments":["NSE_EQ|INE002A01018"]}"#, "missing field `action` (subscribe or unsubscribe)"),
            (r#"{"action":1}"#, "field `action` must be a string"),
            (r#"{"action":"dance"}"#, "unknown action `dance` (expected subscribe or unsubscribe)"),
            (r#"{"action":"subscribe"}"#, "missing field `instruments` (keys like \"NSE_EQ|INE002A01018\")"),
            (
                r#"{"action":"subscribe","instruments":"NSE_EQ|INE002A01018"}"#,
                "field `instruments` must be an array of instrument keys",
            ),
            (r#"{"action":"unsubscribe","instruments":{}}"#, "field `instruments` must be an array of instrument keys"),
            (
                r#"{"action":"subscribe","instruments":["NSE_EQ|INE002A01018",7]}"#,
                "field `instruments` must be an array of strings",
            ),
        ];
        for (request, want) in cases {
            let mut p = connected();
            let (msg, reply) = p.refuse(request);
            assert!(msg.starts_with(want), "{request}: {msg}");
            assert_eq!(reply, json!({"type":"error","message":msg}), "{request}");
            assert!(p.open, "{request} closed the connection");
            assert!(p.slots.is_empty());
            // No change of the ten used.
            for _ in 0..10 {
                p.send(&json!({"action":"subscribe","instruments":[RELIANCE]}).to_string());
            }
            assert!(!p.take().iter().any(|a| matches!(a, Action::Close(..))), "{request} used a change");
        }

        // A binary message, in the dialect's terms.
        let mut p = connected();
        p.send_binary();
        let msg = "binary messages are not accepted; send requests as JSON text frames";
        assert_eq!(p.refusal(), (msg.into(), json!({"type":"error","message":msg})));
        assert!(p.open);
    }
}
