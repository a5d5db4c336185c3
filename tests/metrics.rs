//! `/metrics` as Prometheus tooling sees it: the real binary with traffic
//! and every kind of feed health (live, stale, connecting), its exposition
//! checked by `promtool check metrics` (Debian's `prometheus` package;
//! `scripts/test` installs it), the latency histogram's shape, and the
//! Grafana dashboard in `docs/` asking only for series the server exposes.

mod util;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use util::Server;

/// A server with a live simulator, a never-fed UDP feed (stale), a Kite
/// feed whose upstream refuses (connecting), the publish port and a
/// shared-memory region, and a client (returned, still connected) that
/// has had data delivered.
fn busy_server() -> (Server, tempdir::Dir, util::Client) {
    let dir = tempdir::Dir::new();
    let shm = dir.path.join("region");
    let kite = format!("kite+ws://127.0.0.1:{}/kite?api_key=k1&access_token=tok", util::free_port());
    let s = Server::start(&[
        "--feed",
        "sim:rate=5000",
        "--feed",
        "udp://127.0.0.1:0",
        "--feed",
        &kite,
        "--publish-listen",
        "127.0.0.1:0",
        "--shm",
        shm.to_str().unwrap(),
    ]);
    s.warm();
    let mut c = s.native();
    c.request(json!({"action": "subscribe", "tokens": [2885, 11536], "mode": "quote"}), 1);
    for _ in 0..20 {
        c.recv_until("market data", |v| v["type"] == "market_data");
    }
    s.status_until("latency recorded", |st| st["latency_ns"]["count"].as_u64() > Some(0));
    let st = s.status();
    let states: BTreeSet<&str> = st["feeds"].as_array().unwrap().iter().filter_map(|f| f["state"].as_str()).collect();
    assert_eq!(states, BTreeSet::from(["connecting", "live", "stale"]), "{st}");
    (s, dir, c)
}

/// Scratch directories removed on drop.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            let out = std::process::Command::new("mktemp").args(["-d", "-t", "tickcast-metrics.XXXXXX"]).output();
            let path = String::from_utf8(out.expect("mktemp").stdout).unwrap();
            Dir { path: path.trim().into() }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn metrics(s: &Server) -> String {
    let (code, body) = s.get("/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// Sample lines as (name, labels, value).
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {l}"));
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            (name.to_string(), labels.trim_end_matches('}').to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn promtool_finds_nothing_to_complain_about() {
    let (s, _dir, _client) = busy_server();
    let text = metrics(&s);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test ({e}); scripts/test installs it (apt-get install prometheus)")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}):\n{said}\n---\n{text}",
        out.status
    );
}

#[test]
fn the_exposition_has_the_standard_and_tickcast_series() {
    let (s, _dir, _client) = busy_server();
    let text = metrics(&s);
    let all = samples(&text);
    let value = |name: &str, labels: &str| {
        all.iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    };
    assert!(value("process_cpu_seconds_total", "") > 0.0);
    assert!(value("process_resident_memory_bytes", "") > 1e6);
    assert!(value("process_open_fds", "") >= 3.0);
    assert!(value("process_max_fds", "") >= value("process_open_fds", ""));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value("process_start_time_seconds", "");
    assert!(started > now - 120.0 && started <= now + 1.0, "{started} vs {now}");
    assert_eq!(value("tickcast_build_info", &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), 1.0);
    assert_eq!(value("tickcast_market_open", ""), 1.0);
    assert_eq!(value("tickcast_connections", "dialect=\"native\""), 1.0);
    assert_eq!(value("tickcast_feed_up", "feed=\"sim\""), 1.0);
    assert_eq!(value("tickcast_feed_up", "feed=\"udp\""), 0.0);
    assert_eq!(value("tickcast_feed_up", "feed=\"kite\""), 0.0);
    assert!(value("tickcast_feed_last_tick_age_seconds", "feed=\"sim\"") < 5.0);
    assert!(
        !all.iter().any(|(n, l, _)| n == "tickcast_feed_last_tick_age_seconds" && l == "feed=\"udp\""),
        "no age before a first tick"
    );
    assert!(value("tickcast_feed_reconnects_total", "feed=\"kite\"") >= 0.0);
    assert!(value("tickcast_feed_ring_overruns_total", "feed=\"sim\"") >= 0.0);
    assert!(value("tickcast_feed_rejected_total", "feed=\"publish\"") >= 0.0);
    let busy = value("tickcast_worker_busy_seconds_total", "worker=\"0\"");
    assert!(busy > 0.0 && busy < value("process_cpu_seconds_total", "") + 1.0, "{busy}");

    // The histogram: cumulative buckets ending at +Inf = _count > 0.
    let name = "tickcast_delivery_latency_seconds";
    let buckets: Vec<(String, f64)> = all
        .iter()
        .filter(|(n, _, _)| *n == format!("{name}_bucket"))
        .map(|(_, l, v)| (l.trim_start_matches("le=\"").trim_end_matches('"').to_string(), *v))
        .collect();
    assert_eq!(buckets.len(), 18, "{buckets:?}");
    assert_eq!((buckets[0].0.parse::<f64>().unwrap(), buckets[17].0.as_str()), (0.00001, "+Inf"));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    let count = value(&format!("{name}_count"), "");
    assert!(count > 0.0 && buckets[17].1 == count, "{buckets:?} count {count}");
    let sum = value(&format!("{name}_sum"), "");
    assert!(sum > 0.0 && sum / count < 2.5, "mean latency {} s", sum / count);
    assert!(!text.contains("tickcast_latency_ns"), "the old summary is gone");
}

/// Metric names a PromQL expression reads: identifiers that are not
/// functions or aggregations (followed by `(`), keywords, label names
/// (inside `{}` or a `by (…)` list), durations (inside `[]`) or numbers.
fn metric_names(expr: &str) -> Vec<String> {
    const LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    const KEYWORDS: [&str; 16] = [
        "and", "or", "unless", "bool", "offset", "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
        "topk", "bottomk", "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        let close = match c {
            '{' => Some('}'),
            '[' => Some(']'),
            '"' => Some('"'),
            '(' if skip_list => Some(')'),
            _ => None,
        };
        if let Some(close) = close {
            skip_list = false;
            i +=
                1 + chars[i + 1..].iter().position(|&x| x == close).unwrap_or_else(|| panic!("unclosed in {expr}")) + 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if LISTS.contains(&word.as_str()) {
                skip_list = next == Some(&'(');
            } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                out.push(word);
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn promql_names_are_found() {
    let e = "histogram_quantile(0.99, sum by (le) (rate(tickcast_delivery_latency_seconds_bucket{job=\"x\"}[$__rate_interval])))";
    assert_eq!(metric_names(e), ["tickcast_delivery_latency_seconds_bucket"]);
    let e = "sum(tickcast_connections) by (dialect) / on(instance) group_left process_open_fds * 1e3";
    assert_eq!(metric_names(e), ["tickcast_connections", "process_open_fds"]);
}

#[test]
fn every_grafana_query_names_a_series_the_server_exposes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| exprs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 6, "latency, deliveries, connections, feeds, CPU, memory: {queries:?}");
    let (s, _dir, _client) = busy_server();
    let exposed: BTreeSet<String> = samples(&metrics(&s)).into_iter().map(|(n, _, _)| n).collect();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "a query with no metric: {q}");
        for n in names {
            assert!(exposed.contains(&n), "{n} (in `{q}`) is not exposed; /metrics has {exposed:?}");
        }
    }
}
