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
// been written, in a goroutine of its own for an HTTP/1.1 connection and
// on the request's goroutine for an HTTP/2 stream, and owns c: when it
// returns, c is closed. c.Request's context ends with the switch; use
// c.Context(), which carries the same values and is cancelled when the
// connection is closed (by the handler's return, Server.Close, or the end
// of Shutdown's grace period). c.Draining() is closed when a graceful
// Shutdown starts: the moment to say goodbye, if the protocol can, and
// return. A panic in ServeUpgrade is recovered and logged with the
// protocol and remote address, and c is closed.
type Handler interface {
	ServeUpgrade(c *Conn)
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(c *Conn)

// ServeUpgrade calls f(c).
func (f HandlerFunc) ServeUpgrade(c *Conn) { f(c) }

// Accepter is implemented by a Handler that inspects a request before the
// switch. AcceptUpgrade is called with the request and the header of the
// 101 response to be sent; it is called at most once per request and
// registered protocol, in negotiation order.
//
// h is valid only until AcceptUpgrade returns: the Server reuses it.
//
// It returns nil to switch (after adding any extra 101 header fields to h;
// Upgrade and Connection are set by the Server, and Content-Length and
// Transfer-Encoding are not allowed), ErrDecline to let negotiation move on
// to the next acceptable offer, or a *RejectError to answer the request with
// that status and not switch. Any other error is logged and answered with
// 500 Internal Server Error.
type Accepter interface {
	AcceptUpgrade(r *http.Request, h http.Header) error
}

// ErrDecline is returned by AcceptUpgrade to decline an offer: negotiation
// continues with the next acceptable offer, as if this protocol were not
// registered for this request.
var ErrDecline = errors.New("upgrade: protocol declined the request")

// RejectError is returned by AcceptUpgrade to refuse the switch and answer
// the request with Status, Header and a text/plain body Message.
//
// A 426 Upgrade Required rejection is always sent with an Upgrade field
// listing the registered protocols (unless Header sets one) and
// "Connection: Upgrade", as RFC 9110 §15.5.22 requires.
type RejectError struct {
	Status  int         // a 4xx or 5xx status code; zero means 400 Bad Request
	Message string      // response body; empty means the status text
	Header  http.Header // extra response header fields; may be nil
}

// Error returns the status and message.
func (e *RejectError) Error() string {
	return "upgrade: rejected with " + strings.TrimSpace(statusLine(e.status())) + ": " + e.message()
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

// Policy selects whose order of preference decides between several
// acceptable offers.
type Policy int

const (
	// ClientOrder picks the first offer, in the client's order, that a
	// registered protocol accepts. It is the zero Policy: RFC 9110 §7.8
	// has the client list its protocols in descending order of
	// preference.
	ClientOrder Policy = iota
	// ServerOrder picks the first registered protocol, in registration
	// order, that accepts one of the offers.
	ServerOrder
)

// String returns "client" or "server".
func (p Policy) String() string {
	switch p {
	case ClientOrder:
		return "client"
	case ServerOrder:
		return "server"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// Route is a protocol registration: the handler and the requests it can be
// switched to from.
type Route struct {
	// Handler serves the connection after the switch. If it implements
	// Accepter, AcceptUpgrade runs before the 101. Required.
	Handler Handler

	// Methods lists the request methods the protocol can honour
	// (RFC 9110 §7.8: the new protocol must be able to answer the
	// request). An offer in a request with another method is not
	// acceptable. Nil means GET and OPTIONS; a "*" element allows any
	// method except CONNECT. It applies to HTTP/1.1 upgrades: an HTTP/2
	// extended CONNECT (RFC 8441) is always a CONNECT.
	Methods []string

	// MaxBody bounds the request body read before an HTTP/1.1 switch and
	// handed to the handler as c.Request.Body (over HTTP/2 the stream's
	// data belongs to the protocol from the start). Zero means the Server's
	// MaxRequestBody; a negative value means the protocol accepts no body,
	// and a request with one is answered with 400 Bad Request. A larger
	// body is answered with 413 Content Too Large; neither switches.
	MaxBody int64

	// MaxConns caps the connections switched to this protocol at once; see
	// Server.MaxConns. Zero means no cap.
	MaxConns int

	// Available, if non-nil, reports whether the protocol can be
	// switched to on r's connection at all (h2c, for one, only without
	// TLS). A protocol unavailable for a request is neither negotiated
	// nor listed in the Upgrade field of a 426 answering it: that list
	// names what the client could switch to (RFC 9110 §15.5.22). Nil
	// means always available.
	Available func(r *http.Request) bool
}
