//! `tickcast bench`: an open-loop latency benchmark for WebSocket market-data
//! servers — tickcast itself (`--spawn` starts and pins one) or any server
//! that takes a JSON subscribe message (`--url`, `--sub-template`).
//!
//! ```text
//!  feeder thread ──TCF1/UDP, fixed rate, ts = scheduled time──► server ──ws──► C clients (mio thread[s])
//!                                                                              latency = recv − ts → HDR
//! ```
//!
//! Expected deliveries are known exactly (the harness chose every client's
//! tokens and counted every tick it scheduled per token), so loss is
//! measured, not guessed. Ticks scheduled during warm-up are not counted.
//!
//! `--churn` runs a soak load instead (clients joining and leaving, slow
//! readers, every tick checked by its `seq`): see [`churn`].

pub mod churn;
pub mod clients;
pub mod feeder;
pub mod hlog;
pub mod plot;
mod progress;
pub mod report;
pub mod shm;
mod spawn;
mod tls;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::parse_cpus;
use crate::instrument::Registry;
use crate::metrics::new_histogram;
use crate::tick::now_ns;
use report::Report;
use spawn::{spawn_server, Spawned};

/// `tickcast bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Preset: `retail` (1000 clients × 20 of 2000 tokens, 10k ticks/s), `hft` (10 × 500 of 1000, 100k/s), `broadcast` (100 × 100 of 100, 10k/s).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Ticks per second offered (overrides the preset).
    #[arg(long)]
    pub rate: Option<u64>,
    /// WebSocket connections.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Tokens each client subscribes to (distinct, random).
    #[arg(long)]
    pub subs: Option<usize>,
    /// Instruments the feeder draws ticks from.
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Data frame format asked of the server: json or rkyv (the native protocol), or kite (Kite ticker packets at `/kite`: latency from the quote packets' last traded quantity, which the feeder sets to the scheduled time in µs).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Draw tokens Zipf(S) instead of uniformly.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Client threads (connections are spread across them).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Spread the connections over N source addresses 127.0.0.1..=127.0.0.N, round-robin, so more than one address's ~28k ephemeral ports can connect (loopback targets only) [default: one per 20,000 clients].
    #[arg(long, value_name = "N")]
    pub source_addrs: Option<usize>,
    /// Start a tickcast server for the run (pinned by --server-cpus) and stop it after.
    #[arg(long)]
    pub spawn: bool,
    /// WebSocket URL of the server under test (without --spawn), e.g. ws://127.0.0.1:8080/stream or wss://localhost:8443/stream.
    #[arg(long)]
    pub url: Option<String>,
    /// With --spawn: the server's TLS certificate and key (PEM); its clients connect over wss:// (trusting --ca, or --insecure).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// With --spawn: the key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// For wss://: trust this CA (PEM) [default: the web PKI roots].
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// For wss://: accept any certificate (self-signed test certificates; signatures are still checked).
    #[arg(long)]
    pub insecure: bool,
    /// Where the server under test listens for TCF1 over UDP (without --spawn).
    #[arg(long, value_name = "HOST:PORT")]
    pub feed_addr: Option<SocketAddr>,
    /// Subscribe message; %TOKENS% becomes a JSON array of the client's tokens [default: the native subscribe; with --format kite, Kite's].
    #[arg(long)]
    pub sub_template: Option<String>,
    /// Instrument master whose first N tokens are used (without --spawn) [default: bundled].
    #[arg(long)]
    pub master: Option<PathBuf>,
    /// CPUs for the spawned server (e.g. `0`).
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs for the harness threads (e.g. `1`).
    #[arg(long)]
    pub load_cpus: Option<String>,
    /// Extra flag for the spawned server, repeatable (e.g. --server-arg=--idle --server-arg=spin).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Raise the rate ×1.5 per step until loss ≥ 0.1% or p99 > --slo; report the highest rate that held.
    #[arg(long)]
    pub find_max: bool,
    /// Latency objective for --find-max (p99), e.g. 1ms, 200us.
    #[arg(long, default_value = "1ms")]
    pub slo: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write each run's histogram to this HdrHistogram log file.
    #[arg(long)]
    pub hlog: Option<PathBuf>,
    /// Write the percentile-distribution plot (SVG) of the runs here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Do not run: plot the runs recorded in these --hlog files on one chart (--plot FILE), repeatable.
    #[arg(long, value_name = "FILE")]
    pub plot_hlog: Vec<PathBuf>,
    /// Name of the run in tables, plots and hlog tags (spaces become `_` in tags) [default: "SCENARIO FORMAT RATE/s"].
    #[arg(long)]
    pub label: Option<String>,
    /// RNG seed (token choice, tick draws).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shared-memory reader processes, each reading every tick from the server's region (--spawn gives the server --shm; else give --shm) [default: 0].
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub shm_readers: usize,
    /// How the shared-memory readers wait: spin, park or hybrid.
    #[arg(long, default_value = "spin")]
    pub shm_wait: String,
    /// CPUs for the shared-memory readers, one each in turn (e.g. `1`).
    #[arg(long, value_name = "LIST")]
    pub shm_cpus: Option<String>,
    /// The region of a running server (without --spawn), its --shm name or path.
    #[arg(long, value_name = "NAME|PATH")]
    pub shm: Option<String>,
    /// Most ticks per feeder datagram: ticks due together share one, up to this many (1: one datagram per tick, so a tick never waits for the rest of its datagram's schedule).
    #[arg(long, default_value_t = feeder::PER_PACKET, value_name = "N")]
    pub ticks_per_datagram: usize,
    /// Soak load instead of a latency run: each of --clients joins, stays a lifetime drawn from MIN..MAX (e.g. `2s..20s`), leaves (half with a close frame, half with a reset) and is replaced, for --secs; every tick is checked by its `seq` (see `bench::churn`). JSON format only.
    #[arg(long, value_name = "MIN..MAX")]
    pub churn: Option<String>,
    /// With --churn: percent of the clients that read slowly (conflate delivery).
    #[arg(long, default_value_t = 10, value_name = "PCT")]
    pub slow_pct: usize,
    /// With --churn: percent of the clients that subscribe lossless.
    #[arg(long, default_value_t = 30, value_name = "PCT")]
    pub lossless_pct: usize,
    /// With --churn: lossless clients that stay the whole run, the tokens dealt out among them (the witnesses of what reached the server).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub anchors: usize,
    /// Where ticks come from: `udp` (the open-loop feeder) or `sim` (the spawned server's own simulator at --rate: no feeder, for writer throughput with --shm-readers and no clients).
    #[arg(long, default_value = "udp", value_name = "udp|sim")]
    pub source: String,
}

/// Resolved run parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Preset name or "custom".
    pub scenario: String,
    /// Ticks/s.
    pub rate: u64,
    /// Connections.
    pub clients: usize,
    /// Tokens per client.
    pub subs: usize,
    /// Instruments.
    pub tokens: usize,
}

impl Shape {
    /// The preset (or defaults) with flag overrides.
    ///
    /// # Errors
    /// Unknown preset, or more subscriptions per client than tokens.
    pub fn from_args(a: &BenchArgs) -> Result<Shape> {
        let (name, rate, clients, subs, tokens) = match a.scenario.as_deref() {
            None => ("custom", 10_000, 10, 10, 100),
            Some("retail") => ("retail", 10_000, 1000, 20, 2000),
            Some("hft") => ("hft", 100_000, 10, 500, 1000),
            Some("broadcast") => ("broadcast", 10_000, 100, 100, 100),
            Some(o) => bail!("--scenario `{o}`: expected retail, hft or broadcast"),
        };
        let s = Shape {
            scenario: name.into(),
            rate: a.rate.unwrap_or(rate),
            clients: a.clients.unwrap_or(clients),
            subs: a.subs.unwrap_or(subs),
            tokens: a.tokens.unwrap_or(tokens),
        };
        let clients_ok = s.clients > 0 || a.shm_readers > 0;
        if s.subs > s.tokens || s.subs == 0 || !clients_ok || s.rate == 0 || s.tokens == 0 {
            bail!("bench shape {s:?}: need 0 < subs ≤ tokens, a positive rate, and clients (or --shm-readers)");
        }
        Ok(s)
    }
}

/// Parse `1ms`, `200us`, `500ns`, `2s` into ns.
///
/// # Errors
/// Anything else.
pub fn parse_duration_ns(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("`{s}` is not a duration like 1ms"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => bail!("`{s}`: unit must be ns, us, ms or s"),
    };
    Ok((v * scale) as u64)
}

/// CPU time of a process so far, in seconds (from /proc/`pid`/stat; `pid`
/// is a number or "self").
fn process_cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime + stime, in USER_HZ (100 on Linux)
}

fn pin(cpus: &[usize], i: usize) {
    if let Some(&id) = cpus.get(i % cpus.len().max(1)) {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// How many loopback source addresses the clients connect from: `--source-addrs`, or one per
/// [`clients::CLIENTS_PER_SOURCE`] clients to a 127.0.0.x server (one for any other).
fn source_addrs(a: &BenchArgs, shape: &Shape, ws: SocketAddr) -> Result<usize> {
    let loopback = ws.is_ipv4() && ws.ip().is_loopback();
    let k =
        a.source_addrs.unwrap_or(if loopback { shape.clients.div_ceil(clients::CLIENTS_PER_SOURCE).max(1) } else { 1 });
    if !(1..=254).contains(&k) {
        bail!("--source-addrs {k}: expected 1 to 254 (127.0.0.1..=127.0.0.254)");
    }
    if k > 1 && !loopback {
        bail!("{k} source addresses (127.0.0.x) need a 127.0.0.x server, not {ws}; give --source-addrs 1");
    }
    Ok(k)
}

/// The server under test.
struct Target {
    /// Its WebSocket address.
    ws: SocketAddr,
    /// Request path and query.
    path: String,
    /// Where it reads TCF1.
    udp: SocketAddr,
    /// Its process, when the harness spawned it (for its CPU use).
    pid: Option<u32>,
    /// Its shared-memory region, for `--shm-readers`.
    shm: Option<String>,
    /// The tokens clients subscribe by, index for index with the feed's
    /// (Kite tokens with `--format kite`).
    sub_tokens: Vec<u32>,
    /// `wss://`: how clients connect.
    tls: Option<tls::ClientTls>,
}

impl BenchArgs {
    /// The subscribe message, `%TOKENS%` still in it.
    fn sub_template(&self) -> &str {
        match (&self.sub_template, self.format.as_str()) {
            (Some(t), _) => t,
            (None, "kite") => r#"{"a":"subscribe","v":%TOKENS%}"#,
            (None, _) => r#"{"action":"subscribe","tokens":%TOKENS%}"#,
        }
    }
}

/// A run's report and its per-second latency histograms.
type Run = (Report, Vec<hdrhistogram::Histogram<u64>>);

/// One measured run at `shape.rate`.
fn run_once(a: &BenchArgs, shape: &Shape, server: &Target, tokens: &[u32]) -> Result<Run> {
    let (ws, path, udp) = (server.ws, server.path.as_str(), server.udp);
    let load_cpus = match &a.load_cpus {
        Some(l) => parse_cpus(l).with_context(|| format!("--load-cpus `{l}`"))?,
        None => Vec::new(),
    };
    let sources = source_addrs(a, shape, ws)?;
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let mut subscribers = vec![0u64; shape.tokens];
    let threads = a.client_threads.max(1);
    let mut groups: Vec<Vec<clients::ClientSpec>> = (0..threads).map(|_| Vec::new()).collect();
    // Token indices of each client, per group, in the group's order.
    let mut group_tokens: Vec<Vec<Vec<usize>>> = (0..threads).map(|_| Vec::new()).collect();
    for c in 0..shape.clients {
        let mut idx: Vec<usize> = (0..shape.tokens).collect();
        rng.shuffle(&mut idx);
        idx.truncate(shape.subs);
        let list: Vec<String> = idx.iter().map(|&i| server.sub_tokens[i].to_string()).collect();
        let subscribe = a.sub_template().replace("%TOKENS%", &format!("[{}]", list.join(",")));
        let source = clients::source_addr(sources, c);
        let kite = a.format == "kite";
        let tls = server.tls.clone();
        groups[c % threads].push(clients::ClientSpec {
            addr: ws,
            source,
            path: path.to_string(),
            subscribe,
            kite,
            tls,
            rcvbuf: None,
        });
        group_tokens[c % threads].push(idx);
    }
    let mut readers = match (a.shm_readers, &server.shm) {
        (0, _) => None,
        (n, Some(path)) => {
            let cpus = match a.shm_cpus.as_deref() {
                Some(l) => parse_cpus(l).with_context(|| format!("--shm-cpus `{l}`"))?,
                None => Vec::new(),
            };
            Some(shm::Readers::start(n, path, &a.shm_wait, &cpus)?)
        }
        (_, None) => bail!("--shm-readers needs the server's region: --spawn, or --shm NAME"),
    };
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The measured window is fixed only once every client is subscribed;
    // clients read it from these cells (u64::MAX: not yet, measure nothing).
    let mut handles = Vec::new();
    let window_start = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let window_end = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let measured = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (i, g) in groups.into_iter().enumerate() {
        let (ready, stop, cpus) = (ready.clone(), stop.clone(), load_cpus.clone());
        let (ws_start, ws_end, measured) = (window_start.clone(), window_end.clone(), measured.clone());
        handles.push(std::thread::spawn(move || {
            if !cpus.is_empty() {
                pin(&cpus, i + 1);
            }
            clients::run(g, ready, stop, (ws_start, ws_end), measured)
        }));
    }
    let label = match &a.label {
        Some(l) if a.find_max => format!("{l} {}/s", shape.rate),
        Some(l) => l.clone(),
        None => format!("{} {} {}/s", shape.scenario, a.format, shape.rate),
    };
    let live = progress::Live {
        label: label.clone(),
        clients: shape.clients,
        ready: ready.clone(),
        window: (window_start.clone(), window_end.clone()),
        measured,
    };
    let progress = progress::Progress::start(!a.json && std::io::stderr().is_terminal(), live);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < shape.clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let settled = ready.load(Ordering::Relaxed);
    if settled < shape.clients {
        log::warn!(
            "{} of {} clients neither got a subscription reply nor failed within 30 s; measuring anyway",
            shape.clients - settled,
            shape.clients
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    if !load_cpus.is_empty() {
        pin(&load_cpus, 0);
    }
    let start = now_ns() + 20_000_000;
    // Whole microseconds: Kite runs know a tick's time to the µs (`clients::kite_ts`).
    let measure_from = (start + (a.warmup * 1e9) as u64) / 1_000 * 1_000;
    let end = measure_from + (a.secs * 1e6) as u64 * 1_000;
    window_start.store(measure_from, Ordering::Relaxed);
    window_end.store(end, Ordering::Relaxed);
    if let Some(r) = &mut readers {
        r.window(measure_from, end)?;
    }
    let draw = match a.zipf {
        Some(s) => feeder::Draw::zipf(shape.tokens, s),
        None => feeder::Draw::Uniform,
    };
    let plan = feeder::Plan {
        target: udp,
        rate: shape.rate,
        tokens: tokens.to_vec(),
        draw,
        start_ns: start,
        window: (measure_from, end),
        end_ns: end,
        seed: a.seed,
        per_packet: a.ticks_per_datagram,
        ltq_clock: a.format == "kite",
    };
    let server_pid = server.pid.map(|p| p.to_string());
    let writes0 = spawn::write_counts(ws, server.tls.as_ref());
    let server_cpu0 = server_pid.as_deref().map(process_cpu_secs);
    let cpu0 = process_cpu_secs("self");
    let sent = if a.source == "sim" {
        // The server's simulator is the source: just let the window pass.
        std::thread::sleep(Duration::from_nanos(end.saturating_sub(now_ns())));
        feeder::Sent { total: 0, measured: Vec::new(), errors: 0, lag: crate::metrics::new_histogram() }
    } else {
        feeder::run(&plan).context("feeder")?
    };
    let cpu = process_cpu_secs("self") - cpu0;
    let server_cpu = server_pid.as_deref().map(process_cpu_secs).zip(server_cpu0).map(|(b, a)| b - a);
    let server_writes = spawn::write_counts(ws, server.tls.as_ref())
        .zip(writes0)
        .map(|((c1, f1), (c0, f0))| (c1.saturating_sub(c0), f1.saturating_sub(f0)));
    std::thread::sleep(Duration::from_millis(500)); // let in-flight deliveries land
    stop.store(true, Ordering::Relaxed);
    drop(progress);
    let shm_results = match readers {
        Some(r) => r.finish()?,
        None => Vec::new(),
    };
    let mut latency = new_histogram();
    let mut per_second: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let (mut delivered, mut bytes, mut reads, mut failed) = (0, 0, 0, 0);
    let mut unacknowledged = 0;
    for (h, tokens) in handles.into_iter().zip(&group_tokens) {
        let m = h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?.context("clients")?;
        // Only acknowledged subscriptions are expected to deliver: a client
        // that never got its subscription through is a failed client, not
        // server loss.
        for (acked, idx) in m.acknowledged.iter().zip(tokens) {
            if *acked {
                for &i in idx {
                    subscribers[i] += 1;
                }
            } else {
                unacknowledged += 1;
            }
        }
        latency.add(&m.latency).context("merging histograms")?;
        for (i, h) in m.per_second.iter().enumerate() {
            if per_second.len() <= i {
                per_second.resize_with(i + 1, new_histogram);
            }
            per_second[i].add(h).context("merging histograms")?;
        }
        delivered += m.delivered;
        bytes += m.bytes;
        reads += m.reads;
        failed += m.failed;
    }
    if unacknowledged > 0 {
        log::warn!("{unacknowledged} clients never had their subscription acknowledged; their ticks are not expected");
    }
    if failed > 0 {
        log::warn!("{failed} client connections failed or were closed by the server");
    }
    let expected = sent.measured.iter().zip(&subscribers).map(|(n, s)| n * s).sum();
    let elapsed = (now_ns().min(end) - start) as f64 / 1e9;
    let report = Report {
        label,
        scenario: shape.scenario.clone(),
        url: format!("{}://{ws}{path}", if server.tls.is_some() { "wss" } else { "ws" }),
        format: a.format.clone(),
        rate: shape.rate,
        secs: a.secs,
        clients: shape.clients,
        subs: shape.subs,
        tokens: shape.tokens,
        expected,
        delivered,
        bytes,
        client_cpu: cpu / elapsed.max(1e-9),
        server_cpu: server_cpu.map(|c| c / elapsed.max(1e-9)),
        server_writes,
        client_reads: reads,
        latency,
        feeder_lag: sent.lag,
        shm: shm_results,
        shm_expected: sent.measured.iter().sum(),
    };
    Ok((report, per_second))
}

/// What a plot of `reports` says besides its curves: each run's load and
/// outcome (a `--find-max` search: the first step's load and the
/// objective, also drawn as a line), and when and by what it was made.
fn plot_notes(a: &BenchArgs, reports: &[Report], slo_ns: u64) -> plot::Notes {
    let mut notes = plot::Notes::default();
    match reports.first() {
        Some(first) if a.find_max => {
            notes.lines.push(format!("--find-max from {}; each step ×1.5 the rate", first.load_line()));
            notes.lines.push(format!("a step holds with loss < 0.1% and p99 ≤ {}", a.slo));
            notes.slo = Some((slo_ns, format!("SLO: p99 ≤ {}", a.slo)));
        }
        _ => {
            for r in reports {
                notes.lines.push(r.load_line());
                notes.lines.push(r.outcome_line());
            }
        }
    }
    let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC");
    notes.lines.push(format!("{now}, tickcast {}", env!("CARGO_PKG_VERSION")));
    notes
}

/// A `--churn` run: the churning clients on their own thread, the feeder
/// on this one for --secs; then the clients leave and the outcome is printed.
fn run_churn(a: &BenchArgs, shape: &Shape, server: &Target, tokens: &[u32]) -> Result<()> {
    let life = a.churn.as_deref().unwrap_or_default();
    let (lo, hi) =
        life.split_once("..").with_context(|| format!("--churn `{life}`: expected MIN..MAX, e.g. 2s..20s"))?;
    let life_ns = (parse_duration_ns(lo)?, parse_duration_ns(hi)?);
    if a.format != "json"
        || life_ns.0 == 0
        || life_ns.0 > life_ns.1
        || a.slow_pct + a.lossless_pct > 100
        || a.anchors == 0
    {
        bail!("--churn needs --format json, 0 < MIN ≤ MAX, --slow-pct + --lossless-pct ≤ 100 and --anchors ≥ 1");
    }
    let plan = churn::Plan {
        addr: server.ws,
        path: server.path.clone(),
        tokens: server.sub_tokens.clone(),
        clients: shape.clients,
        subs: shape.subs,
        anchors: a.anchors,
        life_ns,
        slow_pct: a.slow_pct,
        lossless_pct: a.lossless_pct,
        seed: a.seed,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = stop.clone();
        std::thread::spawn(move || churn::run(&plan, &stop))
    };
    // The anchors subscribe before the first tick.
    std::thread::sleep(Duration::from_millis(500));
    let start = now_ns();
    let end = start + (a.secs * 1e9) as u64;
    let feed = feeder::Plan {
        target: server.udp,
        rate: shape.rate,
        tokens: tokens.to_vec(),
        draw: feeder::Draw::Uniform,
        start_ns: start,
        window: (start, end),
        end_ns: end,
        seed: a.seed,
        per_packet: a.ticks_per_datagram,
        ltq_clock: false,
    };
    let sent = feeder::run(&feed).context("feeder");
    std::thread::sleep(Duration::from_secs(1)); // let in-flight deliveries land
    stop.store(true, Ordering::Relaxed);
    let out = clients.join().map_err(|_| anyhow::anyhow!("the client thread panicked"))?.context("clients")?;
    let sent = sent?;
    let mut v = out.json();
    v["secs"] = a.secs.into();
    v["deliveries_per_sec"] = (out.deliveries() as f64 / a.secs).round().into();
    v["rate"] = shape.rate.into();
    v["ticks_sent"] = sent.total.into();
    v["send_errors"] = sent.errors.into();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", churn_table(&v));
    }
    Ok(())
}

/// The human summary of a `--churn` outcome (its JSON).
fn churn_table(v: &serde_json::Value) -> String {
    let mut out = format!(
        "churn: {:.0} s, {} ticks sent at {}/s, {} deliveries/s; left by close {}, by reset {}; server closes {}\n",
        v["secs"].as_f64().unwrap_or(0.0),
        v["ticks_sent"],
        v["rate"],
        v["deliveries_per_sec"],
        v["left_close"],
        v["left_reset"],
        v["server_closes"]
    );
    out.push_str(
        "class      joined   ticks        gaps(ticks)       upstream  lost  unnoticed  out-of-order  closed\n",
    );
    for (name, c) in v["classes"].as_object().into_iter().flatten() {
        let f = |k: &str| c[k].to_string();
        out.push_str(&format!(
            "{name:<10} {:<8} {:<12} {:<17} {:<9} {:<5} {:<10} {:<13} {}\n",
            f("joined"),
            f("ticks"),
            format!("{}({})", c["reported_gaps"], c["reported_ticks"]),
            f("upstream_ticks"),
            f("lost_ticks"),
            f("unnoticed"),
            f("out_of_order"),
            f("server_closed")
        ));
    }
    out.push_str(&format!(
        "lossless lost ticks: {}; unreported misses: {}\n",
        v["lossless_lost_ticks"], v["unreported_misses"]
    ));
    out
}

/// Run `tickcast bench`.
///
/// # Errors
/// Bad flags, a server that cannot be started or reached.
pub fn run(a: BenchArgs) -> Result<()> {
    if !a.plot_hlog.is_empty() {
        let out = a.plot.as_ref().context("--plot-hlog needs --plot FILE.svg to write the chart to")?;
        let runs = hlog::read(&a.plot_hlog)?;
        let refs: Vec<(&str, &hdrhistogram::Histogram<u64>)> = runs.iter().map(|(n, h)| (n.as_str(), h)).collect();
        let files: Vec<String> = a.plot_hlog.iter().map(|p| p.display().to_string()).collect();
        let notes = plot::Notes { lines: vec![format!("from {}", files.join(", "))], slo: None };
        std::fs::write(out, plot::plot_svg("tickcast bench: latency by percentile", &refs, &notes))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("{}: {} runs", out.display(), runs.len());
        return Ok(());
    }
    let mut shape = Shape::from_args(&a)?;
    if !(a.secs.is_finite() && a.secs > 0.0 && a.warmup.is_finite() && a.warmup >= 0.0) {
        bail!("--secs must be positive and --warmup not negative");
    }
    if !matches!(a.format.as_str(), "json" | "rkyv" | "kite") {
        bail!("--format `{}`: expected json, rkyv or kite", a.format);
    }
    match a.source.as_str() {
        "udp" => {}
        "sim" if a.spawn && shape.clients == 0 && a.shm_readers > 0 => {}
        "sim" => bail!("--source sim measures shared-memory readers of a spawned server: give --spawn, --clients 0 and --shm-readers N"),
        o => bail!("--source `{o}`: expected udp or sim"),
    }
    let slo = parse_duration_ns(&a.slo)?;
    let kite = a.format == "kite";
    #[allow(clippy::type_complexity)] // one tuple, unpacked on the next lines
    let (spawned, ws, path, udp, tokens, sub_tokens, tls): (
        Option<Spawned>,
        SocketAddr,
        String,
        SocketAddr,
        Vec<u32>,
        Vec<u32>,
        Option<tls::ClientTls>,
    ) = if a.spawn {
        let tls =
            a.tls_cert.is_some().then(|| tls::ClientTls::new("localhost", a.ca.as_deref(), a.insecure)).transpose()?;
        let s = spawn_server(&a, &shape, tls.as_ref())?;
        eprintln!("server log: {}", s.log.display());
        let (ws, udp) = (s.ws, s.udp);
        let tokens: Vec<u32> = (1..=shape.tokens as u32).collect();
        // The generated master's instruments are NSE equities: Kite segment 1.
        let sub_tokens = if kite { tokens.iter().map(|t| t * 256 + 1).collect() } else { tokens.clone() };
        let path =
            if kite { "/kite?api_key=bench&access_token=bench".into() } else { format!("/stream?format={}", a.format) };
        (Some(s), ws, path, udp, tokens, sub_tokens, tls)
    } else {
        let url = a.url.as_deref().context("give --spawn, or --url (and --feed-addr) for a running server")?;
        let (secure, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => bail!("--url must start with ws:// or wss://"),
        };
        let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let ws: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(host)?.next().context("--url host")?;
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n).trim_matches(['[', ']']);
        let tls = secure.then(|| tls::ClientTls::new(name, a.ca.as_deref(), a.insecure)).transpose()?;
        let udp = a.feed_addr.context("--feed-addr: where the server listens for TCF1 over UDP")?;
        let reg = match &a.master {
            Some(p) => Registry::load(p)?,
            None => Registry::bundled(),
        };
        let instruments: Vec<_> = reg.iter().filter(|(_, i)| !kite || i.kite_token != 0).take(shape.tokens).collect();
        if instruments.len() < shape.tokens {
            bail!("--tokens {}: the master has only {}", shape.tokens, instruments.len());
        }
        let tokens = instruments.iter().map(|(_, i)| i.token).collect();
        let sub_tokens = instruments.iter().map(|(_, i)| if kite { i.kite_token } else { i.token }).collect();
        let path = match (kite, path.contains('?')) {
            (true, _) => path,
            (false, true) => format!("{path}&format={}", a.format),
            (false, false) => format!("{path}?format={}", a.format),
        };
        (None, ws, path, udp, tokens, sub_tokens, tls)
    };
    let shm = match &spawned {
        Some(s) => s.shm.clone(),
        None => a.shm.as_deref().map(crate::shm::region_path).transpose()?.map(|p| p.display().to_string()),
    };
    let target = Target { ws, path, udp, pid: spawned.as_ref().map(|s| s.child.id()), shm, sub_tokens, tls };
    if a.churn.is_some() {
        if target.tls.is_some() {
            bail!("--churn speaks plain ws:// only (its clients have no TLS)");
        }
        return run_churn(&a, &shape, &target, &tokens);
    }
    let mut reports = Vec::new();
    let mut intervals = Vec::new();
    loop {
        let (r, per_second) = run_once(&a, &shape, &target, &tokens)?;
        intervals.push(per_second);
        let held = r.held(slo);
        if !a.json {
            print!("{}", r.table());
            for w in r.warnings(std::thread::available_parallelism().map_or(1, |n| n.get())) {
                println!("warning: {w}");
            }
        }
        reports.push(r);
        if !a.find_max || !held || reports.len() >= 12 {
            break;
        }
        shape.rate = (shape.rate as f64 * 1.5) as u64;
    }
    if a.find_max {
        let best = reports.iter().filter(|r| r.held(slo)).map(|r| r.rate).max();
        match best {
            Some(rate) if !a.json => println!("highest rate that held (loss < 0.1%, p99 ≤ {}): {rate} ticks/s", a.slo),
            None if !a.json => println!("no rate held (loss < 0.1%, p99 ≤ {})", a.slo),
            _ => {}
        }
    }
    if a.json {
        let all: Vec<serde_json::Value> = reports.iter().map(Report::json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&if all.len() == 1 { all[0].clone() } else { serde_json::Value::Array(all) })?
        );
    }
    if let Some(p) = &a.plot {
        // A --find-max step's curves carry its verdict.
        let curves: Vec<(String, &hdrhistogram::Histogram<u64>)> = reports
            .iter()
            .flat_map(|r| {
                let verdict = a.find_max.then(|| r.verdict_text(slo));
                r.curves().into_iter().map(move |(name, h)| match &verdict {
                    Some(v) => (format!("{name}: {v}"), h),
                    None => (name, h),
                })
            })
            .collect();
        let runs: Vec<(&str, &hdrhistogram::Histogram<u64>)> = curves.iter().map(|(n, h)| (n.as_str(), *h)).collect();
        let notes = plot_notes(&a, &reports, slo);
        std::fs::write(p, plot::plot_svg("tickcast bench: latency by percentile", &runs, &notes))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("plot: {}", p.display());
    }
    if let Some(p) = &a.hlog {
        hlog::write(p, &reports, &intervals)?;
        eprintln!("hlog: {}", p.display());
    }
    drop(spawned);
    Ok(())
}
