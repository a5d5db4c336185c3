//! The command line as an operator meets it. Configuration errors name
//! their source: the real binary, started with a bad flag, environment
//! variable or config-file key, exits 2 and says which flag, which
//! variable, or which file and key to fix. Precedence (flag > environment >
//! file > default) is checked on a running server. `--help` lists every
//! feed kind the server accepts.

mod util;

use std::process::Command;

use util::{Scratch, Server};

/// The environment variables the server reads (clap `env`); removed from
/// every run here unless a case sets them, so the test's own environment
/// cannot leak in.
const ENV_VARS: [&str; 7] = [
    "WEBSOCKET_ENABLED",
    "WEBSOCKET_PING_INTERVAL",
    "WEBSOCKET_PRICE_UPDATE_INTERVAL",
    "WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL",
    "WEBSOCKET_MAX_CONNECTIONS",
    "KITE_API_KEY",
    "KITE_ACCESS_TOKEN",
];

/// Run the server with `args` and `env`; it must exit with status 2 (the
/// refusal comes before any port is bound). Returns stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    // A server that starts by mistake must not hang the test: `timeout`
    // stops it after 20 s (status 124, not the 2 asserted below).
    let mut cmd = Command::new("timeout");
    cmd.args(["20", env!("CARGO_BIN_EXE_tickcast")]);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.args(args).envs(env.iter().copied()).env("RUST_LOG", "warn").output().expect("run tickcast");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: expected exit status 2; stderr: {stderr}");
    stderr
}

#[test]
fn a_bad_config_file_value_names_the_file_and_the_key() {
    let dir = Scratch::new("config-errors");
    let file = dir.path("tickcast.toml");
    let path = file.to_str().unwrap();
    // (file text, the key named, what the message explains)
    let cases: &[(&str, &str, &str)] = &[
        ("idle = \"sometimes\"\n", "idle", "expected `park`, `spin` or `hybrid`"),
        ("listen = \"localhost\"\n", "listen", "expected HOST:PORT such as 127.0.0.1:8080"),
        ("listen = 8080\n", "listen", "expected a string"),
        ("publish-listen = \"localhost\"\n", "publish-listen", "expected HOST:PORT"),
        ("openalgo-listen = \"localhost\"\n", "openalgo-listen", "expected HOST:PORT such as 127.0.0.1:8080"),
        ("workers = \"two\"\n", "workers", "expected usize"),
        ("workers = 0\n", "workers", "must be 1..="),
        ("max-connections = 0\n", "max-connections", "must be at least 1"),
        ("stale-after = 0\n", "stale-after", "must be 0.01 to 86400 seconds"),
        ("websocket-max-connections = 0\n", "websocket-max-connections", "must be at least 1"),
        ("feed = [\"carrier-pigeon\"]\n", "feed", "unknown source `carrier-pigeon`"),
        ("cpus = \"3-1\"\n", "cpus", "not a CPU id or range"),
        ("slow-consumer = \"pray\"\n", "slow-consumer", "expected `conflate` or `disconnect`"),
        ("feed-poll = \"sometimes\"\n", "feed-poll", "expected `auto`, `thread` or `worker`"),
        ("publish = \"nats://x\"\n", "publish", "expected redis://HOST:PORT"),
        ("shm-capacity = 1024\n", "shm-capacity", "need --shm NAME"),
        ("shm = \"x\"\nshm-mode = \"0666\"\n", "shm-mode", "others may not write"),
        ("market-hours = \"sometimes\"\n", "market-hours", "not a session"),
        ("[market-hours]\npreset = \"lse\"\n", "market-hours", "preset `lse`"),
        ("listn = \"127.0.0.1:0\"\n", "listn", "unknown field `listn`"),
    ];
    for (text, key, why) in cases {
        std::fs::write(&file, text).unwrap();
        let err = refused(&["--config", path], &[]);
        let source = format!("config file {path}, key {key}");
        assert!(err.contains(&source) && err.contains(why), "{text:?}: want {source:?} and {why:?} in: {err}");
        assert!(!err.contains(&format!("--{key} ")), "{text:?}: the file's key is not a flag: {err}");
    }
    // Not TOML at all: the file and the line.
    std::fs::write(&file, "idle = \n").unwrap();
    let err = refused(&["--config", path], &[]);
    assert!(err.contains(&format!("config file {path}")) && err.contains("line 1"), "{err}");
    let missing = dir.path("missing.toml");
    let err = refused(&["--config", missing.to_str().unwrap()], &[]);
    assert!(err.contains(&format!("reading config file {}", missing.display())), "{err}");
}

#[test]
fn a_bad_environment_variable_names_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("WEBSOCKET_MAX_CONNECTIONS", "many", "invalid digit"),
        ("WEBSOCKET_MAX_CONNECTIONS", "0", "must be at least 1"),
        ("WEBSOCKET_ENABLED", "maybe", "expected one of true, false"),
        ("WEBSOCKET_PING_INTERVAL", "soon", "invalid float"),
        ("WEBSOCKET_PING_INTERVAL", "0", "must be 0.01 to 86400 seconds"),
        ("WEBSOCKET_PRICE_UPDATE_INTERVAL", "100000", "must be 0.01 to 86400 seconds"),
        ("WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", "-1", "must be 0.01 to 86400 seconds"),
    ];
    for (var, value, why) in cases {
        let err = refused(&[], &[(var, value)]);
        let flag = format!("--{}", var.to_lowercase().replace('_', "-"));
        assert!(err.contains(&format!("environment variable {var}")) && err.contains(why), "{var}={value}: {err}");
        assert!(!err.contains(&format!("for '{flag}")), "{var}={value}: reported as the flag: {err}");
    }
}

#[test]
fn a_bad_flag_names_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--listen", "localhost"], "expected HOST:PORT such as 127.0.0.1:8080"),
        (&["--publish-listen", "localhost:7001"], "expected HOST:PORT such as 127.0.0.1:8080"),
        (&["--kite-listen", "localhost"], "--kite-listen `localhost`: expected HOST:PORT such as 127.0.0.1:8080"),
        (&["--idle", "sometimes"], "--idle `sometimes`: expected `park`, `spin` or `hybrid`"),
        (&["--workers", "two"], "'--workers <N>'"),
        (&["--websocket-max-connections", "0"], "--websocket-max-connections must be at least 1"),
        (&["--cpus", "x"], "--cpus `x`: `x` is not a CPU id"),
        (&["--shm", "x", "--shm-group", "no-such-group-here"], "--shm-group `no-such-group-here`: no such group"),
        (&["--listen", "0.0.0.0:0"], "refusing to serve 0.0.0.0:0 (--listen; not loopback)"),
    ];
    for (args, want) in cases {
        let err = refused(args, &[]);
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
    }
    // The flag wins over a bad environment variable, so that is what is named.
    let err = refused(&["--websocket-max-connections", "0"], &[("WEBSOCKET_MAX_CONNECTIONS", "many")]);
    assert!(err.contains("--websocket-max-connections must be at least 1"), "{err}");
}

/// The environment wins over the file, so a bad variable is named even
/// when the file has the key too (and a good one hides the file's bad value).
#[test]
fn the_environment_wins_over_the_file() {
    let dir = Scratch::new("config-env-file");
    let file = dir.path("t.toml");
    std::fs::write(&file, "websocket-max-connections = 0\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[("WEBSOCKET_MAX_CONNECTIONS", "0")]);
    assert!(err.contains("environment variable WEBSOCKET_MAX_CONNECTIONS must be at least 1"), "{err}");
}

/// Flag > environment > file > default, as `/websocket/status` reports the
/// setting each server actually runs with.
#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let dir = Scratch::new("config-precedence");
    let file = dir.path("t.toml");
    std::fs::write(&file, "websocket-max-connections = 7\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let env = [("WEBSOCKET_MAX_CONNECTIONS", "8")];
    /// (case, flags, environment, the max_connections it runs with)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], u64);
    let cases: [Case; 4] = [
        ("default", &[], &[], 100),
        ("file", &config, &[], 7),
        ("environment over file", &config, &env, 8),
        ("flag over environment and file", &[&config[..], &["--websocket-max-connections", "9"]].concat(), &env, 9),
    ];
    for (name, args, env, want) in cases {
        let s = Server::start_with_env(args, env);
        let (status, body) = s.get("/websocket/status");
        assert_eq!(status, 200, "{name}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["max_connections"].as_u64(), Some(want), "{name}: {v}");
    }
}

/// Every kind `--feed` accepts (`tickcast::feed::spec::KINDS`) is in `--help`.
#[test]
fn help_lists_every_feed_kind() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let feed = help.split("--feed <SPEC>").nth(1).expect("--feed in --help").split("\n      --").next().unwrap();
    for (prefix, _) in tickcast::feed::spec::KINDS {
        assert!(feed.contains(&format!("`{prefix}")), "`{prefix}` missing from --feed's help: {feed}");
    }
}
