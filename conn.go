package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/track"
)

// Conn is a connection that has switched protocols: a net.Conn whose Read
// returns first the bytes that arrived behind the HTTP exchange (behind
// the request on the server, the 101 on the client).
//
// A Conn is a whole HTTP/1.1 connection switched by an Upgrade, or one
// HTTP/2 or HTTP/3 stream switched by an extended CONNECT (RFC 8441,
// RFC 9220), which shares its connection with other streams;
// c.Request.ProtoMajor says which: 1, 2 or 3. On a stream, Read returns
// io.EOF at the end of the peer's side and deadlines apply to the stream
// alone; on net/http's HTTP/2 server, a write deadline that passes resets
// the stream, and so does a read deadline that passes during a Read begun
// without one. A stream's Conn on the server is closed when the handler
// returns: from then on every method fails with net.ErrClosed.
//
// Like most net.Conns, a Conn must not be read by several goroutines at
// once.
type Conn struct {
	// Protocol is the protocol switched to: on the server, the registered
	// spelling of the name with the client's version; on the client, the
	// offer chosen, as the caller spelled it.
	Protocol Protocol

	// Request is the request that was switched. On the server its Body
	// holds the body read before the switch, and its context ends with
	// the switch (use Context). On the client it is the request sent. A
	// handler that has taken what it needs from it may set it to nil, so
	// that a long-lived connection no longer keeps it in memory.
	Request *http.Request

	// Response is, on the client, the 101 (or 2xx) response, its Body
	// empty. It is nil on the server.
	Response *http.Response

	nc   net.Conn // the underlying connection
	rbuf []byte   // read-ahead bytes not yet returned by Read

	ctx     context.Context // client: set by Dial; server: see reqCtx, until Context
	ctxOnce sync.Once
	reqCtx  bool               // server: ctx is the switched request's context
	cancel  context.CancelFunc // server: cancels ctx when the handler returns
	trk     *track.Tracker     // server: its lifetime context and drain signal
	route   *route             // server: the route switched to; its slot is counted under route.spelled
}

// buffered returns a copy of the bytes br holds, or nil, so that br's
// buffer is not kept.
func buffered(br *bufio.Reader) []byte {
	if ahead, _ := br.Peek(br.Buffered()); len(ahead) > 0 {
		return bytes.Clone(ahead)
	}
	return nil
}

// Read returns the bytes read ahead of the switch first, then reads from
// the underlying connection.
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

// reset closes c with a reset: RST on a TCP connection, RST_STREAM (or
// RESET_STREAM) on a stream that can be reset.
func (c *Conn) reset() {
	switch nc := c.NetConn().(type) {
	case *net.TCPConn:
		_ = nc.SetLinger(0)
	case interface{ NetConn() net.Conn }: // *tls.Conn
		if tc, ok := nc.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
			tc.Close()
		}
	case interface{ Reset() }:
		nc.Reset()
	}
	c.Close()
}

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

// NetConn returns the underlying connection, for what a Conn does not
// offer itself, such as socket options or the TLS state: the *net.TCPConn
// or *tls.Conn of an HTTP/1.1 switch, or the stream (its shared
// connection is not exposed). Reading from it directly skips the bytes
// Read would return first: read from c, or from NetConn once Buffered
// returns 0.
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
// half-close, a TLS close_notify, the end of a stream's side), or returns
// an error wrapping errors.ErrUnsupported. On a stream served by net/http's
// HTTP/2 server, later Writes fail at once but the stream's END_STREAM
// goes out only when the handler returns, which cannot happen sooner.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.NetConn().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: "upgrade", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.ErrUnsupported}
}

// Context returns the connection's context. On the server it carries the
// values of the request's context and is cancelled when the connection is
// closed: by the handler's return, Server.Close, or the end of Shutdown's
// grace period; not when a graceful shutdown starts (see Draining). On the
// client it is the context given to Dial, without its cancellation.
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
		lifetime, cancel := context.WithCancel(life)
		c.ctx, c.cancel = &connContext{Context: lifetime, values: values, drain: drain}, cancel
	})
	return c.ctx
}

// finish marks c's handler as returned: its Context, if asked for, is
// cancelled, and a later Context is a cancelled one.
func (c *Conn) finish() {
	c.ctxOnce.Do(func() { c.ctx = doneContext })
	if c.cancel != nil {
		c.cancel()
	}
}

// doneContext is a cancelled context.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// connContext takes its lifetime from one context, its values from
// another, and holds the Server's drain channel.
type connContext struct {
	context.Context                 // lifetime: Deadline, Done, Err
	values          context.Context // Value
	drain           <-chan struct{}
}

// Value returns the drain channel for Draining, else the value for key
// from the values context. The lifetime context is asked first: it holds
// no values, but answers the context package's lookup of its cancelCtx,
// so that contexts derived from c are cancelled with it, synchronously.
func (c *connContext) Value(key any) any {
	if _, ok := key.(drainingKey); ok && c.drain != nil {
		return c.drain
	}
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
