package upgrade

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// A Handler serves a connection after it has switched protocols.
//
// ServeUpgrade is called once the 101 response (over HTTP/2, the 200) has
// been written: in a goroutine of its own for an HTTP/1.1 connection, on
// the request's goroutine for an HTTP/2 stream. It owns c, which is closed
// when it returns. c.Request's context ends with the switch: c.Context()
// carries its values and is cancelled when the connection is closed.
// Draining(c.Context()) is closed when a graceful Shutdown starts: the
// moment to say goodbye, if the protocol can, and return. A panic is
// recovered and logged, and c closed; a panic with http.ErrAbortHandler
// is not logged, and resets c (RST, or RST_STREAM on a stream).
type Handler interface {
	ServeUpgrade(c *Conn)
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(c *Conn)

// ServeUpgrade calls f(c).
func (f HandlerFunc) ServeUpgrade(c *Conn) { f(c) }

// Accepter is implemented by a Handler that inspects a request before the
// switch. AcceptUpgrade is called at most once per request and protocol,
// in negotiation order, with the header of the response to be sent, valid
// only until it returns. It returns nil to switch, having added any extra
// fields to h (not Upgrade, Connection, Content-Length or
// Transfer-Encoding); ErrDecline to let negotiation try the next offer; or
// a *RejectError to answer the request with that status. Any other error
// is logged and answered 500.
type Accepter interface {
	AcceptUpgrade(r *http.Request, h http.Header) error
}

// ErrDecline is returned by AcceptUpgrade to decline an offer: negotiation
// continues with the next acceptable offer, as if this protocol were not
// registered for this request.
var ErrDecline = errors.New("upgrade: protocol declined the request")

// RejectError is returned by AcceptUpgrade to refuse the switch and answer
// the request with Status, Header and a text/plain body Message. A 426
// always carries an Upgrade field (the available protocols, unless Header
// sets one) and "Connection: Upgrade" (RFC 9110 §15.5.22).
type RejectError struct {
	Status  int         // a 4xx or 5xx status code; zero means 400 Bad Request
	Message string      // response body; empty means the status text
	Header  http.Header // extra response header fields; may be nil
}

// Error returns the status and message.
func (e *RejectError) Error() string {
	return "upgrade: rejected with " + statusLine(e.status()) + ": " + e.message()
}

// statusLine returns "NNN Text" for a status code, or "NNN" for one
// without a text.
func statusLine(code int) string {
	return strings.TrimSpace(strconv.Itoa(code) + " " + http.StatusText(code))
}

func (e *RejectError) status() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

func (e *RejectError) message() string {
	if e.Message == "" {
		return http.StatusText(e.status())
	}
	return e.Message
}

// Route is a protocol registration: what serves the switched connection,
// and the requests it can be switched to from.
type Route struct {
	// Handler serves the connection after the switch. If it implements
	// Accepter, AcceptUpgrade runs before the 101. Either Handler or
	// Delegate must be set.
	Handler Handler

	// Delegate is an http.Handler that switches the connection itself:
	// gorilla/websocket's Upgrader.Upgrade, coder/websocket's Accept,
	// gobwas/ws's UpgradeHTTP. The Server negotiates, applies the
	// route's rules and reserves the connection slot, then calls
	// Delegate with a copy of the request that offers only the chosen
	// protocol ("Connection: Upgrade"). Its ResponseWriter hijacks for
	// it (directly or through http.ResponseController), handing over
	// the bytes read ahead, and writes the 101 it set with WriteHeader;
	// the connection hijacked is tracked like the Server's own until it
	// is closed. The request's context is cancelled when that
	// connection closes, and Draining(r.Context()) signals Shutdown. An
	// answer written without hijacking (a 403 for a bad Origin, say)
	// reaches the client, and the connection is closed after it. If
	// Delegate implements Accepter, it is asked first; the header fields
	// it adds are not sent.
	//
	// An extended CONNECT (RFC 8441) is served with the handler
	// unchanged: it gets a GET with "Connection: Upgrade", the protocol
	// in Upgrade and, for a WebSocket, a fresh Sec-WebSocket-Key and the
	// stream's other fields, and its Hijack returns the stream. The 101
	// it writes is read back: its Sec-WebSocket-Accept is checked, its
	// other fields go into the 200, and the bytes after it are the
	// stream's. A status it answers with instead (a 403, say) is the
	// stream's answer; a 2xx that does not switch becomes 500.
	Delegate http.Handler

	// Methods lists the request methods the protocol can honour
	// (RFC 9110 §7.8): an offer in a request with another method is not
	// acceptable. Nil means GET and OPTIONS; "*" means any method but
	// CONNECT. An HTTP/2 extended CONNECT is always accepted.
	Methods []string

	// MaxBody bounds the request body read before an HTTP/1.1 switch and
	// handed over as c.Request.Body: a larger one is answered 413. Zero
	// means Server.MaxRequestBody; a negative value means no body is
	// accepted (400).
	MaxBody int64

	// MaxConns caps the connections switched to this protocol at once
	// (see Server.MaxConns). Zero means no cap.
	MaxConns int

	// Available, if non-nil, reports whether the protocol can be
	// switched to on r's connection (h2c, for one, only without TLS). An
	// unavailable protocol is neither negotiated nor listed in a 426.
	Available func(r *http.Request) bool
}
