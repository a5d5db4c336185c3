#!/usr/bin/env python3
"""The official OpenAlgo Python SDK against tickcast's OpenAlgo listener.

Usage: python3 tests/python/openalgo_sdk.py ws://127.0.0.1:PORT GOOD_KEY BAD_KEY

Uses the SDK exactly as its documentation does (`api(...)`, `connect()`,
`subscribe_ltp/quote/depth`, `get_ltp/quotes/depth`, `unsubscribe_ltp`,
`disconnect()`), against a server fed by the simulator and started with an
auth file that holds GOOD_KEY. BAD_KEY must be refused: `connect()` is
False. Exits 0 and prints OK when everything checks out; prints what went
wrong and exits 1 otherwise.

Needs the `openalgo` package (pip install openalgo).
"""

import sys
import threading
import time

from openalgo import api

TIMEOUT_S = 20
RELIANCE = [{"exchange": "NSE", "symbol": "RELIANCE"}]


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def wait_for(what, pred):
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    fail(f"timed out waiting for {what}")


class Seen:
    """Callback payloads, per kind, from the SDK's websocket thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = {"ltp": [], "quote": [], "depth": []}

    def cb(self, kind):
        def record(data):
            with self.lock:
                self.items[kind].append(data)
        return record

    def count(self, kind):
        with self.lock:
            return len(self.items[kind])

    def last(self, kind):
        with self.lock:
            return self.items[kind][-1]


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    ws_url, good_key, bad_key = sys.argv[1:4]

    # A wrong key: the server refuses it, so connect() gives up (False).
    bad = api(api_key=bad_key, host="http://127.0.0.1:5000", ws_url=ws_url)
    if bad.connect() is not False:
        fail("connect() with a wrong API key did not return False")
    bad.disconnect()
    print("wrong key refused: connect() -> False", flush=True)

    client = api(api_key=good_key, host="http://127.0.0.1:5000", ws_url=ws_url)
    if client.connect() is not True:
        fail("connect() with the right API key did not return True")
    print("connected and authenticated", flush=True)
    seen = Seen()

    if not client.subscribe_ltp(RELIANCE, on_data_received=seen.cb("ltp")):
        fail("subscribe_ltp returned False")
    wait_for("two LTP callbacks", lambda: seen.count("ltp") >= 2)
    tick = seen.last("ltp")
    if tick.get("mode") != 1 or (tick.get("symbol"), tick.get("exchange")) != ("RELIANCE", "NSE"):
        fail(f"LTP callback payload: {tick}")
    ltp = client.get_ltp()
    price = ltp.get("ltp", {}).get("NSE", {}).get("RELIANCE", {}).get("ltp")
    if not isinstance(price, (int, float)) or price <= 0:
        fail(f"get_ltp() has no price for NSE RELIANCE: {ltp}")
    print(f"get_ltp: NSE RELIANCE {price}", flush=True)

    if not client.subscribe_quote(RELIANCE, on_data_received=seen.cb("quote")):
        fail("subscribe_quote returned False")
    wait_for("a quote callback", lambda: seen.count("quote") >= 1)
    quotes = client.get_quotes()
    q = quotes.get("quote", {}).get("NSE", {}).get("RELIANCE")
    if not q:
        fail(f"get_quotes() has no NSE RELIANCE: {quotes}")
    for field in ("open", "high", "low", "close", "ltp", "volume", "last_trade_quantity", "change", "change_percent"):
        if not isinstance(q.get(field), (int, float)):
            fail(f"quote field {field} missing or not a number: {q}")
    if not (q["low"] <= q["ltp"] <= q["high"] and q["open"] > 0 and q["volume"] > 0):
        fail(f"implausible quote: {q}")
    print(f"get_quotes: NSE RELIANCE ltp {q['ltp']} volume {q['volume']}", flush=True)

    # LTP keeps coming while the quote is on as well.
    before = seen.count("ltp")
    wait_for("LTP callbacks alongside quotes", lambda: seen.count("ltp") > before)

    if not client.subscribe_depth(RELIANCE, on_data_received=seen.cb("depth")):
        fail("subscribe_depth returned False")
    wait_for("a depth callback", lambda: seen.count("depth") >= 1)
    depth = client.get_depth()
    d = depth.get("depth", {}).get("NSE", {}).get("RELIANCE")
    if not d or "buyBook" not in d or "sellBook" not in d:
        fail(f"get_depth() has no book for NSE RELIANCE: {depth}")
    best_bid, best_ask = d["buyBook"]["1"], d["sellBook"]["1"]
    if not (0 < best_bid["price"] < best_ask["price"] and best_bid["qty"] > 0 and best_ask["qty"] > 0):
        fail(f"implausible book: {d}")
    print(f"get_depth: NSE RELIANCE bid {best_bid['price']} ask {best_ask['price']}", flush=True)

    if not client.unsubscribe_ltp(RELIANCE):
        fail("unsubscribe_ltp returned False")
    # Depth goes on without LTP. LTP frames already on their way when the
    # unsubscribe landed come before the depth frames of later ticks, so
    # after a stretch of depth updates no LTP update may follow.
    settled = seen.count("depth") + 20
    wait_for("depth callbacks after unsubscribing LTP", lambda: seen.count("depth") >= settled)
    ltp_after, depth_after = seen.count("ltp"), seen.count("depth")
    wait_for("more depth callbacks", lambda: seen.count("depth") >= depth_after + 20)
    if seen.count("ltp") != ltp_after:
        fail(f"{seen.count('ltp') - ltp_after} LTP callbacks after unsubscribe_ltp")
    print("unsubscribe_ltp: LTP stopped, depth goes on", flush=True)

    client.disconnect()
    if client.connected or client.authenticated:
        fail("still connected after disconnect()")
    print(f"callbacks: ltp {seen.count('ltp')}, quote {seen.count('quote')}, depth {seen.count('depth')}")
    print("OK", flush=True)


if __name__ == "__main__":
    main()
