package upgrade

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const defaultMaxResponseHeaderBytes = 64 << 10 // Dialer.MaxHeaderBytes

// errHandshakeTimeout is wrapped by the error of a handshake that ran past
// HandshakeTimeout.
var errHandshakeTimeout = fmt.Errorf("handshake timeout: %w", context.DeadlineExceeded)

// A Dialer opens connections switched to another protocol. It sends an
// HTTP/1.1 upgrade request (over TLS for https and wss URLs, ALPN
// offering only http/1.1, through a proxy's CONNECT tunnel if one
// applies) with "Connection: Upgrade", the offers in its Upgrade field
// and never an Expect field, in one write, body included; and it returns
// the connection once the server has answered 101 naming one of them.
// With HTTP2 set, it switches an HTTP/2 stream instead when the server
// can (RFC 8441).
//
// The zero Dialer is ready to use. A Dialer may be copied, and used by
// several goroutines at once as long as its fields are not changed.
type Dialer struct {
	// NetDialContext dials the TCP connection to the server or proxy. Nil
	// means a net.Dialer's.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSClientConfig configures TLS for https and wss URLs. The Dialer
	// uses a clone, its NextProtos set to http/1.1 (h2 and http/1.1 with
	// HTTP2) and its ServerName to the URL's host if empty.
	TLSClientConfig *tls.Config

	// Proxy returns the proxy for a request, or nil for none. Nil means
	// http.ProxyFromEnvironment. The server is reached through a CONNECT
	// tunnel, for plain http targets too, since a forwarding proxy would
	// drop Upgrade; the proxy's user information is sent as
	// Proxy-Authorization. A proxy that refuses the CONNECT yields a
	// *ResponseError with Proxy set.
	Proxy func(*http.Request) (*url.URL, error)

	// HandshakeTimeout bounds the whole handshake: dial, proxy, TLS,
	// request and response. Zero means 10 seconds; a negative value means
	// no bound but the context's.
	HandshakeTimeout time.Duration

	// MaxHeaderBytes bounds the response header bytes read, interim 1xx
	// responses included. Zero means 64 KiB.
	MaxHeaderBytes int

	// Method is the request method. Empty means GET; CONNECT is not
	// allowed.
	Method string

	// Header holds extra request header fields. A Host field replaces the
	// URL's host; Connection values are added as options after
	// "Upgrade". Upgrade, Content-Length, Transfer-Encoding and Expect are
	// not allowed. Names, values and Host are checked before anything is
	// dialed. The zone of a scoped IPv6 host is never sent (RFC 6874 §4).
	Header http.Header

	// Body is the request body, sent with a Content-Length. The server
	// reads it before it switches; it is never part of the new protocol.
	Body []byte

	// Prepare, if non-nil, is called with each request the Dial may send,
	// before anything is dialed: it may change req.Header and req.Host
	// (a protocol adds per-connection fields such as Sec-WebSocket-Key).
	// With HTTP2 set, that is the HTTP/1.1 request, then an extended
	// CONNECT per offer (req.ProtoMajor 2, the offer in
	// req.Header[":protocol"]). An error aborts the Dial.
	Prepare func(req *http.Request) error

	// Check, if non-nil, is called with a 101 the Dialer found valid, or
	// the 2xx response to an extended CONNECT (resp.Request is the request
	// sent). An error closes the connection and fails the Dial; no other
	// offer is tried. A protocol checks its own fields with it, such as
	// Sec-WebSocket-Accept.
	Check func(resp *http.Response) error

	// HTTP2, if non-nil, lets the Dialer switch HTTP/2 streams with
	// extended CONNECT, on connections the HTTP2Transport shares: over TLS
	// when ALPN picks h2, over cleartext with UnencryptedHTTP2. The offers
	// are asked one at a time, in order; a 2xx switches, any other status
	// refuses that offer, and the last refusal is a *ResponseError. A 505,
	// a server without SETTINGS_ENABLE_CONNECT_PROTOCOL, one that
	// negotiates http/1.1 or a cleartext one that does not speak HTTP/2
	// gets the HTTP/1.1 upgrade instead (the transport remembers that
	// server for ten minutes), as does any Dialer with a Body. Over HTTP/2
	// the method is CONNECT, Header loses the fields HTTP/2 forbids, and
	// MaxHeaderBytes is sent as SETTINGS_MAX_HEADER_LIST_SIZE.
	HTTP2 *HTTP2Transport

	// HTTP3, if non-nil, makes Dial switch an HTTP/3 stream (RFC 9220)
	// for https and wss URLs, opened by HTTP3 (package
	// github.com/go-upgrade/upgrade/http3 provides one). The offers are
	// asked one at a time, as over HTTP/2, and the last refusal is a
	// *ResponseError with Proto "HTTP/3.0"; nothing falls back to TCP. An
	// offer with a version ("echo/1") cannot be asked for, since a
	// :protocol is a single token, nor a Body sent: Dial fails before
	// sending. NetDialContext, TLSClientConfig, Proxy and MaxHeaderBytes
	// do not apply: HTTP3 has its own.
	HTTP3 StreamTransport

	// keepRefusal makes a refusal's *ResponseError hold the live
	// response, whose body streams the rest of it (see DialResponse).
	keepRefusal bool
}

// Dial opens a connection upgraded to one of offers with a zero Dialer:
// see Dialer.Dial.
func Dial(ctx context.Context, rawURL string, offers ...Protocol) (*Conn, error) {
	var d Dialer
	return d.Dial(ctx, rawURL, offers...)
}

// DialResponse is Dial for a caller that takes an answer other than a
// switch as it comes, such as a reverse proxy relaying it whole: when the
// server answers with a final status other than a switch, DialResponse
// returns that response, and a nil Conn and error, instead of a
// *ResponseError. The response's Body streams the rest of the answer
// from the connection (over HTTP/2, the stream), with no bound but the
// caller's; closing it closes the connection (or stream), and the caller
// must close it. With HTTP2 set and several offers refused over HTTP/2,
// it is the response to the last one.
func (d *Dialer) DialResponse(ctx context.Context, rawURL string, offers ...Protocol) (*Conn, *http.Response, error) {
	d2 := *d
	d2.keepRefusal = true
	c, err := d2.Dial(ctx, rawURL, offers...)
	var re *ResponseError
	if errors.As(err, &re) && re.live != nil {
		return nil, re.live, nil
	}
	return c, nil, err
}

// Dial connects to the server at rawURL (scheme http, https, ws or wss),
// asks it to switch to one of offers, in the caller's order of
// preference, and returns the switched connection.
//
// The server must answer 101 Switching Protocols with an Upgrade field
// naming only offered protocols (names ASCII case-insensitively, versions
// exactly) and a Connection field carrying "upgrade"; otherwise the error
// wraps ErrInvalidSwitch. Interim 1xx responses are skipped. A 101 has no
// body: the bytes after it are the new protocol's, and the Conn's first
// reads return those that arrived with it. Any other final status is a
// *ResponseError.
//
// With HTTP2 or HTTP3 set, the switch may happen on a stream instead: see
// those fields.
//
// The Conn's Protocol is the offer chosen, as the caller spelled it; its
// Request and Response are the request sent and the response; its Context
// is ctx without its cancellation and deadline. ctx and HandshakeTimeout
// bound the handshake only; when one ends it, the error wraps its cause
// (context.DeadlineExceeded past HandshakeTimeout). On failure the
// connection is closed.
func (d *Dialer) Dial(ctx context.Context, rawURL string, offers ...Protocol) (*Conn, error) {
	if ctx == nil {
		panic("upgrade: nil Context")
	}
	if d.HTTP3 != nil {
		// A URL parseTarget refuses gets its error from newRequest.
		if u, t, err := parseTarget(rawURL); err == nil && t.secure {
			return d.dialStream(ctx, u, t, offers)
		}
	}
	req, t, err := d.newRequest(ctx, rawURL, offers)
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", redactURL(rawURL), err)
	}
	wire, err := d.wireRequest(req, t.target, offers)
	if err == nil {
		err = d.setProxy(req, &t)
	}
	var xreqs []*http.Request
	var key h2Key
	if err == nil && d.HTTP2 != nil {
		xreqs, key, err = d.prepareHTTP2(ctx, req, t, offers)
	}
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", req.URL.Redacted(), err)
	}
	deadline := d.handshakeDeadline(ctx)
	var c *Conn
	if xreqs != nil {
		c, err = d.handshakeHTTP2(ctx, deadline, req, t, key, wire, offers, xreqs)
	} else {
		c, err = d.handshakeHTTP1(ctx, deadline, req, t, wire, offers)
	}
	if err != nil {
		return nil, dialError(ctx, deadline, req.URL, err)
	}
	c.ctx = context.WithoutCancel(ctx)
	return c, nil
}

// handshakeDeadline returns when a handshake under ctx must end: after
// HandshakeTimeout or at ctx's deadline, whichever comes first; zero for
// no bound.
func (d *Dialer) handshakeDeadline(ctx context.Context) time.Time {
	var deadline time.Time
	if timeout := timeoutOr(d.HandshakeTimeout, defaultHandshakeTimeout); timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if ctxDeadline, ok := ctx.Deadline(); ok && (deadline.IsZero() || ctxDeadline.Before(deadline)) {
		deadline = ctxDeadline
	}
	return deadline
}

// dialError returns the error of a failed handshake with u, naming what
// ended it: the context's cause, the handshake timeout, or err itself. A
// *ResponseError is returned as it is.
func dialError(ctx context.Context, deadline time.Time, u *url.URL, err error) error {
	var cause error
	switch {
	case ctx.Err() != nil:
		cause = context.Cause(ctx)
	case !deadline.IsZero() && !time.Now().Before(deadline):
		if ctxDeadline, ok := ctx.Deadline(); ok && ctxDeadline.Equal(deadline) {
			// The conn's deadline can fire a moment before the
			// context's timer: wait for it, to report its cause.
			<-ctx.Done()
			cause = context.Cause(ctx)
		} else {
			cause = errHandshakeTimeout
		}
	}
	var re *ResponseError
	switch {
	case cause != nil:
		return fmt.Errorf("upgrade: dial %s: %w: %w", u.Redacted(), cause, err)
	case errors.As(err, &re):
		return err
	}
	return fmt.Errorf("upgrade: dial %s: %w", u.Redacted(), err)
}

// timeoutOr returns a timeout set to d: def for zero, no bound (0) for a
// negative d.
func timeoutOr(d, def time.Duration) time.Duration {
	switch {
	case d > 0:
		return d
	case d < 0:
		return 0
	}
	return def
}

func (d *Dialer) maxHeaderBytes() int64 {
	if d.MaxHeaderBytes > 0 {
		return int64(d.MaxHeaderBytes)
	}
	return defaultMaxResponseHeaderBytes
}

// aLongTimeAgo is a deadline in the past: it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// http11 is the only ALPN protocol offered for an HTTP/1.1 upgrade.
var http11 = []string{"http/1.1"}

// handshakeHTTP1 connects to the server and switches over HTTP/1.1.
func (d *Dialer) handshakeHTTP1(ctx context.Context, deadline time.Time, req *http.Request, t dialTarget, wire []byte, offers []Protocol) (*Conn, error) {
	sc, err := d.connect(ctx, deadline, t, http11)
	if err != nil {
		return nil, err
	}
	return d.switchHTTP1(&sc, req, wire, offers)
}

// serverConn is a connection to the server within a handshake's bounds:
// the deadline on raw, which a cancelled context moves to the past.
type serverConn struct {
	raw  net.Conn      // the TCP connection, to the server or the proxy
	conn net.Conn      // what carries HTTP: raw, a proxy tunnel, or TLS over either
	br   *bufio.Reader // reads conn through lr
	lr   *limitReader
	stop func() bool // stops the context from interrupting raw
}

// connect dials t, through its proxy if it has one, and runs TLS for
// https and wss offering nextProtos, all within ctx and deadline, which
// bound the connection until release or close.
func (d *Dialer) connect(ctx context.Context, deadline time.Time, t dialTarget, nextProtos []string) (_ serverConn, err error) {
	raw, err := d.dial(ctx, deadline, t.dial)
	if err != nil {
		return serverConn{}, fmt.Errorf("dialing %s: %w", t.dial, err)
	}
	if !deadline.IsZero() {
		_ = raw.SetDeadline(deadline)
	}
	sc := serverConn{raw: raw, conn: raw}
	sc.stop = context.AfterFunc(ctx, func() { _ = raw.SetDeadline(aLongTimeAgo) })
	sc.lr = &limitReader{r: raw, n: d.maxHeaderBytes()}
	sc.br = bufio.NewReader(sc.lr)
	defer func() {
		if err != nil {
			sc.close()
		}
	}()
	if t.proxy != nil {
		if sc.conn, err = d.tunnel(raw, sc.br, sc.lr, t); err != nil {
			return serverConn{}, err
		}
	}
	if t.secure {
		tc, err := d.startTLS(sc.conn, t, nextProtos)
		if err != nil {
			return serverConn{}, err
		}
		sc.conn, sc.lr.r = tc, tc
		sc.br.Reset(sc.lr)
	}
	return sc, nil
}

// release ends the handshake's bounds on the connection. It fails if the
// context ended just now, and has interrupted (or will) the connection.
func (sc *serverConn) release() error {
	if !sc.stop() {
		return errors.New("handshake interrupted")
	}
	if err := sc.raw.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clearing the handshake deadline: %w", err)
	}
	return nil
}

// close closes the connection and stops the context's hold on it.
func (sc *serverConn) close() {
	sc.stop()
	sc.raw.Close()
}

// switchHTTP1 sends the upgrade request on sc and reads the answer: a
// valid 101 makes the Conn. On failure sc is closed.
func (d *Dialer) switchHTTP1(sc *serverConn, req *http.Request, wire []byte, offers []Protocol) (*Conn, error) {
	sc.lr.n = d.maxHeaderBytes()
	c, err := d.exchange(sc.conn, sc.br, sc.lr, req, wire, offers)
	if re, ok := err.(*ResponseError); ok && re.live != nil {
		return nil, sc.handOver(re)
	}
	if err == nil {
		err = sc.release()
	}
	if err != nil {
		sc.close()
		return nil, err
	}
	return c, nil
}

// handOver gives the connection to the body of re's live response, for
// DialResponse: the handshake's bounds no longer apply, and closing the
// body closes the connection.
func (sc *serverConn) handOver(re *ResponseError) error {
	if err := sc.release(); err != nil {
		sc.close()
		return err
	}
	sc.lr.n = math.MaxInt64
	re.live.Body = &answerBody{ReadCloser: re.live.Body, conn: sc.raw}
	return re
}

// answerBody reads the rest of an answer that is not a switch; closing it
// closes the connection, without reading the rest as net/http's would.
type answerBody struct {
	io.ReadCloser
	conn net.Conn
}

func (b *answerBody) Close() error { return b.conn.Close() }

// startTLS runs the TLS handshake with the server over conn, offering
// nextProtos, and checks that ALPN picked one of them or nothing.
func (d *Dialer) startTLS(conn net.Conn, t dialTarget, nextProtos []string) (*tls.Conn, error) {
	tc := tls.Client(conn, d.tlsConfig(t.serverName, nextProtos))
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", t.addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && !slices.Contains(nextProtos, p) {
		return nil, fmt.Errorf("TLS server %s negotiated ALPN protocol %q, not %s", t.addr, p, strings.Join(nextProtos, " or "))
	}
	return tc, nil
}

// exchange writes the request on conn and reads the answer from br: a
// valid 101, which Check accepts, makes the Conn, holding the bytes that
// came behind the 101.
func (d *Dialer) exchange(conn net.Conn, br *bufio.Reader, lr *limitReader, req *http.Request, wire []byte, offers []Protocol) (*Conn, error) {
	if _, err := conn.Write(wire); err != nil {
		return nil, fmt.Errorf("writing the request: %w", err)
	}
	resp, proto, err := readSwitch(br, req, offers)
	if err == errNotSwitched {
		re := newResponseError(resp)
		if d.keepRefusal {
			re.live = resp
			return nil, re
		}
		lr.n = maxErrorBody
		re.Body = excerpt(resp.Body)
		return nil, re
	}
	if err != nil {
		return nil, err
	}
	if d.Check != nil {
		if err := d.Check(resp); err != nil {
			return nil, fmt.Errorf("101 response refused by Check: %w", err)
		}
	}
	return &Conn{nc: conn, Protocol: proto, Request: req, Response: resp, rbuf: buffered(br)}, nil
}

// dial connects to addr within ctx and deadline.
func (d *Dialer) dial(ctx context.Context, deadline time.Time, addr string) (net.Conn, error) {
	if d.NetDialContext == nil {
		nd := net.Dialer{Deadline: deadline}
		return nd.DialContext(ctx, "tcp", addr)
	}
	ctx, cancel := withDeadline(ctx, deadline)
	defer cancel()
	return d.NetDialContext(ctx, "tcp", addr)
}

// withDeadline returns ctx bounded by deadline, unless it is zero.
func withDeadline(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, deadline)
}

// tlsConfig returns a clone of TLSClientConfig for a connection to
// serverName (unless the config names one) offering nextProtos in ALPN:
// never h2 unless the Dialer can switch over HTTP/2 (kubernetes#88781,
// gorilla/websocket#760).
func (d *Dialer) tlsConfig(serverName string, nextProtos []string) *tls.Config {
	cfg := d.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	cfg.NextProtos = nextProtos
	return cfg
}
