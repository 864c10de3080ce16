#!/usr/bin/env node
// An HTTP/2 server (prior knowledge, cleartext) with Node's http2 module
// that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and answers an extended
// CONNECT (RFC 8441) for echo/1 with 200, then echoes the stream and ends
// it after the client's END_STREAM. Other :protocol values get 501.
//   node h2-echo-server.js [--count N] [--timeout MS]
// Prints its port on stdout, then exits 0 after N streams (default 1) were
// echoed and ended cleanly; exit 1 and a reason on stderr otherwise.
'use strict';
const http2 = require('http2');

const args = process.argv.slice(2);
let count = 1, timeoutMs = 15000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--count') count = Number(args[++i]);
  else if (args[i] === '--timeout') timeoutMs = Number(args[++i]);
}
function fail(msg) {
  console.error(`h2-echo-server: FAIL: ${msg}`);
  process.exit(1);
}
setTimeout(() => fail(`timeout after ${timeoutMs} ms with ${count} streams to go`), timeoutMs).unref();

const server = http2.createServer({ settings: { enableConnectProtocol: true } });
server.on('stream', (stream, headers) => {
  if (headers[':method'] !== 'CONNECT' || !headers[':protocol']) {
    stream.respond({ ':status': 400 });
    stream.end('not an extended CONNECT\n');
    return;
  }
  if (headers[':protocol'] !== 'echo/1') {
    stream.respond({ ':status': 501 });
    stream.end(`protocol ${headers[':protocol']} not served\n`);
    return;
  }
  stream.respond({ ':status': 200 });
  stream.on('data', (d) => stream.write(d));
  stream.on('end', () => {
    stream.end();
    console.error(`echoed a stream for ${headers[':authority']}${headers[':path']}`);
    if (--count === 0) setTimeout(() => process.exit(0), 100);
  });
  stream.on('error', (e) => fail(e.message));
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
