//! Which upstream connection carries which instrument in which mode, and
//! the requests that get it there: the pure core of following local
//! interest (no I/O).

use crate::instrument::Slot;
use crate::kite as wire;
use crate::tick::Mode;

/// The requests one connection needs this round, batched: Kite tokens to
/// unsubscribe, to subscribe, and to set to each mode (ltp, quote, full).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// `{"a":"unsubscribe","v":[…]}`.
    pub unsubscribe: Vec<u32>,
    /// `{"a":"subscribe","v":[…]}`.
    pub subscribe: Vec<u32>,
    /// `{"a":"mode","v":["ltp"|"quote"|"full",[…]]}`, by `Mode as usize - 1`.
    pub modes: [Vec<u32>; 3],
}

impl Requests {
    /// Forget everything (keeping the buffers).
    pub fn clear(&mut self) {
        self.unsubscribe.clear();
        self.subscribe.clear();
        self.modes.iter_mut().for_each(Vec::clear);
    }

    /// The messages, in the order they must be sent: unsubscribe first
    /// (room for the new), subscribe, then modes (Kite subscribes in quote).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unsubscribe.is_empty() {
            out.push(wire::request("unsubscribe", None, &self.unsubscribe));
        }
        if !self.subscribe.is_empty() {
            out.push(wire::request("subscribe", None, &self.subscribe));
        }
        for (mode, tokens) in Mode::ALL.iter().zip(&self.modes) {
            if !tokens.is_empty() {
                out.push(wire::request("mode", Some(*mode), tokens));
            }
        }
        out
    }
}

/// Which upstream connection carries which instrument, in which mode: the
/// pure core of following local interest (no I/O).
pub struct Spread {
    /// Most instruments per connection.
    per_conn: usize,
    /// Per slot: the connection it is subscribed on and its mode there.
    placed: Vec<Option<(u8, Mode)>>,
    /// Instruments on each connection.
    load: Vec<usize>,
    /// Scratch: per slot, the mode wanted this round.
    want: Vec<Option<Mode>>,
}

impl Spread {
    /// Nothing subscribed, for `slots` instruments over at most
    /// `connections` (≤ 256) connections of `per_conn` instruments each.
    pub fn new(slots: usize, connections: usize, per_conn: usize) -> Spread {
        assert!((1..=256).contains(&connections), "1 to 256 connections");
        Spread { per_conn, placed: vec![None; slots], load: vec![0; connections], want: vec![None; slots] }
    }

    /// Follow `wanted` (slot, highest mode; [`crate::demand::Demand::wanted`]):
    /// what nobody wants any more is unsubscribed, a changed mode is set,
    /// a new instrument goes to the first connection with room and stays
    /// there. Instruments without a Kite token (`kite_token` 0) are skipped.
    /// Appends to `out[connection]`; returns how many wanted instruments
    /// found no room (none while demand is admitted against the capacity).
    pub fn update(&mut self, wanted: &[(Slot, Mode)], kite_token: impl Fn(Slot) -> u32, out: &mut [Requests]) -> usize {
        self.want.fill(None);
        for &(slot, mode) in wanted {
            if kite_token(slot) != 0 {
                self.want[slot.idx()] = Some(mode);
            }
        }
        // Removals and mode changes first: they make room for the new.
        for (i, (placed, want)) in self.placed.iter_mut().zip(&self.want).enumerate() {
            let Some((c, had)) = *placed else { continue };
            let token = kite_token(Slot(i as u32));
            match want {
                None => {
                    out[usize::from(c)].unsubscribe.push(token);
                    self.load[usize::from(c)] -= 1;
                    *placed = None;
                }
                Some(m) if *m != had => {
                    out[usize::from(c)].modes[*m as usize - 1].push(token);
                    *placed = Some((c, *m));
                }
                Some(_) => {}
            }
        }
        let mut no_room = 0;
        for (i, (placed, want)) in self.placed.iter_mut().zip(&self.want).enumerate() {
            let (None, Some(m)) = (*placed, *want) else { continue };
            let Some(c) = self.load.iter().position(|&n| n < self.per_conn) else {
                no_room += 1;
                continue;
            };
            let token = kite_token(Slot(i as u32));
            out[c].subscribe.push(token);
            out[c].modes[m as usize - 1].push(token);
            self.load[c] += 1;
            *placed = Some((c as u8, m));
        }
        no_room
    }

    /// Everything connection `c` carries, as requests for a fresh link.
    pub fn all_on(&self, c: usize, kite_token: impl Fn(Slot) -> u32, out: &mut Requests) {
        for (i, p) in self.placed.iter().enumerate() {
            if let Some((on, m)) = *p {
                if usize::from(on) == c {
                    let token = kite_token(Slot(i as u32));
                    out.subscribe.push(token);
                    out.modes[m as usize - 1].push(token);
                }
            }
        }
    }

    /// Instruments on connection `c`.
    pub fn load(&self, c: usize) -> usize {
        self.load[c]
    }

    /// Instruments subscribed over all connections.
    pub fn total(&self) -> usize {
        self.load.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(slots: &[u32]) -> Vec<u32> {
        slots.iter().map(|s| 1000 + s).collect()
    }

    /// Kite token of slot `s`: 1000 + s, except slot 9 (no Kite token).
    fn token(s: Slot) -> u32 {
        if s.0 == 9 {
            0
        } else {
            1000 + s.0
        }
    }

    #[test]
    fn interest_is_spread_over_connections_and_diffed() {
        use Mode::{Depth, Ltp, Quote};
        let req = |unsub: &[u32], sub: &[u32], modes: [&[u32]; 3]| Requests {
            unsubscribe: tokens(unsub),
            subscribe: tokens(sub),
            modes: modes.map(tokens),
        };
        let none = Requests::default();
        // Two connections of two instruments; each round: wanted, then the
        // requests for connection 0 and 1.
        type Round = (&'static [(u32, Mode)], Requests, Requests);
        let rounds: Vec<(&str, Round)> = vec![
            (
                "first instruments fill connection 0",
                (&[(1, Quote), (2, Depth)], req(&[], &[1, 2], [&[], &[1], &[2]]), none.clone()),
            ),
            (
                "a third opens connection 1",
                (&[(1, Quote), (2, Depth), (3, Ltp)], none.clone(), req(&[], &[3], [&[3], &[], &[]])),
            ),
            (
                "a mode change stays put",
                (&[(1, Depth), (2, Depth), (3, Ltp)], req(&[], &[], [&[], &[], &[1]]), none.clone()),
            ),
            (
                "a leaver frees room that the next arrival takes",
                (&[(2, Depth), (3, Ltp), (4, Quote)], req(&[1], &[4], [&[], &[4], &[]]), none.clone()),
            ),
            ("no Kite token: skipped", (&[(2, Depth), (3, Ltp), (4, Quote), (9, Ltp)], none.clone(), none.clone())),
            ("everyone leaves", (&[], req(&[2, 4], &[], [&[], &[], &[]]), req(&[3], &[], [&[], &[], &[]]))),
        ];
        let mut spread = Spread::new(10, 2, 2);
        let mut out = vec![Requests::default(); 2];
        for (what, (wanted, want0, want1)) in rounds {
            let wanted: Vec<(Slot, Mode)> = wanted.iter().map(|&(s, m)| (Slot(s), m)).collect();
            out.iter_mut().for_each(Requests::clear);
            assert_eq!(spread.update(&wanted, token, &mut out), 0, "{what}");
            assert_eq!((&out[0], &out[1]), (&want0, &want1), "{what}");
        }
        assert_eq!(spread.total(), 0);
        // Past capacity: counted, not placed; a reconnect resends one link's share.
        let wanted: Vec<(Slot, Mode)> = (1..=5).map(|s| (Slot(s), Ltp)).collect();
        assert_eq!(spread.update(&wanted, token, &mut out), 1);
        assert_eq!((spread.load(0), spread.load(1)), (2, 2));
        let mut again = Requests::default();
        spread.all_on(1, token, &mut again);
        assert_eq!(again, req(&[], &[3, 4], [&[3, 4], &[], &[]]));
        assert_eq!(
            again.messages(),
            [r#"{"a":"subscribe","v":[1003,1004]}"#, r#"{"a":"mode","v":["ltp",[1003,1004]]}"#]
        );
        let mixed = req(&[7], &[8], [&[], &[8], &[]]);
        assert_eq!(
            mixed.messages(),
            [
                r#"{"a":"unsubscribe","v":[1007]}"#,
                r#"{"a":"subscribe","v":[1008]}"#,
                r#"{"a":"mode","v":["quote",[1008]]}"#
            ]
        );
    }
}
