//! UDP source → rings throughput: how many ticks/s the real
//! `tickcast::feed::udp::Udp` source turns from TCF1 datagrams into ticks in
//! a worker's ring, with the kernel's UDP path on both sides.
//!
//! Topology (three threads, loopback, nothing pinned):
//!
//! ```text
//!  sender thread                     source thread ("udp", Source::run)              consumer thread (worker 0)
//!  std UdpSocket::send ──► lo ──►    mio poll, recv until WouldBlock:                 park in mio::Poll (WorkerSignal
//!  1 datagram = 1 packet            publish_packet: parse, Merger::apply ×64,        protocol, as a worker), then
//!  of 32 full ticks (64 records,    Fanout::publish ×32 (LastValues store, fence,    pop every tick, check per-slot
//!  10 000 B), open-loop at a        interest = {worker 0} for every slot) ──►        seq order, count
//!  fixed rate or flat out           [ rtrb cap 65536 ] ── Fanout::flush (wake) ──►
//! ```
//!
//! The sender replays a pool of 256 packets (8192 simulator ticks over the
//! bundled master, encoded with `tcf1::write_header` + `write_full`),
//! re-stamping each pass's `seq`s upward and every `packet_seq`, so every
//! tick is newer than the last value cached for its instrument and every
//! one is pushed (a stale `seq` would be dropped by `LastValues::store`).
//! The source is the real one, bound to `127.0.0.1:0` by `Udp::bind` (which
//! asks for an 8 MiB receive buffer; the kernel caps it by
//! `net.core.rmem_max`) and run by `Source::run` with a real `FeedCtx`
//! (`Hub` ring of 65536, `market_open` true).
//!
//! Reported per run: offered rate (target and what the sender achieved),
//! ticks/s arriving at the consumer (first to last tick seen), and where
//! ticks were lost: datagrams sent but never received by the source (the
//! kernel dropped them, receive buffer full; `FeedHealth::packets`,
//! cross-checked by `packet_gaps` and the host-wide `RcvbufErrors` of
//! `/proc/net/snmp`), ring overruns (`PushStats::overruns`), how often the
//! parked consumer was woken by the source's `Fanout::flush` rather than
//! its own 20 ms poll timeout, and each thread's CPU time
//! (`/proc/thread-self/stat`, 10 ms resolution). The source's own rate is
//! ticks published over first send to last publish (`last_tick_ns`).
//!
//! The machine this is recorded on has 2 cores: three threads share them
//! (sender and source busy, the consumer mostly parked), so they compete,
//! and any other load on the machine shows up directly. Nothing is pinned.
//!
//! Harness: plain `main` (`harness = false`). `cargo bench --bench udp_feed`
//! passes `--bench` and gets the full runs (1, 2 and 3 M ticks/s offered,
//! then flat out; 3 s each; `--secs S` and `--rates 1000000,flat` override).
//! Without `--bench` (`cargo test --benches`, nextest) it does one 0.25 s
//! run at 200 k ticks/s and checks that ticks arrive, in order.
//!
//! Target: UDP source → rings ≥ 1 M ticks/s.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tickcast::channel::Channels;
use tickcast::feed::sim::Sim;
use tickcast::feed::tcf1;
use tickcast::feed::udp::Udp;
use tickcast::feed::{FeedCtx, FeedHealth, Source, STATE_LIVE};
use tickcast::instrument::{Registry, Slot};
use tickcast::ring::{Hub, WorkerSignal};
use tickcast::tick::now_ns;

/// Full ticks per datagram.
const TICKS_PER_PACKET: u64 = 32;
/// Packets in the sender's pool.
const POOL_PACKETS: usize = 256;
/// Ticks in the pool: a pass adds this to every `seq`.
const POOL_TICKS: u64 = POOL_PACKETS as u64 * TICKS_PER_PACKET;
/// Ring capacity (the server's default `--ring-capacity`).
const RING_CAP: usize = 65536;
/// Longest park of the consumer (a server worker parks up to 100 ms).
const PARK: Duration = Duration::from_millis(20);

/// Pre-encoded packets, re-stamped on every send.
struct Pool {
    packets: Vec<Vec<u8>>,
    /// Per packet: (offset of a record's `seq`, its value in pass 0).
    seqs: Vec<Vec<(usize, u64)>>,
}

impl Pool {
    fn new(reg: &Registry) -> Pool {
        let mut sim = Sim::new(reg, 1, 0, 1, 11);
        let mut packets = Vec::with_capacity(POOL_PACKETS);
        let mut seqs = Vec::with_capacity(POOL_PACKETS);
        for p in 0..POOL_PACKETS {
            let ticks: Vec<_> = (0..TICKS_PER_PACKET)
                .map(|i| *sim.next_tick(1_763_712_000_000_000_000 + p as u64 * 1_000 + i))
                .collect();
            let mut out = Vec::new();
            tcf1::write_header(&mut out, ticks.iter().map(tcf1::records_for).sum(), 0);
            let mut offs = Vec::new();
            for t in &ticks {
                let at = out.len();
                tcf1::write_full(&mut out, t);
                offs.push((at + 8, t.seq));
                if out.len() - at > tcf1::TICK_LEN {
                    offs.push((at + tcf1::TICK_LEN + 8, t.seq));
                }
            }
            assert!(tcf1::parse(&out).is_ok(), "pool packet is valid TCF1");
            packets.push(out);
            seqs.push(offs);
        }
        Pool { packets, seqs }
    }

    /// Packet number `n` (0-based) of the stream, stamped for sending.
    fn stamp(&mut self, n: u64) -> &[u8] {
        let i = (n % POOL_PACKETS as u64) as usize;
        let pass = n / POOL_PACKETS as u64;
        let buf = &mut self.packets[i];
        buf[8..16].copy_from_slice(&(n + 1).to_le_bytes());
        for &(at, seq) in &self.seqs[i] {
            buf[at..at + 8].copy_from_slice(&(seq + pass * POOL_TICKS).to_le_bytes());
        }
        buf
    }
}

/// CPU time (user + system) of the calling thread, if `/proc` tells.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu()?.saturating_sub(start?))
}

/// Host-wide UDP `RcvbufErrors` (`/proc/net/snmp`), if readable.
fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[derive(Default)]
struct SendStats {
    packets: u64,
    errors: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
}

/// Send for `dur`: `rate` ticks/s open-loop (catching up in bursts when
/// behind), or back to back when `None`.
fn send(addr: SocketAddr, mut pool: Pool, rate: Option<u64>, dur: Duration) -> SendStats {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("sender bind");
    sock.connect(addr).expect("sender connect");
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut s = SendStats::default();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= dur {
            break;
        }
        let due = match rate {
            Some(r) => (elapsed.as_nanos() * u128::from(r) / u128::from(TICKS_PER_PACKET) / 1_000_000_000) as u64,
            None => s.packets + 1,
        };
        if due <= s.packets {
            let next_ns = (u128::from(s.packets + 1) * u128::from(TICKS_PER_PACKET) * 1_000_000_000
                / u128::from(rate.unwrap_or(1))) as u64;
            let wait = Duration::from_nanos(next_ns).saturating_sub(elapsed);
            thread::sleep(wait.min(Duration::from_millis(1)));
            continue;
        }
        for _ in 0..(due - s.packets).min(64) {
            if sock.send(pool.stamp(s.packets)).is_err() {
                s.errors += 1;
            }
            s.packets += 1;
        }
    }
    s.elapsed = start.elapsed();
    s.cpu = cpu_since(cpu0);
    s
}

#[derive(Default)]
struct Consumed {
    ticks: u64,
    /// Ticks whose `seq` was not above the previous one for their slot.
    out_of_order: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Times the consumer parked in `poll`, and how many of those ended by
    /// the 20 ms timeout rather than a wake-up from the source.
    parks: u64,
    timeouts: u64,
    cpu: Option<Duration>,
}

struct Report {
    rate: Option<u64>,
    sent: SendStats,
    received_packets: u64,
    packet_gaps: u64,
    bad_packets: u64,
    published: u64,
    overruns: u64,
    consumed: Consumed,
    source_cpu: Option<Duration>,
    /// Wall clock (ns since epoch) when sending started.
    start_ns: u64,
    /// `FeedHealth::last_tick_ns` at the end: the source's last publish.
    last_publish_ns: u64,
    rcvbuf_errors: Option<u64>,
}

fn run(reg: &Arc<Registry>, rate: Option<u64>, dur: Duration) -> Report {
    let pool = Pool::new(reg);
    let udp = Udp::bind("127.0.0.1:0".parse().expect("addr"), None, reg).expect("bind the UDP source");
    let addr = udp.local_addr();

    let poll = mio::Poll::new().expect("mio poll");
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("mio waker");
    let signal = Arc::new(WorkerSignal { sleeping: AtomicBool::new(false), overrun: AtomicBool::new(false), waker });
    let hub = Hub::new(reg.len(), vec![signal.clone()], RING_CAP);
    for (slot, _) in reg.iter() {
        hub.interest.set(slot, 0);
    }
    let health = Arc::new(FeedHealth::new("udp".into(), "udp", addr.to_string()));
    let (fanout, mut consumers) = hub.connect_feed(0, health.push.clone());
    let mut rx = consumers.pop().expect("one worker");
    let shutdown = Arc::new(AtomicBool::new(false));
    let ctx = FeedCtx {
        fanout,
        health: health.clone(),
        shutdown: shutdown.clone(),
        registry: reg.clone(),
        market_open: Arc::new(AtomicBool::new(true)),
        channels: None,
        channel_table: Arc::new(Channels::new(0)),
        demand: None,
    };

    let source = thread::Builder::new()
        .name("udp source".into())
        .spawn(move || {
            let cpu0 = thread_cpu();
            Box::new(udp).run(ctx);
            cpu_since(cpu0)
        })
        .expect("spawn source");

    // Ticks popped so far, for the settle check below.
    let popped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let slots = reg.len();
    let consumer = {
        let (signal, popped, stop) = (signal.clone(), popped.clone(), stop.clone());
        thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                let cpu0 = thread_cpu();
                let mut poll = poll;
                let mut events = mio::Events::with_capacity(8);
                let mut last_seq = vec![0u64; slots];
                let mut c = Consumed::default();
                loop {
                    let before = c.ticks;
                    while let Ok(t) = rx.pop() {
                        let last = &mut last_seq[Slot(t.slot).idx()];
                        if t.seq <= *last {
                            c.out_of_order += 1;
                        }
                        *last = t.seq;
                        c.ticks += 1;
                    }
                    if c.ticks > before {
                        let now = Instant::now();
                        c.first.get_or_insert(now);
                        c.last = Some(now);
                        popped.store(c.ticks, Ordering::Relaxed);
                    }
                    if stop.load(Ordering::Relaxed) && rx.is_empty() {
                        break;
                    }
                    // A worker's park: announce, fence, re-check, then poll.
                    signal.sleeping.store(true, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if rx.is_empty() {
                        poll.poll(&mut events, Some(PARK)).expect("poll");
                        c.parks += 1;
                        c.timeouts += u64::from(events.is_empty());
                    }
                    signal.sleeping.store(false, Ordering::SeqCst);
                }
                c.cpu = cpu_since(cpu0);
                c
            })
            .expect("spawn consumer")
    };

    let live_by = Instant::now() + Duration::from_secs(2);
    while health.state.load(Ordering::Relaxed) != STATE_LIVE && Instant::now() < live_by {
        thread::sleep(Duration::from_millis(1));
    }
    let rcvbuf0 = rcvbuf_errors();
    let start_ns = now_ns();
    let sent = thread::Builder::new()
        .name("sender".into())
        .spawn(move || send(addr, pool, rate, dur))
        .expect("spawn sender")
        .join()
        .expect("sender thread");

    // Settle: the source has read what the kernel kept and the consumer has
    // popped everything pushed (three quiet checks in a row, at most 3 s).
    let settle_by = Instant::now() + Duration::from_secs(3);
    let (mut quiet, mut last_packets) = (0, u64::MAX);
    while quiet < 3 && Instant::now() < settle_by {
        thread::sleep(Duration::from_millis(20));
        let packets = health.packets.load(Ordering::Relaxed);
        let pushed = health.ticks.load(Ordering::Relaxed).saturating_sub(health.push.overruns.load(Ordering::Relaxed));
        quiet = if packets == last_packets && popped.load(Ordering::Relaxed) == pushed { quiet + 1 } else { 0 };
        last_packets = packets;
    }
    let rcvbuf1 = rcvbuf_errors();

    shutdown.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = signal.waker.wake();
    let source_cpu = source.join().expect("source thread");
    let consumed = consumer.join().expect("consumer thread");

    Report {
        rate,
        sent,
        received_packets: health.packets.load(Ordering::Relaxed),
        packet_gaps: health.packet_gaps.load(Ordering::Relaxed),
        bad_packets: health.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum(),
        published: health.ticks.load(Ordering::Relaxed),
        overruns: health.push.overruns.load(Ordering::Relaxed),
        consumed,
        source_cpu,
        start_ns,
        last_publish_ns: health.last_tick_ns.load(Ordering::Relaxed),
        rcvbuf_errors: rcvbuf0.zip(rcvbuf1).map(|(a, b)| b.saturating_sub(a)),
    }
}

fn mega(x: f64) -> String {
    format!("{:.3} M", x / 1e6)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "n/a".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn print(r: &Report) {
    let sent_ticks = r.sent.packets * TICKS_PER_PACKET;
    let offered = sent_ticks as f64 / r.sent.elapsed.as_secs_f64();
    let window = match (r.consumed.first, r.consumed.last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let received = if window.is_zero() { 0.0 } else { r.consumed.ticks as f64 / window.as_secs_f64() };
    let lost = sent_ticks.saturating_sub(r.consumed.ticks);
    let pct = |n: u64| if sent_ticks == 0 { 0.0 } else { 100.0 * n as f64 / sent_ticks as f64 };
    let kernel_lost = r.sent.packets.saturating_sub(r.received_packets);
    let publish_window = Duration::from_nanos(r.last_publish_ns.saturating_sub(r.start_ns));
    let published = if publish_window.is_zero() { 0.0 } else { r.published as f64 / publish_window.as_secs_f64() };
    let target = r.rate.map_or_else(|| "flat out".into(), |r| format!("{} ticks/s", mega(r as f64)));
    println!("udp_feed: offered {target}");
    println!(
        "  sender:   {} packets = {} ticks in {:.3} s = {} ticks/s achieved ({} send errors), cpu {}",
        r.sent.packets,
        sent_ticks,
        r.sent.elapsed.as_secs_f64(),
        mega(offered),
        r.sent.errors,
        secs(r.sent.cpu),
    );
    println!(
        "  source:   {} packets received ({} lost in the kernel = {:.2} % of ticks; packet_gaps {}, host RcvbufErrors +{}), \
         {} malformed, {} ticks published ({} ticks/s, start to last publish), {} ring overruns, cpu {}",
        r.received_packets,
        kernel_lost,
        pct(kernel_lost * TICKS_PER_PACKET),
        r.packet_gaps,
        r.rcvbuf_errors.map_or_else(|| "n/a".into(), |n| n.to_string()),
        r.bad_packets,
        r.published,
        mega(published),
        r.overruns,
        secs(r.source_cpu),
    );
    println!(
        "  consumer: {} ticks in {:.3} s (first to last) = {} ticks/s received; {} out of order; \
         parked {} times, {} ended by the {} ms timeout (not woken); cpu {}",
        r.consumed.ticks,
        window.as_secs_f64(),
        mega(received),
        r.consumed.out_of_order,
        r.consumed.parks,
        r.consumed.timeouts,
        PARK.as_millis(),
        secs(r.consumed.cpu),
    );
    println!("  sent vs received: {sent_ticks} vs {} ticks, {:.2} % dropped", r.consumed.ticks, pct(lost));
}

/// Arguments of the full run: `--secs S`, `--rates R,R,flat`.
fn options(args: &[String]) -> (Duration, Vec<Option<u64>>) {
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let dur = value("--secs").map_or(3.0, |s| s.parse::<f64>().expect("--secs: a number of seconds"));
    let rates = value("--rates").map_or_else(
        || vec![Some(1_000_000), Some(2_000_000), Some(3_000_000), None],
        |s| {
            s.split(',').map(|r| (r != "flat").then(|| r.parse::<u64>().expect("--rates: ticks/s or `flat`"))).collect()
        },
    );
    (Duration::from_secs_f64(dur), rates)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        // nextest's listing protocol: one test, not ignored.
        if !has("--ignored") {
            println!("udp_feed: test");
        }
        return;
    }
    let reg = Arc::new(Registry::bundled());
    if !has("--bench") {
        // `cargo test --benches` / nextest: a quick check that it works.
        let r = run(&reg, Some(200_000), Duration::from_millis(250));
        print(&r);
        assert!(r.consumed.ticks > 0, "ticks reach the consumer");
        assert_eq!(r.consumed.out_of_order, 0, "per-slot seq order is kept");
        assert_eq!(r.bad_packets, 0, "every packet is valid");
        return;
    }
    let (dur, rates) = options(&args);
    let cores = thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("udp_feed: {cores} cores for 3 threads (sender, source, consumer), nothing pinned; {dur:?} per run");
    for rate in rates {
        print(&run(&reg, rate, dur));
    }
}
