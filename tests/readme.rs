//! Every command in the README works as printed: each line of its `sh`
//! blocks (and each `toml` block, as a `--config` file) runs against the
//! built binary, so the README cannot drift from the flags it documents.
//!
//! How a block is made to run on one machine, and nothing more:
//! `cargo run --release --` is the built `tickcast` (and `--example
//! shm_reader` the built example); fixed ports become free ones (the same
//! number the same port throughout a block), 10.0.0.x hosts become
//! 127.0.0.1 (a `redis://` host a `redis-server` started here), the
//! shared-memory name `demo` a name of this run's; a server gets
//! `--listen 127.0.0.1:0` and `--openalgo-listen 127.0.0.1:0` when it names
//! none. Durations shrink (`record --secs`, bench `--secs`/`--warmup`/
//! `--rate`/`--clients`) so the whole README runs in seconds.
//!
//! A server (`tickcast` without a subcommand) must print its banner and
//! answer `/status`; it keeps running for the commands after it ("in
//! another terminal") until the next server starts or, with a trailing
//! `&`, until its block ends. Any other command must exit 0, or, if it
//! streams (a reader: `tickcast tail` or another program), print a line and
//! keep running. Commands that need what cannot exist here are in
//! [`SKIPPED`] with the reason; a new command runs by default.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{free_port, Redis, Scratch};

/// Commands (a part of the command as printed) that are not run, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("scripts/test", "the test command itself, of which this test is a part"),
    ("export KITE_API_KEY", "placeholder credentials, for the kite:// line below it"),
    ("--feed kite://ws.kite.trade", "needs a Kite Connect API key and access token, and Kite's servers"),
    ("keys = [\"sha256:…\"]", "an auth-file layout with a placeholder hash; the auth tests run real ones"),
    ("perf/soak.sh", "a soak of at least five minutes (run by hand; its record is in perf/RESULTS.md)"),
];

/// Commands that measure a server the reader already runs: the test starts
/// that server first (its flags, ports mapped as the block's).
const NEEDS_SERVER: &[(&str, &str)] =
    &[("--url ws://127.0.0.1:8080/stream", "--listen 127.0.0.1:8080 --feed udp://127.0.0.1:9000")];

/// How long a command may take before it is a failure (a bench with
/// `--find-max` steps through several runs).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A fenced block of the README: its language and text, and the line it starts on.
struct Block {
    lang: String,
    text: String,
    line: usize,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block { lang: lang.trim().to_string(), text: String::new(), line: i + 1 })
            }
            (Some(b), Some(_)) => out.push(b),
            (Some(mut b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    out
}

/// The commands of a shell block: continuation lines joined, comments cut.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = strip_comment(line);
        match line.trim_end().strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(&line);
                let cmd = current.split_whitespace().collect::<Vec<_>>().join(" ");
                if !cmd.is_empty() {
                    out.push(cmd);
                }
                current.clear();
            }
        }
    }
    out
}

/// `line` without a trailing `# comment` (a `#` outside quotes, after a space or at the start).
fn strip_comment(line: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].to_string(),
            _ => {}
        }
        prev = c;
    }
    line.to_string()
}

/// Shell words of a simple command (quotes removed; no expansions).
fn words(cmd: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in cmd.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (_, c) => (word, any) = (word + &c.to_string(), true),
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// `words` quoted for bash.
fn quoted(words: &[String]) -> String {
    words.iter().map(|w| format!("'{}'", w.replace('\'', r"'\''"))).collect::<Vec<_>>().join(" ")
}

/// Set `flag`'s value (replacing it, or appending the flag).
fn set_flag(words: &mut Vec<String>, flag: &str, value: &str) {
    match words.iter().position(|w| w == flag) {
        Some(i) if i + 1 < words.len() => words[i + 1] = value.to_string(),
        _ => words.extend([flag.to_string(), value.to_string()]),
    }
}

fn flag_value<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    words.iter().position(|w| w == flag).and_then(|i| words.get(i + 1)).map(String::as_str)
}

/// One block's substitutions: ports, hosts, the shm name.
struct Place {
    ports: Vec<(String, u16)>,
    /// The block's `redis-server`, if it names one; stopped with the block.
    _redis: Option<Redis>,
    shm_name: String,
}

impl Place {
    fn new(text: &str) -> Place {
        let redis = text.contains("redis://").then(Redis::start);
        let mut ports: Vec<(String, u16)> = Vec::new();
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices(':') {
            let digits: String = text[i + 1..].chars().take_while(char::is_ascii_digit).collect();
            // A port follows a host (`127.0.0.1:8080`, `host:6379`), not a JSON key (`"token":2885`).
            let before = i.checked_sub(1).map_or(b' ', |j| bytes[j]);
            let after = bytes.get(i + 1 + digits.len()).copied().unwrap_or(b' ');
            let port = (4..=5).contains(&digits.len()) && before.is_ascii_alphanumeric();
            if port && !after.is_ascii_alphanumeric() && after != b'.' && !ports.iter().any(|(p, _)| *p == digits) {
                let port = match (&redis, digits.as_str()) {
                    (Some(r), "6379") => r.port,
                    _ => free_port(),
                };
                ports.push((digits, port));
            }
        }
        let shm_name = format!("readme-{}-{}", std::process::id(), free_port());
        Place { ports, _redis: redis, shm_name }
    }

    /// `cmd` with this block's ports, hosts and names.
    fn apply(&self, cmd: &str) -> String {
        let mut out = cmd.to_string();
        for n in 1..=254 {
            out = out.replace(&format!("10.0.0.{n}:"), "127.0.0.1:");
        }
        for (from, to) in &self.ports {
            // `HOST:PORT` and `nc HOST PORT`.
            out = replace_number(&out, &format!(":{from}"), &format!(":{to}"));
            out = replace_number(&out, &format!(" {from}"), &format!(" {to}"));
        }
        let words: Vec<&str> = out.split(' ').collect();
        words.iter().map(|w| if *w == "demo" { self.shm_name.as_str() } else { w }).collect::<Vec<_>>().join(" ")
    }
}

/// `s` with `from` (ending in digits) replaced where no digit follows it.
fn replace_number(s: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let after = rest[i + from.len()..].chars().next();
        out.push_str(&rest[..i]);
        out.push_str(if after.is_some_and(|c| c.is_ascii_digit()) { from } else { to });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// Where the test runs commands: a scratch directory, `tickcast` on PATH.
struct Shell {
    scratch: Scratch,
    bin: PathBuf,
    repo: PathBuf,
}

impl Shell {
    fn new() -> Shell {
        let scratch = Scratch::new("readme");
        let bin = scratch.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tickcast"), bin.join("tickcast")).unwrap();
        Shell { scratch, bin, repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")) }
    }

    /// The built `shm_reader` example (built here if this run did not build examples).
    fn example(&self, name: &str) -> PathBuf {
        let exe = Path::new(env!("CARGO_BIN_EXE_tickcast")).parent().unwrap().join("examples").join(name);
        if !exe.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo).args(["build", "--quiet", "--example", name]).current_dir(&self.repo).status();
            assert!(ok.is_ok_and(|s| s.success()), "building example {name}");
        }
        exe
    }

    /// `cmd` for bash: the cargo forms of the README replaced by the built
    /// binaries, repository paths made absolute.
    fn resolve(&self, cmd: &str) -> String {
        let cmd = if let Some(rest) = cmd.strip_prefix("cargo run --release --example ") {
            let (name, args) = rest.split_once(" -- ").unwrap_or((rest, ""));
            format!("{} {args}", self.example(name.trim()).display())
        } else if let Some(rest) = cmd.strip_prefix("cargo run --release --") {
            format!("tickcast{rest}")
        } else if cmd == "cargo run --release" {
            "tickcast".to_string()
        } else {
            cmd.to_string()
        };
        cmd.replace(" clients/python/", &format!(" {}/clients/python/", self.repo.display()))
    }

    fn spawn(&self, script: &str) -> Child {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        Command::new("bash")
            .args(["-c", script])
            .current_dir(&self.scratch.dir)
            .env("PATH", path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash")
    }
}

/// A command being run: its lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(shell: &Shell, script: &str) -> Running {
        let mut child = shell.spawn(script);
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    /// Stop it as an operator would (SIGTERM: a server removes its region) and reap it.
    fn stop(mut self) {
        util::unsafe_free_kill(self.child.id(), "-TERM");
        let _ = self.child.wait();
    }
}

/// A server left running by a failed check is killed, not left behind.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start a server, check its banner and `/status`; the running server.
fn serve(shell: &Shell, words: Vec<String>, what: &str) -> Running {
    let mut words = words;
    let has = |w: &Vec<String>, f: &str| w.iter().any(|x| x == f || x.starts_with(&format!("{f}=")));
    if !has(&words, "--listen") && !config_has(shell, &words, "listen") {
        words.splice(1..1, ["--listen".to_string(), "127.0.0.1:0".to_string()]);
    }
    if !has(&words, "--openalgo-listen") {
        words.splice(1..1, ["--openalgo-listen".to_string(), "127.0.0.1:0".to_string()]);
    }
    eprintln!("{what}\n  serving: {}", quoted(&words));
    let mut server = Running::start(shell, &format!("exec {}", quoted(&words)));
    let banner = server.lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
        let err = server.stderr();
        panic!("{what}: no banner: {err}")
    });
    let addr = util::banner_addr(&banner.replace("0.0.0.0", "127.0.0.1"));
    if banner.contains("https://") {
        // As the README's next step does: curl, trusting the server's own
        // (self-signed) certificate.
        let cert = flag_value(&words, "--tls-cert").unwrap_or_else(|| panic!("{what}: TLS without --tls-cert?"));
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", cert])
            .arg(format!("https://localhost:{}/status", addr.port()))
            .current_dir(&shell.scratch.dir)
            .output()
            .unwrap_or_else(|e| panic!("{what}: curl (scripts/test installs it): {e}"));
        let code = String::from_utf8_lossy(&out.stdout);
        assert!(
            code == "200" || code == "401",
            "{what}: /status over https: {code} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return server;
    }
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /status HTTP/1.1\r\nHost: readme\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 401"), "{what}: /status: {reply}");
    server
}

/// Does the `--config` file among `words` set `key`?
fn config_has(shell: &Shell, words: &[String], key: &str) -> bool {
    flag_value(words, "--config").is_some_and(|f| {
        let text = std::fs::read_to_string(shell.scratch.dir.join(f)).unwrap_or_default();
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{key} ")) || l.trim_start().starts_with(&format!("{key}=")))
    })
}

/// Run a command that is not a server: it exits 0, or, if it `may_stream`
/// (a reader), prints a line and keeps running and is stopped.
fn run(shell: &Shell, script: &str, what: &str, may_stream: bool) {
    eprintln!("{what}\n  running: {script}");
    let mut cmd = Running::start(shell, script);
    let deadline = Instant::now() + COMMAND_LIMIT;
    let mut first_line: Option<Instant> = None;
    loop {
        if let Some(status) = cmd.child.try_wait().unwrap() {
            let err = cmd.stderr();
            assert!(status.success(), "{what}: {status}: {err}");
            return;
        }
        while let Ok(_line) = cmd.lines.try_recv() {
            first_line.get_or_insert_with(Instant::now);
        }
        if may_stream && first_line.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            cmd.stop(); // a stream, printing and still running
            return;
        }
        if Instant::now() > deadline {
            let pid = cmd.child.id();
            cmd.stop();
            panic!("{what}: neither finished nor printed within {COMMAND_LIMIT:?} (pid {pid})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Shrink a command's durations and loads (see the module docs).
fn shorten(words: &mut Vec<String>) {
    match words.get(1).map(String::as_str) {
        Some("record") => set_flag(words, "--secs", "1"),
        Some("bench") if words.iter().any(|w| w == "--spawn" || w == "--url") => {
            set_flag(words, "--secs", "0.3");
            set_flag(words, "--warmup", "0.1");
            set_flag(words, "--rate", "1000");
            if flag_value(words, "--clients") != Some("0") {
                set_flag(words, "--clients", "2");
            }
        }
        _ => {}
    }
}

#[test]
fn every_readme_command_runs_as_printed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shell = Shell::new();
    let mut skipped_used = vec![false; SKIPPED.len()];
    let mut ran = 0;
    for block in blocks(&readme) {
        let cmds: Vec<String> = match block.lang.as_str() {
            "sh" => commands(&block.text),
            // A configuration file: the server started with it.
            "toml" => vec![format!("tickcast --config readme-{}.toml", block.line)],
            _ => continue,
        };
        let skip = |text: &str| SKIPPED.iter().position(|(part, _)| text.contains(part));
        if block.lang == "toml" {
            if let Some(i) = skip(&block.text) {
                skipped_used[i] = true;
                continue;
            }
        }
        let place = Place::new(&block.text);
        if block.lang == "toml" {
            std::fs::write(shell.scratch.path(&format!("readme-{}.toml", block.line)), place.apply(&block.text))
                .unwrap();
        }
        // Servers started with `&`, and the last one started in the
        // foreground ("serve, then in another terminal…"): it runs until
        // the next server starts or the block ends.
        let mut background = Vec::new();
        let mut foreground: Option<Running> = None;
        for cmd in cmds {
            let what = format!("README line {}: {cmd}", block.line);
            if let Some(i) = skip(&cmd) {
                skipped_used[i] = true;
                continue;
            }
            if let Some((_, flags)) = NEEDS_SERVER.iter().find(|(part, _)| cmd.contains(part)) {
                let words = words(&place.apply(&format!("tickcast {flags}")));
                background.push(serve(&shell, words, &format!("{what} (its server)")));
            }
            let resolved = shell.resolve(&place.apply(&cmd));
            let (resolved, in_background) = match resolved.trim_end().strip_suffix('&') {
                Some(head) if !head.ends_with('&') => (head.trim_end().to_string(), true),
                _ => (resolved, false),
            };
            let simple = !resolved.contains(['|', '>', '<', ';', '$']);
            let mut w = words(&resolved);
            if simple && w.first().map(String::as_str) == Some("tickcast") {
                shorten(&mut w);
                if w.get(1).is_none_or(|a| a.starts_with('-')) {
                    if !in_background {
                        if let Some(previous) = foreground.take() {
                            previous.stop();
                        }
                    }
                    let server = serve(&shell, w, &what);
                    match in_background {
                        true => background.push(server),
                        false => foreground = Some(server),
                    }
                    ran += 1;
                    continue;
                }
                // Of tickcast's tools only `tail` streams; `bench` (whose
                // --find-max prints as it goes) and the others must finish,
                // or a spawned server would be left behind.
                let may_stream = w.get(1).map(String::as_str) == Some("tail");
                run(&shell, &quoted(&w), &what, may_stream);
            } else {
                run(&shell, &resolved, &what, true);
            }
            ran += 1;
        }
        for server in background.into_iter().chain(foreground) {
            server.stop();
        }
        drop(place);
    }
    assert!(ran >= 20, "only {ran} README commands ran");
    for ((part, why), used) in SKIPPED.iter().zip(skipped_used) {
        assert!(used, "SKIPPED lists `{part}` ({why}), which the README no longer has");
    }
}

/// The test can fail: a README command with a flag the binary rejects is caught.
#[test]
fn a_readme_command_with_a_bad_flag_is_caught() {
    let shell = Shell::new();
    let bad = std::panic::catch_unwind(|| {
        run(&shell, &quoted(&words("tickcast bench --spawn --scenario hft --no-such-flag")), "bad bench flag", false)
    });
    assert!(bad.is_err(), "a rejected flag fails the command");
    let bad = std::panic::catch_unwind(|| serve(&shell, words("tickcast --idle sometimes"), "bad server flag"));
    assert!(bad.is_err(), "a server that refuses to start fails");
    let (lines, cmds) = (blocks("text\n```sh\na \\\n  b # c\n'#x' d\n```\n"), commands("a \\\n  b # c\n'#x' d\n"));
    assert_eq!((lines.len(), lines[0].line), (1, 2));
    assert_eq!(cmds, ["a b", "'#x' d"]);
    assert_eq!(replace_number("a:80 b:8080 c 80", ":80", ":1"), "a:1 b:8080 c 80");
}
