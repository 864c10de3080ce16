#!/usr/bin/env node
// WebSocket client check using the `ws` library.
//   node ws-client.js URL [--protocol echo] [--timeout 10000]
// Steps: open (optionally offering a subprotocol), text echo, 64 KiB random
// binary echo, ping -> pong, close 1000 and expect the server's close code 1000.
// Exit 0 and "ok ..." on stdout on success; exit 1 and a reason on stderr otherwise.
'use strict';
const crypto = require('crypto');
const WebSocket = require('ws');

const args = process.argv.slice(2);
let url = null, protocol = null, timeoutMs = 10000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--protocol') protocol = args[++i];
  else if (args[i] === '--timeout') timeoutMs = Number(args[++i]);
  else url = args[i];
}
if (!url) { console.error('usage: ws-client.js URL [--protocol P] [--timeout MS]'); process.exit(2); }

let step = 'connect';
function fail(msg) {
  console.error(`ws-client: FAIL at ${step}: ${msg}`);
  process.exit(1);
}
const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);

const ws = new WebSocket(url, protocol ? [protocol] : [], { handshakeTimeout: timeoutMs });
ws.on('unexpected-response', (req, res) => {
  let body = '';
  res.on('data', (d) => { body += d; });
  res.on('end', () => fail(`Unexpected server response: ${res.statusCode} (Upgrade: ${res.headers.upgrade || '-'}) body: ${body.slice(0, 200).replace(/\s+/g, ' ')}`));
  res.on('error', () => fail(`Unexpected server response: ${res.statusCode}`));
});
ws.on('error', (e) => fail(e.message));

function nextMessage() {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })));
}

ws.on('open', async () => {
  if (protocol && ws.protocol !== protocol) fail(`server selected subprotocol ${JSON.stringify(ws.protocol)}, wanted ${protocol}`);

  step = 'text echo';
  const text = 'hello ' + crypto.randomBytes(6).toString('hex');
  let p = nextMessage();
  ws.send(text);
  let m = await p;
  if (m.isBinary || m.data.toString() !== text) fail(`sent ${JSON.stringify(text)}, got ${m.isBinary ? 'binary' : 'text'} ${JSON.stringify(m.data.toString().slice(0, 80))}`);

  step = 'binary echo (64 KiB)';
  const bin = crypto.randomBytes(64 * 1024);
  p = nextMessage();
  ws.send(bin, { binary: true });
  m = await p;
  if (!m.isBinary) fail('echo came back as a text message');
  if (!Buffer.from(m.data).equals(bin)) fail(`payload differs (got ${m.data.length} bytes)`);

  step = 'ping/pong';
  const pingData = crypto.randomBytes(8);
  p = new Promise((resolve) => ws.once('pong', resolve));
  ws.ping(pingData);
  const pong = await p;
  if (!Buffer.from(pong).equals(pingData)) fail('pong payload differs from ping payload');

  step = 'close handshake';
  ws.once('close', (code, reason) => {
    clearTimeout(timer);
    if (code !== 1000) fail(`server close code ${code} (${reason}), want 1000`);
    console.log(`ok: text, 64KiB binary, ping/pong, close 1000 (subprotocol ${JSON.stringify(ws.protocol)})`);
    process.exit(0);
  });
  ws.close(1000, 'bye');
});
