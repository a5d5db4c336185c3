//! The built-in page at `/`, in a real browser: `tests/node/page_check.js`
//! drives headless Chromium (Debian's `chromium`, with playwright-core; both
//! installed by `scripts/test`) against the real binary. This file owns the
//! servers: it stops one and starts another on the same port when the script
//! says so. `TICKCAST_SCREENSHOT=page.png cargo test --test page` writes
//! what the page looked like (how docs/page.png was made).

mod util;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use util::Server;

/// The page served over plain HTTP: the master's names are in it, and a
/// non-GET is still refused.
#[test]
fn the_page_is_served_with_the_masters_names() {
    let s = Server::start(&["--feed", "sim:rate=100"]);
    let (code, body) = s.get("/");
    assert_eq!(code, 200);
    assert!(body.contains("<title>tickcast</title>"), "{body}");
    assert!(body.contains(r#""defaults":["ADANIENT","#), "the default watchlist comes from the master");
    assert!(!body.contains(r#"{"master":"here"}"#), "the mark is replaced");
    assert!(!body.contains("http://") && !body.contains("https://"), "the page loads nothing from elsewhere");
}

/// Start `page_check.js SCENARIO URL ARGS…` with its stdout piped.
fn browser(scenario: &str, s: &Server, args: &[&str]) -> Child {
    browser_at(scenario, &format!("http://{}", s.addr), args)
}

/// [`browser`] at `base`.
fn browser_at(scenario: &str, base: &str, args: &[&str]) -> Child {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm install --prefix tests/node` (scripts/test does)"
    );
    Command::new("node")
        .arg(node.join("page_check.js"))
        .arg(scenario)
        .arg(base)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is required for the page tests")
}

/// Wait for the script; panics with everything it printed unless it ended `OK`.
fn finish(mut child: Child, stdout: &str) {
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && stdout.lines().last() == Some("OK"),
        "page_check.js failed ({status}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
}

#[test]
fn the_page_shows_the_watchlist_and_health_and_survives_a_server_restart() {
    let args = ["--feed", "sim:rate=2000"];
    let mut server = Some(Server::start(&args));
    let addr = server.as_ref().unwrap().addr;
    let mut child = browser("watch", server.as_ref().unwrap(), &[]);
    let mut stdout = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        match line.as_str() {
            "STOP" => {
                let mut s = server.take().expect("STOP once, while the server runs");
                s.terminate();
                s.child.wait().unwrap();
            }
            "START" => {
                assert!(server.is_none(), "START after STOP");
                server = Some(Server::start_listening(&addr.to_string(), &args, &[]));
            }
            _ => {}
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    finish(child, &stdout);
    assert!(stdout.contains("STOP\n") && stdout.contains("START\n"), "the restart was exercised:\n{stdout}");
}

#[test]
fn with_api_keys_the_page_says_status_needs_an_admin_key() {
    let hash = |k: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).args(["hash-key", k]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let text = format!(
        "[[user]]\nid = \"trader\"\nkeys = [\"{}\"]\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
        hash("trader-key"),
        hash("ops-key"),
    );
    let file =
        std::env::temp_dir().join(format!("tickcast-page-auth-{}-{}.toml", std::process::id(), fastrand::u32(..)));
    std::fs::write(&file, text).unwrap();
    let s = Server::start(&["--feed", "sim:rate=2000", "--auth-file", file.to_str().unwrap()]);
    let mut child = browser("keys", &s, &["trader-key", "ops-key"]);
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    finish(child, &stdout);
    let _ = std::fs::remove_file(&file);
}

/// Over TLS: the page at `https://`, its socket at `wss://` (issue 15).
#[test]
fn the_page_works_over_https_and_wss() {
    let scratch = util::Scratch::new("page-tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let s = Server::start(&[
        "--feed",
        "sim:rate=2000",
        "--tls-cert",
        c.to_str().unwrap(),
        "--tls-key",
        k.to_str().unwrap(),
    ]);
    let mut child = browser_at("tls", &format!("https://localhost:{}", s.addr.port()), &[]);
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    finish(child, &stdout);
}
