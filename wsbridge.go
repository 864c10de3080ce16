package upgrade

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
)

// The parts of the WebSocket opening handshake (RFC 6455 §4) a proxy
// supplies when it bridges a WebSocket from an HTTP/2 client (RFC 8441,
// which has no key and no accept value) to an HTTP/1.1 backend. The
// websocket package implements the handshake itself; the root package
// cannot import it.

// wsGUID is appended to the key before hashing (RFC 6455 §1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// errBadAccept is the error of a bridged backend's 101 whose
// Sec-WebSocket-Accept does not answer the proxy's key.
var errBadAccept = errors.New("Sec-WebSocket-Accept does not match the Sec-WebSocket-Key sent")

// bridgeWebSocket makes d open an RFC 6455 handshake for a client that
// sent none of its own: a fresh Sec-WebSocket-Key and, if absent,
// "Sec-WebSocket-Version: 13" are added to d.Header (which must be the
// request's own), and d.Check verifies the backend's
// Sec-WebSocket-Accept before any Check d already had. The client must
// not see that accept value (switchHeader drops it).
func bridgeWebSocket(d *Dialer) {
	key := newWebSocketKey()
	d.Header["Sec-Websocket-Key"] = []string{key}
	if len(d.Header["Sec-Websocket-Version"]) == 0 {
		d.Header["Sec-Websocket-Version"] = []string{"13"}
	}
	want := webSocketAccept(key)
	next := d.Check
	d.Check = func(resp *http.Response) error {
		if got := resp.Header["Sec-Websocket-Accept"]; len(got) != 1 || got[0] != want {
			return errBadAccept
		}
		if next != nil {
			return next(resp)
		}
		return nil
	}
}

// newWebSocketKey returns a random Sec-WebSocket-Key: 16 bytes, base64.
func newWebSocketKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b[:])
}

// webSocketAccept returns the Sec-WebSocket-Accept value for key
// (RFC 6455 §4.2.2).
func webSocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}
