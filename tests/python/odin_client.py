"""The Odin seed's Python client (seed 000, "Python Client"), unchanged but
for its hard-coded address, run against tickcast by tests/odin.rs.

Usage: odin_client.py HOST:PORT
Prints OK when: the client connected, subscribed by symbol and by token,
received market data for them, and after the server dropped the connection
its own reconnect (same client_id) got the same subscriptions back.
"""
import builtins
import sys
import threading
import time

ADDR = sys.argv[1]

# The seed's class, verbatim from odin_seed_client.py; only its hard-coded
# localhost:8080 is pointed at the server under test.
import os.path
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "odin_seed_client.py"), encoding="utf-8") as f:
    SEED = f.read().replace("localhost:8080", ADDR)

lines = []
lock = threading.Lock()
real_print = builtins.print


def capture(*args, **kwargs):
    with lock:
        lines.append(" ".join(str(a) for a in args))
    real_print(*args, **kwargs, flush=True)


builtins.print = capture
namespace = {}
exec(SEED, namespace)
OdinStreamerClient = namespace["OdinStreamerClient"]


def wait_for(what, pred, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with lock:
            if pred(list(lines)):
                return
        time.sleep(0.05)
    real_print(f"FAIL: never saw {what}; output:\n" + "\n".join(lines), flush=True)
    sys.stdout.flush()
    import os
    os._exit(1)


def seen(symbol, after=0):
    return lambda ls: any(f" {symbol}: " in l for l in ls[after:])


client = OdinStreamerClient(f"python_trading_app_{time.time_ns()}")
client.connect()
wait_for("the connection", lambda ls: any(l.endswith("Connected to Odin Streamer") for l in ls))
client.subscribe_to_stocks(["RELIANCE", "TCS"])
wait_for("RELIANCE data", seen("RELIANCE"))
wait_for("TCS data", seen("TCS"))
client.subscribe_to_tokens(["1594"])
wait_for("INFY data (subscribed by token)", seen("INFY"))

# The connection drops (as a network blip would); the seed client reconnects
# by itself with the same client_id and must get its subscriptions back.
client.ws.sock.sock.shutdown(2)
wait_for("the reconnect", lambda ls: sum(l.endswith("Connected to Odin Streamer") for l in ls) >= 2)
with lock:
    mark = len(lines)
for symbol in ["RELIANCE", "TCS", "INFY"]:
    wait_for(f"{symbol} data after the reconnect", seen(symbol, mark))
real_print("OK", flush=True)
import os
os._exit(0)
