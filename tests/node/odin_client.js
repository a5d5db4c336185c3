// The Odin seed's JavaScript client (seed 000, "JavaScript Client"), unchanged
// but for its hard-coded address, run under Node with the `ws` package by
// tests/odin.rs. Usage: node odin_client.js HOST:PORT
// Prints OK when it subscribed, got market data, and after the connection
// dropped its own reconnect (same client_id) got the subscriptions back.
global.WebSocket = require('ws');
const fs = require('fs');
const path = require('path');

const addr = process.argv[2];
const seed = fs.readFileSync(path.join(__dirname, 'odin_seed_client.js'), 'utf8').replace('localhost:8080', addr);
const lines = [];
const realLog = console.log;
console.log = (...args) => { lines.push(args.map(String).join(' ')); realLog(...args); };
const OdinStreamerClient = new Function(seed + '\nreturn OdinStreamerClient;')();

function waitFor(what, pred, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve) => {
        const tick = () => {
            if (pred(lines)) return resolve();
            if (Date.now() > deadline) {
                realLog(`FAIL: never saw ${what}`);
                process.exit(1);
            }
            setTimeout(tick, 50);
        };
        tick();
    });
}
const seen = (symbol, from = 0) => (ls) => ls.slice(from).some((l) => l.includes(` ${symbol}: `));

(async () => {
    const client = new OdinStreamerClient(`my_trading_app_${Date.now()}`);
    client.connect();
    await waitFor('the connection', (ls) => ls.some((l) => l.endsWith('Connected to Odin Streamer')));
    await waitFor('the welcome', (ls) => ls.some((l) => l.includes('Welcome: Connected to Odin Streamer Enhanced WebSocket')));
    client.subscribeToStocks(['RELIANCE', 'TCS']);
    await waitFor('RELIANCE data', seen('RELIANCE'));
    await waitFor('TCS data', seen('TCS'));
    client.subscribeToTokens(['1594']);
    await waitFor('INFY data', seen('INFY'));
    client.unsubscribeFromStocks(['TCS']);
    await waitFor('the unsubscribe reply', (ls) => ls.some((l) => l.includes('Subscription:')));
    // The connection drops; the seed client reconnects with the same client_id.
    client.ws.terminate();
    await waitFor('the reconnect', (ls) => ls.filter((l) => l.endsWith('Connected to Odin Streamer')).length >= 2);
    const mark = lines.length;
    await waitFor('RELIANCE after the reconnect', seen('RELIANCE', mark));
    await waitFor('INFY after the reconnect', seen('INFY', mark));
    realLog('OK');
    process.exit(0);
})();
