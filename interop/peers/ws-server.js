#!/usr/bin/env node
// WebSocket echo server using the `ws` library, on 127.0.0.1, random port.
//   node ws-server.js [--count 1] [--timeout 15000]
// Prints the port on the first stdout line. Echoes text/binary messages
// (pings are answered by ws). Exits 0 after COUNT connections that sent at
// least one message have closed with code 1000/1005; exits 1 on timeout.
'use strict';
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
let count = 1, timeoutMs = 15000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--count') count = Number(args[++i]);
  else if (args[i] === '--timeout') timeoutMs = Number(args[++i]);
}

let done = 0;
const timer = setTimeout(() => {
  console.error(`ws-server: FAIL: timeout after ${timeoutMs} ms, ${done}/${count} connections completed`);
  process.exit(1);
}, timeoutMs);

const wss = new WebSocketServer({
  host: '127.0.0.1', port: 0,
  handleProtocols: (protocols) => (protocols.has('echo') ? 'echo' : false),
});
wss.on('listening', () => console.log(String(wss.address().port)));
wss.on('error', (e) => { console.error(`ws-server: FAIL: ${e.message}`); process.exit(1); });
wss.on('connection', (ws, req) => {
  let msgs = 0;
  console.error(`ws-server: connection from ${req.socket.remoteAddress} (${req.headers['user-agent'] || 'no user-agent'}) subprotocol ${JSON.stringify(ws.protocol)}`);
  ws.on('message', (data, isBinary) => { msgs++; ws.send(data, { binary: isBinary }); });
  ws.on('error', (e) => console.error(`ws-server: connection error: ${e.message}`));
  ws.on('close', (code) => {
    console.error(`ws-server: connection closed, code ${code}, ${msgs} messages echoed`);
    if (msgs > 0 && (code === 1000 || code === 1005)) done++;
    if (done >= count) {
      clearTimeout(timer);
      wss.close();
      process.exit(0);
    }
  });
});
