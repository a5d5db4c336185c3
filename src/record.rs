//! `tickcast record --feed SPEC --out PATH [--secs N]`: run feed sources and
//! write what they deliver as a TCF1 file that `--feed replay:PATH` plays
//! back. The same machinery as the server (sources → `Fanout` → a ring),
//! with one consumer that encodes packets instead of WebSocket frames.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::feed::spec::FeedSpec;
use crate::feed::{self, tcf1, FeedCtx, FeedHealth};
use crate::instrument::{Registry, Slot};
use crate::ring::{Hub, WorkerSignal};
use crate::tick::Tick;

/// Ticks per written packet (each tick is one or two records).
const TICKS_PER_PACKET: usize = 64;

/// `tickcast record` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// Feed source to record, repeatable (same forms as the server's `--feed`).
    #[arg(long = "feed", value_name = "SPEC", required = true)]
    pub feed: Vec<String>,
    /// File to write (TCF1 packets back to back).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Stop after this many seconds [default: until Ctrl-C].
    #[arg(long, value_name = "N")]
    pub secs: Option<f64>,
    /// Instrument master [default: bundled].
    #[arg(long, value_name = "PATH")]
    pub master: Option<PathBuf>,
}

/// Writes ticks as TCF1 packets.
struct PacketWriter<W: Write> {
    out: W,
    records: Vec<u8>,
    count: u16,
    ticks: usize,
    packet_seq: u64,
    total_ticks: u64,
}

impl<W: Write> PacketWriter<W> {
    fn push(&mut self, t: &Tick) -> std::io::Result<()> {
        tcf1::write_full(&mut self.records, t);
        self.count += tcf1::records_for(t);
        self.ticks += 1;
        self.total_ticks += 1;
        if self.ticks >= TICKS_PER_PACKET {
            self.flush_packet()?;
        }
        Ok(())
    }

    fn flush_packet(&mut self) -> std::io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        self.packet_seq += 1;
        let mut header = Vec::with_capacity(tcf1::HEADER_LEN);
        tcf1::write_header(&mut header, self.count, self.packet_seq);
        self.out.write_all(&header)?;
        self.out.write_all(&self.records)?;
        self.records.clear();
        (self.count, self.ticks) = (0, 0);
        Ok(())
    }
}

/// Run the recorder until `--secs` pass or SIGINT/SIGTERM.
///
/// # Errors
/// Bad feed specs, unreadable master, unwritable output.
pub fn run(args: RecordArgs) -> Result<()> {
    let registry = Arc::new(match &args.master {
        Some(p) => Registry::load(p)?,
        None => Registry::bundled(),
    });
    let specs = args.feed.iter().map(|s| FeedSpec::parse(s)).collect::<Result<Vec<_>>>()?;
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    // One consumer "worker" interested in everything; it polls, so its
    // waker is never waited on.
    let poll = mio::Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), mio::Token(0))?;
    let hub = Hub::new(
        registry.len(),
        vec![Arc::new(WorkerSignal { sleeping: AtomicBool::new(false), overrun: AtomicBool::new(false), waker })],
        1 << 16,
    );
    for (slot, _) in registry.iter() {
        hub.interest.set(Slot(slot.0), 0);
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut rings = Vec::new();
    let mut threads = Vec::new();
    for (i, source) in feed::build(&specs, &registry)?.into_iter().enumerate() {
        let health = Arc::new(FeedHealth::new(source.kind().to_string(), source.kind(), source.address()));
        let (fanout, mut consumers) = hub.connect_feed(i, health.push.clone());
        rings.push(consumers.pop().expect("one consumer"));
        let ctx = FeedCtx {
            fanout,
            health,
            shutdown: shutdown.clone(),
            registry: registry.clone(),
            market_open: Arc::new(AtomicBool::new(true)),
            channels: None,
            channel_table: Arc::new(crate::channel::Channels::new(0)),
            demand: None,
        };
        threads.push(std::thread::spawn(move || source.run(ctx)));
    }
    let deadline = args.secs.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut w = PacketWriter {
        out: BufWriter::new(file),
        records: Vec::new(),
        count: 0,
        ticks: 0,
        packet_seq: 0,
        total_ticks: 0,
    };
    let drain = |rings: &mut Vec<rtrb::Consumer<Tick>>,
                 w: &mut PacketWriter<BufWriter<std::fs::File>>|
     -> std::io::Result<usize> {
        let mut n = 0;
        for r in rings.iter_mut() {
            while let Ok(t) = r.pop() {
                w.push(&t)?;
                n += 1;
            }
        }
        Ok(n)
    };
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        if drain(&mut rings, &mut w)? == 0 {
            w.flush_packet()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drain(&mut rings, &mut w)?;
    w.flush_packet()?;
    w.out.flush()?;
    eprintln!("recorded {} ticks in {} packets to {}", w.total_ticks, w.packet_seq, args.out.display());
    Ok(())
}
