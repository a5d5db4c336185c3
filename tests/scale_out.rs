//! Scale-out over a real Redis: instance A (simulator) publishes, B and C
//! consume with `--feed redis://…`. Each test starts its own redis-server.

mod util;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{Redis, Server};

/// (seq, ltp) of the next `n` frames for `token`, snapshot excluded.
fn stream(c: &mut util::Client, token: u64, n: usize) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(Instant::now() < deadline, "stream stalled after {} frames", out.len());
        let v = c.recv_json();
        if v["type"] == "market_data" && v["token"] == token && v.get("snapshot").is_none() {
            out.push((v["seq"].as_u64().unwrap(), v["data"]["ltp"].as_f64().unwrap()));
        }
    }
    out
}

fn redis_feed(st: &Value) -> &Value {
    &st["feeds"][0]
}

#[test]
fn edges_receive_the_same_seq_sequences_as_the_origin() {
    let redis = Redis::start();
    let a = Server::start(&["--feed", "sim:rate=3000,seed=9", "--publish", &redis.url()]);
    let b = Server::start(&["--feed", &redis.url()]);
    let c = Server::start(&["--feed", &redis.url()]);
    a.warm();
    let (mut ca, mut cb, mut cc) = (a.native(), b.native(), c.native());
    for cl in [&mut ca, &mut cb, &mut cc] {
        cl.request(json!({"action": "subscribe", "tokens": [2885], "mode": "quote"}), 1);
    }
    let (sa, sb, sc) = (stream(&mut ca, 2885, 40), stream(&mut cb, 2885, 25), stream(&mut cc, 2885, 25));
    // Over the window all three saw, the sequences are identical.
    let from = sa[0].0.max(sb[0].0).max(sc[0].0);
    let to = sa.last().unwrap().0.min(sb.last().unwrap().0).min(sc.last().unwrap().0);
    assert!(to > from + 5, "overlap too small: {from}..{to}");
    let window = |s: &[(u64, f64)]| s.iter().filter(|x| x.0 >= from && x.0 <= to).copied().collect::<Vec<_>>();
    assert_eq!(window(&sb), window(&sa), "B = A");
    assert_eq!(window(&sc), window(&sa), "C = A");
    assert_eq!(window(&sa).len() as u64, to - from + 1, "no seq missing in the window");
    let st = b.status();
    assert_eq!((redis_feed(&st)["kind"].as_str(), redis_feed(&st)["state"].as_str()), (Some("redis"), Some("live")));
    let st = a.status_until("A publishing", |st| st["publish"]["published"].as_u64() > Some(0));
    assert_eq!(st["publish"]["state"], "live");
}

#[test]
fn edges_subscribe_on_redis_only_to_what_clients_want() {
    let redis = Redis::start();
    let b = Server::start(&["--feed", &redis.url()]);
    let channels = |r: &Redis| r.raw(&["PUBSUB", "CHANNELS"]);
    // B's subscriptions on its one Redis connection are applied in order:
    // anything it subscribed to before a client wanted something would
    // still be there when the wanted channels appear. So no fixed wait for
    // "nothing yet": once the wanted ones are there, they are all there is.
    let mut c = b.native();
    c.request(json!({"action": "subscribe", "tokens": [11536], "channels": ["signals"]}), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(channels(&redis).contains("tcf1:11536") && channels(&redis).contains("signals")) {
        assert!(Instant::now() < deadline, "B never subscribed on Redis: {}", channels(&redis));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut listed: Vec<String> = channels(&redis)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with(['*', '$']))
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, ["signals", "tcf1:11536"], "only what is wanted");
    assert!(redis.raw(&["PUBSUB", "NUMPAT"]).starts_with(":0\r\n"), "and no pattern subscriptions");
    // A named channel published straight into Redis reaches the client.
    redis.command(&["PUBLISH", "signals", r#"{"side":"sell"}"#]);
    let m = c.recv_until("the signal", |v| v["type"] == "channel");
    assert_eq!((m["channel"].as_str(), &m["data"]), (Some("signals"), &json!({"side": "sell"})));
    c.request(json!({"action": "unsubscribe", "tokens": [11536], "channels": ["signals"]}), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while channels(&redis).contains("tcf1:11536") || channels(&redis).contains("signals") {
        assert!(Instant::now() < deadline, "B never unsubscribed: {}", channels(&redis));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_redis_restart_is_survived_and_visible() {
    let mut redis = Redis::start();
    let port = redis.port;
    let a = Server::start(&["--feed", "sim:rate=3000,seed=4", "--publish", &redis.url()]);
    let b = Server::start(&["--feed", &redis.url()]);
    let mut cb = b.native();
    cb.request(json!({"action": "subscribe", "tokens": [2885]}), 1);
    let before = stream(&mut cb, 2885, 5);
    // Redis goes away mid-run; both ends see the outage before it comes
    // back (what the reconnect counters below count), not a fixed pause.
    drop(redis);
    b.status_until("B notices", |st| redis_feed(st)["state"] != "live");
    a.status_until("A notices", |st| st["publish"]["state"] != "live");
    redis = Redis::start_on(port);
    let after = stream(&mut cb, 2885, 5);
    assert!(after[0].0 > before.last().unwrap().0, "B resumed with newer ticks");
    let st = b.status_until("B reconnected", |st| {
        redis_feed(st)["state"] == "live" && redis_feed(st)["reconnects"].as_u64() >= Some(1)
    });
    assert!(redis_feed(&st)["packet_gaps"].as_u64() > Some(0), "the outage shows as missed packets: {st}");
    a.status_until("A reconnected", |st| st["publish"]["reconnects"].as_u64() >= Some(1));
    drop(redis);
}

/// Regression: under steady traffic (a message within every 50 ms read
/// timeout) the Redis source never left its read loop, so it stopped
/// following client interest.
#[test]
fn redis_source_follows_interest_under_steady_traffic() {
    let redis = Redis::start();
    let b = Server::start(&["--feed", &redis.url()]);
    let mut busy_client = b.native();
    busy_client.request(json!({"action": "subscribe", "channels": ["busy"]}), 1);
    let port = redis.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // Every PUBLISH is answered with its receiver count; once B has
    // subscribed to `busy` each must reach it (`:1`), or the traffic the
    // regression needs was not there.
    let noise = std::thread::spawn(move || {
        let (mut reached, mut missed) = (0u64, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match util::redis_command(port, &["PUBLISH", "busy", "1"]).as_deref() {
                Some(":1") => reached += 1,
                other if reached > 0 => missed.push(format!("{other:?}")),
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (reached, missed)
    });
    // Steady traffic is flowing through B to its client before `quiet` is asked for.
    busy_client.recv_until("a `busy` message", |v| v["type"] == "channel" && v["channel"] == "busy");
    let mut quiet = b.native();
    quiet.request(json!({"action": "subscribe", "channels": ["quiet"]}), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.raw(&["PUBSUB", "NUMSUB", "quiet"]).contains(":1") {
        assert!(Instant::now() < deadline, "B never subscribed to `quiet` while `busy` was busy");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it still flows after B followed the new interest.
    busy_client.recv_until("a `busy` message", |v| v["type"] == "channel" && v["channel"] == "busy");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reached, missed) = noise.join().unwrap();
    assert!(reached > 0 && missed.is_empty(), "{reached} publishes reached B; then not: {missed:?}");
}
