//! Sessions: what a disconnected `client_id` was subscribed to, kept for a
//! while so a reconnect with the same id gets its subscriptions back.
//!
//! Control plane only (touched at connect and disconnect), so a
//! `parking_lot::Mutex` around a map is the right tool.

use std::collections::HashMap;
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

/// Most sessions kept at once; past it, new disconnects are not saved (a
/// connect/subscribe/disconnect loop must not grow memory without bound).
pub const MAX_SESSIONS: usize = 100_000;

/// Saved subscriptions by client id, each with its expiry.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, Vec<SavedSub>)>>,
}

impl Sessions {
    /// A store keeping sessions for `ttl` after disconnect.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { ttl, map: Mutex::new(HashMap::new()) }
    }

    /// Remember `subs` for `client_id` (replacing what was there).
    pub fn save(&self, client_id: &str, subs: Vec<SavedSub>, now: Instant) {
        if subs.is_empty() || self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS && !map.contains_key(client_id) {
            log::warn!("session store full ({MAX_SESSIONS}); not keeping {client_id}'s subscriptions");
            return;
        }
        map.insert(client_id.to_string(), (now + self.ttl, subs));
    }

    /// Take back what `client_id` had, unless it expired.
    pub fn take(&self, client_id: &str, now: Instant) -> Option<Vec<SavedSub>> {
        let (expires, subs) = self.map.lock().remove(client_id)?;
        (expires > now).then_some(subs)
    }

    /// Drop expired sessions; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map.lock();
        map.retain(|_, (expires, _)| *expires > now);
        map.len()
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
}
