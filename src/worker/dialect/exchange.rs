//! Placeholder: being implemented.

use super::super::Worker;
use crate::subs::ConnId;
use crate::ws::handshake::Request;

pub(crate) fn open(_w: &mut Worker, _id: ConnId, _req: &Request, _now: u64) -> Result<(), String> {
    Err("not implemented yet".into())
}

pub(crate) fn handle(_w: &mut Worker, _id: ConnId, _payload: &mut [u8], _now: u64) {}

pub(crate) fn market_status(_open: bool, _now: u64) -> Vec<u8> {
    Vec::new()
}

pub(crate) fn housekeeping(_w: &mut Worker, _id: ConnId, _now: u64) {}

pub(crate) fn reply_error(_w: &mut Worker, _id: ConnId, _req_id: Option<serde_json::Value>, _msg: &str, _now: u64) {}
