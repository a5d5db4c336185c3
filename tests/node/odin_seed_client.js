// Verbatim from the Odin seed (000), "JavaScript Client".
class OdinStreamerClient {
    constructor(clientId) {
        this.clientId = clientId;
        this.ws = null;
        this.subscriptions = new Set();
    }
    
    connect() {
        this.ws = new WebSocket(`ws://localhost:8080/enhanced-stream?client_id=${this.clientId}`);
        
        this.ws.onopen = () => {
            console.log('‚úÖ Connected to Odin Streamer');
        };
        
        this.ws.onmessage = (event) => {
            const data = JSON.parse(event.data);
            this.handleMessage(data);
        };
        
        this.ws.onclose = () => {
            console.log('üîå Connection closed, reconnecting...');
            setTimeout(() => this.connect(), 1000);
        };
    }
    
    // Add stocks without reconnection
    subscribeToStocks(stocks) {
        this.send({
            type: 'request',
            action: 'subscribe',
            stocks: stocks
        });
    }
    
    // Remove stocks without reconnection  
    unsubscribeFromStocks(stocks) {
        this.send({
            type: 'request',
            action: 'unsubscribe',
            stocks: stocks
        });
    }
    
    // Use tokens for fastest performance
    subscribeToTokens(tokens) {
        this.send({
            type: 'request',
            action: 'subscribe',
            tokens: tokens
        });
    }
    
    send(message) {
        if (this.ws.readyState === WebSocket.OPEN) {
            this.ws.send(JSON.stringify(message));
        }
    }
    
    handleMessage(data) {
        switch(data.type) {
            case 'welcome':
                console.log('üéâ Welcome:', data.data.message);
                break;
            case 'market_data':
                this.onMarketData(data);
                break;
            case 'subscription_response':
                console.log('üìä Subscription:', data.data);
                break;
        }
    }
    
    onMarketData(data) {
        // Handle live market data
        console.log(`üìà ${data.symbol}: ‚Çπ${data.data.ltp}`);
    }
}
