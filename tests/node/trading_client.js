// The seed's JavaScript client (seed 001, "JavaScript Example"), copied
// verbatim: the class below is unchanged. Only the export at the end is
// added, so the test harness (run_trading_client.js) can load it; the
// seed's usage lines (a client for localhost:8000) are left out.

class TradingWebSocketClient {
    constructor(url) {
        this.url = url;
        this.ws = null;
        this.reconnectDelay = 5000;
        this.isConnected = false;
    }

    connect() {
        this.ws = new WebSocket(this.url);
        
        this.ws.onopen = () => {
            console.log('WebSocket connected');
            this.isConnected = true;
            this.startPingInterval();
        };
        
        this.ws.onmessage = (event) => {
            const data = JSON.parse(event.data);
            this.handleMessage(data);
        };
        
        this.ws.onclose = () => {
            console.log('WebSocket disconnected');
            this.isConnected = false;
            // Reconnect after delay
            setTimeout(() => this.connect(), this.reconnectDelay);
        };
        
        this.ws.onerror = (error) => {
            console.error('WebSocket error:', error);
        };
    }

    handleMessage(data) {
        switch (data.type) {
            case 'price_update':
                this.onPriceUpdate(data.symbols);
                break;
            case 'signal':
                this.onSignal(data);
                break;
            case 'trade_executed':
                this.onTradeExecuted(data);
                break;
            case 'portfolio_update':
                this.onPortfolioUpdate(data.data);
                break;
            case 'pong':
                console.log('Pong received');
                break;
            case 'error':
                console.error('Server error:', data.error);
                break;
        }
    }

    onPriceUpdate(symbols) {
        for (const [symbol, data] of Object.entries(symbols)) {
            console.log(`${symbol}: $${data.price} (${data.change_pct > 0 ? '+' : ''}${data.change_pct}%)`);
        }
    }

    onSignal(signal) {
        console.log(`Signal: ${signal.signal_type} ${signal.symbol} @ $${signal.price} (confidence: ${signal.confidence})`);
    }

    onTradeExecuted(trade) {
        console.log(`Trade: ${trade.side} ${trade.quantity} ${trade.symbol} @ $${trade.price}`);
    }

    onPortfolioUpdate(data) {
        console.log(`Portfolio: ${data.position_count} positions, P&L: $${data.total_pnl}`);
    }

    ping() {
        if (this.isConnected) {
            this.ws.send(JSON.stringify({ type: 'ping' }));
        }
    }

    startPingInterval() {
        setInterval(() => this.ping(), 30000); // Ping every 30 seconds
    }

    disconnect() {
        if (this.ws) {
            this.ws.close();
        }
    }
}

module.exports = TradingWebSocketClient;
