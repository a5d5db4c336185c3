//! A non-Rust client against the real server: `tests/python/check_native.py`
//! speaks the JSON protocol and decodes the binary frames with Python's
//! `struct` module, using nothing but `docs/rkyv-layout.md`.
//!
//! Needs `python3` with the `websocket-client` package
//! (`pip install websocket-client`). If either is missing the test fails;
//! it does not skip.

mod util;

use std::process::Command;

#[test]
fn python_client_speaks_json_and_decodes_rkyv_with_struct() {
    let server = util::Server::start(&["--feed", "sim:rate=5000"]);
    let deps = Command::new("python3")
        .args(["-c", "import websocket, struct, json; print(websocket.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test and could not be run: {e}"));
    assert!(
        deps.status.success(),
        "python3 cannot import the `websocket-client` package (pip install websocket-client):\n{}",
        String::from_utf8_lossy(&deps.stderr)
    );

    let url = format!("ws://{}", server.addr);
    let stdout = util::run_client("python3", "python/check_native.py", &[&url]);
    assert!(stdout.contains("OK"), "no success line from the Python client:\n{stdout}");
    println!("{stdout}");
}
