//! Property tests: JSON control messages built from arbitrary choices go
//! through the dialect parsers (driven by [`Pair`], as the worker drives
//! them) and come back as what was asked for — every known instrument
//! acknowledged once, in order, every unknown one named, the request's id
//! echoed — and arbitrary JSON never panics a dialect.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::pair::{Action, Pair};
use super::Dialect;
use crate::instrument::Registry;

/// The bundled master's tokens and symbols (NSE), in master order.
fn bundled() -> Vec<(u32, String)> {
    Registry::bundled()
        .iter()
        .filter(|(_, i)| &*i.exchange == "NSE")
        .map(|(_, i)| (i.token, i.symbol.to_string()))
        .collect()
}

/// A request: some of the master's instruments (repeats allowed), some
/// tokens that are not in it, in any order.
fn picks() -> impl Strategy<Value = Vec<Result<usize, u32>>> {
    let n = bundled().len();
    proptest::collection::vec(
        prop_oneof![4 => (0..n).prop_map(Ok), 1 => (90_000_000u32..99_999_999).prop_map(Err)],
        0..12,
    )
}

fn any_id() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), any::<u32>().prop_map(|n| Some(json!(n))), "[a-z0-9-]{0,12}".prop_map(|s| Some(json!(s))),]
}

/// Arbitrary JSON values, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        prop_oneof![
            Just("subscribe"),
            Just("unsubscribe"),
            Just("ping"),
            Just("get_subscriptions"),
            Just("snapshot"),
            Just("request"),
            Just("RELIANCE"),
            Just("NSE_EQ|INE002A01018"),
            Just("price_updates")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("action".to_string()),
                    Just("type".to_string()),
                    Just("tokens".to_string()),
                    Just("symbols".to_string()),
                    Just("stocks".to_string()),
                    Just("instruments".to_string()),
                    Just("mode".to_string()),
                    Just("id".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Expected acknowledgement order: the known picks, first occurrence each.
fn known_once(picks: &[Result<usize, u32>]) -> Vec<usize> {
    let mut seen = Vec::new();
    for i in picks.iter().flatten() {
        if !seen.contains(i) {
            seen.push(*i);
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// Native: subscribe then unsubscribe by token, any mode, any id.
    #[test]
    fn native_subscribe_and_unsubscribe_round_trip(picks in picks(), mode in 0usize..3, id in any_id()) {
        let all = bundled();
        let mode = ["ltp", "quote", "depth"][mode];
        let tokens: Vec<u32> = picks.iter().map(|p| match p { Ok(i) => all[*i].0, Err(t) => *t }).collect();
        let mut p = Pair::new();
        p.open("/stream", Dialect::Native).unwrap();
        p.take();
        let mut req = json!({"action": "subscribe", "tokens": tokens, "mode": mode});
        if let Some(id) = &id {
            req["id"] = id.clone();
        }
        p.send(&req.to_string());
        let r = p.replies();
        prop_assert_eq!(r.len(), 1, "{:?}", r);
        let r = &r[0];
        prop_assert_eq!(&r["type"], "subscription_response", "{}", r);
        prop_assert_eq!(r.get("id"), id.as_ref(), "the id is echoed, or absent: {}", r);
        let want: Vec<u32> = known_once(&picks).iter().map(|&i| all[i].0).collect();
        let got: Vec<u64> = r["data"]["subscribed"].as_array().unwrap().iter().map(|e| e["token"].as_u64().unwrap()).collect();
        prop_assert_eq!(got, want.iter().map(|&t| u64::from(t)).collect::<Vec<_>>());
        for e in r["data"]["subscribed"].as_array().unwrap() {
            prop_assert_eq!(&e["mode"], mode);
        }
        let unknown: Vec<u32> = picks.iter().filter_map(|p| p.err()).collect();
        let rejected: Vec<u64> = r["data"]["rejected"].as_array().unwrap().iter().map(|e| e["token"].as_u64().unwrap()).collect();
        prop_assert!(
            rejected.iter().all(|t| unknown.contains(&(*t as u32))) && unknown.iter().all(|t| rejected.contains(&u64::from(*t))),
            "rejected {:?} for unknown {:?}", rejected, unknown
        );
        prop_assert_eq!(&r["data"]["total_subscribed"], &json!(want.len()));
        prop_assert_eq!(p.slots.len(), want.len());

        p.send(&json!({"action": "unsubscribe", "tokens": want, "id": 2}).to_string());
        let r = &p.replies()[0];
        let gone: Vec<u64> = r["data"]["unsubscribed"].as_array().unwrap().iter().map(|e| e["token"].as_u64().unwrap()).collect();
        prop_assert_eq!(gone, want.iter().map(|&t| u64::from(t)).collect::<Vec<_>>());
        prop_assert_eq!(&r["data"]["total_subscribed"], &json!(0));
        prop_assert!(p.slots.is_empty());
    }

    /// Odin: stocks by symbol; what is subscribed comes back as the same
    /// symbols, once each, and unsubscribing them leaves nothing.
    #[test]
    fn odin_stocks_round_trip(picks in picks()) {
        let all = bundled();
        let want: Vec<&str> = known_once(&picks).iter().map(|&i| all[i].1.as_str()).collect();
        prop_assume!(!want.is_empty());
        let stocks: Vec<&str> = picks.iter().filter_map(|p| p.ok()).map(|i| all[i].1.as_str()).collect();
        let mut p = Pair::new();
        p.open("/enhanced-stream?client_id=prop", Dialect::Odin).unwrap();
        p.take();
        p.send(&json!({"type": "request", "action": "subscribe", "stocks": stocks}).to_string());
        let r = p.replies();
        prop_assert_eq!(r.len(), 1, "{:?}", r);
        prop_assert_eq!(&r[0]["data"]["subscribed_stocks"], &json!(want), "{}", r[0]);
        prop_assert_eq!(&r[0]["data"]["total_subscribed"], &json!(want.len()));
        p.send(&json!({"type": "request", "action": "get_subscriptions"}).to_string());
        let listed = &p.replies()[0]["data"]["subscribed_stocks"];
        let mut listed: Vec<String> = listed.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        let mut sorted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        listed.sort();
        sorted.sort();
        prop_assert_eq!(listed, sorted);
        p.send(&json!({"type": "request", "action": "unsubscribe", "stocks": want}).to_string());
        let r = &p.replies()[0];
        prop_assert_eq!(&r["data"]["total_subscribed"], &json!(0), "{}", r);
        prop_assert!(p.slots.is_empty());
    }

    /// Campus: Upstox-style instrument keys (`NSE_EQ|<ISIN>`,
    /// `NSE_INDEX|<SYMBOL>`, any case); the canonical keys come back once
    /// each, in order, and unsubscribing them leaves nothing.
    #[test]
    fn campus_instrument_keys_round_trip(picks in picks(), lower in any::<bool>()) {
        let reg = Registry::bundled();
        let all = bundled();
        let key = |i: usize| {
            let mut k = Vec::new();
            crate::encode::dialects::campus_key(&mut k, reg.get(reg.slot_of_token(all[i].0).unwrap()));
            String::from_utf8(k).unwrap()
        };
        let want: Vec<String> = known_once(&picks).into_iter().map(key).collect();
        prop_assume!(!want.is_empty());
        let sent: Vec<String> = picks.iter().filter_map(|p| p.ok()).map(key).map(|k| if lower { k.to_lowercase() } else { k }).collect();
        let mut p = Pair::new();
        p.open("/api/ws/prices", Dialect::Campus).unwrap();
        p.take();
        p.send(&json!({"action": "subscribe", "instruments": sent}).to_string());
        let r = p.replies();
        prop_assert_eq!(r.len(), 1, "{:?}", r);
        prop_assert_eq!(&r[0], &json!({"type": "subscription", "action": "subscribe", "instruments": want, "failed": [], "total": want.len()}));
        p.send(&json!({"action": "unsubscribe", "instruments": want}).to_string());
        let r = &p.replies()[0];
        prop_assert_eq!(&r["total"], &json!(0), "{}", r);
        prop_assert!(p.slots.is_empty());
    }

    /// Trading WS: symbols (any case) on `price_updates`; the ack names
    /// them canonically, once each, in order.
    #[test]
    fn trading_symbols_round_trip(picks in picks(), lower in any::<bool>()) {
        let all = bundled();
        let want: Vec<&str> = known_once(&picks).iter().map(|&i| all[i].1.as_str()).collect();
        prop_assume!(!want.is_empty());
        let sent: Vec<String> = picks.iter().filter_map(|p| p.ok()).map(|i| if lower { all[i].1.to_lowercase() } else { all[i].1.clone() }).collect();
        let mut p = Pair::new();
        p.open("/ws", Dialect::Trading).unwrap();
        p.take();
        p.send(&json!({"type": "subscribe", "channel": "price_updates", "symbols": sent}).to_string());
        let r = p.replies();
        prop_assert_eq!(r.len(), 1, "{:?}", r);
        prop_assert_eq!(&r[0]["type"], "subscribed", "{}", r[0]);
        prop_assert_eq!(&r[0]["symbols"], &json!(want), "{}", r[0]);
        let mut held: Vec<u32> = p.slots.iter().map(|&s| Registry::bundled().get(s).token).collect();
        let mut wanted: Vec<u32> = known_once(&picks).iter().map(|&i| all[i].0).collect();
        held.sort_unstable();
        wanted.sort_unstable();
        prop_assert_eq!(held, wanted);
    }

    /// Any JSON value, to any dialect: no panic, and the connection is
    /// either still open or closed with a reason (never silently dropped).
    #[test]
    fn arbitrary_json_never_panics_a_dialect(v in any_json(), d in 0usize..5) {
        let (path, dialect) = [
            ("/stream", Dialect::Native),
            ("/enhanced-stream?client_id=x", Dialect::Odin),
            ("/ws", Dialect::Trading),
            ("/api/ws/prices", Dialect::Campus),
            ("/", Dialect::Exchange),
        ][d];
        let mut p = Pair::new();
        p.open(path, dialect).unwrap();
        p.take();
        p.send(&v.to_string());
        let acts = p.take();
        if !p.open {
            prop_assert!(acts.iter().any(|a| matches!(a, Action::Close(..))), "closed without a close frame: {:?}", acts);
        }
    }
}
