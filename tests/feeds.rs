//! Feed sources over real sockets: TCF1 over UDP (unicast and multicast)
//! and TCP, record and replay. Known packets in, exact ticks out at a
//! WebSocket client; every malformed case counted and survived.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickcast::feed::tcf1;
use tickcast::tick::{Level, Tick, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};
use util::Server;

/// A full RELIANCE tick with `seq`, ltp 2850.50 + seq paise.
fn tick(seq: u64) -> Tick {
    let mut t = Tick {
        token: 2885,
        seq,
        ts_ns: 1_763_712_000_000_000_000 + seq,
        ltp: 285050 + seq as i64,
        ltq: 10,
        volume: 1000 * seq,
        bid: 285045,
        ask: 285055,
        bid_qty: 500,
        ask_qty: 750,
        open: 282000,
        high: 286000,
        low: 281500,
        close: 284825,
        flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
        depth_levels: 5,
        ..Tick::default()
    };
    for i in 0..5 {
        t.depth.bids[i] = Level { price: 285045 - 5 * i as i64, qty: 100, orders: 1 };
        t.depth.asks[i] = Level { price: 285055 + 5 * i as i64, qty: 200, orders: 2 };
    }
    t
}

fn packet(packet_seq: u64, ticks: &[Tick]) -> Vec<u8> {
    let mut out = Vec::new();
    tcf1::write_packet(&mut out, packet_seq, ticks);
    out
}

/// The bound address of feed `i`, from `/status`.
fn feed_addr(s: &Server, i: usize) -> SocketAddr {
    s.status()["feeds"][i]["address"].as_str().unwrap().parse().unwrap()
}

fn next_data(c: &mut util::Client) -> Value {
    c.recv_until("market data", |v| v["type"] == "market_data")
}

/// The UDP source read on its own thread and inside a worker's loop
/// (the one worker, and worker 0 of two: clients land on either worker;
/// and a hybrid-idle worker, which parks between the test's packets).
#[test]
fn udp_packets_become_exact_ticks() {
    for (poll, read_by) in [
        (&["--feed-poll", "thread"][..], "thread"),
        (&["--feed-poll", "worker", "--workers", "1"], "worker-0"),
        (&["--feed-poll", "worker", "--workers", "2"], "worker-0"),
        (&["--feed-poll", "worker", "--idle", "hybrid"], "worker-0"),
    ] {
        udp_packets_become_exact_ticks_with(poll, read_by);
    }
}

fn udp_packets_become_exact_ticks_with(poll: &[&str], read_by: &str) {
    let s = Server::start(&[&["--feed", "udp://127.0.0.1:0"], poll].concat());
    let addr = feed_addr(&s, 0);
    let mut clients: Vec<util::Client> = (0..4).map(|_| s.native()).collect();
    for c in &mut clients {
        c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&packet(1, &[tick(7)]), addr).unwrap();
    for other in &mut clients[1..] {
        assert_eq!(next_data(other)["seq"], 7, "{poll:?}");
    }
    let c = &mut clients[0];
    let f = next_data(c);
    assert_eq!((f["seq"].as_u64(), f["ts"].as_u64()), (Some(7), Some(1_763_712_000_000_000_007)));
    let d = &f["data"];
    assert_eq!(d["ltp"], 2850.57, "ltp scaled by price_decimals");
    assert_eq!(
        (d["bid"].as_f64(), d["ask"].as_f64(), d["volume"].as_u64()),
        (Some(2850.45), Some(2850.55), Some(7000))
    );
    assert_eq!((d["open"].as_f64(), d["close"].as_f64()), (Some(2820.0), Some(2848.25)));
    assert_eq!(d["depth"]["sell"][4], json!({"price": 2850.75, "quantity": 200, "orders": 2}));
    // Two ticks in one packet arrive in order; state merges across records.
    tx.send_to(&packet(2, &[tick(8), Tick { flags: 0, ..tick(9) }]), addr).unwrap();
    assert_eq!(next_data(c)["seq"], 8);
    let nine = next_data(c);
    assert_eq!(
        (nine["seq"].as_u64(), nine["data"]["bid"].as_f64()),
        (Some(9), Some(2850.45)),
        "quote kept from before"
    );
    let st = s.status_until("packets counted", |st| st["feeds"][0]["packets"] == 2);
    let feed = &st["feeds"][0];
    assert_eq!(
        (feed["kind"].as_str(), feed["state"].as_str(), feed["ticks"].as_u64(), feed["read_by"].as_str()),
        (Some("udp"), Some("live"), Some(3), Some(read_by)),
        "{poll:?}"
    );
}

/// A burst far larger than what a worker reads per turn (one datagram per
/// turn with this small ring) is read to the end: edge-triggered epoll
/// reports the socket once, and the worker must keep reading on its own.
#[test]
fn a_worker_polled_feed_reads_a_burst_past_its_per_turn_budget() {
    let s = Server::start(&["--feed", "udp://127.0.0.1:0", "--feed-poll", "worker", "--ring-capacity", "1024"]);
    let addr = feed_addr(&s, 0);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let burst: Vec<Vec<u8>> = (1..=300).map(|seq| packet(seq, &[tick(seq)])).collect();
    for p in &burst {
        tx.send_to(p, addr).unwrap();
    }
    let st = s.status_until("the whole burst read", |st| st["feeds"][0]["packets"] == 300);
    assert_eq!(st["feeds"][0]["ticks"], 300, "{st}");
    assert_eq!(st["feeds"][0]["read_by"], "worker-0");
    c.recv_until("the burst's last tick", |v| v["type"] == "market_data" && v["seq"] == 300);
}

#[test]
fn udp_malformed_packets_are_dropped_whole_counted_and_survived() {
    let s = Server::start(&["--feed", "udp://127.0.0.1:0"]);
    let addr = feed_addr(&s, 0);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = packet(10, &[tick(1), tick(2)]);
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"TCF9");
    let mut bad_kind = good.clone();
    bad_kind[tcf1::HEADER_LEN + tcf1::TICK_LEN + tcf1::DEPTH_LEN] = 7;
    let mut count_past_end = good.clone();
    count_past_end[4] = 9;
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 3]);
    let unknown_token = packet(11, &[Tick { token: 99_999_999, ..tick(3) }]);
    for bad in [&good[..9], &good[..tcf1::HEADER_LEN + 40], &bad_magic, &bad_kind, &count_past_end, &trailing] {
        tx.send_to(bad, addr).unwrap();
    }
    // Nothing from the bad packets was applied: the first tick seen is seq 5.
    tx.send_to(&unknown_token, addr).unwrap();
    tx.send_to(&packet(15, &[tick(5)]), addr).unwrap();
    let f = next_data(&mut c);
    assert_eq!(f["seq"], 5, "no partial apply of a malformed packet: {f}");
    let st = s.status_until("drops counted", |st| st["feeds"][0]["packets"] == 8);
    let drops = &st["feeds"][0]["drops"];
    assert_eq!(
        drops,
        &json!({"short": 3, "bad_magic": 1, "unknown_kind": 1, "trailing_bytes": 1, "unknown_token": 2, "bad_levels": 0}),
        "{st}"
    );
    assert_eq!(st["feeds"][0]["packet_gaps"], 3, "packet_seq 11 → 15 lost 12, 13, 14");
    let (_, metrics) = s.get("/metrics");
    assert!(metrics.contains("tickcast_feed_drops_total{feed=\"udp\",reason=\"bad_magic\"} 1"), "{metrics}");
}

#[test]
fn udp_multicast_on_loopback() {
    let s = Server::start(&["--feed", "udp://239.77.7.7:0?iface=127.0.0.1"]);
    let group = feed_addr(&s, 0);
    assert_eq!(group.ip().to_string(), "239.77.7.7");
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    tx.set_multicast_if_v4(&"127.0.0.1".parse().unwrap()).unwrap();
    tx.set_multicast_loop_v4(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 1;
    // Multicast joins take effect asynchronously: send until one arrives.
    loop {
        tx.send_to(&packet(seq, &[tick(seq)]), &group.into()).unwrap();
        let st = s.status();
        if st["feeds"][0]["ticks"].as_u64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "no multicast datagram arrived: {st}");
        seq += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(next_data(&mut c)["token"], 2885);
}

#[test]
fn tcp_publishers_stream_packets_and_a_half_packet_hurts_only_its_sender() {
    let s = Server::start(&["--feed", "tcp://127.0.0.1:0"]);
    let addr = feed_addr(&s, 0);
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    let mut good = TcpStream::connect(addr).unwrap();
    let mut quitter = TcpStream::connect(addr).unwrap();
    // Back-to-back packets, split across writes at awkward places.
    let stream = [packet(1, &[tick(1)]), packet(2, &[tick(2), tick(3)])].concat();
    good.write_all(&stream[..10]).unwrap();
    quitter.write_all(&packet(1, &[tick(100)])[..50]).unwrap();
    drop(quitter); // gone mid-packet
    good.write_all(&stream[10..]).unwrap();
    let seqs: Vec<u64> = (0..3).map(|_| next_data(&mut c)["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let st = s.status_until("both publishers seen", |st| {
        st["feeds"][0]["reconnects"] == 2 && st["feeds"][0]["drops"]["short"] == 1
    });
    assert_eq!(st["feeds"][0]["ticks"], 3, "the partial packet applied nothing");
    // A publisher sending garbage is dropped; others carry on.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    good.write_all(&packet(3, &[tick(4)])).unwrap();
    assert_eq!(next_data(&mut c)["seq"], 4);
    s.status_until("garbage counted", |st| st["feeds"][0]["drops"]["bad_magic"] == 1);
}

/// Decode a TCF1 file into (token, seq, ltp, ts) per tick record.
fn decode_file(path: &std::path::Path) -> Vec<(u32, u64, i64, u64)> {
    let data = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        let n = tcf1::packet_len(&data[at..]).expect("complete").expect("valid");
        for r in tcf1::parse(&data[at..at + n]).unwrap().records() {
            if let tcf1::Record::Tick(t) = r {
                out.push((t.token, t.seq, t.ltp, t.ts_ns));
            }
        }
        at += n;
    }
    out
}

#[test]
fn record_then_replay_is_deterministic_and_serves_clients() {
    let dir = std::env::temp_dir().join(format!("tickcast-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first, second) = (dir.join("a.tcf1"), dir.join("b.tcf1"));
    let bin = env!("CARGO_BIN_EXE_tickcast");
    let rec = |args: &[&str]| {
        let out = Command::new(bin).arg("record").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    rec(&["--feed", "sim:rate=4000,seed=11", "--secs", "1", "--out", first.to_str().unwrap()]);
    let original = decode_file(&first);
    assert!(original.len() > 1000, "recorded {} ticks", original.len());
    // Replaying the file at full speed and recording that gives the same ticks.
    let replay = format!("replay:{}?speed=max", first.display());
    rec(&["--feed", &replay, "--secs", "2", "--out", second.to_str().unwrap()]);
    let replayed = decode_file(&second);
    assert_eq!(replayed.len(), original.len(), "replay is deterministic: same number of ticks");
    if let Some(i) = (0..original.len()).find(|&i| replayed[i] != original[i]) {
        panic!("replay differs at tick {i}: {:?} vs {:?}", replayed[i], original[i]);
    }

    // Two servers replaying the same file give clients the same stream.
    let paced = format!("replay:{}?speed=0.5", first.display());
    let streams: Vec<Vec<(u64, f64)>> = (0..2)
        .map(|_| {
            let s = Server::start(&["--feed", &paced]);
            let mut c = s.native();
            c.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
            let mut got = Vec::new();
            while got.len() < 15 {
                let f = next_data(&mut c);
                got.push((f["seq"].as_u64().unwrap(), f["data"]["ltp"].as_f64().unwrap()));
            }
            got
        })
        .collect();
    let from: Vec<(u64, f64)> = original.iter().filter(|r| r.0 == 2885).map(|r| (r.1, r.2 as f64 / 100.0)).collect();
    for s in &streams {
        // Each client's stream (after its snapshot) is a run of the file's.
        let start = from.iter().position(|r| r.0 == s[1].0).expect("seq from the file");
        assert_eq!(&s[1..], &from[start..start + s.len() - 1]);
    }
}

#[test]
fn feed_addresses_in_use_fail_at_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--openalgo-listen",
            "off",
            "--feed",
            &format!("tcp://{}", taken.local_addr().unwrap()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a start-up failure exits 1: {stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    // Ephemeral listeners: a busy 8080 or 8765 on this machine must not be
    // what makes it fail.
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--openalgo-listen", "127.0.0.1:0", "--feed", "replay:/nonexistent.tcf1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a start-up failure exits 1: {stderr}");
    assert!(stderr.contains("feed replay:/nonexistent.tcf1: cannot read"), "{stderr}");
}
