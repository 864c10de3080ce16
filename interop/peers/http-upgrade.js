#!/usr/bin/env node
// Raw HTTP/1.1 upgrade with Node's http.request and the 'upgrade' event.
//   node http-upgrade.js URL [--protocol echo/1] [--timeout 10000]
// Sends "Connection: Upgrade" + "Upgrade: PROTOCOL", expects 101 with the same
// Upgrade token, writes random bytes (in two writes), checks the echo, then
// half-closes and expects the server to close.
'use strict';
const http = require('http');
const crypto = require('crypto');

const args = process.argv.slice(2);
let url = null, protocol = 'echo/1', timeoutMs = 10000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--protocol') protocol = args[++i];
  else if (args[i] === '--timeout') timeoutMs = Number(args[++i]);
  else url = args[i];
}
if (!url) { console.error('usage: http-upgrade.js URL [--protocol P] [--timeout MS]'); process.exit(2); }

let step = 'request';
function fail(msg) { console.error(`http-upgrade: FAIL at ${step}: ${msg}`); process.exit(1); }
const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);

const req = http.request(url, { headers: { Connection: 'Upgrade', Upgrade: protocol } });
req.on('error', (e) => fail(e.message));
req.on('response', (res) => {
  let body = '';
  res.on('data', (d) => { body += d; });
  res.on('end', () => fail(`no upgrade: HTTP ${res.statusCode} (Upgrade: ${res.headers.upgrade || '-'}) body: ${body.slice(0, 200).replace(/\s+/g, ' ')}`));
});
req.on('upgrade', (res, socket, head) => {
  step = '101 response';
  if (res.statusCode !== 101) fail(`status ${res.statusCode}`);
  const got = (res.headers.upgrade || '').toLowerCase();
  if (got !== protocol.toLowerCase()) fail(`Upgrade: ${JSON.stringify(res.headers.upgrade)}, want ${protocol}`);

  step = 'echo';
  const a = Buffer.from('hello ' + crypto.randomBytes(4).toString('hex') + '\n');
  const b = crypto.randomBytes(32 * 1024);
  const want = Buffer.concat([a, b]);
  let buf = Buffer.from(head);
  let ended = false;
  socket.on('error', (e) => fail(`socket error: ${e.message}`));
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length > want.length) fail(`got ${buf.length} bytes, more than the ${want.length} sent`);
    if (buf.length === want.length) {
      if (!buf.equals(want)) fail('echoed bytes differ from the bytes sent');
      step = 'half-close';
      socket.end(); // half-close: server should finish and close
    }
  });
  socket.on('end', () => {
    ended = true;
    if (buf.length !== want.length) fail(`connection ended after ${buf.length}/${want.length} bytes`);
    clearTimeout(timer);
    console.log(`ok: 101 Upgrade: ${res.headers.upgrade}, ${want.length} bytes echoed, server closed after half-close`);
    process.exit(0);
  });
  socket.write(a);
  setTimeout(() => { if (!ended) socket.write(b); }, 50);
});
req.end();
