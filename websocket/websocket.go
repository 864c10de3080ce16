// Package websocket implements the WebSocket opening handshake (RFC 6455
// §4, and RFC 8441 §5 over HTTP/2) as a protocol for the upgrade package: a
// server-side Handler that plugs into an upgrade.Server next to other
// protocols, and a client-side Dial. It does no framing: after the switch the connection is a plain
// net.Conn (an *upgrade.Conn, which still returns any bytes read ahead
// during the handshake) that any WebSocket framing library working on a
// net.Conn can take over.
//
// Server side, the Handler checks the request as RFC 6455 §4.2.1 requires
// and answers every failure with a clear status and message, never a 101:
//
//   - a method other than GET: 405 Method Not Allowed with "Allow: GET";
//   - a request body: 400 Bad Request;
//   - Sec-WebSocket-Version other than exactly "13": 426 Upgrade Required
//     with "Sec-WebSocket-Version: 13";
//   - Sec-WebSocket-Key missing, repeated, or not the base64 encoding of
//     16 bytes: 400 Bad Request;
//   - an Origin the origin policy refuses: 403 Forbidden;
//   - a malformed Sec-WebSocket-Protocol, or a malformed
//     Sec-WebSocket-Extensions when extensions are negotiated: 400.
//
// Over HTTP/2 and HTTP/3, an extended CONNECT with :protocol websocket
// (RFC 8441 §5, RFC 9220) carries no Sec-WebSocket-Key and is answered
// 200 without Sec-WebSocket-Accept; the version, Origin, subprotocol and
// extension rules are the same, except that a wrong version is answered
// 400 with "Sec-WebSocket-Version: 13" (neither has a 426), and the Serve
// function is the same too.
//
// Register it for the "websocket" token:
//
//	var s upgrade.Server
//	s.Handle("websocket", &websocket.Handler{Serve: serve})
//
// Handle takes the Handler's Route: GET only, no request body.
package websocket

import (
	"encoding/base64"
	"strconv"

	"github.com/go-upgrade/upgrade/internal/wskey"
)

// Version is the only WebSocket protocol version this package speaks, as
// sent in Sec-WebSocket-Version (RFC 6455 §4.1).
const Version = "13"

// keyLen is the length of a valid Sec-WebSocket-Key: 16 bytes in padded
// base64.
const keyLen = wskey.KeyLen

// AcceptKey returns the Sec-WebSocket-Accept value for a Sec-WebSocket-Key:
// the base64 encoding of the SHA-1 digest of key, exactly as received,
// followed by the RFC 6455 GUID (RFC 6455 §4.2.2 step 5.4).
//
// For a key of the valid length the computation is done in stack buffers;
// the only allocation is the returned string.
func AcceptKey(key string) string { return wskey.AcceptString(key) }

// checkKey reports why key is not a valid Sec-WebSocket-Key, or "" if it
// is: it must be base64 (with padding) decoding to exactly 16 bytes. The
// unused bits of the final quantum are not required to be zero, as
// base64.StdEncoding without Strict allows; RFC 6455's own example key
// relies on that.
func checkKey(key string) string {
	if len(key) != keyLen {
		return "length " + strconv.Itoa(len(key)) + ", want " + strconv.Itoa(keyLen) + " base64 characters for 16 bytes"
	}
	var in [keyLen]byte
	copy(in[:], key)
	var out [18]byte // DecodedLen(24)
	n, err := base64.StdEncoding.Decode(out[:], in[:])
	if err != nil {
		return "not base64: " + err.Error()
	}
	if n != 16 {
		return "decodes to " + strconv.Itoa(n) + " bytes, want 16"
	}
	return ""
}
