// Harness for the seed's TradingWebSocketClient (trading_client.js, run
// unchanged): Node 20 has no WebSocket global, so the `ws` package stands
// in for the browser's. Only the logging is intercepted: console.log and
// console.error become JSON lines on stdout, and the subclass reports what
// each callback received before calling the seed's own (which logs).
//
//   node tests/node/run_trading_client.js ws://127.0.0.1:8080/ws
//
// Exits 0 once it has seen a price_update and a pong, 1 after 30 s.
'use strict';

global.WebSocket = require('ws');
const TradingWebSocketClient = require('./trading_client.js');

const url = process.argv[2];
if (!url) {
    process.stderr.write('usage: node run_trading_client.js ws://HOST:PORT/ws\n');
    process.exit(2);
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
console.log = (...args) => emit({ log: args.map(String).join(' ') });
const text = (a) => (a && typeof a === 'object' && a.message !== undefined ? a.message : String(a));
console.error = (...args) => emit({ error_log: args.map(text).join(' ') });

const seen = { price_update: false, pong: false };
const done = () => {
    if (seen.price_update && seen.pong) {
        emit({ done: true });
        process.exit(0);
    }
};

class Harness extends TradingWebSocketClient {
    onPriceUpdate(symbols) {
        emit({ event: 'price_update', symbols });
        super.onPriceUpdate(symbols);
        seen.price_update = true;
        done();
    }

    onSignal(signal) {
        emit({ event: 'signal', data: signal });
        super.onSignal(signal);
    }

    onTradeExecuted(trade) {
        emit({ event: 'trade_executed', data: trade });
        super.onTradeExecuted(trade);
    }

    onPortfolioUpdate(data) {
        emit({ event: 'portfolio_update', data });
        super.onPortfolioUpdate(data);
    }
}

// The seed logs 'Pong received' for a pong: that log line is the pong.
const log = console.log;
console.log = (...args) => {
    log(...args);
    if (args[0] === 'Pong received') {
        seen.pong = true;
        done();
    }
};

const client = new Harness(url);
client.connect();

// The seed pings every 30 s; ask once as soon as it is connected.
const pinger = setInterval(() => {
    if (client.isConnected) {
        client.ping();
        clearInterval(pinger);
    }
}, 50);

setTimeout(() => {
    emit({ timeout: true, seen });
    process.exit(1);
}, 30000);
