//! Sessions: what a disconnected `client_id` was subscribed to, kept for a
//! while so a reconnect with the same id gets its subscriptions back.
//!
//! Control plane only (touched at connect and disconnect), so a
//! `parking_lot::Mutex` around a map is the right tool.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::subs::Delivery;
use crate::tick::Mode;

/// One saved subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedSub {
    /// Instrument token.
    pub token: u32,
    /// Mode it had.
    pub mode: Mode,
    /// Delivery policy it had.
    pub delivery: Delivery,
}

/// Most sessions kept at once; past it, the oldest is forgotten to keep
/// the newest (a connect/subscribe/disconnect loop must not grow memory
/// without bound, nor lock out the clients that come after it).
pub const MAX_SESSIONS: usize = 100_000;
/// Most sessions one user keeps; past it, that user's oldest is forgotten,
/// so one user's storm cannot push out everyone else's sessions.
pub const MAX_PER_USER: usize = 10_000;
/// A full store is reported at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Saved subscriptions by session key (`user` U+001F `client_id`), each
/// with its expiry.
pub struct Sessions {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Instant, Vec<SavedSub>)>,
    /// Keys in the order saved, with the expiry they were saved with (an
    /// entry whose expiry no longer matches was replaced or taken).
    order: VecDeque<(Instant, String)>,
    /// Sessions kept per user.
    per_user: HashMap<String, usize>,
    /// Sessions forgotten to make room since the last report.
    evicted: u64,
    last_report: Option<Instant>,
}

/// The user part of a session key.
fn user_of(key: &str) -> &str {
    key.split_once('\u{1f}').map_or("", |(u, _)| u)
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<(Instant, Vec<SavedSub>)> {
        let v = self.map.remove(key)?;
        if let Some(n) = self.per_user.get_mut(user_of(key)) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user_of(key));
            }
        }
        Some(v)
    }

    /// Forget the oldest session (of `user`, when given); false if none.
    fn evict_oldest(&mut self, user: Option<&str>) -> bool {
        let Some(pos) = self
            .order
            .iter()
            .position(|(at, k)| user.is_none_or(|u| user_of(k) == u) && self.map.get(k).is_some_and(|(e, _)| e == at))
        else {
            return false;
        };
        let (_, key) = self.order.remove(pos).expect("found above");
        self.remove(&key);
        self.evicted += 1;
        true
    }

    /// Drop order entries whose session is gone or replaced, from the front.
    fn trim(&mut self) {
        while let Some((at, k)) = self.order.front() {
            if self.map.get(k).is_some_and(|(e, _)| e == at) {
                break;
            }
            self.order.pop_front();
        }
    }
}

impl Sessions {
    /// A store keeping sessions for `ttl` after disconnect.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { ttl, inner: Mutex::new(Inner::default()) }
    }

    /// Remember `subs` under `key` (`Conn::session_key`), replacing what
    /// was there; at a bound the oldest session (the user's own, at the
    /// per-user bound) is forgotten, and that is reported once a minute.
    pub fn save(&self, key: &str, subs: Vec<SavedSub>, now: Instant) {
        if subs.is_empty() || self.ttl.is_zero() {
            return;
        }
        let mut g = self.inner.lock();
        g.remove(key);
        let user = user_of(key);
        if g.per_user.get(user).is_some_and(|&n| n >= MAX_PER_USER) {
            g.evict_oldest(Some(user));
        }
        if g.map.len() >= MAX_SESSIONS {
            g.evict_oldest(None);
        }
        let expires = now + self.ttl;
        g.map.insert(key.to_string(), (expires, subs));
        *g.per_user.entry(user.to_string()).or_default() += 1;
        g.order.push_back((expires, key.to_string()));
        g.trim();
        if g.evicted > 0 && g.last_report.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            log::warn!(
                "session store at its bound ({MAX_SESSIONS}, {MAX_PER_USER} a user): forgot the {} oldest saved session(s) to keep newer ones",
                g.evicted
            );
            g.evicted = 0;
            g.last_report = Some(now);
        }
    }

    /// Take back what `key` had, unless it expired.
    pub fn take(&self, key: &str, now: Instant) -> Option<Vec<SavedSub>> {
        let (expires, subs) = self.inner.lock().remove(key)?;
        (expires > now).then_some(subs)
    }

    /// Drop expired sessions; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut g = self.inner.lock();
        let expired: Vec<String> = g.map.iter().filter(|(_, (e, _))| *e <= now).map(|(k, _)| k.clone()).collect();
        for k in &expired {
            g.remove(k);
        }
        // Replaced and taken sessions leave entries behind live ones.
        let Inner { map, order, .. } = &mut *g;
        order.retain(|(at, k)| map.get(k).is_some_and(|(e, _)| e == at));
        g.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_then_taken_once_until_expiry() {
        let s = Sessions::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let sub = SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Conflate };
        s.save("a", vec![sub], t0);
        assert_eq!(s.take("a", t0 + Duration::from_secs(1)), Some(vec![sub]));
        assert_eq!(s.take("a", t0), None, "taken once");
        s.save("b", vec![sub], t0);
        assert_eq!(s.take("b", t0 + Duration::from_secs(11)), None, "expired");
        s.save("c", vec![sub], t0);
        assert_eq!(s.sweep(t0 + Duration::from_secs(11)), 0);
    }

    fn sub() -> SavedSub {
        SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Conflate }
    }

    /// Full: the oldest goes, the newest stays; a user at its own bound
    /// loses its own oldest, not anyone else's.
    #[test]
    fn at_a_bound_the_oldest_is_forgotten() {
        let s = Sessions::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let key = |u: &str, i: usize| format!("{u}\u{1f}c{i}");
        s.save(&key("other", 0), vec![sub()], t0);
        for i in 0..MAX_PER_USER + 5 {
            s.save(&key("storm", i), vec![sub()], t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(1);
        assert_eq!(s.take(&key("storm", 0), now), None, "the user's oldest went");
        assert_eq!(s.take(&key("storm", 4), now), None);
        assert!(s.take(&key("storm", 5), now).is_some());
        assert!(s.take(&key("storm", MAX_PER_USER + 4), now).is_some(), "the newest stays");
        assert!(s.take(&key("other", 0), now).is_some(), "another user's session is untouched");
        // Re-saving one key many times leaves no backlog after a sweep.
        for i in 0..1000 {
            s.save(&key("again", 0), vec![sub()], t0 + Duration::from_millis(i));
        }
        assert_eq!(s.sweep(now), MAX_PER_USER - 2 + 1);
        let g = s.inner.lock();
        assert_eq!(g.order.len(), g.map.len(), "no stale order entries left");
    }
}
