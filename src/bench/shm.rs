//! `tickcast bench --shm-readers N`: reader processes on the server's
//! shared-memory region, measured beside (or instead of) the WebSocket
//! clients, from the same open-loop feed.
//!
//! ```text
//!  feeder ──TCF1/UDP──► server feed ──► region ring ──► N reader processes (`tickcast shm-probe`)
//!                         ts_recv_ns stamped here         latency = now − ts_recv_ns, now − ts (scheduled) → HDR
//! ```
//!
//! Each reader is a process of its own (`tickcast shm-probe`, hidden),
//! pinned if asked. It attaches, says `ready`, is told the measured window
//! on stdin, reads zero-copy until stdin closes, and prints what it saw as
//! one JSON line: ticks in the window (every tick of every instrument is
//! expected, so loss is exact), records lost to laps, and both latency
//! histograms (HdrHistogram V2, base64).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::metrics::new_histogram;
use crate::shm::{Event, Options, Read, Reader, Wait};
use crate::tick::now_ns;

/// `tickcast shm-probe` flags (the harness's reader process).
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The region.
    #[arg(long)]
    pub shm: String,
    /// spin, park or hybrid.
    #[arg(long, default_value = "spin")]
    pub wait: String,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
}

fn encode(h: &Histogram<u64>) -> Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

fn decode(s: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).context("histogram base64")?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("reading a histogram: {e:?}"))
}

/// Run one reader process: attach, say `ready`, measure the window given on
/// stdin (`window START_NS END_NS`) until stdin closes, print the result.
///
/// # Errors
/// The region cannot be opened.
pub fn probe(a: ProbeArgs) -> Result<()> {
    if let Some(id) = a.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let wait = Wait::parse(&a.wait).with_context(|| format!("--wait `{}`", a.wait))?;
    let mut reader = Reader::open(&a.shm, Options { wait, snapshot: false, ..Options::default() })?;
    println!("ready");
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    // CPU and wall time from the window's announcement to the stop.
    let cpu_from = Arc::new(parking_lot::Mutex::new(None::<(f64, std::time::Instant)>));
    // Records published when the window was announced (MAX: note it now).
    let published_from = Arc::new(AtomicU64::new(0));
    let mut published0 = None;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (window, stop, cpu_from, published_from) =
            (window.clone(), stop.clone(), cpu_from.clone(), published_from.clone());
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let mut f = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok());
                if let (Some(s), Some(e)) = (f.next(), f.next()) {
                    window.1.store(e, Ordering::Relaxed);
                    window.0.store(s, Ordering::Relaxed);
                    *cpu_from.lock() = Some((super::process_cpu_secs("self"), std::time::Instant::now()));
                    published_from.store(u64::MAX, Ordering::Relaxed); // the reader thread notes it
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let (mut recv, mut sched) = (new_histogram(), new_histogram());
    let (mut received, mut taken, mut gaps, mut lost0) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if published0.is_none() && published_from.load(Ordering::Relaxed) == u64::MAX {
            published0 = Some(reader.published());
            taken = 0;
            gaps = 0;
            lost0 = reader.lost();
        }
        match reader.read_with(|v| (v.ts_ns(), v.ts_recv_ns())) {
            Read::Tick((ts, ts_recv)) => {
                taken += 1;
                let now = now_ns();
                if ts >= window.0.load(Ordering::Relaxed) && ts < window.1.load(Ordering::Relaxed) {
                    received += 1;
                    recv.saturating_record(now.saturating_sub(ts_recv));
                    sched.saturating_record(now.saturating_sub(ts));
                }
            }
            Read::Event(Event::Gap(_)) => gaps += 1,
            Read::Event(_) => {}
            Read::Empty => {
                reader.wait_ready(Some(std::time::Duration::from_millis(50)));
            }
        }
    }
    let (cores, wall) = cpu_from.lock().map_or((0.0, 0.0), |(cpu0, t0)| {
        let wall = t0.elapsed().as_secs_f64().max(1e-9);
        ((super::process_cpu_secs("self") - cpu0) / wall, wall)
    });
    // Drain what was published before the stop, so taken + lost = written.
    loop {
        match reader.read_with(|_| ()) {
            Read::Tick(()) => taken += 1,
            Read::Event(Event::Gap(_)) => gaps += 1,
            Read::Event(_) => {}
            Read::Empty => break,
        }
    }
    let out = serde_json::json!({
        "wait": a.wait,
        "written": reader.published() - published0.unwrap_or(0),
        "taken": taken,
        "received": received,
        "gaps": gaps,
        "lost": reader.lost() - lost0,
        "cores": cores,
        "wall_s": wall,
        "recv": encode(&recv)?,
        "sched": encode(&sched)?,
    });
    println!("{out}");
    Ok(())
}

/// What one reader process saw.
pub struct ShmResult {
    /// How it waited.
    pub wait: String,
    /// Ticks whose scheduled time was in the window.
    pub received: u64,
    /// Records it lost to laps.
    pub lost: u64,
    /// Records published from the window's announcement to its stop.
    pub written: u64,
    /// Records it took over the same span (`taken + lost ≈ written`: the
    /// writer does not stop for the count).
    pub taken: u64,
    /// That span, seconds.
    pub wall: f64,
    /// Laps.
    pub gaps: u64,
    /// Its CPU from the window's announcement to its stop, in cores.
    pub cpu: f64,
    /// Feed receipt (`ts_recv_ns`) → reader, ns.
    pub recv: Histogram<u64>,
    /// Scheduled time (`ts`) → reader, ns.
    pub sched: Histogram<u64>,
}

/// The reader processes of a run.
pub struct Readers {
    procs: Vec<(Child, ChildStdin, BufReader<std::process::ChildStdout>)>,
    wait: String,
}

impl Readers {
    /// Start `n` reader processes on the region at `path` and wait until
    /// each has attached.
    ///
    /// # Errors
    /// A reader that cannot start or attach.
    pub fn start(n: usize, path: &str, wait: &str, cpus: &[usize]) -> Result<Readers> {
        if Wait::parse(wait).is_none() || wait == "sleep" {
            bail!("--shm-wait `{wait}`: expected spin, park or hybrid");
        }
        let exe = std::env::current_exe().context("locating tickcast")?;
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            let mut cmd = Command::new(&exe);
            cmd.args(["shm-probe", "--shm", path, "--wait", wait]);
            if let Some(cpu) = cpus.get(i % cpus.len().max(1)) {
                cmd.args(["--cpu", &cpu.to_string()]);
            }
            let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("starting a reader")?;
            let stdin = child.stdin.take().context("reader stdin")?;
            let mut out = BufReader::new(child.stdout.take().context("reader stdout")?);
            let mut line = String::new();
            out.read_line(&mut line)?;
            if line.trim() != "ready" {
                bail!("a shared-memory reader did not attach (said {line:?})");
            }
            procs.push((child, stdin, out));
        }
        Ok(Readers { procs, wait: wait.to_string() })
    }

    /// Tell every reader the measured window (scheduled times).
    ///
    /// # Errors
    /// A reader that is gone.
    pub fn window(&mut self, start_ns: u64, end_ns: u64) -> Result<()> {
        for (_, stdin, _) in &mut self.procs {
            writeln!(stdin, "window {start_ns} {end_ns}").context("a reader is gone")?;
        }
        Ok(())
    }

    /// Stop the readers and collect what they saw.
    ///
    /// # Errors
    /// A reader that failed or printed nothing readable.
    pub fn finish(self) -> Result<Vec<ShmResult>> {
        let mut out = Vec::new();
        for (mut child, stdin, mut stdout) in self.procs {
            drop(stdin);
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            child.wait()?;
            let v: serde_json::Value =
                serde_json::from_str(&line).with_context(|| format!("a reader's result {line:?}"))?;
            let num = |k: &str| v[k].as_u64().unwrap_or(0);
            out.push(ShmResult {
                wait: self.wait.clone(),
                received: num("received"),
                lost: num("lost"),
                written: num("written"),
                taken: num("taken"),
                wall: v["wall_s"].as_f64().unwrap_or(0.0),
                gaps: num("gaps"),
                cpu: v["cores"].as_f64().unwrap_or(0.0),
                recv: decode(v["recv"].as_str().unwrap_or_default())?,
                sched: decode(v["sched"].as_str().unwrap_or_default())?,
            });
        }
        Ok(out)
    }
}
