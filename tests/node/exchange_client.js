// The seed's own client flow for exchange streams (seed 004, "Client
// Integration"): the `ws` package, `new WebSocket(url)`, subscribe in
// `onopen`, `JSON.parse` in `onmessage`. Run by tests/exchange_streams.rs:
//
//     node tests/node/exchange_client.js ws://127.0.0.1:PORT
//
// Exits 0 after printing OK, or 1 with the reason.
'use strict';

const WebSocket = require('ws');

const url = process.argv[2];
const market = 'RELIANCE';
const want = ['trade', 'depth', 'ticker'].map((s) => `${s}@${market}`);
const seen = new Set();
let step = 'subscribe';

function fail(why) {
  console.error(`FAIL (${step}): ${why}`);
  process.exit(1);
}

const timer = setTimeout(() => fail(`timed out; streams seen: ${[...seen].join(', ')}`), 30000);

const isDecimal = (v) => typeof v === 'string' && /^\d+(\.\d+)?$/.test(v);
const isCount = (v) => typeof v === 'string' && /^\d+$/.test(v);

// The seed's example messages, field by field (types as in the seed).
function checkFrame(msg) {
  const d = msg.data;
  if (typeof msg.stream !== 'string' || typeof d !== 'object') fail(`not a stream frame: ${JSON.stringify(msg)}`);
  const [kind, name] = msg.stream.split('@');
  if (name !== market || d.e !== kind) fail(`stream/e mismatch: ${JSON.stringify(msg)}`);
  if (kind === 'trade') {
    if (typeof d.t !== 'number' || typeof d.m !== 'boolean' || !isDecimal(d.p) || !isCount(d.q) || d.s !== market) {
      fail(`trade fields: ${JSON.stringify(d)}`);
    }
  } else if (kind === 'depth') {
    for (const side of [d.a, d.b]) {
      if (!Array.isArray(side) || side.length === 0) fail(`depth sides: ${JSON.stringify(d)}`);
      for (const lvl of side) {
        if (!Array.isArray(lvl) || lvl.length !== 2 || !isDecimal(lvl[0]) || !isCount(lvl[1])) {
          fail(`depth level: ${JSON.stringify(lvl)}`);
        }
      }
    }
  } else if (kind === 'ticker') {
    if (!isDecimal(d.c) || d.s !== market) fail(`ticker fields: ${JSON.stringify(d)}`);
  } else {
    fail(`unexpected stream ${msg.stream}`);
  }
}

const ws = new WebSocket(url);

ws.onopen = () => {
  ws.send(JSON.stringify({ method: 'SUBSCRIBE', params: want, id: 1 }));
};

ws.onerror = (e) => fail(`socket error: ${e.message}`);

ws.onclose = () => {
  if (step !== 'done') fail('closed by the server');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  if (!('id' in data)) {
    checkFrame(data);
    seen.add(data.stream);
    if (step === 'frames' && want.every((s) => seen.has(s))) {
      step = 'list';
      ws.send(JSON.stringify({ method: 'LIST_SUBSCRIPTIONS', id: 3 }));
    }
    return;
  }
  switch (data.id) {
    case 1:
      if (data.result !== null) fail(`SUBSCRIBE reply: ${JSON.stringify(data)}`);
      step = 'frames';
      break;
    case 3:
      if (JSON.stringify([...data.result].sort()) !== JSON.stringify([...want].sort())) {
        fail(`LIST_SUBSCRIPTIONS: ${JSON.stringify(data)}`);
      }
      step = 'bad request';
      ws.send('this is not JSON');
      ws.send(JSON.stringify({ method: 'SUBSCRIBE', params: [`kline@${market}`], id: 4 }));
      break;
    case null:
      if (step !== 'bad request' || !data.error || data.error.code !== 3) fail(`malformed reply: ${JSON.stringify(data)}`);
      break;
    case 4:
      if (!data.error || data.error.code !== 2 || !/kline/.test(data.error.msg)) fail(`kline reply: ${JSON.stringify(data)}`);
      step = 'unsubscribe';
      ws.send(JSON.stringify({ method: 'UNSUBSCRIBE', params: want, id: 5 }));
      break;
    case 5:
      if (data.result !== null) fail(`UNSUBSCRIBE reply: ${JSON.stringify(data)}`);
      step = 'final list';
      ws.send(JSON.stringify({ method: 'LIST_SUBSCRIPTIONS', id: 6 }));
      break;
    case 6:
      if (JSON.stringify(data.result) !== '[]') fail(`LIST after UNSUBSCRIBE: ${JSON.stringify(data)}`);
      step = 'done';
      clearTimeout(timer);
      console.log(`OK: ${[...seen].sort().join(', ')}`);
      ws.close();
      break;
    default:
      fail(`unexpected reply ${JSON.stringify(data)}`);
  }
};
