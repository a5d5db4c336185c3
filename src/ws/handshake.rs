//! The HTTP request that opens every connection: parsed once, then either
//! upgraded to WebSocket (101) or answered as plain HTTP.

/// Longest request head accepted; longer gets 431 and a close.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the server needs from a request head.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path without the query (`/stream`).
    pub path: String,
    /// Raw query string after `?`, possibly empty.
    pub query: String,
    /// `Sec-WebSocket-Key`, when the request asks for an upgrade.
    pub ws_key: Option<String>,
    /// `Upgrade: websocket` and `Connection: upgrade` present.
    pub upgrade: bool,
    /// `Sec-WebSocket-Version` value.
    pub ws_version: Option<String>,
    /// Bearer token from `Authorization`.
    pub bearer: Option<String>,
    /// HTTP/1.0 (an upgrade needs HTTP/1.1 or later, RFC 6455 §4.1).
    pub http10: bool,
}

/// Outcome of feeding bytes to [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Need more bytes.
    Partial,
    /// A complete head of this many bytes.
    Complete(Request, usize),
    /// Not HTTP, or over [`MAX_HEAD`]: respond with this status and close.
    Invalid(u16, &'static str),
}

/// Parse a request head from `buf`.
pub fn parse(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Head::Invalid(431, "request head too large"),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Head::Invalid(431, "request head too large"),
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::Invalid(431, "too many headers"),
        Err(_) => return Head::Invalid(400, "malformed HTTP request"),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut out = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        http10: req.version == Some(0),
        ..Request::default()
    };
    let (mut up, mut conn_up) = (false, false);
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("upgrade") {
            up = v.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            conn_up = v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = Some(v.to_string());
        } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(v.to_string());
        } else if h.name.eq_ignore_ascii_case("authorization") {
            out.bearer = v.strip_prefix("Bearer ").map(|k| k.trim().to_string());
        }
    }
    out.upgrade = up && conn_up;
    Head::Complete(out, n)
}

impl Request {
    /// A WebSocket upgrade, or an attempt at one: the upgrade headers, or a
    /// `Sec-WebSocket-Key` without them (answered by [`Request::upgrade_error`],
    /// not as plain HTTP).
    pub fn upgrade_attempt(&self) -> bool {
        self.upgrade || self.ws_key.is_some()
    }

    /// Why this upgrade request cannot be accepted, if it cannot.
    pub fn upgrade_error(&self) -> Option<(u16, &'static str)> {
        if self.method != "GET" {
            Some((400, "WebSocket upgrade requires GET"))
        } else if self.http10 {
            Some((400, "WebSocket upgrade requires HTTP/1.1"))
        } else if !self.upgrade {
            // §4.2.1 items 3 and 4.
            Some((400, "WebSocket upgrade requires `Upgrade: websocket` and `Connection: Upgrade`"))
        } else if self.ws_key.as_deref().is_none_or(str::is_empty) {
            Some((400, "missing Sec-WebSocket-Key"))
        } else if !self.ws_key.as_deref().is_some_and(key_is_16_bytes) {
            // §4.2.1 item 5: the key is a base64-encoded 16-byte value.
            Some((400, "Sec-WebSocket-Key must be 16 bytes in base64"))
        } else if self.ws_version.as_deref() != Some("13") {
            // §4.4: 426 with the version this server speaks (see `http_response`).
            Some((426, "unsupported Sec-WebSocket-Version (need 13)"))
        } else {
            None
        }
    }

    /// Query parameter `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }
}

/// A `Sec-WebSocket-Key` that decodes (base64, padded) to 16 bytes.
fn key_is_16_bytes(key: &str) -> bool {
    use base64::Engine;
    key.len() == 24 && base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `101 Switching Protocols` response for `key`.
pub fn accept_response(key: &str) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
}

/// A complete HTTP response that closes the connection.
pub fn http_response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{}\r\n",
        body.len(),
        // RFC 6455 §4.4: a refused version is answered with the one spoken.
        if status == 426 { "Sec-WebSocket-Version: 13\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /stream?format=rkyv&client_id=a%20b&tokens=2885,11536 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer k1\r\n\r\n";

    #[test]
    fn parses_an_upgrade_with_query() {
        let Head::Complete(req, n) = parse(UPGRADE.as_bytes()) else { panic!("not complete") };
        assert_eq!(n, UPGRADE.len());
        assert_eq!((req.path.as_str(), req.upgrade, req.upgrade_error()), ("/stream", true, None));
        assert_eq!(req.param("format").as_deref(), Some("rkyv"));
        assert_eq!(req.param("client_id").as_deref(), Some("a b"));
        assert_eq!(req.param("tokens").as_deref(), Some("2885,11536"));
        assert_eq!(req.param("nope"), None);
        assert_eq!(req.bearer.as_deref(), Some("k1"));
    }

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3 example.
        assert!(accept_response("dGhlIHNhbXBsZSBub25jZQ==").contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn partial_and_invalid_heads() {
        assert_eq!(parse(&UPGRADE.as_bytes()[..40]), Head::Partial);
        assert!(matches!(parse(b"\x16\x03\x01garbage\r\n\r\n"), Head::Invalid(400, _)));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(parse(huge.as_bytes()), Head::Invalid(431, _)));
        let complete = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(parse(complete.as_bytes()), Head::Invalid(431, _)));
    }

    #[test]
    fn upgrade_errors_are_named() {
        let Head::Complete(req, _) = parse(
            b"GET /stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ) else {
            panic!()
        };
        assert_eq!(req.upgrade_error(), Some((400, "missing Sec-WebSocket-Key")));
        // Found by the `http_upgrade` fuzz target: any non-empty key was taken.
        for bad in ["abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=!", "dGhlIHNhbXBsZSBub25jZSE="] {
            let Head::Complete(req, _) = parse(UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", bad).as_bytes()) else {
                panic!()
            };
            assert_eq!(req.upgrade_error(), Some((400, "Sec-WebSocket-Key must be 16 bytes in base64")), "{bad}");
        }
        for missing in ["Upgrade: websocket\r\n", "Connection: keep-alive, Upgrade\r\n"] {
            let Head::Complete(req, _) = parse(UPGRADE.replace(missing, "").as_bytes()) else { panic!() };
            assert!(req.upgrade_attempt() && !req.upgrade, "{missing}");
            assert_eq!(req.upgrade_error().map(|e| e.0), Some(400), "{missing}");
        }
        let Head::Complete(plain, _) = parse(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n") else { panic!() };
        assert!(!plain.upgrade_attempt());
        let old = UPGRADE.replace("Version: 13", "Version: 12");
        let Head::Complete(req, _) = parse(old.as_bytes()) else { panic!() };
        assert_eq!(req.upgrade_error().map(|e| e.0), Some(426));
        let http10 = UPGRADE.replace("HTTP/1.1", "HTTP/1.0");
        let Head::Complete(req, _) = parse(http10.as_bytes()) else { panic!() };
        assert_eq!(req.upgrade_error(), Some((400, "WebSocket upgrade requires HTTP/1.1")));
        let r = String::from_utf8(http_response(426, "text/plain", b"x")).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 426 Upgrade Required\r\n") && r.contains("\r\nSec-WebSocket-Version: 13\r\n"),
            "{r}"
        );
        let r = String::from_utf8(http_response(403, "text/plain", b"x")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
    }

    /// Fuzz-style: mutated requests never panic the head parser or the
    /// query decoder.
    #[test]
    fn mutated_requests_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..50_000 {
            let mut b = UPGRADE.as_bytes().to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..b.len());
                b[at] = rng.u8(..);
            }
            b.truncate(rng.usize(0..=b.len()));
            if let Head::Complete(req, n) = parse(&b) {
                assert!(n <= b.len());
                let _ = (req.upgrade_error(), req.param("tokens"), req.param("client_id"));
            }
        }
        for _ in 0..20_000 {
            let q: String = (0..rng.usize(0..12)).map(|_| *rng.choice(b"%a9F+&=\xff").unwrap() as char).collect();
            let _ = percent_decode(&q);
        }
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%2Cb"), "a,b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
