//! Chaining over Kite's protocol: instance A serves its Kite dialect at
//! `/kite`; instance B takes it as its upstream (`--feed
//! kite+ws://A/kite?…`) and serves its own clients. Known ticks go into A
//! over UDP; a client of A and a client of B must see the same prices in
//! the same order, B must ask A for exactly what its clients want, and a
//! restarted A must be found again.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickcast::feed::tcf1;
use tickcast::tick::{Level, Tick, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};
use util::{Client, Server};

/// RELIANCE (2885) or TCS (11536) with `seq`: ltp base + seq paise, OHLC, depth.
fn tick(token: u32, seq: u64) -> Tick {
    let base = if token == 2885 { 285_050 } else { 412_000 };
    let mut t = Tick {
        token,
        seq,
        ts_ns: 1_763_712_000_000_000_000 + seq,
        ltp: base + seq as i64,
        ltq: 5,
        volume: 100 * seq,
        open: base - 1_000,
        high: base + 5_000,
        low: base - 2_000,
        close: base - 500,
        flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
        depth_levels: 5,
        ..Tick::default()
    };
    for i in 0..5 {
        t.depth.bids[i] = Level { price: base - 5 * (i as i64 + 1), qty: 10 + i as u32, orders: 1 };
        t.depth.asks[i] = Level { price: base + 5 * (i as i64 + 1), qty: 20 + i as u32, orders: 2 };
    }
    (t.bid, t.bid_qty, t.ask, t.ask_qty) = (t.depth.bids[0].price, 10, t.depth.asks[0].price, 20);
    t
}

/// Send ticks `seqs` of both instruments, one datagram each, 5 ms apart.
fn feed(sock: &UdpSocket, to: SocketAddr, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let mut out = Vec::new();
        tcf1::write_packet(&mut out, seq, &[tick(2885, seq), tick(11536, seq)]);
        sock.send_to(&out, to).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `market_data` frames of `token` until one with ltp `last` (minor units).
fn prices_until(c: &mut Client, token: u32, last: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no ltp {last} for {token}; got {out:?}");
        let v = c.recv_json();
        if v["type"] != "market_data" || v["token"] != token {
            continue;
        }
        let ltp = (v["data"]["ltp"].as_f64().unwrap() * 100.0).round() as i64;
        out.push(v);
        if ltp == last {
            return out;
        }
    }
}

fn ltps(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|v| (v["data"]["ltp"].as_f64().unwrap() * 100.0).round() as i64).collect()
}

fn subscriptions(s: &Server) -> u64 {
    s.status()["subscriptions"].as_u64().unwrap()
}

#[test]
fn b_relays_a_in_order_follows_its_clients_and_survives_a_restart() {
    let udp_port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let a_addr = format!("127.0.0.1:{}", util::free_port());
    let a_feed: SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let a_args = ["--feed", &format!("udp://{a_feed}")];
    let mut a = Server::start_listening(&a_addr, &a_args, &[]);
    let b = Server::start(&["--feed", &format!("kite+ws://{a_addr}/kite?api_key=b&access_token=t")]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    // B's link is up, and asks A for nothing while B has no clients.
    a.status_until("B's link", |st| st["connections_by_dialect"]["kite"] == 1);
    assert_eq!(subscriptions(&a), 0, "nothing wanted, nothing subscribed upstream");

    let mut ca = a.native();
    let mut cb = b.native();
    let req = json!({"action": "subscribe", "tokens": [2885, 11536], "mode": "quote"});
    assert_eq!(ca.request(req.clone(), 1)["data"]["rejected"], json!([]));
    assert_eq!(cb.request(req, 1)["data"]["rejected"], json!([]));
    let mut cb_depth = b.native();
    cb_depth.request(json!({"action": "subscribe", "tokens": [2885], "mode": "depth"}), 1);
    // A: its own client's 2 and B's 2 (B's highest mode per instrument).
    a.status_until("B subscribed upstream", |st| st["subscriptions"] == 4);
    b.status_until("B's link live", |st| st["feeds"][0]["state"] == "live");

    feed(&sock, a_feed, 1..=20);
    let (from_a, from_b) = (prices_until(&mut ca, 2885, 285_070), prices_until(&mut cb, 2885, 285_070));
    let want: Vec<i64> = (1..=20).map(|s| 285_050 + s).collect();
    assert_eq!(ltps(&from_a), want, "A's client: every tick in order");
    assert_eq!(ltps(&from_b), want, "B's client: the same prices in the same order");
    let seqs: Vec<u64> = from_b.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "B's seq increases: {seqs:?}");
    let last = from_b.last().unwrap();
    assert_eq!((last["data"]["open"].as_f64(), last["data"]["close"].as_f64()), (Some(2840.5), Some(2845.5)), "{last}");
    assert_eq!(ltps(&prices_until(&mut cb, 11536, 412_020)).last(), Some(&412_020));
    // Depth went up as Kite's full mode and comes back level by level.
    let d = prices_until(&mut cb_depth, 2885, 285_070);
    let book = &d.last().unwrap()["data"]["depth"];
    assert_eq!(book["buy"][0], json!({"price": 2850.45, "quantity": 10, "orders": 1}), "{book}");
    assert_eq!(book["sell"][4], json!({"price": 2850.75, "quantity": 24, "orders": 2}), "{book}");

    // B's client leaves TCS: B leaves it upstream; RELIANCE stays.
    cb.request(json!({"action": "unsubscribe", "tokens": [11536]}), 2);
    a.status_until("B dropped TCS upstream", |st| st["subscriptions"] == 3);

    // A restarts: B sees the link go, reconnects and subscribes again.
    a.terminate();
    let _ = a.child.wait();
    let st = b.status_until("B's feed stale while A is down", |st| st["feeds"][0]["state"] == "stale");
    let hb = b.native().recv_type("heartbeat");
    assert_eq!(hb["feeds"][0]["state"], "stale", "B's clients are told: {hb}");
    assert!(st["feeds"][0]["reconnects"].as_u64() >= Some(1), "the lost link counted: {st}");
    let a2 = Server::start_listening(&a_addr, &a_args, &[]);
    a2.status_until("B resubscribed only RELIANCE", |st| st["subscriptions"] == 1);
    b.status_until("B live again", |st| st["feeds"][0]["state"] == "live");
    feed(&sock, a_feed, 21..=25);
    let after = prices_until(&mut cb, 2885, 285_075);
    assert_eq!(ltps(&after).last(), Some(&285_075));
    assert!(after.iter().all(|v| v["token"] == 2885));
}
