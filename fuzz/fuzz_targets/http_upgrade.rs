//! The HTTP request head that opens every connection (`ws::handshake`).
//!
//! Checks: a complete head's length is within the input and the head
//! alone parses to the same request; every prefix of it is `Partial` (a
//! request split across reads is never refused); an accepted upgrade is a
//! GET over HTTP/1.1 with version 13 and a 16-byte key, and its 101
//! response carries the RFC's accept value; query parameters decode to no
//! more bytes than they had.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::ws::handshake::{self, Head};

fuzz_target!(|data: &[u8]| {
    let Head::Complete(req, n) = handshake::parse(data) else { return };
    assert!(n <= data.len() && n <= handshake::MAX_HEAD);
    match handshake::parse(&data[..n]) {
        Head::Complete(again, m) => assert_eq!((again, m), (req_clone(&req), n)),
        other => panic!("the head alone parses as {other:?}"),
    }
    for cut in [n / 2, n.saturating_sub(1), n.saturating_sub(2)] {
        if cut < n {
            assert_eq!(handshake::parse(&data[..cut]), Head::Partial, "prefix of {cut} bytes");
        }
    }
    if req.upgrade && req.upgrade_error().is_none() {
        assert_eq!(req.method, "GET");
        assert!(!req.http10);
        assert_eq!(req.ws_version.as_deref(), Some("13"));
        let key = req.ws_key.as_deref().expect("a key");
        assert_eq!(key.len(), 24, "a 16-byte key in base64");
        let resp = handshake::accept_response(key);
        assert!(resp.starts_with("HTTP/1.1 101 ") && resp.ends_with("\r\n\r\n"));
    }
    for name in ["api_key", "client_id", "tokens", "format", "mode", ""] {
        if let Some(v) = req.param(name) {
            assert!(v.len() <= 3 * req.query.len(), "decoded value longer than its escape");
        }
    }
});

fn req_clone(r: &handshake::Request) -> handshake::Request {
    handshake::Request {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        ws_key: r.ws_key.clone(),
        upgrade: r.upgrade,
        ws_version: r.ws_version.clone(),
        bearer: r.bearer.clone(),
        http10: r.http10,
    }
}
