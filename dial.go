package upgrade

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// defaultMaxResponseHeaderBytes is the default bound on the bytes of the
// response header blocks a Dialer reads: the status lines and header fields
// of every interim 1xx response and of the final response together.
const defaultMaxResponseHeaderBytes = 64 << 10

// errHandshakeTimeout is wrapped by the error of a handshake that ran past
// the Dialer's HandshakeTimeout.
var errHandshakeTimeout = fmt.Errorf("handshake timeout: %w", context.DeadlineExceeded)

// A Dialer opens connections upgraded to another protocol: it connects to
// an HTTP/1.1 server (directly or through a proxy's CONNECT tunnel, over
// TLS for https and wss), sends one request offering protocols in its
// Upgrade field, and returns the connection once the server has answered
// 101 Switching Protocols naming one of them. With HTTP2 set, it switches
// an HTTP/2 stream instead when the server can (RFC 8441).
//
// The upgrade request is HTTP/1.1, also over TLS, where ALPN offers
// "http/1.1" only unless HTTP2 is set: an upgrade cannot happen over
// HTTP/2. It carries one
// Host field, "Connection: Upgrade", the offers in the caller's order of
// preference, and never an Expect field; it is written in a single write,
// body included.
//
// The zero Dialer is ready to use: GET, proxies from the environment,
// defaultHandshakeTimeout and defaultMaxResponseHeaderBytes. A Dialer has
// no internal state: it may be copied, and used by several goroutines at
// once as long as its fields are not changed.
type Dialer struct {
	// NetDialContext dials the TCP connection to the server or proxy. Nil
	// means a net.Dialer's DialContext.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSClientConfig configures TLS for https and wss URLs. Nil means the
	// zero config. The Dialer uses a clone with NextProtos set to
	// ["http/1.1"] (["h2", "http/1.1"] with HTTP2), and ServerName set to
	// the URL's host if empty (without brackets or an IPv6 zone).
	TLSClientConfig *tls.Config

	// Proxy returns the proxy for a request, or nil for none. Nil means
	// http.ProxyFromEnvironment (HTTP_PROXY, HTTPS_PROXY and NO_PROXY, read
	// once per process; requests to localhost are never proxied). To
	// disable proxies, use a function returning nil, nil.
	//
	// The request given has an http or https URL (ws and wss mapped). The
	// Dialer reaches the server through an HTTP CONNECT tunnel; the proxy
	// URL's scheme must be http or https (TLS to the proxy), its default
	// port is 80 or 443, and its user information, if any, is sent as
	// Proxy-Authorization Basic credentials. A proxy that refuses the
	// CONNECT yields a *ResponseError with Proxy set. CONNECT is used for
	// plain http and ws targets too, since a forwarding proxy would strip
	// Upgrade and Connection; some proxies allow CONNECT only to port 443
	// by default (Squid's SSL_ports), and must be configured to allow the
	// target's port.
	Proxy func(*http.Request) (*url.URL, error)

	// HandshakeTimeout bounds the whole handshake: dial, proxy CONNECT,
	// TLS, request and response. Zero means defaultHandshakeTimeout; a
	// negative value means no bound other than the context's.
	HandshakeTimeout time.Duration

	// MaxHeaderBytes bounds the response header bytes read (interim 1xx
	// responses included). Zero means defaultMaxResponseHeaderBytes.
	MaxHeaderBytes int

	// Method is the request method. Empty means GET. CONNECT is not
	// allowed.
	Method string

	// Header holds extra request header fields, written in sorted order
	// after Host, Connection and Upgrade. A Host field replaces the URL's
	// host in the Host line; Connection values are added as further
	// options after "Upgrade" (as h2c needs for HTTP2-Settings). Upgrade,
	// Content-Length, Transfer-Encoding and Expect are not allowed: the
	// Dialer sets the first three and never sends the last. Names and
	// values are checked (no CR, LF or other control bytes) before
	// anything is dialed, and a Host must be a valid authority, host[:port]
	// (an internationalized name is converted to its ASCII form; an IPv6
	// address is bracketed and has no zone).
	//
	// The URL's host is sent without the zone of a scoped IPv6 address
	// ("http://[fe80::1%25eth0]:8080/" dials fe80::1 on eth0 and sends
	// "Host: [fe80::1]:8080"): a zone means something only on this host
	// (RFC 6874 §4).
	Header http.Header

	// Body is the request body, sent with a Content-Length in the same
	// write as the header. The server reads it before it switches; it is
	// never part of the new protocol.
	Body []byte

	// Prepare, if non-nil, is called with each request before it is
	// checked and sent. It may add, change or remove fields in req.Header
	// and set req.Host, which is checked as a Host field in Header is
	// (changing other fields is not supported). An error
	// aborts the dial before anything is dialed. A protocol adapter uses
	// it to add per-connection fields such as Sec-WebSocket-Key.
	//
	// With HTTP2 set, the Dial may send the HTTP/1.1 upgrade request or
	// extended CONNECT requests, and Prepare is called, before anything
	// is dialed, with each request the Dial may send: the HTTP/1.1 one,
	// then an extended CONNECT per offer (req.ProtoMajor 2, Method
	// CONNECT, the offer in req.Header[":protocol"], which Prepare cannot
	// change). req.ProtoMajor tells them apart.
	Prepare func(req *http.Request) error

	// Check, if non-nil, is called with a 101 response the Dialer has
	// found valid, or, over HTTP/2, with the 2xx response to an extended
	// CONNECT (resp.ProtoMajor 2; its Body is empty: the stream is the
	// Conn's). resp.Request is the request sent, as Prepare left it. An
	// error makes Dial close the connection (or stream) and return the
	// error wrapped; no other offer is tried. A protocol adapter uses it
	// to verify its own response fields, such as Sec-WebSocket-Accept.
	Check func(resp *http.Response) error

	// HTTP2, if non-nil, lets the Dialer switch protocols on HTTP/2
	// streams, with the extended CONNECT of RFC 8441, on connections the
	// HTTP2Transport keeps and shares between Dials: over TLS (https,
	// wss) when ALPN picks h2 (the Dialer offers h2 and http/1.1) and,
	// with HTTP2Transport.UnencryptedHTTP2, over cleartext with prior
	// knowledge. Nil means HTTP/1.1 only.
	//
	// The offers are asked for one at a time, in the caller's order, each
	// as an extended CONNECT whose :protocol is the offer ("echo/1"); the
	// first the server answers with a 2xx status is the switched
	// connection. Any other final status refuses that offer only; when
	// the server refuses them all, Dial returns the last refusal, a
	// *ResponseError with Proto "HTTP/2.0" and no Upgrade list, and does
	// not try HTTP/1.1: a server that enables RFC 8441 has answered (no
	// browser retries either). The exception is 505 HTTP Version Not
	// Supported, which refuses HTTP/2 rather than the offer: the Dial then
	// upgrades over HTTP/1.1 on a new connection, as an upgrade.Server
	// endpoint that does not serve extended CONNECT asks.
	//
	// The Dialer upgrades over HTTP/1.1, as without HTTP2, when the server
	// cannot switch over HTTP/2: when TLS negotiates http/1.1 (the upgrade
	// goes on that connection), when the server's first SETTINGS frame
	// lacks SETTINGS_ENABLE_CONNECT_PROTOCOL, or when a cleartext server
	// does not speak HTTP/2 (both on a new connection). In all three cases
	// the HTTP2Transport sends that server's Dials straight to HTTP/1.1
	// for ten minutes. A Dialer with a Body always uses HTTP/1.1: an
	// extended CONNECT has no request body before the switch.
	//
	// Over HTTP/2 the method is CONNECT, whatever Method says; Header is
	// sent without the fields HTTP/2 forbids (RFC 9113 §8.2.2: Connection
	// and the fields it names, Keep-Alive, Proxy-Connection,
	// Transfer-Encoding, Upgrade, TE other than "trailers"), and a Host
	// field becomes :authority; MaxHeaderBytes is announced as
	// SETTINGS_MAX_HEADER_LIST_SIZE, which counts each field's name and
	// value plus 32 bytes; HandshakeTimeout and the context bound the whole
	// chain of attempts, waits for a shared connection included. The
	// returned Conn is a stream of a shared connection, and its
	// Request.ProtoMajor is 2 (see Conn).
	HTTP2 *HTTP2Transport

	// HTTP3, if non-nil, makes Dial switch protocols on an HTTP/3 stream
	// (RFC 9220) for https and wss URLs, HTTP3 opening the streams (the
	// package github.com/go-upgrade/upgrade/http3 provides a
	// StreamTransport for it); http and ws URLs are dialed as without it.
	// Nil means no HTTP/3.
	//
	// The offers are asked for one at a time, in the caller's order, each
	// as an extended CONNECT whose :protocol is the offer, as over HTTP/2;
	// the first the server answers with a 2xx status is the switched
	// connection, and when the server refuses them all, Dial returns the
	// last refusal, a *ResponseError with Proto "HTTP/3.0". Nothing falls
	// back to HTTP/1.1 or HTTP/2: a server that cannot be reached over
	// HTTP/3, or that does not enable extended CONNECT, fails the Dial.
	// An offer with a version ("echo/1") cannot be asked for, since a
	// :protocol is a single token (RFC 8441 §4), and neither can a Body be
	// sent: Dial then fails before anything is sent.
	//
	// Prepare and Check are called as over HTTP/2, with ProtoMajor 3;
	// Header is sent without the fields HTTP/3 forbids (the same as
	// HTTP/2's), and Method is CONNECT. HandshakeTimeout and the context
	// bound the whole chain of attempts. NetDialContext, TLSClientConfig,
	// Proxy and MaxHeaderBytes do not apply: HTTP3 holds its own.
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

// Dial connects to the server at rawURL (scheme http, https, ws or wss; ws
// and wss are http and https), asks it to switch to one of offers, given in
// the caller's order of preference, and returns the switched connection.
//
// Over HTTP/1.1, the server must answer 101 Switching Protocols, with an
// Upgrade field whose protocols were all offered (names compared ASCII
// case-insensitively, versions exactly) and a Connection field carrying
// "upgrade"; otherwise Dial fails with an error wrapping ErrInvalidSwitch.
// Interim 1xx responses before it are skipped (at most 8). A 101 never has
// a body, whatever Content-Length or Transfer-Encoding it claims: the bytes
// after its header block are the new protocol's, and the Conn's first reads
// return those that arrived with it. Any other final status yields a
// *ResponseError carrying the status, header, a body excerpt and the
// server's advertised Upgrade list. Folded header lines (obs-fold) are
// unfolded, each fold replaced by one SP (RFC 9112 §5.2).
//
// With HTTP2 set, the switch may happen on an HTTP/2 stream instead, and
// with HTTP3 set, it happens on an HTTP/3 stream: see those fields.
//
// The returned Conn's Protocol is the offer the server chose (the first
// protocol of the 101's Upgrade field, or the :protocol of the extended
// CONNECT it accepted), as the caller spelled it; the response itself is
// in Response, the request sent in Request, and Context returns ctx
// without its cancellation and deadline.
//
// ctx, and the Dialer's HandshakeTimeout, bound the whole handshake; once
// Dial has returned they no longer affect the connection. When the
// context ends the handshake, the error wraps context.Cause(ctx) (such as
// context.Canceled or context.DeadlineExceeded); past HandshakeTimeout it
// wraps context.DeadlineExceeded. The URL (which must have a non-empty
// host), offers, the method and header fields, Host included, are checked
// before anything is dialed. On every failure the connection is closed.
func (d *Dialer) Dial(ctx context.Context, rawURL string, offers ...Protocol) (*Conn, error) {
	if ctx == nil {
		panic("upgrade: nil Context")
	}
	if d.HTTP3 != nil && isSecureURL(rawURL) {
		return d.dialStream(ctx, rawURL, offers)
	}
	req, t, err := d.newRequest(ctx, rawURL, offers)
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", redactURL(rawURL), err)
	}
	wb := dialBufPool.Get().(*[]byte)
	wire, err := d.appendRequest((*wb)[:0], req, t.target, offers)
	defer func() {
		if cap(wire) <= maxPooledRequest {
			*wb = wire[:0]
			dialBufPool.Put(wb)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", req.URL.Redacted(), err)
	}
	var h2 *h2Attempt
	if d.HTTP2 != nil {
		if h2, err = d.prepareHTTP2(ctx, req, t, offers); err != nil {
			return nil, fmt.Errorf("upgrade: dial %s: %w", req.URL.Redacted(), err)
		}
	}

	// The handshake's bound is a plain deadline on the connection, not a
	// derived context: with a context that cannot be cancelled
	// (context.Background), Dial sets up no timer, AfterFunc or goroutine.
	deadline := d.handshakeDeadline(ctx)
	var c *Conn
	if h2 != nil {
		c, err = d.handshakeHTTP2(ctx, deadline, req, t, wire, offers, h2)
	} else {
		c, err = d.handshake(ctx, deadline, req, t, wire, offers)
	}
	if err != nil {
		return nil, dialError(ctx, deadline, req.URL, err)
	}
	c.ctx = context.WithoutCancel(ctx)
	return c, nil
}

// handshakeDeadline returns when a handshake under ctx must end: after
// the Dialer's HandshakeTimeout or at ctx's deadline, whichever comes
// first; zero for no bound.
func (d *Dialer) handshakeDeadline(ctx context.Context) time.Time {
	var deadline time.Time
	if timeout := d.handshakeTimeout(); timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if ctxDeadline, ok := ctx.Deadline(); ok && (deadline.IsZero() || ctxDeadline.Before(deadline)) {
		deadline = ctxDeadline
	}
	return deadline
}

// dialError returns the error of a failed handshake with u, err, naming
// what ended it: the context's cause, the handshake timeout, or err
// itself. A *ResponseError is returned as it is.
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

func (d *Dialer) handshakeTimeout() time.Duration {
	switch {
	case d.HandshakeTimeout > 0:
		return d.HandshakeTimeout
	case d.HandshakeTimeout < 0:
		return 0
	}
	return defaultHandshakeTimeout
}

func (d *Dialer) maxHeaderBytes() int64 {
	if d.MaxHeaderBytes > 0 {
		return int64(d.MaxHeaderBytes)
	}
	return defaultMaxResponseHeaderBytes
}

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked
// reads and writes at once.
var aLongTimeAgo = time.Unix(1, 0)

// http11 is the only ALPN protocol a Dialer offers for an HTTP/1.1
// upgrade.
var http11 = []string{"http/1.1"}

// dialReaderPool recycles the bufio.Readers responses are read with.
var dialReaderPool sync.Pool

func getDialReader(r io.Reader) *bufio.Reader {
	if br, ok := dialReaderPool.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 4096)
}

func putDialReader(br *bufio.Reader) {
	br.Reset(nil)
	dialReaderPool.Put(br)
}

// handshake runs the exchange under ctx: dial, CONNECT, TLS, request,
// response. On failure the connection is closed.
func (d *Dialer) handshake(ctx context.Context, deadline time.Time, req *http.Request, t dialTarget, wire []byte, offers []Protocol) (*Conn, error) {
	proxyURL, addr, err := d.proxyFor(req, t)
	if err != nil {
		return nil, err
	}
	sc, err := d.connect(ctx, deadline, proxyURL, addr, t, http11)
	if err != nil {
		return nil, err
	}
	return d.switchHTTP1(&sc, req, wire, offers)
}

// serverConn is a connection to the server being set up within a
// handshake's bounds: its deadline is set on raw, and a cancelled context
// moves it to the past.
type serverConn struct {
	raw  net.Conn      // the TCP connection, to the server or the proxy
	conn net.Conn      // what carries HTTP: raw, a proxy tunnel, or TLS over either
	alpn string        // the protocol TLS negotiated; "" without TLS or ALPN
	br   *bufio.Reader // reads conn through lr
	lr   *limitReader
	stop func() bool // stops the context from interrupting raw; nil if it cannot
}

// connect dials addr, the server or proxyURL, opens a tunnel through the
// proxy, if any, and runs TLS for https and wss, offering nextProtos, all
// under ctx and deadline, which keep bounding the connection until
// release or close.
func (d *Dialer) connect(ctx context.Context, deadline time.Time, proxyURL *url.URL, addr string, t dialTarget, nextProtos []string) (_ serverConn, err error) {
	raw, err := d.dial(ctx, deadline, addr)
	if err != nil {
		return serverConn{}, fmt.Errorf("dialing %s: %w", addr, err)
	}
	// From here on, the deadline bounds every read and write, and a
	// cancelled ctx interrupts them by moving it to the past: no goroutine
	// is started unless ctx is cancelled.
	if !deadline.IsZero() {
		_ = raw.SetDeadline(deadline)
	}
	sc := serverConn{raw: raw, conn: raw}
	if ctx.Done() != nil {
		sc.stop = context.AfterFunc(ctx, func() { _ = raw.SetDeadline(aLongTimeAgo) })
	}
	sc.lr = &limitReader{r: raw, n: d.maxHeaderBytes()}
	sc.br = getDialReader(sc.lr)
	defer func() {
		if err != nil {
			sc.close()
		}
	}()
	if proxyURL != nil {
		if sc.conn, err = d.tunnel(raw, sc.br, sc.lr, t, proxyURL, addr); err != nil {
			return serverConn{}, err
		}
	}
	if t.secure {
		tc, err := d.startTLS(sc.conn, t, nextProtos)
		if err != nil {
			return serverConn{}, err
		}
		sc.conn, sc.lr.r = tc, tc
		sc.alpn = tc.ConnectionState().NegotiatedProtocol
		sc.br.Reset(sc.lr)
	}
	return sc, nil
}

// release ends the handshake's hold on the connection: the context no
// longer interrupts it and its deadline is cleared. It fails if the
// context ended just now, and has interrupted (or will) the connection.
func (sc *serverConn) release() error {
	putDialReader(sc.br)
	sc.br = nil
	if sc.stop != nil && !sc.stop() {
		return errors.New("handshake interrupted")
	}
	sc.stop = nil
	if err := sc.raw.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clearing the handshake deadline: %w", err)
	}
	return nil
}

// close closes the connection and releases what the handshake held.
func (sc *serverConn) close() {
	if sc.stop != nil {
		sc.stop()
	}
	if sc.br != nil {
		putDialReader(sc.br)
		sc.br = nil
	}
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
	if err != nil {
		sc.close()
		return nil, err
	}
	if err := sc.release(); err != nil {
		sc.raw.Close()
		return nil, err
	}
	return c, nil
}

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
	resp, proto, err := readSwitch(br, lr, req, offers)
	switch {
	case err == errNotSwitched && d.keepRefusal:
		re := newResponseError(&http.Response{StatusCode: resp.StatusCode, Status: resp.Status, Proto: resp.Proto, Header: resp.Header})
		re.live = resp
		return nil, re
	case err == errNotSwitched:
		lr.n = maxErrorBody
		return nil, newResponseError(resp)
	case err != nil:
		return nil, err
	}
	if d.Check != nil {
		if err := d.Check(resp); err != nil {
			return nil, fmt.Errorf("101 response refused by Check: %w", err)
		}
	}
	c := &Conn{nc: conn, Protocol: proto, Request: req, Response: resp}
	if n := br.Buffered(); n > 0 {
		ahead, _ := br.Peek(n)
		c.rbuf = append([]byte(nil), ahead...)
	}
	return c, nil
}

// dial connects to addr under ctx and deadline.
func (d *Dialer) dial(ctx context.Context, deadline time.Time, addr string) (net.Conn, error) {
	if d.NetDialContext == nil {
		nd := net.Dialer{Deadline: deadline}
		return nd.DialContext(ctx, "tcp", addr)
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return d.NetDialContext(ctx, "tcp", addr)
}

// tlsConfig returns a clone of TLSClientConfig for a connection to
// serverName (unless the config names one) offering nextProtos in ALPN.
func (d *Dialer) tlsConfig(serverName string, nextProtos []string) *tls.Config {
	cfg := d.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	// An upgrade exists only in HTTP/1.1: never let ALPN pick h2 unless
	// the Dialer can switch over HTTP/2 too (kubernetes#88781,
	// gorilla/websocket#760).
	cfg.NextProtos = nextProtos
	return cfg
}
