//! `tickcast tail --shm NAME`: print the ticks of a shared-memory region as
//! they arrive, a reader built on [`crate::shm::Reader`]. Current values
//! first (marked), then live ticks with their latency from the server's
//! receipt; gaps, a stopped server and re-attaching are reported on stderr
//! (or as JSON objects with `--json`).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::encode::Marks;
use crate::shm::{Down, Event, Options, Reader, Wait};
use crate::tick::{now_ns, Level, Mode, Tick};

/// `tickcast tail` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TailArgs {
    /// The region: the server's `--shm` name, or its file path.
    #[arg(long, value_name = "NAME|PATH")]
    pub shm: String,
    /// Only these tokens, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    pub tokens: Vec<u32>,
    /// Only these symbols (`RELIANCE` or `NSE:RELIANCE`), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "S1,S2")]
    pub symbols: Vec<String>,
    /// How much of each tick to print: ltp, quote or depth.
    #[arg(long, default_value = "quote", value_name = "ltp|quote|depth")]
    pub mode: String,
    /// One JSON object per line (the native `market_data` frame) instead of columns.
    #[arg(long)]
    pub json: bool,
    /// How to wait: park (no CPU while idle), spin (a whole core, lowest latency), hybrid (spin 100 µs, then park) or sleep (poll every ms; needs no write access). Without write access to the region, park falls back to sleep.
    #[arg(long, default_value = "park", value_name = "park|spin|hybrid|sleep")]
    pub wait: String,
    /// Stop after this many ticks (current values included).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print only live ticks, not the current values first.
    #[arg(long)]
    pub no_snapshot: bool,
}

/// Run `tickcast tail`.
///
/// # Errors
/// Bad flags, a region that cannot be opened (the message says why).
pub fn run(a: TailArgs) -> Result<()> {
    let mode = Mode::parse(&a.mode).with_context(|| format!("--mode `{}`: expected ltp, quote or depth", a.mode))?;
    let Some(wait) = Wait::parse(&a.wait) else {
        bail!("--wait `{}`: expected park, spin, hybrid or sleep", a.wait);
    };
    let opts = Options { wait, tokens: a.tokens.clone(), symbols: a.symbols.clone(), snapshot: !a.no_snapshot };
    let mut reader = match Reader::open(&a.shm, opts.clone()) {
        Err(e) if wait != Wait::Spin && format!("{e:#}").contains("no write access") => {
            eprintln!("tickcast tail: no write access to the region, so no parking: polling every millisecond");
            Reader::open(&a.shm, Options { wait: Wait::Sleep(Duration::from_millis(1)), ..opts })?
        }
        other => other?,
    };
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::with_capacity(1024);
    let mut printed = 0u64;
    while a.count.is_none_or(|n| printed < n) {
        let ev = match reader.try_next() {
            Some(ev) => ev,
            None => {
                if out.flush().is_err() {
                    return Ok(()); // the pipe closed (`| head`)
                }
                match reader.wait(None) {
                    Some(ev) => ev,
                    None => continue,
                }
            }
        };
        line.clear();
        match &ev {
            Event::Snapshot { tick, .. } | Event::Tick(tick) => {
                let snapshot = matches!(ev, Event::Snapshot { .. });
                let Some(ins) = reader.instrument(tick.slot) else { continue };
                if a.json {
                    let ins = (ins.symbol.as_str(), ins.exchange.as_str(), ins.price_decimals);
                    crate::encode::json::market_data_object(
                        &mut line,
                        mode,
                        tick,
                        ins,
                        Marks { snapshot, conflated: false },
                    );
                } else {
                    let name = format!("{}:{}", ins.exchange, ins.symbol);
                    columns(&mut line, &tz, mode, tick, &name, ins.price_decimals, snapshot);
                }
                printed += 1;
            }
            other => {
                let (json, text) = notice(other);
                if a.json {
                    line.extend_from_slice(json.to_string().as_bytes());
                } else {
                    let _ = out.flush();
                    eprintln!("tickcast tail: {text}");
                    continue;
                }
            }
        }
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            return Ok(());
        }
    }
    let _ = out.flush();
    Ok(())
}

/// An event other than a tick, as JSON and as a sentence.
fn notice(ev: &Event) -> (serde_json::Value, String) {
    use serde_json::json;
    match ev {
        Event::Gap(g) => (
            json!({"type": "gap", "feed": g.feed, "lost": g.lost(), "from_pos": g.from_pos, "to_pos": g.to_pos}),
            format!(
                "fell behind feed {}: {} records lost (positions {}..{}); current values follow",
                g.feed,
                g.lost(),
                g.from_pos,
                g.to_pos
            ),
        ),
        Event::WriterDown(Down::Closed) => (
            json!({"type": "writer_down", "reason": "closed"}),
            "the server stopped; waiting for it to start again".into(),
        ),
        Event::WriterDown(Down::Silent { for_ms }) => (
            json!({"type": "writer_down", "reason": "silent", "for_ms": for_ms}),
            format!("no heartbeat from the server for {for_ms} ms; waiting"),
        ),
        Event::WriterDown(Down::Unusable(why)) => {
            (json!({"type": "writer_down", "reason": "unusable", "detail": why}), format!("cannot attach: {why}"))
        }
        Event::Reattached { epoch } => (
            json!({"type": "reattached", "epoch": epoch}),
            format!("attached to a restarted server (epoch {epoch:x}); current values follow"),
        ),
        Event::Snapshot { .. } | Event::Tick(_) => (serde_json::Value::Null, String::new()),
    }
}

fn price(out: &mut Vec<u8>, raw: i64, dec: u8) {
    crate::tick::write_price(out, raw, dec);
}

fn levels(out: &mut Vec<u8>, side: &str, levels: &[Level], n: usize, dec: u8) {
    let _ = write!(out, "\n    {side:<4}");
    for l in &levels[..n] {
        out.push(b' ');
        price(out, l.price, dec);
        let _ = write!(out, " x{} ({})", l.qty, l.orders);
    }
}

/// One human-readable line (and depth lines) for `t`.
fn columns(out: &mut Vec<u8>, tz: &jiff::tz::TimeZone, mode: Mode, t: &Tick, name: &str, dec: u8, snapshot: bool) {
    let ts = jiff::Timestamp::from_nanosecond(i128::from(t.ts_ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let _ = write!(out, "{}  {name:<20} ", ts.to_zoned(tz.clone()).strftime("%H:%M:%S%.6f"));
    price(out, t.ltp, dec);
    let _ = write!(out, "  seq {}", t.seq);
    if mode != Mode::Ltp {
        out.extend_from_slice(b"  bid ");
        price(out, t.bid, dec);
        let _ = write!(out, " x{}  ask ", t.bid_qty);
        price(out, t.ask, dec);
        let _ = write!(out, " x{}  vol {}  ohlc ", t.ask_qty, t.volume);
        for (i, p) in [t.open, t.high, t.low, t.close].into_iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            price(out, p, dec);
        }
    }
    if snapshot {
        out.extend_from_slice(b"  (current value)");
    } else {
        let lat = now_ns().saturating_sub(t.ts_recv_ns);
        let _ = write!(out, "  +{:.1}us", lat as f64 / 1e3);
    }
    if mode == Mode::Depth {
        let n = usize::from(t.depth_levels).min(crate::tick::DEPTH_LEVELS);
        levels(out, "buy", &t.depth.bids, n, dec);
        levels(out, "sell", &t.depth.asks, n, dec);
    }
}
