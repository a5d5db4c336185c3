//! The `kite://` / `kite+ws://` source against a fake Kite ticker written
//! here (std listener + `tungstenite::accept`, TLS with rustls): what it
//! asks upstream for as local clients come and go, what it makes of the
//! frames it gets, and how it survives silence, refusals, limits and bad
//! certificates.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::Message;
use util::Server;

/// Kite tokens of RELIANCE (2885), INFY (1594) and TCS (11536) on NSE.
const RELIANCE: u32 = 2885 * 256 + 1;
const INFY: u32 = 1594 * 256 + 1;
const TCS: u32 = 11536 * 256 + 1;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// What the fake has seen and what it is told to do.
#[derive(Default)]
struct FakeState {
    /// Every request received: (connection, JSON).
    requests: Mutex<Vec<(usize, Value)>>,
    /// Request URIs of accepted handshakes, in order.
    handshakes: Mutex<Vec<String>>,
    /// Per accepted connection: messages to send it (`Close` drops it).
    outs: Mutex<Vec<crossbeam_channel::Sender<Message>>>,
    /// Connections that send nothing, not even heartbeats.
    silent: Mutex<HashSet<usize>>,
    /// Answer handshakes with this HTTP status (0: accept).
    refuse: AtomicU16,
    /// Handshakes refused.
    refused: AtomicUsize,
}

/// A fake Kite ticker on an ephemeral port: a heartbeat every 500 ms on
/// each connection, records requests, sends what a test gives it.
struct Fake {
    addr: SocketAddr,
    state: Arc<FakeState>,
}

impl Fake {
    fn start() -> Fake {
        Fake::serve(None)
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || connection(st, tcp, tls));
            }
        });
        Fake { addr, state }
    }

    fn send(&self, conn: usize, m: Message) {
        self.state.outs.lock().unwrap()[conn].send(m).unwrap();
    }

    fn binary(&self, conn: usize, frame: Vec<u8>) {
        self.send(conn, Message::Binary(frame));
    }

    fn connections(&self) -> usize {
        self.state.outs.lock().unwrap().len()
    }

    fn requests(&self) -> Vec<(usize, Value)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Wait (10 s at most) for a request matching `pred`.
    fn wait_request(&self, what: &str, pred: impl Fn(usize, &Value) -> bool) -> (usize, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.requests().into_iter().find(|(c, v)| pred(*c, v)) {
                return r;
            }
            assert!(Instant::now() < deadline, "the fake never got {what}: {:?}", self.requests());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connections() < n {
            assert!(Instant::now() < deadline, "only {} connection(s), wanted {n}", self.connections());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Does `v` say `{"a": action, "v": …}` with `token` among its tokens
/// (for `mode`, in `mode`)?
fn asks(v: &Value, action: &str, mode: Option<&str>, token: u32) -> bool {
    let list = match mode {
        Some(m) if v["v"][0] == m => &v["v"][1],
        Some(_) => return false,
        None => &v["v"],
    };
    v["a"] == action && list.as_array().is_some_and(|l| l.contains(&json!(token)))
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
fn connection(st: Arc<FakeState>, tcp: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
    tcp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(cfg) => Box::new(rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp)),
    };
    let mut uri = String::new();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        uri = req.uri().to_string();
        match st.refuse.load(Ordering::SeqCst) {
            0 => Ok(resp),
            status => {
                st.refused.fetch_add(1, Ordering::SeqCst);
                Err(Response::builder().status(status).body(Some("refused".into())).unwrap())
            }
        }
    };
    // A read timeout mid-handshake surfaces as Interrupted: keep going.
    let mut ws = match tungstenite::accept_hdr(stream, callback) {
        Ok(ws) => ws,
        Err(tungstenite::HandshakeError::Interrupted(mut mid)) => loop {
            match mid.handshake() {
                Ok(ws) => break ws,
                Err(tungstenite::HandshakeError::Interrupted(m)) => mid = m,
                Err(_) => return,
            }
        },
        Err(_) => return,
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let me = {
        let mut outs = st.outs.lock().unwrap();
        st.handshakes.lock().unwrap().push(uri);
        outs.push(tx);
        outs.len() - 1
    };
    let mut beat = Instant::now();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                st.requests.lock().unwrap().push((me, serde_json::from_str(&t).unwrap_or(Value::Null)));
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        let silent = st.silent.lock().unwrap().contains(&me);
        while let Ok(m) = rx.try_recv() {
            if matches!(m, Message::Close(_)) {
                return;
            }
            if ws.send(m).is_err() {
                return;
            }
        }
        if !silent && beat.elapsed() > Duration::from_millis(500) {
            beat = Instant::now();
            if ws.send(Message::Binary(vec![0])).is_err() {
                return;
            }
        }
    }
}

fn frame(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = (packets.len() as u16).to_be_bytes().to_vec();
    for p in packets {
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        f.extend_from_slice(p);
    }
    f
}

fn ltp(token: u32, price: u32) -> Vec<u8> {
    [token.to_be_bytes(), price.to_be_bytes()].concat()
}

/// A full packet, field by field: last 2850.50, exchange time
/// 1,700,000,001 s, bids 2850.00 down by 0.05 (qty 100+k, orders k+1),
/// asks 2851.00 up by 0.05.
fn full(token: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [token, 285050, 10, 284900, 1_234_567, 5000, 6000, 282000, 286000, 281000, 281500] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    for v in [1_700_000_000u32, 77, 0, 0, 1_700_000_001] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    for k in 0..10u32 {
        p.extend_from_slice(&(100 + k).to_be_bytes());
        p.extend_from_slice(&(if k < 5 { 285000 - 5 * k } else { 285100 + 5 * (k - 5) }).to_be_bytes());
        p.extend_from_slice(&(k as u16 + 1).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    assert_eq!(p.len(), 184);
    p
}

fn spec(fake: &Fake, extra: &str) -> String {
    format!("kite+ws://{}/kite?api_key=k1&access_token=s3cret-tok{extra}", fake.addr)
}

fn kite(st: &Value) -> &Value {
    &st["feeds"][0]["kite"]
}

fn market_data(c: &mut util::Client, token: u64) -> Value {
    c.recv_until("market data", |v| v["type"] == "market_data" && v["token"] == token)
}

#[test]
fn a_depth_subscription_asks_upstream_for_full_and_ticks_come_back() {
    let fake = Fake::start();
    let s = Server::start(&["--feed", &spec(&fake, "")]);
    fake.wait_connections(1);
    let uri = fake.state.handshakes.lock().unwrap()[0].clone();
    assert_eq!(uri, "/kite?api_key=k1&access_token=s3cret-tok", "credentials go in the query, as Kite takes them");
    let mut c = s.native();
    let ack = c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    assert_eq!(ack["data"]["subscribed"][0]["mode"], "depth", "{ack}");
    let (c0, _) = fake.wait_request("subscribe", |_, v| asks(v, "subscribe", None, RELIANCE));
    let (c1, _) = fake.wait_request("mode full", |_, v| asks(v, "mode", Some("full"), RELIANCE));
    assert_eq!((c0, c1), (0, 0));
    let order: Vec<String> = fake.requests().iter().map(|(_, v)| v["a"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(order, ["subscribe", "mode"], "subscribe, then the mode");
    fake.binary(0, frame(&[full(RELIANCE)]));
    let f = market_data(&mut c, 2885);
    assert_eq!((f["seq"].as_u64(), f["ts"].as_u64()), (Some(1), Some(1_700_000_001_000_000_000)), "{f}");
    let d = &f["data"];
    assert_eq!((d["ltp"].as_f64(), d["volume"].as_u64(), d["oi"].as_u64()), (Some(2850.5), Some(1_234_567), Some(77)));
    assert_eq!(d["depth"]["buy"][4], json!({"price": 2849.8, "quantity": 104, "orders": 5}), "{d}");
    assert_eq!(d["depth"]["sell"][0], json!({"price": 2851.0, "quantity": 105, "orders": 6}), "{d}");
    // An LTP packet moves the price and keeps the book.
    fake.binary(0, frame(&[ltp(RELIANCE, 285200)]));
    let g = market_data(&mut c, 2885);
    assert_eq!((g["seq"].as_u64(), g["data"]["ltp"].as_f64()), (Some(2), Some(2852.0)));
    assert_eq!(g["data"]["depth"]["sell"][0]["price"], 2851.0);
    let st = s.status_until("one instrument upstream", |st| kite(st)["instruments_subscribed"] == 1);
    let feed = &st["feeds"][0];
    assert_eq!((feed["kind"].as_str(), feed["state"].as_str()), (Some("kite"), Some("live")), "{feed}");
    assert!(feed["address"].as_str().unwrap().ends_with("access_token=***"), "{feed}");
    assert_eq!(
        (kite(&st)["connections_open"].as_u64(), kite(&st)["instruments_capacity"].as_u64()),
        (Some(1), Some(9000))
    );
    let (_, status) = s.get("/status");
    let (_, metrics) = s.get("/metrics");
    assert!(!status.contains("s3cret-tok") && !metrics.contains("s3cret-tok"), "the access token leaked");
    assert!(metrics.contains("tickcast_kite_instruments_subscribed{feed=\"kite\"} 1"), "{metrics}");
    assert!(metrics.contains("tickcast_kite_decode_errors_total{feed=\"kite\",kind=\"truncated\"} 0"), "{metrics}");
    // The last client leaves: unsubscribed upstream.
    c.request(json!({"action": "unsubscribe", "tokens": [2885]}), 2);
    fake.wait_request("unsubscribe", |_, v| asks(v, "unsubscribe", None, RELIANCE));
    s.status_until("nothing upstream", |st| kite(st)["instruments_subscribed"] == 0);
}

#[test]
fn a_broken_frame_is_counted_and_nothing_of_it_applied() {
    let fake = Fake::start();
    let s = Server::start(&["--feed", &spec(&fake, "")]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}), 1);
    fake.wait_request("mode ltp", |_, v| asks(v, "mode", Some("ltp"), RELIANCE));
    // Two good packets, but the count promises three.
    let mut broken = frame(&[ltp(RELIANCE, 111100), ltp(RELIANCE, 111200)]);
    broken[1] = 3;
    fake.binary(0, broken);
    fake.binary(0, frame(&[ltp(99, 1), ltp(RELIANCE, 285000)]));
    let f = market_data(&mut c, 2885);
    assert_eq!(
        (f["seq"].as_u64(), f["data"]["ltp"].as_f64()),
        (Some(1), Some(2850.0)),
        "nothing of the broken frame: {f}"
    );
    let st = s.status_until("the decode error", |st| kite(st)["decode_errors"]["count_past_end"] == 1);
    assert_eq!(kite(&st)["unknown_tokens"], 1, "{st}");
    assert_eq!(st["feeds"][0]["ticks"], 1);
}

#[test]
fn a_silent_upstream_is_reconnected_and_resubscribed() {
    let fake = Fake::start();
    let s = Server::start(&["--feed", &spec(&fake, "")]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    fake.wait_request("subscribe", |_, v| asks(v, "subscribe", None, RELIANCE));
    fake.state.silent.lock().unwrap().insert(0);
    let started = Instant::now();
    fake.wait_request("a resubscribe on a new connection", |c, v| c == 1 && asks(v, "subscribe", None, RELIANCE));
    fake.wait_request("the mode again", |c, v| c == 1 && asks(v, "mode", Some("quote"), RELIANCE));
    let took = started.elapsed();
    // The last heartbeat came up to 500 ms before the silence began.
    assert!(took >= Duration::from_millis(2400), "reconnected after {took:?}, before the 3 s stall");
    let st = s.status_until("the reconnect", |st| {
        st["feeds"][0]["reconnects"].as_u64() >= Some(1) && st["feeds"][0]["state"] == "live"
    });
    assert_eq!(kite(&st)["stalls"], 1, "{st}");
    fake.binary(1, frame(&[ltp(RELIANCE, 285000)]));
    assert_eq!(market_data(&mut c, 2885)["data"]["ltp"], 2850.0, "ticks flow on the new link");
}

#[test]
fn a_refused_handshake_is_counted_retried_and_not_live() {
    let fake = Fake::start();
    fake.state.refuse.store(403, Ordering::SeqCst);
    let s = Server::start(&["--feed", &spec(&fake, "")]);
    let st = s.status_until("retried refusals", |st| kite(st)["handshake_refusals"].as_u64() >= Some(2));
    assert_eq!(st["feeds"][0]["state"], "connecting", "{st}");
    assert_eq!(kite(&st)["last_error"], "handshake refused: HTTP 403");
    assert_eq!(s.get("/healthz").0, 503, "no live feed");
    let mut c = s.native();
    let hb = c.recv_type("heartbeat");
    assert_eq!(hb["feeds"][0]["state"], "connecting", "clients are told the feed is not live: {hb}");
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "ltp"}), 1);
    fake.state.refuse.store(0, Ordering::SeqCst);
    fake.wait_request("the subscription once accepted", |_, v| asks(v, "subscribe", None, RELIANCE));
    s.status_until("live", |st| st["feeds"][0]["state"] == "live");
}

#[test]
fn past_capacity_a_new_instrument_is_refused_and_never_asked_upstream() {
    let fake = Fake::start();
    let s = Server::start(&[
        "--feed",
        &spec(&fake, ""),
        "--kite-upstream-connections",
        "1",
        "--kite-upstream-instruments",
        "2",
    ]);
    let mut c = s.native();
    let ack = c.request(json!({"action": "subscribe", "tokens": [2885, 1594, 11536], "mode": "ltp"}), 1);
    let subscribed: Vec<u64> =
        ack["data"]["subscribed"].as_array().unwrap().iter().map(|e| e["token"].as_u64().unwrap()).collect();
    assert_eq!(subscribed, [2885, 1594], "{ack}");
    assert_eq!(
        ack["data"]["rejected"],
        json!([{"token": 11536, "symbol": "TCS", "exchange": "NSE",
            "reason": "the upstream feed is at its instrument limit; unsubscribe something first"}])
    );
    fake.wait_request("INFY", |_, v| asks(v, "subscribe", None, INFY));
    fake.wait_request("RELIANCE", |_, v| asks(v, "subscribe", None, RELIANCE));
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.requests().iter().all(|(_, v)| !v.to_string().contains(&TCS.to_string())), "{:?}", fake.requests());
    let st = s.status();
    assert_eq!(
        (kite(&st)["instruments_subscribed"].as_u64(), kite(&st)["instruments_capacity"].as_u64()),
        (Some(2), Some(2))
    );
    // Room again once one leaves.
    c.request(json!({"action": "unsubscribe", "tokens": [1594]}), 2);
    let ack = c.request(json!({"action": "subscribe", "tokens": [11536], "mode": "ltp"}), 3);
    assert_eq!(ack["data"]["rejected"], json!([]), "{ack}");
    fake.wait_request("TCS", |_, v| asks(v, "subscribe", None, TCS));
}

#[test]
fn instruments_past_one_connection_open_a_second() {
    let fake = Fake::start();
    let s = Server::start(&[
        "--feed",
        &spec(&fake, ""),
        "--kite-upstream-connections",
        "2",
        "--kite-upstream-instruments",
        "2",
    ]);
    fake.wait_connections(1);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885, 1594, 11536], "mode": "ltp"}), 1);
    fake.wait_connections(2);
    fake.wait_request("TCS on the second", |c, v| c == 1 && asks(v, "subscribe", None, TCS));
    let st = s.status_until("two links, three instruments", |st| {
        kite(st)["connections_open"] == 2 && kite(st)["instruments_subscribed"] == 3
    });
    assert_eq!(st["feeds"][0]["state"], "live");
    let on = |conn: usize| -> HashSet<u64> {
        fake.requests()
            .iter()
            .filter(|(c, v)| *c == conn && v["a"] == "subscribe")
            .flat_map(|(_, v)| v["v"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect::<Vec<_>>())
            .collect()
    };
    assert_eq!(on(0), HashSet::from([u64::from(RELIANCE), u64::from(INFY)]));
    assert_eq!(on(1), HashSet::from([u64::from(TCS)]));
    // Ticks from both links arrive.
    fake.binary(1, frame(&[ltp(TCS, 325000)]));
    assert_eq!(market_data(&mut c, 11536)["data"]["ltp"], 3250.0);
    fake.binary(0, frame(&[ltp(INFY, 158000)]));
    assert_eq!(market_data(&mut c, 1594)["data"]["ltp"], 1580.0);
}

/// An auth file: alice, and ops (admin, for `/status`).
fn auth_file() -> String {
    let hash = |k: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast")).args(["hash-key", k]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let text = format!(
        "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        hash("alice-key"),
        hash("ops-key")
    );
    let path = temp_file();
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_file() -> String {
    let out = std::process::Command::new("mktemp").output().expect("mktemp");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn order_postbacks_reach_the_users_private_channel() {
    let fake = Fake::start();
    let auth = auth_file();
    let s = Server::start(&["--feed", &spec(&fake, "&user=alice"), "--auth-file", &auth]);
    fake.wait_connections(1);
    let mut alice = s.connect("/stream?api_key=alice-key");
    alice.recv_type("welcome");
    let r = alice.request(json!({"action": "subscribe", "channels": ["private:alice:orders"]}), 1);
    assert_eq!(r["data"]["rejected"], json!([]), "{r}");
    let order =
        json!({"order_id": "151220000000000", "status": "COMPLETE", "tradingsymbol": "RELIANCE", "filled_quantity": 1});
    fake.send(0, Message::Text(json!({"type": "order", "id": "", "data": order}).to_string()));
    fake.send(0, Message::Text(r#"{"type":"error","data":"Invalid access token"}"#.into()));
    fake.send(0, Message::Text("hello".into()));
    let got = alice.recv_until("the order", |v| v["type"] == "channel");
    assert_eq!((got["channel"].as_str(), &got["data"]), (Some("private:alice:orders"), &order));
    let st = s.status_until("the counters", |st| kite(st)["text_ignored"] == 1);
    let k = kite(&st);
    assert_eq!((k["orders"].as_u64(), k["upstream_errors"].as_u64()), (Some(1), Some(1)), "{k}");
    assert_eq!(k["last_error"], "upstream: Invalid access token");
    let _ = std::fs::remove_file(&auth);
}

#[test]
fn without_a_user_order_postbacks_are_counted_and_dropped() {
    let fake = Fake::start();
    let s = Server::start(&["--feed", &spec(&fake, "")]);
    fake.wait_connections(1);
    fake.send(0, Message::Text(r#"{"type":"order","data":{"order_id":"1"}}"#.into()));
    s.status_until("a dropped postback", |st| kite(st)["orders_dropped"] == 1 && kite(st)["orders"] == 0);
}

/// A CA and a leaf certificate for `name` it signed: (CA PEM, TLS server settings).
fn tls_server(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "tickcast test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(tickcast::tls::provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], der)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

fn tls_spec(fake: &Fake, ca_pem: &str) -> (String, String) {
    let ca = temp_file();
    std::fs::write(&ca, ca_pem).unwrap();
    (format!("kite://localhost:{}/?api_key=k1&access_token=s3cret-tok&ca={ca}", fake.addr.port()), ca)
}

#[test]
fn tls_upstream_with_a_private_root_works() {
    let (ca_pem, config) = tls_server("localhost");
    let fake = Fake::serve(Some(config));
    let (spec, ca) = tls_spec(&fake, &ca_pem);
    let s = Server::start(&["--feed", &spec]);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    fake.wait_request("mode full over TLS", |_, v| asks(v, "mode", Some("full"), RELIANCE));
    fake.binary(0, frame(&[full(RELIANCE)]));
    assert_eq!(market_data(&mut c, 2885)["data"]["ltp"], 2850.5);
    s.status_until("live over TLS", |st| st["feeds"][0]["state"] == "live");
    let _ = std::fs::remove_file(&ca);
}

#[test]
fn tls_upstream_with_a_certificate_for_another_name_is_refused() {
    let (ca_pem, config) = tls_server("other.example");
    let fake = Fake::serve(Some(config));
    let (spec, ca) = tls_spec(&fake, &ca_pem);
    let s = Server::start(&["--feed", &spec]);
    let st = s.status_until("failed TLS attempts", |st| kite(st)["connect_failures"].as_u64() >= Some(2));
    let why = kite(&st)["last_error"].as_str().unwrap().to_string();
    assert!(why.contains("certificate") && why.contains("localhost"), "{why}");
    assert_eq!(st["feeds"][0]["state"], "connecting");
    assert_eq!(fake.connections(), 0, "no WebSocket over an unverified link");
    let _ = std::fs::remove_file(&ca);
}

#[test]
fn credentials_from_the_environment_never_reach_the_logs_and_a_refusal_is_logged_once() {
    use std::io::BufRead;
    let fake = Fake::start();
    fake.state.refuse.store(403, Ordering::SeqCst);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off"])
        .args(["--feed", &format!("kite+ws://{}/", fake.addr)])
        .env("KITE_API_KEY", "env-key")
        .env("KITE_ACCESS_TOKEN", "env-s3cret")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.state.refused.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the refused handshake was not retried");
        std::thread::sleep(Duration::from_millis(20));
    }
    fake.state.refuse.store(0, Ordering::SeqCst);
    fake.wait_connections(1);
    let uri = fake.state.handshakes.lock().unwrap()[0].clone();
    assert_eq!(uri, "/?api_key=env-key&access_token=env-s3cret", "credentials from the environment");
    util::unsafe_free_kill(child.id(), "-TERM");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("env-s3cret"), "the access token is in the log:\n{log}");
    let warned = log.lines().filter(|l| l.contains("WARN") && l.contains("HTTP 403")).count();
    assert_eq!(warned, 1, "a refusal is logged once per streak:\n{log}");
    assert!(log.contains("access_token=***"), "the address is shown redacted:\n{log}");
}
