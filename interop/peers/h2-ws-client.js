#!/usr/bin/env node
// WebSocket over HTTP/2 (RFC 8441) with Node's own http2 client: an
// extended CONNECT with :protocol websocket, then RFC 6455 frames by hand.
//   node h2-ws-client.js URL [--protocol echo/1|websocket] [--timeout 10000]
// URL is http:// (HTTP/2 with prior knowledge) or https:// (ALPN h2; the
// certificate is not checked). It waits for the server's SETTINGS to carry
// ENABLE_CONNECT_PROTOCOL, expects :status 200 and, for websocket, no
// sec-websocket-accept; then echo checks a masked text frame (websocket) or
// raw bytes (any other protocol), half-closes, and expects the server to end
// the stream. Exit 0 and "ok ..." on stdout; exit 1 and a reason on stderr.
'use strict';
const http2 = require('http2');
const crypto = require('crypto');

const args = process.argv.slice(2);
let url = null, protocol = 'websocket', timeoutMs = 10000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--protocol') protocol = args[++i];
  else if (args[i] === '--timeout') timeoutMs = Number(args[++i]);
  else url = args[i];
}
if (!url) { console.error('usage: h2-ws-client.js URL [--protocol P] [--timeout MS]'); process.exit(2); }

let step = 'connect';
function fail(msg) {
  console.error(`h2-ws-client: FAIL at ${step}: ${msg}`);
  process.exit(1);
}
setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs).unref();

// A masked client frame: FIN + opcode, payload < 126 bytes.
function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

const session = http2.connect(url, { rejectUnauthorized: false });
session.on('error', (e) => fail(e.message));
session.once('remoteSettings', (settings) => {
  step = 'settings';
  if (!settings.enableConnectProtocol) fail('the server does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL');
  step = 'request';
  const u = new URL(url);
  const headers = {
    ':method': 'CONNECT',
    ':protocol': protocol,
    ':scheme': u.protocol.replace(':', ''),
    ':path': u.pathname + u.search,
    ':authority': u.host,
  };
  if (protocol === 'websocket') {
    headers['sec-websocket-version'] = '13';
    headers['sec-websocket-protocol'] = 'echo';
  }
  const stream = session.request(headers, { endStream: false });
  stream.on('error', (e) => fail(e.message));
  stream.on('response', (h) => {
    step = 'response';
    if (h[':status'] !== 200) fail(`:status ${h[':status']}, want 200`);
    if (protocol === 'websocket' && h['sec-websocket-accept']) fail('a sec-websocket-accept over HTTP/2');
    const token = 'tok' + crypto.randomBytes(6).toString('hex');
    const want = protocol === 'websocket'
      ? Buffer.concat([Buffer.from([0x81, token.length]), Buffer.from(token)])
      : Buffer.from(token);
    let got = Buffer.alloc(0);
    step = 'echo';
    stream.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (step === 'echo' && got.length >= want.length) {
        if (!got.subarray(0, want.length).equals(want)) fail(`echo ${JSON.stringify(got.toString('latin1'))}, want ${JSON.stringify(want.toString('latin1'))}`);
        step = 'close';
        if (protocol === 'websocket') stream.write(frame(0x8, Buffer.from([0x03, 0xe8])));
        stream.end();
      }
    });
    stream.on('end', () => {
      if (step !== 'close') fail(`stream ended before the echo (${got.length} bytes)`);
      console.log(`ok ${protocol} over HTTP/2: status 200, echo of ${token}`);
      session.close();
    });
    stream.write(protocol === 'websocket' ? frame(0x1, Buffer.from(token)) : Buffer.from(token));
  });
});
