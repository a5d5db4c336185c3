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

# ---- seed code, verbatim (only localhost:8080 is replaced by ADDR) --------
SEED = '''
import websocket
import json
import threading

class OdinStreamerClient:
    def __init__(self, client_id):
        self.client_id = client_id
        self.ws = None
        self.subscriptions = set()
        
    def connect(self):
        url = f"ws://localhost:8080/enhanced-stream?client_id={self.client_id}"
        self.ws = websocket.WebSocketApp(url,
            on_open=self.on_open,
            on_message=self.on_message,
            on_close=self.on_close)
        
        # Run in background thread
        threading.Thread(target=self.ws.run_forever).start()
    
    def on_open(self, ws):
        print("\u2705 Connected to Odin Streamer")
    
    def on_message(self, ws, message):
        data = json.loads(message)
        if data['type'] == 'market_data':
            print(f"\U0001f4c8 {data['symbol']}: \u20b9{data['data']['ltp']}")
    
    def on_close(self, ws, close_status_code, close_msg):
        print("\U0001f50c Connection closed, reconnecting...")
        threading.Timer(1.0, self.connect).start()
    
    def subscribe_to_stocks(self, stocks):
        message = {
            "type": "request",
            "action": "subscribe", 
            "stocks": stocks
        }
        self.ws.send(json.dumps(message))
    
    def subscribe_to_tokens(self, tokens):
        message = {
            "type": "request",
            "action": "subscribe",
            "tokens": tokens
        }
        self.ws.send(json.dumps(message))
'''.replace("localhost:8080", ADDR)
# ---------------------------------------------------------------------------

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
    return lambda ls: any(l.startswith(f"\U0001f4c8 {symbol}: \u20b9") for l in ls[after:])


client = OdinStreamerClient(f"python_trading_app_{time.time_ns()}")
client.connect()
wait_for("the connection", lambda ls: any("Connected to Odin Streamer" in l for l in ls))
client.subscribe_to_stocks(["RELIANCE", "TCS"])
wait_for("RELIANCE data", seen("RELIANCE"))
wait_for("TCS data", seen("TCS"))
client.subscribe_to_tokens(["1594"])
wait_for("INFY data (subscribed by token)", seen("INFY"))

# The connection drops (as a network blip would); the seed client reconnects
# by itself with the same client_id and must get its subscriptions back.
client.ws.sock.sock.shutdown(2)
wait_for("the reconnect", lambda ls: sum("Connected to Odin Streamer" in l for l in ls) >= 2)
with lock:
    mark = len(lines)
for symbol in ["RELIANCE", "TCS", "INFY"]:
    wait_for(f"{symbol} data after the reconnect", seen(symbol, mark))
real_print("OK", flush=True)
import os
os._exit(0)
