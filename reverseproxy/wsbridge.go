package reverseproxy

import (
	"errors"
	"net/http"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wskey"
)

// The parts of the WebSocket opening handshake (RFC 6455 §4) a proxy
// supplies when it bridges a WebSocket from an extended CONNECT (RFC 8441,
// RFC 9220, which have no key and no accept value) to an HTTP/1.1
// backend.

// errBadAccept is the error of a bridged backend's 101 whose
// Sec-WebSocket-Accept does not match the proxy's key.
var errBadAccept = errors.New("Sec-WebSocket-Accept does not match the Sec-WebSocket-Key sent")

// bridgeWebSocket makes d open an RFC 6455 handshake for a client that
// sent none of its own: a fresh Sec-WebSocket-Key and, if absent,
// "Sec-WebSocket-Version: 13" are added to d.Header (which must be the
// request's own), and d.Check verifies the backend's
// Sec-WebSocket-Accept before any Check d already had. The client must
// not see that accept value (switchHeader drops it).
func bridgeWebSocket(d *upgrade.Dialer) {
	key := wskey.NewKey()
	d.Header["Sec-Websocket-Key"] = []string{key}
	if len(d.Header["Sec-Websocket-Version"]) == 0 {
		d.Header["Sec-Websocket-Version"] = []string{"13"}
	}
	want := wskey.AcceptString(key)
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
