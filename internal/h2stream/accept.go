package h2stream

import (
	"net/http"
	"time"
)

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked
// writes at once.
var aLongTimeAgo = time.Unix(1, 0)

// Accept answers the extended CONNECT r with a 200 carrying the fields h,
// flushed within timeout (zero: no bound), and returns its stream as a
// Conn. The stream then lives as long as the protocol: the handshake
// deadline and any per-request timeouts of the http.Server are cleared.
// On failure the stream is closed.
func Accept(w http.ResponseWriter, r *http.Request, h http.Header, timeout time.Duration) (*Conn, error) {
	sc := newConn(w, r)
	r.Body = http.NoBody // the stream's data is the protocol's, read through the Conn
	if len(h) > 0 {
		// Asked for only when needed: net/http makes the map on demand.
		hdr := w.Header()
		for k, vs := range h {
			hdr[k] = append([]string(nil), vs...)
		}
	}
	if timeout > 0 {
		_ = sc.rc().SetWriteDeadline(time.Now().Add(timeout))
	}
	w.WriteHeader(http.StatusOK)
	err := sc.rc().Flush()
	if err == nil {
		err = sc.rc().SetWriteDeadline(time.Time{})
	}
	if err == nil {
		err = sc.rc().SetReadDeadline(time.Time{})
	}
	if err != nil {
		sc.Close()
		return nil, err
	}
	return sc, nil
}
