# Verbatim from the Odin seed (000), "Python Client".
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
        print("‚úÖ Connected to Odin Streamer")
    
    def on_message(self, ws, message):
        data = json.loads(message)
        if data['type'] == 'market_data':
            print(f"üìà {data['symbol']}: ‚Çπ{data['data']['ltp']}")
    
    def on_close(self, ws, close_status_code, close_msg):
        print("üîå Connection closed, reconnecting...")
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
