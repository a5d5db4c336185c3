//! Trading WS (seed `001_…`), `/ws`: being implemented.

use std::sync::Arc;

use super::super::conn::Conn;
use super::super::Worker;
use super::Ext;
use crate::instrument::Slot;
use crate::subs::ConnId;
use crate::ws::handshake::Request;

/// Trading WS per-connection state.
#[derive(Default)]
pub(crate) struct State {
    /// Bit per slot: in `changed` already.
    changed_bits: Vec<u64>,
    /// Instruments with a newer value since the last `price_update`.
    changed: Vec<Slot>,
    /// The newest portfolio update not yet sent.
    held: Option<Arc<[u8]>>,
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

pub(crate) fn open(_w: &mut Worker, _id: ConnId, _req: &Request, _now: u64) -> Result<(), String> {
    Err("not implemented yet".into())
}

pub(crate) fn handle(_w: &mut Worker, _id: ConnId, _payload: &mut [u8], _now: u64) {}

pub(crate) fn market_status(_open: bool, _now: u64) -> Vec<u8> {
    Vec::new()
}

pub(crate) fn housekeeping(_w: &mut Worker, _id: ConnId, _now: u64) {}

pub(crate) fn reply_error(_w: &mut Worker, _id: ConnId, _msg: &str, _now: u64) {}
