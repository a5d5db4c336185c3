//! The open-loop feeder: TCF1 over UDP at a fixed rate. Every record's
//! `ts_ns` is its *scheduled* send time, so a sender or server that falls
//! behind shows up as latency instead of hiding it (no coordinated omission).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::feed::tcf1;
use crate::metrics::new_histogram;
use crate::tick::{now_ns, Tick};

/// Ticks per datagram at most, by default.
pub const PER_PACKET: usize = 32;

/// How tokens are drawn for each tick.
pub enum Draw {
    /// Uniform over the tokens.
    Uniform,
    /// Zipf with the given cumulative distribution (rank → P(X ≤ rank)).
    Zipf(Vec<f64>),
}

impl Draw {
    /// Zipf(s) over `n` ranks.
    pub fn zipf(n: usize, s: f64) -> Draw {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Draw::Zipf(
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect(),
        )
    }

    /// An index in `0..n`.
    pub fn pick(&self, rng: &mut fastrand::Rng, n: usize) -> usize {
        match self {
            Draw::Uniform => rng.usize(..n),
            Draw::Zipf(cdf) => {
                let u = rng.f64();
                cdf.partition_point(|&c| c < u).min(n - 1)
            }
        }
    }
}

/// What the feeder is asked to do.
pub struct Plan {
    /// Where the server's UDP feed listens.
    pub target: SocketAddr,
    /// Ticks per second.
    pub rate: u64,
    /// Tokens to draw from.
    pub tokens: Vec<u32>,
    /// Distribution over `tokens`.
    pub draw: Draw,
    /// Schedule origin, ns since epoch.
    pub start_ns: u64,
    /// Ticks scheduled in `[window.0, window.1)` are measured.
    pub window: (u64, u64),
    /// Stop scheduling at this time.
    pub end_ns: u64,
    /// RNG seed.
    pub seed: u64,
    /// Most ticks per datagram (the ticks due at once go together).
    pub per_packet: usize,
    /// Carry each tick's scheduled time, µs mod 2³², as its last traded
    /// quantity (Kite packets have no finer time; see `clients::kite_ts`).
    pub ltq_clock: bool,
}

/// What the feeder did.
pub struct Sent {
    /// Ticks sent in total.
    pub total: u64,
    /// Ticks per token index sent in the measured window.
    pub measured: Vec<u64>,
    /// Datagrams that failed to send.
    pub errors: u64,
    /// Feeder lag of measured datagrams, ns: the time the feeder starts
    /// sending it − the scheduled time of the first tick in it. The harness's own share of every
    /// latency figure (sleep overshoot, CPU shared with the clients).
    pub lag: Histogram<u64>,
}

/// How many ticks are due at `now`: tick k is due at `start + k·interval`,
/// so none before `start`, then ticks 0..=⌊(now − start)/interval⌋.
fn due(now: u64, start: u64, interval: f64) -> u64 {
    match now.checked_sub(start) {
        None => 0,
        Some(elapsed) => (elapsed as f64 / interval) as u64 + 1,
    }
}

/// Run the plan on this thread.
///
/// # Errors
/// The UDP socket cannot be created.
pub fn run(plan: &Plan) -> std::io::Result<Sent> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(plan.target)?;
    let n = plan.tokens.len();
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    // Per-token seq starts at a base that rises from run to run (µs since
    // the epoch): a server keeps the newest seq it saw, and a second run
    // (`--find-max`, or a long-lived --url server) must not look old to it.
    let mut seqs = vec![now_ns() / 1_000; n];
    let mut ltps = vec![100_000i64; n];
    let mut sent = Sent { total: 0, measured: vec![0; n], errors: 0, lag: new_histogram() };
    let per_packet = plan.per_packet.max(1);
    let mut packet = Vec::with_capacity(tcf1::HEADER_LEN + per_packet * tcf1::TICK_LEN);
    let mut packet_seq = 0u64;
    let interval = 1e9 / plan.rate as f64;
    loop {
        let now = now_ns();
        if now >= plan.end_ns {
            break;
        }
        let due = due(now, plan.start_ns, interval);
        if sent.total >= due {
            // Sleep, never spin: the feeder shares its core with the clients.
            // Sleep overshoot (the kernel's 50 µs timer slack for a normal
            // thread, and the CPU shared with the clients) batches the next
            // ticks into one packet; their `ts` stay the scheduled times, so
            // the lag counts as latency. An exact timer (slack 1 ns) wakes
            // per tick at 100k/s and starves the client thread instead.
            let next = plan.start_ns + (sent.total as f64 * interval) as u64;
            std::thread::sleep(Duration::from_nanos(next.saturating_sub(now_ns()).max(1_000)));
            continue;
        }
        while sent.total < due {
            let batch = ((due - sent.total) as usize).min(per_packet);
            let first_ts = plan.start_ns + (sent.total as f64 * interval) as u64;
            packet.clear();
            packet_seq += 1;
            tcf1::write_header(&mut packet, batch as u16, packet_seq);
            for _ in 0..batch {
                let i = plan.draw.pick(&mut rng, n);
                let ts = plan.start_ns + (sent.total as f64 * interval) as u64;
                seqs[i] += 1;
                ltps[i] = (ltps[i] + rng.i64(-2..=2) * 5).max(5);
                let t = Tick {
                    token: plan.tokens[i],
                    seq: seqs[i],
                    ts_ns: ts,
                    ltp: ltps[i],
                    ltq: if plan.ltq_clock { (ts / 1_000) as u32 } else { 1 },
                    volume: seqs[i],
                    ..Tick::default()
                };
                tcf1::write_tick(&mut packet, &t);
                if ts >= plan.window.0 && ts < plan.window.1 {
                    sent.measured[i] += 1;
                }
                sent.total += 1;
            }
            if first_ts >= plan.window.0 && first_ts < plan.window.1 {
                sent.lag.saturating_record(now_ns().saturating_sub(first_ts).max(1));
            }
            if sock.send(&packet).is_err() {
                sent.errors += 1;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_due_at_its_scheduled_time_and_not_before() {
        let (start, interval) = (1_000_000, 10_000.0);
        assert_eq!(due(start - 1, start, interval), 0, "nothing before the start");
        assert_eq!(due(start, start, interval), 1, "tick 0 at the start");
        assert_eq!(due(start + 9_999, start, interval), 1);
        assert_eq!(due(start + 10_000, start, interval), 2, "tick 1 one interval later");
        assert_eq!(due(start + 95_000, start, interval), 10);
    }

    #[test]
    fn zipf_favours_low_ranks_and_uniform_covers_all() {
        let mut rng = fastrand::Rng::with_seed(3);
        let z = Draw::zipf(100, 1.0);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.pick(&mut rng, 100)] += 1;
        }
        assert!(counts[0] > counts[9] && counts[9] > counts[99], "{:?}", &counts[..10]);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[Draw::Uniform.pick(&mut rng, 10)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn feeder_packets_decode_and_carry_scheduled_timestamps() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = now_ns();
        let plan = Plan {
            target: rx.local_addr().unwrap(),
            rate: 20_000,
            tokens: vec![7, 8, 9],
            draw: Draw::Uniform,
            start_ns: start,
            window: (start, start + 50_000_000),
            end_ns: start + 50_000_000,
            seed: 1,
            per_packet: PER_PACKET,
            ltq_clock: false,
        };
        let sent = run(&plan).unwrap();
        assert!(sent.total > 500, "{}", sent.total);
        assert_eq!(sent.measured.iter().sum::<u64>(), sent.total, "the window is the whole run");
        assert!(!sent.lag.is_empty() && sent.lag.len() <= sent.total, "one lag sample per datagram");
        let mut buf = [0u8; 65536];
        let n = rx.recv(&mut buf).unwrap();
        let p = tcf1::parse(&buf[..n]).unwrap();
        let interval = 1e9 / 20_000.0;
        for (k, r) in p.records().enumerate() {
            let tcf1::Record::Tick(t) = r else { panic!("tick records only") };
            assert!([7, 8, 9].contains(&t.token));
            assert_eq!(t.ts_ns, start + (k as f64 * interval) as u64, "ts is the scheduled time");
        }
    }

    #[test]
    fn one_tick_per_datagram_when_asked() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = now_ns() + 50_000_000; // late enough that the first ticks are not all due at once
        let plan = Plan {
            target: rx.local_addr().unwrap(),
            rate: 2_000,
            tokens: vec![7],
            draw: Draw::Uniform,
            start_ns: start,
            window: (start, start + 20_000_000),
            end_ns: start + 20_000_000,
            seed: 1,
            per_packet: 1,
            ltq_clock: false,
        };
        let sent = run(&plan).unwrap();
        assert_eq!(sent.lag.len(), sent.total, "one datagram per tick");
        let mut buf = [0u8; 65536];
        for _ in 0..sent.total {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(tcf1::parse(&buf[..n]).unwrap().records().count(), 1);
        }
    }
}
