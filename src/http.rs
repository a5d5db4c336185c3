//! Plain HTTP on the main port: `/status` (JSON), `/metrics` (Prometheus
//! text), `/healthz`, and the built-in page at `/` (`src/page/index.html`,
//! with the instrument master's names written in). Rendered on request from
//! the shared counters, the merged worker histograms and (`process_*`)
//! `/proc/self`, on the control plane: a worker that parsed a plain request
//! hands it to the `http` thread ([`serve`]) and goes on; the answer comes
//! back on the worker's reply channel and wakes it. A scrape never runs on
//! a worker's loop.

use crate::encode::dialects::iso_json;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::feed::FeedHealth;
use crate::instrument::{Registry, DEFAULT_EXCHANGE};
use crate::metrics::{family, new_histogram, percentiles, LatencyWindow, LATENCY_BUCKETS_NS};
use crate::shared::Shared;
use crate::tick::now_ns;
use crate::ws::handshake::Request;
use crate::SERVER_NAME;

/// A plain HTTP request a worker hands over.
pub struct Job {
    /// The worker to answer through.
    pub worker: usize,
    /// Its connection, and that connection's generation (a reused id with
    /// another generation is another client: the answer is dropped).
    pub conn: (crate::subs::ConnId, u64),
    /// The request.
    pub req: Request,
}

/// An answer on its way back to a worker: the connection and the bytes.
pub type Reply = ((crate::subs::ConnId, u64), Vec<u8>);

/// The `http` thread: answer every job, hand each answer to its worker and
/// wake it. Returns when every worker has dropped its job sender.
pub fn serve(
    shared: std::sync::Arc<Shared>,
    jobs: crossbeam_channel::Receiver<Job>,
    workers: Vec<(crossbeam_channel::Sender<Reply>, std::sync::Arc<crate::ring::WorkerSignal>)>,
) {
    for job in jobs {
        let (status, ctype, body) = respond(&shared, &job.req);
        let bytes = crate::ws::handshake::http_response(status, ctype, &body);
        if let Some((tx, signal)) = workers.get(job.worker) {
            if tx.send((job.conn, bytes)).is_ok() {
                let _ = signal.waker.wake();
            }
        }
    }
}

/// Answer a non-upgrade request: (status, content type, body).
pub fn respond(shared: &Shared, req: &Request) -> (u16, &'static str, Vec<u8>) {
    if req.method != "GET" && req.method != "HEAD" {
        return (405, "text/plain", b"only GET is supported\n".to_vec());
    }
    let admin_only = matches!(req.path.as_str(), "/status" | "/metrics");
    if admin_only && shared.auth.required() {
        let key = req.param("api_key").or_else(|| req.bearer.clone());
        if shared.auth.check(key.as_deref(), crate::auth::role::ADMIN).is_err() {
            crate::metrics::Counters::inc(&shared.counters.auth_failures);
            return (
                401,
                "text/plain",
                b"an API key with the admin role is required (api_key= or Authorization: Bearer)\n".to_vec(),
            );
        }
    }
    match req.path.as_str() {
        "/status" => (200, "application/json", status(shared).to_string().into_bytes()),
        "/websocket/status" => (200, "application/json", websocket_status(shared).to_string().into_bytes()),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics(shared).into_bytes()),
        "/healthz" => {
            let (status, body) = healthz(shared);
            (status, "text/plain", body.into_bytes())
        }
        "/" => (200, "text/html; charset=utf-8", page(&shared.registry).into_bytes()),
        _ => (
            404,
            "text/plain",
            b"not found; try /stream (WebSocket), /status, /metrics, /healthz, /websocket/status\n".to_vec(),
        ),
    }
}

/// `/healthz`: 200 `market closed` outside market hours; during them 200
/// `ok` when a feed is live (naming any that are not), else 503 naming
/// every feed and why it is not live.
pub fn healthz(shared: &Shared) -> (u16, String) {
    let judge = shared.judge(now_ns());
    if !judge.market_open {
        return (200, "market closed\n".into());
    }
    let live = shared.feeds.iter().filter(|f| f.state_name(&judge) == "live").count();
    let mut not_live = String::new();
    for f in shared.feeds.iter().filter(|f| f.state_name(&judge) != "live") {
        let _ = writeln!(not_live, "{}: {}", f.name, f.why(&judge));
    }
    match (live, not_live.is_empty()) {
        (0, _) => (503, format!("no live feed\n{not_live}")),
        (_, true) => (200, "ok\n".into()),
        (n, false) => (200, format!("ok: {n} of {} feeds live\n{not_live}", shared.feeds.len())),
    }
}

/// A counter: its `/status` key, its metric name (without `tickcast_`),
/// help and value.
type Counter = (&'static str, &'static str, &'static str, u64);

/// Counters and gauges, as named values.
struct Snapshot {
    counters: Vec<Counter>,
    connections: u64,
    subscriptions: u64,
    overruns: u64,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let c = &shared.counters;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (mut connections, mut subscriptions) = (0, 0);
    for g in &shared.gauges {
        connections += l(&g.connections);
        subscriptions += l(&g.subscriptions);
    }
    Snapshot {
        counters: vec![
            ("connections_accepted", "connections_accepted_total", "Connections accepted", l(&c.connections_total)),
            (
                "connections_rejected",
                "connections_rejected_total",
                "Connections refused at the connection limit",
                l(&c.connections_rejected),
            ),
            (
                "handshake_failures",
                "handshake_failures_total",
                "Connections that never completed a valid handshake",
                l(&c.handshake_failures),
            ),
            ("bad_requests", "bad_requests_total", "Client requests answered with an error frame", l(&c.bad_requests)),
            (
                "protocol_errors",
                "protocol_errors_total",
                "Connections closed for WebSocket protocol violations",
                l(&c.protocol_errors),
            ),
            (
                "oversized_messages",
                "oversized_messages_total",
                "Connections closed for oversized messages (1009)",
                l(&c.oversized),
            ),
            (
                "policy_closes",
                "policy_closes_total",
                "Connections closed for policy violations (1008)",
                l(&c.policy_closes),
            ),
            (
                "slow_consumer_conflations",
                "slow_consumer_conflations_total",
                "Times a client passed its out-buffer limit and was conflated",
                l(&c.slow_conflations),
            ),
            (
                "slow_consumer_disconnects",
                "slow_consumer_disconnects_total",
                "Slow clients closed with 1013",
                l(&c.slow_disconnects),
            ),
            ("gaps_sent", "gaps_sent_total", "Gap notices sent to clients", l(&c.gaps_sent)),
            ("frames_sent", "frames_sent_total", "Data frames queued to clients", l(&c.frames_sent)),
            ("bytes_written", "written_bytes_total", "Bytes written to client sockets", l(&c.bytes_written)),
            (
                "write_calls",
                "write_calls_total",
                "write/writev system calls to client sockets that wrote something",
                l(&c.write_calls),
            ),
            (
                "sessions_restored",
                "sessions_restored_total",
                "Reconnects that got their subscriptions back",
                l(&c.sessions_restored),
            ),
            (
                "auth_failures",
                "auth_failures_total",
                "Connections refused for a missing or invalid API key",
                l(&c.auth_failures),
            ),
            (
                "limit_rejections",
                "limit_rejections_total",
                "Connections refused at a per-user or per-dialect limit",
                l(&c.limit_rejections),
            ),
            (
                "accept_failures",
                "accept_failures_total",
                "Episodes of accept failing (out of file descriptors; connections wait in the backlog)",
                l(&c.accept_failures),
            ),
        ],
        connections,
        subscriptions,
        overruns: shared.feeds.iter().map(|f| l(&f.push.overruns)).sum(),
    }
}

/// `/status` `latency_ns`: the HDR percentiles of every worker's window
/// (the last 30–60 s, `window_s`) and how many ticks they count.
fn latency_window(shared: &Shared, now: u64) -> serde_json::Map<String, Value> {
    let mut hist = new_histogram();
    for g in &shared.gauges {
        g.latency.lock().merge_into(&mut hist, now);
    }
    let mut latency = serde_json::Map::new();
    latency.insert("window_s".into(), json!(LatencyWindow::span_ns(now) / 1_000_000_000));
    latency.insert("count".into(), json!(hist.len()));
    for (k, v) in percentiles(&hist) {
        latency.insert(k.into(), json!(v));
    }
    latency
}

/// The `/status` document.
pub fn status(shared: &Shared) -> Value {
    let now = now_ns();
    let judge = shared.judge(now);
    let s = snapshot(shared);
    let feeds: Vec<Value> = shared
        .feeds
        .iter()
        .map(|f| {
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let drops: serde_json::Map<String, Value> = crate::feed::tcf1::DropReason::NAMES
                .iter()
                .zip(&f.drops)
                .map(|(n, c)| ((*n).to_string(), json!(l(c))))
                .collect();
            let mut v = json!({"name": f.name, "kind": f.kind, "address": f.address, "read_by": f.read_by_name(), "state": f.state_name(&judge),
                "ticks": l(&f.ticks), "packets": l(&f.packets), "packet_gaps": l(&f.packet_gaps),
                "drops": drops, "reconnects": l(&f.reconnects), "rejected": l(&f.rejected), "ring_overruns": l(&f.push.overruns),
                "last_tick_age_ms": f.last_tick_age_ms(now)});
            if let Some(k) = &f.kite {
                v["kite"] = k.status();
            }
            v
        })
        .collect();
    let workers: Vec<Value> = shared
        .gauges
        .iter()
        .enumerate()
        .map(|(i, g)| json!({"id": i, "connections": g.connections.load(Ordering::Relaxed), "subscriptions": g.subscriptions.load(Ordering::Relaxed)}))
        .collect();
    let mut counters = serde_json::Map::new();
    for (k, _, _, v) in &s.counters {
        counters.insert((*k).into(), json!(v));
    }
    let publish = shared.mirror.as_ref().map(|m| {
        json!({"url": m.address, "state": m.state_name(&judge), "published": m.ticks.load(Ordering::Relaxed),
            "dropped": m.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum::<u64>(), "reconnects": m.reconnects.load(Ordering::Relaxed)})
    });
    let dialects: serde_json::Map<String, serde_json::Value> = crate::dialect::Dialect::ALL
        .iter()
        .map(|d| (d.name().to_string(), json!(shared.dialect_connections[*d as usize].load(Ordering::Relaxed))))
        .collect();
    let shm = shared.hub.shm.as_ref().map(|r| {
        let rings: Vec<Value> = r.written().into_iter().map(|(feed, n)| json!({"feed": feed, "written": n})).collect();
        json!({"path": r.path().display().to_string(), "capacity": r.layout().capacity, "bytes": r.layout().total,
            "rings": rings, "parked_readers": r.parked_readers(), "wakes": r.wakes()})
    });
    json!({
        "server": SERVER_NAME,
        "shm": shm,
        "auth": if shared.auth.required() { "api_keys" } else { "anonymous" },
        "openalgo_listen": shared.openalgo_addr.map(|a| a.to_string()),
        "kite_listen": shared.kite_addr.map(|a| a.to_string()),
        "tls": shared.tls.status(),
        "connections_by_dialect": dialects,
        "publish": publish,
        "uptime_s": shared.started.elapsed().as_secs(),
        "market_open": judge.market_open,
        "stale_after_s": shared.config.stale_after.as_secs_f64(),
        "instruments": shared.registry.len(),
        "connections": s.connections,
        "subscriptions": s.subscriptions,
        "ring_overruns": s.overruns,
        "feeds": feeds,
        "workers": workers,
        "counters": counters,
        "latency_ns": latency_window(shared, now),
    })
}

/// Seconds as the seed shows them: `30`, or `0.2` when fractional.
fn secs(d: std::time::Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

/// The Trading WS `GET /websocket/status` (seed `001_…`), from the feeds'
/// health:
///
/// ```json
/// {"enabled":true,"active_connections":2,"max_connections":100,"ping_interval":30,"price_update_interval":3,"portfolio_update_interval":5,
///  "stream_health":{"price_updates":{"last_update":"2024-12-19T12:00:00Z","error_count":0,"recovery_attempts":0,"is_healthy":true,"started_at":"2024-12-19T11:00:00Z"},
///                   "signals":{"last_update":"2024-12-19T12:00:05Z","error_count":0,"is_healthy":true}}}
/// ```
///
/// `price_updates`: `last_update` is the newest tick of any feed;
/// `error_count` counts feed packets or records dropped as malformed,
/// packets lost upstream (sequence gaps) and ticks lost to full worker
/// rings; `recovery_attempts` counts reconnects of the feeds; `is_healthy`
/// is `/healthz` (a feed live, or the market closed);
/// `started_at` is the server's start. `signals`: `last_update` is the
/// newest message on the `signals` channel; `error_count` counts lines the
/// channel publishers (publish port, Redis) sent that were refused;
/// `is_healthy` means a channel publisher source is up.
pub fn websocket_status(shared: &Shared) -> Value {
    let now = now_ns();
    let t = &shared.config.trading;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let feeds = &shared.feeds;
    let last_tick = feeds.iter().map(|f| l(&f.last_tick_ns)).max().unwrap_or(0);
    let price_errors: u64 =
        feeds.iter().map(|f| f.drops.iter().map(&l).sum::<u64>() + l(&f.packet_gaps) + l(&f.push.overruns)).sum();
    let reconnects: u64 = feeds.iter().filter(|f| f.kind != "publish").map(|f| l(&f.reconnects)).sum();
    let prices_healthy = healthz(shared).0 == 200;
    let started_ns = now.saturating_sub(shared.started.elapsed().as_nanos() as u64);
    let channel_sources = || feeds.iter().filter(|f| matches!(f.kind, "publish" | "redis"));
    let signals_last = shared.channels.lookup("signals").map_or(0, |ch| shared.channels.last_message_ns(ch));
    let signal_errors: u64 = channel_sources().map(|f| l(&f.rejected)).sum();
    let signals_healthy = channel_sources().any(|f| f.state.load(Ordering::Relaxed) == crate::feed::STATE_LIVE);
    json!({
        "enabled": t.enabled,
        "active_connections": l(&shared.dialect_connections[crate::dialect::Dialect::Trading as usize]),
        "max_connections": t.max_connections,
        "ping_interval": secs(t.ping_interval),
        "price_update_interval": secs(t.price_update_interval),
        "portfolio_update_interval": secs(t.portfolio_update_interval),
        "stream_health": {
            "price_updates": {
                "last_update": iso_json(last_tick),
                "error_count": price_errors,
                "recovery_attempts": reconnects,
                "is_healthy": prices_healthy,
                "started_at": iso_json(started_ns),
            },
            "signals": {
                "last_update": iso_json(signals_last),
                "error_count": signal_errors,
                "is_healthy": signals_healthy,
            },
        },
    })
}

/// The `/metrics` Prometheus exposition (text format 0.0.4; `promtool
/// check metrics` clean): names in base units (seconds, bytes), counters
/// ending `_total`, every family with HELP and TYPE.
pub fn metrics(shared: &Shared) -> String {
    let now = now_ns();
    let judge = shared.judge(now);
    let s = snapshot(shared);
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;
    family(o, "build_info", "gauge", "Always 1; the version in a label");
    let _ = writeln!(o, "tickcast_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    family(o, "market_open", "gauge", "1 while the market is open (per --market-hours)");
    let _ = writeln!(o, "tickcast_market_open {}", u8::from(judge.market_open));
    family(o, "stale_after_seconds", "gauge", "How long a feed may be silent while the market is open (--stale-after)");
    let _ = writeln!(o, "tickcast_stale_after_seconds {}", shared.config.stale_after.as_secs_f64());
    family(o, "connections", "gauge", "Open WebSocket client connections, by protocol");
    for d in crate::dialect::Dialect::ALL {
        let _ = writeln!(
            o,
            "tickcast_connections{{dialect=\"{}\"}} {}",
            d.name(),
            l(&shared.dialect_connections[d as usize])
        );
    }
    family(o, "sockets_open", "gauge", "Client sockets held in any phase (handshake, plain HTTP, WebSocket)");
    let _ = writeln!(o, "tickcast_sockets_open {}", s.connections);
    family(o, "subscriptions", "gauge", "Active subscriptions");
    let _ = writeln!(o, "tickcast_subscriptions {}", s.subscriptions);
    for (_, name, help, v) in &s.counters {
        family(o, name, "counter", help);
        let _ = writeln!(o, "tickcast_{name} {v}");
    }
    latency_histogram(o, shared);
    family(
        o,
        "worker_busy_seconds_total",
        "counter",
        "Time each worker spent in turns that found work (not parked or idle-spinning)",
    );
    for (i, g) in shared.gauges.iter().enumerate() {
        let _ = writeln!(o, "tickcast_worker_busy_seconds_total{{worker=\"{i}\"}} {}", l(&g.busy_ns) as f64 / 1e9);
    }
    family(o, "worker_connections", "gauge", "Client sockets held per worker");
    for (i, g) in shared.gauges.iter().enumerate() {
        let _ = writeln!(o, "tickcast_worker_connections{{worker=\"{i}\"}} {}", l(&g.connections));
    }
    feed_metrics(o, shared, &judge);
    crate::feed::kite::metrics(o, &shared.feeds);
    shared.tls.metrics(o);
    if let Some(r) = &shared.hub.shm {
        family(o, "shm_records_total", "counter", "Records published into the shared-memory ring of each feed");
        for (feed, n) in r.written() {
            let _ = writeln!(o, "tickcast_shm_records_total{{feed=\"{feed}\"}} {n}");
        }
        family(o, "shm_parked_readers", "gauge", "Shared-memory readers blocked waiting for ticks");
        let _ = writeln!(o, "tickcast_shm_parked_readers {}", r.parked_readers());
        family(o, "shm_wakes_total", "counter", "Futex wake-ups paid for parked shared-memory readers");
        let _ = writeln!(o, "tickcast_shm_wakes_total {}", r.wakes());
    }
    match crate::process::read() {
        Ok(u) => crate::process::metrics(o, &u),
        Err(e) => log::warn!("/metrics: process metrics unavailable: {e}"),
    }
    out
}

/// `tickcast_delivery_latency_seconds`: every worker's buckets, summed and
/// made cumulative (`le`), since start.
fn latency_histogram(o: &mut String, shared: &Shared) {
    let name = "delivery_latency_seconds";
    family(o, name, "histogram", "Source timestamp to bytes handed to the kernel, per delivered tick");
    let mut cumulative = 0;
    let sum_ns: u64 = shared.gauges.iter().map(|g| g.latency_sum_ns.load(Ordering::Relaxed)).sum();
    for (i, le) in LATENCY_BUCKETS_NS.iter().map(|ns| Some(*ns as f64 / 1e9)).chain([None]).enumerate() {
        cumulative += shared.gauges.iter().map(|g| g.latency_buckets[i].load(Ordering::Relaxed)).sum::<u64>();
        match le {
            Some(le) => _ = writeln!(o, "tickcast_{name}_bucket{{le=\"{le}\"}} {cumulative}"),
            None => _ = writeln!(o, "tickcast_{name}_bucket{{le=\"+Inf\"}} {cumulative}"),
        }
    }
    let _ = writeln!(o, "tickcast_{name}_sum {}\ntickcast_{name}_count {cumulative}", sum_ns as f64 / 1e9);
}

/// The per-feed families.
fn feed_metrics(o: &mut String, shared: &Shared, judge: &crate::feed::Judge) {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let feeds = &shared.feeds;
    type Get = fn(&FeedHealth) -> u64;
    let counters: [(&str, &str, Get); 6] = [
        ("feed_ticks_total", "Ticks published per feed", |f| f.ticks.load(Ordering::Relaxed)),
        ("feed_packets_total", "TCF1 packets received per feed", |f| f.packets.load(Ordering::Relaxed)),
        ("feed_packet_gaps_total", "Packets missing by packet_seq", |f| f.packet_gaps.load(Ordering::Relaxed)),
        ("feed_reconnects_total", "Upstream reconnects, or publisher connections accepted", |f| {
            f.reconnects.load(Ordering::Relaxed)
        }),
        ("feed_rejected_total", "Input refused as a whole (publish port lines, oversized Redis payloads)", |f| {
            f.rejected.load(Ordering::Relaxed)
        }),
        ("feed_ring_overruns_total", "Ticks of the feed dropped because a worker ring was full", |f| {
            f.push.overruns.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        family(o, name, "counter", help);
        for f in feeds {
            let _ = writeln!(o, "tickcast_{name}{{feed=\"{}\"}} {}", f.name, get(f));
        }
    }
    family(o, "feed_drops_total", "counter", "Packets or records dropped per feed and reason");
    for f in feeds {
        for (reason, c) in crate::feed::tcf1::DropReason::NAMES.iter().zip(&f.drops) {
            let _ = writeln!(o, "tickcast_feed_drops_total{{feed=\"{}\",reason=\"{reason}\"}} {}", f.name, l(c));
        }
    }
    family(o, "feed_up", "gauge", "1 when the feed is live: up, and delivering within --stale-after");
    for f in feeds {
        let _ = writeln!(o, "tickcast_feed_up{{feed=\"{}\"}} {}", f.name, u8::from(f.state_name(judge) == "live"));
    }
    family(o, "feed_last_tick_age_seconds", "gauge", "Time since the feed's newest tick (absent before the first)");
    for f in feeds {
        if let Some(age) = f.last_tick_age_ns(judge.now_ns) {
            let _ = writeln!(o, "tickcast_feed_last_tick_age_seconds{{feed=\"{}\"}} {}", f.name, age as f64 / 1e9);
        }
    }
}

/// The built-in page (`src/page/index.html`): a watchlist and the
/// server's health, plain HTML and JavaScript speaking the native protocol.
/// It holds [`MASTER_MARK`] where [`page`] writes the instrument master's
/// names.
const PAGE: &str = include_str!("page/index.html");

/// Where the page takes the master's names (inside a JSON script element).
const MASTER_MARK: &str = "{\"master\":\"here\"}";

/// How many of the master's instruments make the page's default watchlist.
const PAGE_DEFAULTS: usize = 8;

/// How many names the page offers as completions; a large master (a whole
/// Kite dump) is not sent to every browser that opens the page.
const PAGE_SUGGESTIONS: usize = 2000;

/// The page with the master's names in it: `{"defaults":[…],"symbols":[…]}`,
/// each name as a client subscribes by it (`RELIANCE`, `BSE:RELIANCE` off
/// the default exchange). `<` is written `\u003c`, so no name in a master
/// can end the script element.
fn page(registry: &Registry) -> String {
    let names: Vec<String> = registry
        .iter()
        .take(PAGE_SUGGESTIONS)
        .map(|(_, ins)| match &*ins.exchange {
            DEFAULT_EXCHANGE => ins.symbol.to_string(),
            exchange => format!("{exchange}:{}", ins.symbol),
        })
        .collect();
    let master = json!({"defaults": &names[..names.len().min(PAGE_DEFAULTS)], "symbols": names});
    PAGE.replacen(MASTER_MARK, &master.to_string().replace('<', "\\u003c"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::{parse_master, Registry};

    fn master(csv: &str) -> Registry {
        let head = "token,exchange,symbol,name,isin,tick_size,lot_size,price_decimals\n";
        Registry::new(parse_master(format!("{head}{csv}").as_bytes()).unwrap()).unwrap()
    }

    /// The JSON the page was given.
    fn given(page: &str) -> Value {
        let start = page.find(r#"<script id="master" type="application/json">"#).expect("the master element") + 44;
        let len = page[start..].find("</script>").expect("its end");
        serde_json::from_str(&page[start..start + len]).expect("valid JSON")
    }

    #[test]
    fn the_page_names_the_first_instruments_of_the_master_as_its_default_watchlist() {
        let p = page(&Registry::bundled());
        assert!(!p.contains(MASTER_MARK), "the mark is replaced");
        let m = given(&p);
        assert_eq!(m["defaults"].as_array().unwrap().len(), PAGE_DEFAULTS);
        assert_eq!(m["defaults"][0], "ADANIENT", "NSE names go bare");
        assert_eq!(
            m["symbols"].as_array().unwrap().len(),
            Registry::bundled().len(),
            "a small master is offered whole"
        );
    }

    #[test]
    fn a_name_off_the_default_exchange_carries_it() {
        let m = given(&page(&master("1,BSE,ABC,Abc,,0.01,1,2\n2,NSE,XYZ,Xyz,,0.01,1,2\n")));
        assert_eq!(m["symbols"], json!(["BSE:ABC", "XYZ"]));
    }

    #[test]
    fn a_large_master_is_offered_in_part() {
        let csv: String = (1..=PAGE_SUGGESTIONS + 1).map(|i| format!("{i},NSE,S{i},S,,0.01,1,2\n")).collect();
        let m = given(&page(&master(&csv)));
        assert_eq!(m["symbols"].as_array().unwrap().len(), PAGE_SUGGESTIONS);
        assert_eq!(m["defaults"], json!(["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"]));
    }

    #[test]
    fn a_master_name_cannot_end_the_script_element() {
        let p = page(&master("1,NSE,</SCRIPT><B>X,Evil,,0.01,1,2\n"));
        assert!(!p.to_ascii_lowercase().contains("</script><b>"), "the name is escaped");
        assert_eq!(given(&p)["symbols"][0], "</SCRIPT><B>X", "and reads back as it was");
    }
}
