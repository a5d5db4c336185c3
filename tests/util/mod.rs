//! Shared test helpers: start the real `tickcast` binary on an ephemeral
//! port and talk to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// `/status` with `ops-key`, the admin key of the tests' auth files
/// (ignored by a server without keys).
const STATUS: &str = "/status?api_key=ops-key";

/// A running server process; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The OpenAlgo listener (the banner's `OpenAlgo: ws://ADDR`), unless off.
    pub openalgo_addr: Option<SocketAddr>,
    /// The Kite listener (the banner's `Kite: ws://ADDR`), if on.
    pub kite_addr: Option<SocketAddr>,
}

impl Server {
    /// Start with extra flags (always `--listen 127.0.0.1:0`).
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Start with extra flags and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_listening("127.0.0.1:0", args, env)
    }

    /// Start on `listen` (a fixed address: a restarted server found again).
    pub fn start_listening(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
            .args(["--listen", listen, "--openalgo-listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tickcast");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read banner");
        let addr = banner_addr(&line);
        let port = |label: &str| -> Option<SocketAddr> {
            let a = line.split(&format!("{label}: ")).nth(1)?.split("://").nth(1)?.split([';', ')']).next()?;
            Some(a.parse().unwrap_or_else(|e| panic!("{label} address in banner {line:?}: {e}")))
        };
        let (openalgo_addr, kite_addr) = (port("OpenAlgo"), port("Kite"));
        Server { child, addr, openalgo_addr, kite_addr }
    }

    /// The default test server: simulator at 5000 ticks/s, warmed up so
    /// every instrument has a last value (and so a snapshot).
    pub fn sim() -> Server {
        let s = Server::start(&["--feed", "sim:rate=5000"]);
        s.warm();
        s
    }

    /// Wait until the feeds published enough ticks to have touched every
    /// instrument of the bundled master.
    pub fn warm(&self) {
        self.status_until("a warm cache", |st| st["feeds"][0]["ticks"].as_u64().unwrap_or(0) > 2000);
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn connect(&self, path_and_query: &str) -> Client {
        Client::connect(&self.url(path_and_query))
    }

    /// `ws://ADDR` of the OpenAlgo listener (no path, as the SDK connects).
    pub fn openalgo_url(&self) -> String {
        format!("ws://{}", self.openalgo_addr.expect("the OpenAlgo listener is on"))
    }

    /// Connect to the OpenAlgo listener (nothing is sent or read).
    pub fn openalgo(&self) -> Client {
        Client::connect(&self.openalgo_url())
    }

    /// Connect to `/stream` and read the welcome.
    pub fn native(&self) -> Client {
        self.native_with(|_| {})
    }

    /// Connect to `/stream`, read the welcome and check it with `check`.
    pub fn native_with(&self, check: impl FnOnce(&Value)) -> Client {
        let mut c = self.connect("/stream");
        let w = c.recv_json();
        assert_eq!(w["type"], "welcome", "{w}");
        check(&w);
        c
    }

    /// A plain HTTP GET: (status, body); status 0 if the exchange failed.
    pub fn get(&self, path: &str) -> (u16, String) {
        let exchange = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        let out = exchange().unwrap_or_default();
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// The address of the `--publish-listen` port (read from `/status`).
    pub fn publish_addr(&self) -> SocketAddr {
        let st = self.status();
        let feeds = st["feeds"].as_array().expect("feeds");
        let feed = feeds.iter().find(|f| f["kind"] == "publish").expect("a publish source");
        feed["address"].as_str().unwrap().parse().unwrap()
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Value {
        let (code, body) = self.get(STATUS);
        assert_eq!(code, 200, "/status answered {code}: {body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Poll `/status` until `pred` holds (counters are published every 0.5 s).
    pub fn status_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        loop {
            let (code, body) = self.get(STATUS);
            if code == 200 {
                let s: Value = serde_json::from_str(&body).expect("status is JSON");
                if pred(&s) {
                    return s;
                }
                last = body;
            }
            assert!(Instant::now() < deadline, "status never showed {what}: {last}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn terminate(&mut self) {
        unsafe_free_kill(self.child.id(), "-TERM");
    }
}

/// Send a signal with the `kill` command (keeps tests free of `unsafe`).
pub fn unsafe_free_kill(pid: u32, sig: &str) {
    Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a client program from `tests/` (`python3 python/x.py`, `node
/// node/x.js`) with `args`; panics, with its output, unless it exits 0.
/// Returns its stdout. Node scripts need `tests/node/node_modules`, which
/// `scripts/test` installs.
pub fn run_client(program: &str, script: &str, args: &[&str]) -> String {
    run_client_env(program, script, args, &[])
}

/// [`run_client`] with environment variables.
pub fn run_client_env(program: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let path = tests.join(script);
    assert!(path.is_file(), "missing {}", path.display());
    if program == "node" {
        assert!(
            tests.join("node/node_modules/ws").is_dir(),
            "the `ws` package is missing: run `npm install --prefix tests/node` (scripts/test does)"
        );
    }
    let out = Command::new(program)
        .arg(&path)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} is required for this test and could not be run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {script} {args:?} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

/// The main port's address in the server's first stdout line (its banner).
pub fn banner_addr(line: &str) -> SocketAddr {
    line.split("listening on ")
        .nth(1)
        .and_then(|r| r.split("://").nth(1))
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in banner {line:?}"))
        .parse()
        .unwrap()
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private redis-server on a free port; killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (scripts/test installs it)");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Send one command (RESP), return the first reply line.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        redis_command(self.port, args)
    }

    /// Full raw reply of one command.
    pub fn raw(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Send one command (RESP) to the redis-server on `port`; the first reply line.
pub fn redis_command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).lines().next()?.to_string())
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real WebSocket client (tungstenite, blocking, with a read timeout).
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        Client { ws }
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn send_json(&mut self, v: Value) {
        self.send(&v.to_string());
    }

    /// Next message of any kind (panics on timeout or close).
    pub fn recv(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(m) => return m,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Next text message as JSON (skipping heartbeats would hide a stall, so
    /// callers that loop must bound themselves: see [`Client::recv_until`]).
    pub fn recv_json(&mut self) -> Value {
        match self.recv() {
            Message::Text(t) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad JSON {t}: {e}")),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Read JSON messages until one matches `pred` (skipping others).
    pub fn recv_until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let m = self.recv();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
        panic!("never received {what}");
    }

    /// Read until a message of `type` arrives.
    pub fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_until(ty, |v| v["type"] == ty)
    }

    /// Send a request and return its reply (matched by `id`).
    pub fn request(&mut self, mut req: Value, id: u64) -> Value {
        req["id"] = id.into();
        self.send_json(req);
        self.recv_until("reply", |v| v["id"] == id)
    }

    /// Read until the server closes; returns the close code and reason.
    pub fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return (f.code.into(), f.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }
}

/// A raw TCP connection that has completed the upgrade to `path`.
pub fn raw_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// A masked client frame.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    tickcast::ws::frame::append_masked(&mut out, opcode, fin, [1, 2, 3, 4], payload);
    out
}

/// Read one server frame from a raw stream: (opcode, payload).
pub fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

/// Read raw frames until a close frame: its code and reason.
pub fn read_close(s: &mut TcpStream) -> (u16, String) {
    loop {
        let (op, p) = read_frame(s);
        if op == 0x8 {
            let code = u16::from_be_bytes([p[0], p[1]]);
            return (code, String::from_utf8_lossy(&p[2..]).into_owned());
        }
    }
}

/// A directory of this test's own under the system temp dir (process id,
/// a per-process counter and the time in the name, so concurrent test
/// binaries and copies of the suite never share one); removed on drop.
pub struct Scratch {
    pub dir: std::path::PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("tickcast-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A file clock for `TICKCAST_CLOCK=@FILE`: the server's market hours read
/// the time written here, which stands still between [`FileClock::set`]s.
pub struct FileClock {
    scratch: Scratch,
}

impl FileClock {
    /// A clock file reading `time` (RFC 3339 or Unix seconds).
    pub fn new(time: &str) -> FileClock {
        let c = FileClock { scratch: Scratch::new("clock") };
        c.set(time);
        c
    }

    /// The value for `TICKCAST_CLOCK`.
    pub fn env(&self) -> String {
        format!("@{}", self.scratch.path("clock").display())
    }

    /// Move the clock to `time` (atomically: the server may read it any time).
    pub fn set(&self, time: &str) {
        let tmp = self.scratch.path("clock.tmp");
        std::fs::write(&tmp, time).unwrap();
        std::fs::rename(&tmp, self.scratch.path("clock")).unwrap();
    }
}
