#!/usr/bin/env python3
"""A non-Rust client for the tickcast native protocol.

Usage: python3 tests/python/check_native.py ws://127.0.0.1:PORT
       python3 tests/python/check_native.py wss://localhost:PORT   (trusts
       SSL_CERT_FILE's CA, as Python's ssl module does)

Speaks the JSON protocol on /stream and decodes the binary frames of
/stream?format=rkyv with nothing but `struct`, following
docs/rkyv-layout.md. Exits 0 with a short summary when everything checks
out; prints a clear message and exits 1 on the first failure.

Needs only the standard library and the `websocket-client` package.
"""

import json
import struct
import sys
import time
import urllib.request

import websocket

TIMEOUT_S = 10
RELIANCE, TCS, INFY = 2885, 11536, 1594
RELIANCE_TICK = 5  # 0.05 at price_decimals 2

# docs/rkyv-layout.md
HEADER = struct.Struct("<IBBBBQQq")  # 32 bytes
QUOTE = struct.Struct("<IBBBBQQq" "IIIIQqqqqqqQ")  # 112 bytes
LEVEL = struct.Struct("<qII")  # 16 bytes
DEPTH_LEVELS = 5
BIDS_AT, ASKS_AT = 112, 192
SIZES = {1: 32, 2: 112, 3: 272}
SNAPSHOT, CONFLATED = 0x01, 0x02
OP_TEXT, OP_BINARY = websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY


class CheckFailed(Exception):
    pass


def wait_warm(base):
    """Poll /status until the simulator has published enough ticks to have
    touched every instrument (what a snapshot needs), instead of a fixed pause."""
    scheme = "https://" if base.startswith("wss://") else "http://"
    url = scheme + base.split("://", 1)[1].rstrip("/") + "/status"
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            ticks = json.load(r)["feeds"][0]["ticks"]
        if ticks > 2000:
            return
        check(time.monotonic() < deadline, f"the simulator published only {ticks} ticks in {TIMEOUT_S}s")
        time.sleep(0.05)


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def connect(url):
    try:
        ws = websocket.create_connection(url, timeout=TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - report any connect failure clearly
        raise CheckFailed(f"connect {url}: {e!r}") from e
    ws.settimeout(TIMEOUT_S)
    return ws


def recv(ws, what):
    """Next data message as (opcode, bytes); ping/pong are handled by the library."""
    try:
        op, data = ws.recv_data()
    except websocket.WebSocketTimeoutException as e:
        raise CheckFailed(f"timed out after {TIMEOUT_S}s waiting for {what}") from e
    except websocket.WebSocketConnectionClosedException as e:
        raise CheckFailed(f"connection closed while waiting for {what}") from e
    if op == websocket.ABNF.OPCODE_CLOSE:
        raise CheckFailed(f"server closed the connection while waiting for {what}: {data!r}")
    if isinstance(data, str):
        data = data.encode()
    return op, data


def parse_text(data, what):
    try:
        v = json.loads(data)
    except ValueError as e:
        raise CheckFailed(f"{what}: text frame is not JSON: {data[:200]!r}") from e
    check(isinstance(v, dict) and "type" in v, f"{what}: JSON without a `type`: {v}")
    return v


def recv_json(ws, what):
    op, data = recv(ws, what)
    check(op == OP_TEXT, f"expected a text frame for {what}, got opcode {op}")
    return parse_text(data, what)


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_welcome(w, fmt):
    check(w.get("type") == "welcome", f"first message is not a welcome: {w}")
    check(isinstance(w.get("client_id"), str) and w["client_id"], f"welcome.client_id: {w}")
    check(isinstance(w.get("server"), str) and w["server"].startswith("tickcast"), f"welcome.server: {w}")
    check(w.get("format") == fmt, f"welcome.format should be {fmt!r}: {w}")
    check(isinstance(w.get("market_open"), bool), f"welcome.market_open should be a boolean: {w}")


def check_sub_response(r, req_id, tokens, mode):
    check(r.get("type") == "subscription_response", f"expected subscription_response: {r}")
    check(r.get("id") == req_id, f"subscription_response id should be {req_id}: {r}")
    check(r.get("status") == "success", f"subscription status: {r}")
    data = r.get("data") or {}
    check(data.get("action") == "subscribe", f"data.action: {r}")
    subs = data.get("subscribed")
    check(isinstance(subs, list) and len(subs) == len(tokens), f"expected {len(tokens)} entries in data.subscribed: {r}")
    check(sorted(s.get("token") for s in subs) == sorted(tokens), f"subscribed tokens: {r}")
    for s in subs:
        check(s.get("mode") == mode, f"subscribed mode should be {mode!r}: {s}")
        check(isinstance(s.get("symbol"), str) and s.get("exchange") == "NSE", f"subscribed entry: {s}")
    check(data.get("rejected") == [], f"nothing should be rejected: {r}")


class JsonStream:
    """Tracks market_data frames per token: snapshot-first, strictly increasing seq."""

    def __init__(self):
        self.last_seq = {}
        self.count = {}
        self.total = 0
        self.snapshots = 0

    def take(self, m):
        token, seq = m.get("token"), m.get("seq")
        check(isinstance(token, int) and isinstance(seq, int), f"market_data token/seq: {m}")
        check(m.get("mode") in (1, 2, 3), f"market_data mode: {m}")
        check(isinstance(m.get("ts"), int) and m["ts"] > 0, f"market_data ts: {m}")
        if token not in self.last_seq:
            check(m.get("snapshot") is True, f"first frame for token {token} should carry \"snapshot\": true: {m}")
            self.snapshots += 1
        else:
            check("snapshot" not in m, f"only the first frame for token {token} is a snapshot: {m}")
            prev = self.last_seq[token]
            check(seq > prev, f"seq for token {token} went from {prev} to {seq}: {m}")
        self.last_seq[token] = seq
        self.count[token] = self.count.get(token, 0) + 1
        self.total += 1
        data = m.get("data")
        check(isinstance(data, dict) and is_number(data.get("ltp")) and data["ltp"] > 0, f"data.ltp: {m}")
        if m["mode"] >= 2:
            for k in ("bid", "ask", "volume", "open", "high", "low", "close", "ltq", "bid_qty", "ask_qty", "oi"):
                check(is_number(data.get(k)), f"data.{k} should be a number: {m}")
            check(data["bid"] < data["ask"], f"bid < ask: {m}")
            check(data["low"] <= data["ltp"] <= data["high"], f"low <= ltp <= high: {m}")


def check_json(base):
    url = base + "/stream"
    ws = connect(url)
    try:
        check_welcome(recv_json(ws, "welcome"), "json")
        # Every instrument has a cached value to send as the snapshot.
        wait_warm(base)

        stream = JsonStream()
        tokens = [RELIANCE, TCS]
        ws.send(json.dumps({"action": "subscribe", "tokens": tokens, "mode": "quote", "id": 1}))
        # The snapshots travel on the data lane and may arrive before or after the reply.
        while True:
            m = recv_json(ws, "subscription_response id 1")
            if m["type"] == "market_data":
                stream.take(m)
            elif m["type"] == "subscription_response":
                check_sub_response(m, 1, tokens, "quote")
                break
            elif m["type"] == "error":
                raise CheckFailed(f"subscribe failed: {m}")

        deadline = time.monotonic() + TIMEOUT_S
        while stream.total < 20 or any(stream.count.get(t, 0) < 2 for t in tokens):
            check(time.monotonic() < deadline, f"only {stream.total} market_data frames ({stream.count}) in {TIMEOUT_S}s")
            m = recv_json(ws, "market_data")
            if m["type"] == "market_data":
                check(m["token"] in tokens, f"data for a token not subscribed: {m}")
                check(m["mode"] == 2, f"quote subscription should get mode 2: {m}")
                stream.take(m)
            elif m["type"] == "error":
                raise CheckFailed(f"unexpected error: {m}")
        check(stream.snapshots == 2, f"expected one snapshot per token, got {stream.snapshots}")
        quote_frames = stream.total

        # Subscribe by symbol: the default mode is ltp.
        ws.send(json.dumps({"action": "subscribe", "symbols": ["NSE:INFY"], "id": 2}))
        got_reply = infy_frames = 0
        deadline = time.monotonic() + TIMEOUT_S
        while not got_reply or infy_frames < 2:
            check(time.monotonic() < deadline, f"no INFY data within {TIMEOUT_S}s (reply seen: {bool(got_reply)})")
            m = recv_json(ws, "INFY data")
            if m["type"] == "subscription_response":
                check_sub_response(m, 2, [INFY], "ltp")
                check(m["data"]["subscribed"][0]["symbol"] == "INFY", f"symbol: {m}")
                check(m["data"].get("total_subscribed") == 3, f"total_subscribed should be 3: {m}")
                got_reply = 1
            elif m["type"] == "market_data":
                stream.take(m)
                if m["token"] == INFY:
                    check(m["symbol"] == "INFY" and m["exchange"] == "NSE", f"INFY frame: {m}")
                    check(m["mode"] == 1 and set(m["data"]) == {"ltp"}, f"ltp-mode frame should only carry ltp: {m}")
                    infy_frames += 1
            elif m["type"] == "error":
                raise CheckFailed(f"unexpected error: {m}")

        # Malformed JSON: an error frame, and the connection stays usable.
        ws.send('{"action": "subscribe", "tokens": [2885,')
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            check(time.monotonic() < deadline, "no error frame for malformed JSON")
            m = recv_json(ws, "error for malformed JSON")
            if m["type"] == "error":
                check(m.get("code") == "bad_request", f"malformed JSON should give code bad_request: {m}")
                check(isinstance(m.get("message"), str) and m["message"], f"error.message: {m}")
                check("id" not in m, f"an unparseable request has no id to echo: {m}")
                break
            if m["type"] == "market_data":
                stream.take(m)

        ws.send(json.dumps({"action": "ping", "id": 3}))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            check(time.monotonic() < deadline, "no pong after the malformed request")
            m = recv_json(ws, "pong id 3")
            if m["type"] == "pong":
                check(m.get("id") == 3, f"pong id should be 3: {m}")
                check(isinstance(m.get("ts"), int), f"pong.ts: {m}")
                break
            if m["type"] == "market_data":
                stream.take(m)
            elif m["type"] == "error":
                raise CheckFailed(f"unexpected error: {m}")
        return f"json: {quote_frames} quote frames for {tokens}, {infy_frames}+ INFY ltp frames, {stream.total} total; bad_request + pong ok"
    finally:
        ws.close()


def decode(frame):
    """Decode one binary market_data message per docs/rkyv-layout.md."""
    check(len(frame) >= 32, f"binary frame of {len(frame)} bytes is shorter than the 32-byte header")
    token, mode, flags, dec, version, seq, ts_ns, ltp = HEADER.unpack_from(frame, 0)
    check(version == 1, f"version byte should be 1, got {version}")
    check(mode in SIZES, f"mode byte {mode} is not 1, 2 or 3")
    check(len(frame) == SIZES[mode], f"mode {mode} frame should be {SIZES[mode]} bytes, got {len(frame)}")
    check(flags & ~(SNAPSHOT | CONFLATED) == 0, f"unknown flag bits {flags:#04x}")
    out = {"token": token, "mode": mode, "flags": flags, "price_decimals": dec, "seq": seq, "ts_ns": ts_ns, "ltp": ltp}
    if mode >= 2:
        f = QUOTE.unpack_from(frame, 0)
        out.update(zip(("ltq", "bid_qty", "ask_qty", "depth_levels", "volume", "bid", "ask", "open", "high", "low", "close", "oi"), f[8:]))
    if mode == 3:
        out["bids"] = [LEVEL.unpack_from(frame, BIDS_AT + 16 * i) for i in range(DEPTH_LEVELS)]
        out["asks"] = [LEVEL.unpack_from(frame, ASKS_AT + 16 * i) for i in range(DEPTH_LEVELS)]
    return out


def check_depth(d, now_ns):
    check(d["token"] == RELIANCE, f"depth frame for token {d['token']}, expected {RELIANCE}")
    check(d["price_decimals"] == 2, f"price_decimals should be 2: {d}")
    check(d["depth_levels"] == DEPTH_LEVELS, f"depth_levels should be {DEPTH_LEVELS}: {d}")
    check(abs(now_ns - d["ts_ns"]) < 60 * 10**9, f"ts_ns {d['ts_ns']} is not near now ({now_ns}): byte order?")
    ltp, bids, asks = d["ltp"], d["bids"], d["asks"]
    check(ltp > 0 and ltp % RELIANCE_TICK == 0, f"ltp {ltp} should be a positive multiple of the tick size")
    check(1000_00 <= ltp <= 2000_00, f"RELIANCE ltp {ltp / 100} is not a believable price (around 1485.00)")
    check(bids[0][0] < asks[0][0], f"best bid {bids[0][0]} should be below best ask {asks[0][0]}")
    check(bids[0][0] <= ltp + RELIANCE_TICK, f"best bid {bids[0][0]} above ltp {ltp} + tick")
    check(asks[0][0] >= ltp - RELIANCE_TICK, f"best ask {asks[0][0]} below ltp {ltp} - tick")
    check(all(bids[i][0] > bids[i + 1][0] for i in range(DEPTH_LEVELS - 1)), f"bid prices should descend: {bids}")
    check(all(asks[i][0] < asks[i + 1][0] for i in range(DEPTH_LEVELS - 1)), f"ask prices should ascend: {asks}")
    check(all(q > 0 and o > 0 for _, q, o in bids + asks), f"levels should have qty and orders: {bids} {asks}")
    check((d["bid"], d["ask"]) == (bids[0][0], asks[0][0]), f"bid/ask should equal the top of book: {d}")
    check((d["bid_qty"], d["ask_qty"]) == (bids[0][1], asks[0][1]), f"bid_qty/ask_qty should equal the top of book: {d}")
    check(d["low"] <= ltp <= d["high"], f"low <= ltp <= high: {d}")
    check(d["volume"] > 0 and d["ltq"] > 0, f"volume/ltq: {d}")


def check_rkyv(base):
    url = base + "/stream?format=rkyv"
    ws = connect(url)
    try:
        check_welcome(recv_json(ws, "welcome"), "rkyv")
        wait_warm(base)
        ws.send(json.dumps({"action": "subscribe", "tokens": [RELIANCE], "mode": "depth", "id": 1}))
        frames, last_seq, got_reply = [], None, False
        deadline = time.monotonic() + TIMEOUT_S
        while not got_reply or len(frames) < 10:
            check(time.monotonic() < deadline, f"only {len(frames)} depth frames in {TIMEOUT_S}s (reply seen: {got_reply})")
            op, data = recv(ws, "depth frames")
            if op == OP_TEXT:
                m = parse_text(data, "rkyv control message")
                check(m["type"] != "market_data", f"market_data must be binary on an rkyv connection: {m}")
                check(m["type"] != "error", f"unexpected error: {m}")
                if m["type"] == "subscription_response":
                    check_sub_response(m, 1, [RELIANCE], "depth")
                    got_reply = True
                continue
            check(op == OP_BINARY, f"unexpected opcode {op}")
            check(len(data) == 272, f"depth frame should be 272 bytes, got {len(data)}")
            d = decode(data)
            check(d["mode"] == 3, f"mode byte should be 3, got {d['mode']}")
            check_depth(d, time.time_ns())
            if last_seq is None:
                check(d["flags"] & SNAPSHOT, f"first frame should have the snapshot flag: flags={d['flags']:#04x}")
            else:
                check(not d["flags"] & SNAPSHOT, f"only the first frame is a snapshot: seq {d['seq']}")
                check(d["seq"] > last_seq, f"seq went from {last_seq} to {d['seq']}")
            last_seq = d["seq"]
            frames.append(d)

        # A second token in ltp mode: 32-byte header-only frames.
        ws.send(json.dumps({"action": "subscribe", "tokens": [TCS], "mode": "ltp", "id": 2}))
        ltp_frames, got_reply, tcs_seq = 0, False, None
        deadline = time.monotonic() + TIMEOUT_S
        while not got_reply or ltp_frames < 3:
            check(time.monotonic() < deadline, f"only {ltp_frames} TCS ltp frames in {TIMEOUT_S}s (reply seen: {got_reply})")
            op, data = recv(ws, "ltp frames")
            if op == OP_TEXT:
                m = parse_text(data, "rkyv control message")
                check(m["type"] not in ("market_data", "error"), f"unexpected text message: {m}")
                if m["type"] == "subscription_response":
                    check_sub_response(m, 2, [TCS], "ltp")
                    got_reply = True
                continue
            check(op == OP_BINARY, f"unexpected opcode {op}")
            d = decode(data)
            if d["token"] == RELIANCE:
                check(d["mode"] == 3 and d["seq"] > last_seq, f"RELIANCE depth stream continues: {d}")
                check_depth(d, time.time_ns())
                last_seq = d["seq"]
                frames.append(d)
                continue
            check(d["token"] == TCS, f"frame for unsubscribed token {d['token']}")
            check(len(data) == 32 and d["mode"] == 1, f"ltp frame should be 32 bytes with mode 1: {len(data)} bytes, {d}")
            check(d["price_decimals"] == 2 and d["ltp"] > 0 and d["ltp"] % 5 == 0, f"TCS ltp frame: {d}")
            check(2000_00 <= d["ltp"] <= 5000_00, f"TCS ltp {d['ltp'] / 100} is not a believable price (around 3250.00)")
            if tcs_seq is None:
                check(d["flags"] & SNAPSHOT, f"first TCS frame should have the snapshot flag: {d}")
            else:
                check(d["seq"] > tcs_seq, f"TCS seq went from {tcs_seq} to {d['seq']}")
            tcs_seq = d["seq"]
            ltp_frames += 1
        top = frames[-1]
        return (f"rkyv: {len(frames)} depth frames (272 B) for {RELIANCE}, last seq {top['seq']} "
                f"ltp {top['ltp'] / 100:.2f} bid {top['bids'][0][0] / 100:.2f} ask {top['asks'][0][0] / 100:.2f}; "
                f"{ltp_frames} ltp frames (32 B) for {TCS}")
    finally:
        ws.close()


def main(argv):
    if len(argv) != 2 or not argv[1].startswith(("ws://", "wss://")):
        print(f"usage: {argv[0]} ws://HOST:PORT | wss://HOST:PORT", file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    try:
        lines = [check_json(base), check_rkyv(base)]
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
