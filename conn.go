package upgrade

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/track"
)

// Conn is a connection that has switched protocols. It is a net.Conn whose
// Read returns, before anything read from the network, the bytes that
// arrived behind the HTTP exchange (pipelined after the request on the
// server, after the 101 response on the client): not one byte is lost.
//
// A Conn is either a whole HTTP/1.1 connection switched by an Upgrade, or
// one HTTP/2 or HTTP/3 stream switched by an extended CONNECT (RFC 8441,
// RFC 9220; see ExtendedConnect and StreamAccepter for the server,
// Dialer.HTTP2 and Dialer.HTTP3 for the client), which shares its
// connection with other streams. The protocol's code is the same for all;
// c.Request.ProtoMajor says which carries it, 1, 2 or 3. On an HTTP/2
// stream, Read returns the stream's DATA and io.EOF at the peer's
// END_STREAM, Write sends DATA, Close resets the stream, and deadlines
// apply to the stream alone, as on a net.Conn, except that on the server a
// write deadline that passes resets the stream, and so does a read
// deadline that passes during a Read begun without one. See CloseWrite
// for how a stream ends. On the server, a stream's Conn is closed when the
// handler returns: Close interrupts the calls in progress and returns once
// they have, and from then on every method fails with net.ErrClosed, so
// goroutines the handler left behind never reach the finished response.
//
// A Conn must not be read from by more than one goroutine at a time, like
// most net.Conn implementations; Write and Close are as safe as those of
// the underlying connection.
type Conn struct {
	// Protocol is the protocol switched to: on the server, the registered
	// spelling of the name with the client's version, as named in the 101;
	// on the client, the offer the 101 selected (its first Upgrade
	// element), or the extended CONNECT accepted, as the caller spelled
	// it.
	Protocol Protocol

	// Request is the request that was switched. On the server its Body, if
	// the request had one, holds the whole body, read before the switch;
	// its Context is cancelled once the switch is complete (use Context).
	// On the client it is the request sent: an HTTP/1.1 upgrade request
	// (ProtoMajor 1), or an extended CONNECT (Method CONNECT, Proto
	// "HTTP/2.0" or "HTTP/3.0", ProtoMajor 2 or 3, the offer in
	// Header[":protocol"]).
	//
	// A handler that has taken what it needs of the request (header
	// fields, the URL) may set Request to nil: a long-lived connection
	// then no longer keeps the request in memory, about 1.2 KB of an idle
	// connection's 5. Context still carries the values of the request's
	// context.
	Request *http.Request

	// Response is, on the client, the 101 response, or the 2xx response
	// to the extended CONNECT (ProtoMajor 2 or 3; its TLS field holds the
	// shared connection's TLS state); its Body is always empty. It is nil
	// on the server.
	Response *http.Response

	nc   net.Conn // the underlying connection
	rbuf []byte   // read-ahead bytes not yet returned by Read

	ctx     context.Context // client: set by Dial; server: see reqCtx, until Context
	ctxOnce sync.Once
	reqCtx  bool               // server: ctx is the switched request's context
	cancel  context.CancelFunc // server: cancels ctx when the handler returns
	trk     *track.Tracker     // server: its lifetime context and drain signal
	route   *route             // server: the route switched to
	key     string             // server: the key its connection slot is counted under
}

// Read reads first the bytes that had been read ahead before the switch,
// then from the underlying connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rbuf) > 0 {
		n := copy(p, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			c.rbuf = nil
		}
		return n, nil
	}
	return c.nc.Read(p)
}

// Write writes to the underlying connection.
func (c *Conn) Write(p []byte) (int, error) { return c.nc.Write(p) }

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.nc.Close() }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the underlying
// connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the underlying connection.
// Read returns read-ahead bytes whatever the deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// NetConn returns the underlying connection: the *net.TCPConn or
// *tls.Conn an HTTP/1.1 switch happened on, or, for an HTTP/2 stream, the
// stream itself (the TCP connection it shares with other streams is not
// exposed). It is for what a Conn does not offer itself, such as socket
// options or the TLS connection state.
//
// Reading from it directly skips the read-ahead bytes that Read returns
// first, and loses them: read from c, or from NetConn only once Buffered
// returns 0. Closing it closes c.
//
// For an HTTP/2 stream (c.Request.ProtoMajor 2) it returns the net.Conn
// of the stream, which c wraps: the TCP connection is shared with other
// streams and is not exposed (on the client, c.Response.TLS holds its TLS
// state).
func (c *Conn) NetConn() net.Conn {
	if d, ok := c.nc.(*delegatedConn); ok {
		return d.Conn
	}
	return c.nc
}

// Buffered returns the number of read-ahead bytes that Read will return
// before it reads from the network.
func (c *Conn) Buffered() int { return len(c.rbuf) }

// CloseWrite shuts down the writing side of the connection (a TCP
// half-close, a TLS close_notify, or an HTTP/2 END_STREAM), if the
// underlying connection supports it. It returns an error wrapping
// errors.ErrUnsupported otherwise.
//
// On an HTTP/2 stream served by net/http, later Writes fail at once, but
// the stream's END_STREAM goes out only when the protocol handler returns:
// net/http's HTTP/2 server cannot end a stream's sending side while its
// handler runs. A protocol that half-closes on HTTP/2 should therefore
// read until the peer's EOF and return; if the peer's side is still open
// when it returns, a RST_STREAM with NO_ERROR follows the END_STREAM
// (RFC 9113 §8.1). On the client, CloseWrite sends END_STREAM at once.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: "upgrade", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.ErrUnsupported}
}

// Context returns the connection's context. On the server it carries the
// values of the request's context and is cancelled when the connection is
// being closed: by Server.Close, when Server.Shutdown's grace period ends,
// or when the handler returns. It is not cancelled when a graceful
// shutdown starts (see Draining), so a handler that passes it to the
// calls it blocks in keeps serving until its connection is really closed.
// On the client it is the context given to Dial, without its cancellation
// or deadline.
func (c *Conn) Context() context.Context {
	c.ctxOnce.Do(func() {
		if c.ctx != nil && !c.reqCtx {
			return // the client's, set by Dial
		}
		var life context.Context = context.Background()
		var drain <-chan struct{}
		if c.trk != nil {
			life, drain = c.trk.Lifetime()
		}
		var values context.Context = context.Background()
		switch {
		case c.reqCtx:
			// Kept apart from Request, which the handler may drop.
			values = context.WithoutCancel(c.ctx)
		case c.Request != nil:
			values = context.WithoutCancel(c.Request.Context())
		}
		// A child of the lifetime context itself, so that cancelling it
		// cancels this one (and contexts derived from it) at once.
		lifetime, cancel := context.WithCancel(life)
		c.ctx, c.cancel = &connContext{Context: lifetime, values: values, drain: drain}, cancel
	})
	return c.ctx
}

// finish marks c's handler as returned: Context, if it was ever asked
// for, is cancelled, and a later call returns a cancelled context.
func (c *Conn) finish() {
	c.ctxOnce.Do(func() { c.ctx = doneContext })
	if c.cancel != nil {
		c.cancel()
	}
}

// doneContext is the Context of a Conn whose handler returned before
// asking for it.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// connContext takes its lifetime from one context and its values from
// another, and holds the Server's drain channel for Draining.
type connContext struct {
	context.Context                 // lifetime: Deadline, Done, Err
	values          context.Context // Value
	drain           <-chan struct{}
}

// Value returns the value for key from the values context. The lifetime
// context is asked first: it holds no values of its own, but it answers
// the context package's own lookup of the cancelCtx behind a context, so
// contexts derived from a connContext are cancelled along with it,
// synchronously and without a goroutine.
func (c *connContext) Value(key any) any {
	if _, ok := key.(drainingKey); ok && c.drain != nil {
		return c.drain
	}
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
