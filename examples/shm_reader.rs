//! A co-located strategy's market-data loop over shared memory, with the
//! reader library: `cargo run --release --example shm_reader -- demo`
//! (while `tickcast --shm demo` runs).
//!
//! It prints one JSON object per event: current values, ticks (raw
//! fixed-point fields, as a strategy would use them), gaps and writer
//! changes. `--zero-copy` reads each live tick in place through a
//! `TickView` instead of taking a copy; `--slow-us` sleeps after each tick
//! to show what happens to a reader that falls behind (it is lapped, told
//! exactly how much it lost, and resynchronised).

use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use tickcast::shm::{Down, Event, Options, Read, Reader, TickView, Wait};
use tickcast::tick::Tick;

#[derive(Parser)]
struct Args {
    /// The server's `--shm` name, or the region's path.
    shm: String,
    /// Only these tokens, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<u32>,
    /// How to wait: spin, park, hybrid or sleep.
    #[arg(long, default_value = "spin")]
    wait: String,
    /// Stop after this many ticks (current values included).
    #[arg(long)]
    count: Option<u64>,
    /// Stop when nothing arrives for this many seconds.
    #[arg(long)]
    idle_exit_secs: Option<f64>,
    /// Read live ticks in place (zero-copy) rather than as copies.
    #[arg(long)]
    zero_copy: bool,
    /// Sleep this many microseconds after each tick (a deliberately slow reader).
    #[arg(long, default_value_t = 0)]
    slow_us: u64,
    /// Skip the current values.
    #[arg(long)]
    no_snapshot: bool,
}

/// The fields a strategy reads, from a copy.
fn tick_json(kind: &str, t: &Tick) -> Value {
    let level = |l: &tickcast::tick::Level| json!([l.price, l.qty, l.orders]);
    json!({"type": kind, "token": t.token, "slot": t.slot, "seq": t.seq, "ts": t.ts_ns, "ltp": t.ltp, "bid": t.bid,
        "ask": t.ask, "volume": t.volume, "ohlc": [t.open, t.high, t.low, t.close],
        "bids": t.depth.bids[..usize::from(t.depth_levels).min(5)].iter().map(level).collect::<Vec<_>>(),
        "asks": t.depth.asks[..usize::from(t.depth_levels).min(5)].iter().map(level).collect::<Vec<_>>()})
}

/// The same fields read in place, one atomic load each.
fn view_json(v: &TickView<'_>) -> Value {
    let level = |l: tickcast::tick::Level| json!([l.price, l.qty, l.orders]);
    let n = usize::from(v.depth_levels()).min(5);
    json!({"type": "tick", "token": v.token(), "slot": v.slot(), "seq": v.seq(), "ts": v.ts_ns(), "ltp": v.ltp(),
        "bid": v.bid(), "ask": v.ask(), "volume": v.volume(), "ohlc": [v.open(), v.high(), v.low(), v.close()],
        "bids": (0..n).filter_map(|i| v.bid_level(i)).map(level).collect::<Vec<_>>(),
        "asks": (0..n).filter_map(|i| v.ask_level(i)).map(level).collect::<Vec<_>>()})
}

fn event_json(ev: &Event) -> Value {
    match ev {
        Event::Snapshot { tick, prev_seq } => {
            let mut v = tick_json("snapshot", tick);
            v["prev_seq"] = json!(prev_seq);
            v
        }
        Event::Tick(t) => tick_json("tick", t),
        Event::Gap(g) => {
            json!({"type": "gap", "feed": g.feed, "lost": g.lost(), "from_pos": g.from_pos, "to_pos": g.to_pos})
        }
        Event::WriterDown(Down::Closed) => json!({"type": "writer_down", "reason": "closed"}),
        Event::WriterDown(Down::Silent { for_ms }) => {
            json!({"type": "writer_down", "reason": "silent", "for_ms": for_ms})
        }
        Event::WriterDown(Down::Unusable(why)) => json!({"type": "writer_down", "reason": "unusable", "detail": why}),
        Event::Reattached { epoch } => json!({"type": "reattached", "epoch": epoch}),
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let wait = Wait::parse(&a.wait).ok_or_else(|| anyhow::anyhow!("--wait: spin, park, hybrid or sleep"))?;
    let opts = Options { wait, tokens: a.tokens.clone(), snapshot: !a.no_snapshot, ..Options::default() };
    let mut reader = Reader::open(&a.shm, opts)?;
    let idle = a.idle_exit_secs.map(Duration::from_secs_f64);
    let mut ticks = 0u64;
    while a.count.is_none_or(|n| ticks < n) {
        let out = if a.zero_copy {
            match reader.read_with(view_json) {
                Read::Tick(v) => v,
                Read::Event(ev) => event_json(&ev),
                Read::Empty if reader.wait_ready(idle) => continue,
                Read::Empty => break,
            }
        } else {
            match reader.wait(idle) {
                Some(ev) => event_json(&ev),
                None => break,
            }
        };
        if out["type"] == "tick" || out["type"] == "snapshot" {
            ticks += 1;
            if a.slow_us > 0 {
                std::thread::sleep(Duration::from_micros(a.slow_us));
            }
        }
        println!("{out}");
    }
    eprintln!("shm_reader: {ticks} ticks, {} records lost", reader.lost());
    Ok(())
}
