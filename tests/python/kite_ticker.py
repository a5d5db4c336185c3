#!/usr/bin/env python3
"""The official Kite Connect client (`kiteconnect` on PyPI) against tickcast.

Usage:
  python3 tests/python/kite_ticker.py ROOT API_KEY ACCESS_TOKEN session
  python3 tests/python/kite_ticker.py ROOT API_KEY ACCESS_TOKEN refused

`session` uses KiteTicker as its documentation does: subscribe RELIANCE
(738561) and an index, set_mode full, then ltp, then unsubscribe. It prints
one line per phase, `TICK <phase> <json>`, with the newest tick of each
instrument as the client parsed it (datetimes as Unix seconds), checks that
unsubscribing stops RELIANCE while the index goes on (counted in index
ticks, not seconds), and prints OK.

`refused` connects with a key the server must refuse and checks that the
client reports the error (the handshake's 403). Prints OK.

Exits 1 with FAIL: … when something is wrong.
"""

import json
import os
import sys
import threading
import time
from datetime import datetime

from kiteconnect import KiteTicker
from twisted.internet import reactor

TIMEOUT_S = 20
RELIANCE = 738561
NIFTY = 26000 * 256 + 9  # the bundled master's NIFTY 50: NSE token 26000, segment 9 (indices)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    os._exit(1)  # the client's reactor thread may still run


def wait_for(what, pred):
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    fail(f"timed out waiting for {what}")


def plain(v):
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


class Ticks:
    """Ticks from the client's reactor thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, _ws, ticks):
        with self.lock:
            self.items.extend(ticks)

    def clear(self):
        with self.lock:
            self.items.clear()

    def newest(self, token, mode):
        with self.lock:
            for t in reversed(self.items):
                if t["instrument_token"] == token and t["mode"] == mode:
                    return t
        return None

    def count(self, token):
        with self.lock:
            return sum(1 for t in self.items if t["instrument_token"] == token)


def session(root, api_key, token):
    ticks = Ticks()
    errors = []
    connected = threading.Event()
    kws = KiteTicker(api_key, token, root=root)
    kws.on_ticks = ticks.add
    kws.on_error = lambda ws, code, reason: errors.append(f"{code} {reason}")
    kws.on_connect = lambda ws, response: (ws.subscribe([RELIANCE, NIFTY]), connected.set())
    kws.connect(threaded=True)
    wait_for("the connection", connected.is_set)

    def phase(name, mode, tokens):
        for tok in tokens:
            t = wait_for(f"a {mode} tick of {tok} ({name})", lambda: ticks.newest(tok, mode))
            print(f"TICK {name} {json.dumps(plain(t), sort_keys=True)}", flush=True)

    phase("subscribed", "quote", [RELIANCE, NIFTY])
    reactor.callFromThread(kws.set_mode, kws.MODE_FULL, [RELIANCE, NIFTY])
    phase("full", "full", [RELIANCE, NIFTY])
    reactor.callFromThread(kws.set_mode, kws.MODE_LTP, [RELIANCE])
    ticks.clear()
    phase("ltp", "ltp", [RELIANCE])
    # Unsubscribe, then lower the index to quote: the server takes requests
    # in order, so the first index quote after it proves the unsubscribe
    # was applied; the next ten index ticks (the feed sends both
    # instruments in every datagram) must come without RELIANCE.
    ticks.clear()
    reactor.callFromThread(kws.unsubscribe, [RELIANCE])
    reactor.callFromThread(kws.set_mode, kws.MODE_QUOTE, [NIFTY])
    wait_for("an index quote after the unsubscribe", lambda: ticks.newest(NIFTY, "quote"))
    ticks.clear()
    wait_for("ten more index ticks", lambda: ticks.count(NIFTY) >= 10)
    if ticks.count(RELIANCE):
        fail(f"{ticks.count(RELIANCE)} RELIANCE ticks after unsubscribe")
    if errors:
        fail(f"errors reported: {errors}")
    reactor.callFromThread(kws.close)
    print("OK", flush=True)


def refused(root, api_key, token):
    reports = []
    kws = KiteTicker(api_key, token, root=root, reconnect=False)
    kws.on_error = lambda ws, code, reason: reports.append(f"error {code} {reason}")
    kws.on_close = lambda ws, code, reason: reports.append(f"close {code} {reason}")
    kws.on_connect = lambda ws, response: reports.append("CONNECTED")
    kws.connect(threaded=True)
    wait_for("the client to report the refusal", lambda: "CONNECTED" in reports or "403" in "; ".join(reports))
    text = "; ".join(reports)
    print(f"REPORTED {text}", flush=True)
    if "CONNECTED" in reports or "403" not in text:
        fail(f"expected a 403 refusal, got: {text}")
    print("OK", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[4] not in ("session", "refused"):
        fail(__doc__)
    root, api_key, token, what = sys.argv[1:5]
    try:
        {"session": session, "refused": refused}[what](root, api_key, token)
    except Exception as e:  # noqa: BLE001 - report anything as a failure line
        fail(f"{type(e).__name__}: {e}")
    os._exit(0)  # without waiting for the client's reactor thread
