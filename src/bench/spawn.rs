//! `tickcast bench --spawn`: start this binary as the server under test
//! (a generated master with the run's tokens, a UDP or simulated feed, one
//! worker, pinned with `--server-cpus`), find its addresses, stop it after.
//! Its log goes to a file of its own (kept after the run), so that it never
//! interleaves with the report.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{BenchArgs, Shape};

/// A spawned server, stopped on drop.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) ws: SocketAddr,
    pub(super) udp: SocketAddr,
    /// Its shared-memory region, with `--shm-readers`.
    pub(super) shm: Option<String>,
    /// Its log (stderr), kept after the run.
    pub(super) log: std::path::PathBuf,
    pub(super) _master: tempfile_path::TempPath,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /status` of a server, as JSON.
/// How long the spawned server's `/status` may take: generous, since a
/// machine loaded by other work (or a test suite) may take seconds to
/// schedule the server's http thread.
pub(super) const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

fn status(addr: SocketAddr, tls: Option<&super::tls::ClientTls>) -> Result<serde_json::Value> {
    let out = match tls {
        Some(t) => t.get(addr, "/status").context(
            "over TLS (a self-signed certificate needs --insecure; one signed by a private CA, --ca CA.pem)",
        )?,
        None => {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(STATUS_TIMEOUT))?;
            write!(s, "GET /status HTTP/1.1\r\nHost: bench\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            out
        }
    };
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}

/// A tickcast server's (write calls, data frames queued) so far, from its
/// `/status` counters; `None` when they cannot be read (another server,
/// or one that wants an admin key).
pub(super) fn write_counts(addr: SocketAddr, tls: Option<&super::tls::ClientTls>) -> Option<(u64, u64)> {
    let st = status(addr, tls).ok()?;
    let c = &st["counters"];
    Some((c["write_calls"].as_u64()?, c["frames_sent"].as_u64()?))
}

pub(super) fn spawn_server(a: &BenchArgs, shape: &Shape, tls: Option<&super::tls::ClientTls>) -> Result<Spawned> {
    let path = std::env::temp_dir().join(format!("tickcast-bench-master-{}.csv", std::process::id()));
    let mut csv = String::from("token,exchange,symbol,name,isin,tick_size,lot_size,price_decimals\n");
    for t in 1..=shape.tokens {
        // An ISIN: an equity (Kite segment NSE), not an index.
        csv.push_str(&format!("{t},NSE,SYM{t},Bench instrument {t},INE{t:09},0.05,1,2\n"));
    }
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    let master = tempfile_path::TempPath(path.clone());
    let feed = match a.source.as_str() {
        "sim" => format!("sim:rate={},seed={}", shape.rate, a.seed),
        _ => "udp://127.0.0.1:0".to_string(),
    };
    let mut cmd = Command::new(std::env::current_exe().context("locating tickcast")?);
    cmd.args(["--listen", "127.0.0.1:0", "--openalgo-listen", "off", "--feed", &feed, "--workers", "1"])
        .arg("--master")
        .arg(&path)
        .args(["--max-subscriptions", &shape.subs.max(3000).to_string()])
        .args(["--max-connections", &(shape.clients + 100).to_string()])
        .args(&a.server_arg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let log = std::env::temp_dir().join(format!("tickcast-bench-server-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stderr(log_file);
    if let Some(cpus) = &a.server_cpus {
        cmd.args(["--cpus", cpus]);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let shm = (a.shm_readers > 0).then(|| format!("/dev/shm/tickcast-bench-{}", std::process::id()));
    if let Some(path) = &shm {
        cmd.args(["--shm", path]);
    }
    let mut child = cmd.spawn().context("starting the server")?;
    match addresses(&mut child, a, &log, tls) {
        Ok((ws, udp)) => Ok(Spawned { child, ws, udp, shm, log, _master: master }),
        Err(e) => {
            // Not left running behind a failed run (it may be up but slow).
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The spawned server's WebSocket and UDP feed addresses, from its banner
/// and `/status`.
///
/// # Errors
/// No banner (it did not start: the error quotes its `log`), or no answer.
fn addresses(
    child: &mut Child,
    a: &BenchArgs,
    log: &std::path::Path,
    tls: Option<&super::tls::ClientTls>,
) -> Result<(SocketAddr, SocketAddr)> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let ws: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split("://").nth(1))
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            format!("the server did not start (banner {line:?}); its log, {}:\n{}", log.display(), said.trim_end())
        })?;
    let st = status(ws, tls)
        .with_context(|| format!("asking the spawned server for /status (its log: {})", log.display()))?;
    let udp = match a.source.as_str() {
        "sim" => "127.0.0.1:9".parse()?, // unused: no feeder
        _ => {
            st["feeds"][0]["address"].as_str().and_then(|a| a.parse().ok()).context("the server's UDP feed address")?
        }
    };
    Ok((ws, udp))
}
