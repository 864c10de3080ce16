package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"

	"golang.org/x/net/http/httpguts"
)

// DefaultMaxResponseHeaderBytes is the default bound on the bytes of the
// response header blocks a Dialer reads: the status lines and header fields
// of every interim 1xx response and of the final response together.
const DefaultMaxResponseHeaderBytes = 64 << 10

// maxInterimResponses bounds the interim (1xx other than 101) responses a
// Dialer skips before the final response.
const maxInterimResponses = 8

// maxErrorBody bounds the excerpt of a refusal's body kept in a
// ResponseError.
const maxErrorBody = 4 << 10

// maxAdvertised bounds the protocols kept from a refusal's Upgrade field.
const maxAdvertised = 64

// ErrInvalidSwitch is wrapped by the error Dial returns when the server
// answered 101 Switching Protocols but the response does not complete a
// valid switch: a malformed status line or header field, HTTP/1.0, an
// Upgrade field missing, malformed or naming a protocol that was not
// offered, or a Connection field without the "upgrade" option
// (RFC 9110 §7.8).
var ErrInvalidSwitch = errors.New("upgrade: invalid 101 Switching Protocols response")

// errHandshakeTimeout is wrapped by the error of a handshake that ran past
// the Dialer's HandshakeTimeout.
var errHandshakeTimeout = fmt.Errorf("handshake timeout: %w", context.DeadlineExceeded)

// A Dialer opens connections upgraded to another protocol: it connects to
// an HTTP/1.1 server (directly or through a proxy's CONNECT tunnel, over
// TLS for https and wss), sends one request offering protocols in its
// Upgrade field, and returns the connection once the server has answered
// 101 Switching Protocols naming one of them.
//
// The request is always HTTP/1.1, also over TLS, where ALPN offers
// "http/1.1" only: an upgrade cannot happen over HTTP/2. It carries one
// Host field, "Connection: Upgrade", the offers in the caller's order of
// preference, and never an Expect field; it is written in a single write,
// body included.
//
// The zero Dialer is ready to use: GET, proxies from the environment,
// DefaultHandshakeTimeout and DefaultMaxResponseHeaderBytes. A Dialer has
// no internal state: it may be copied, and used by several goroutines at
// once as long as its fields are not changed.
type Dialer struct {
	// NetDialContext dials the TCP connection to the server or proxy. Nil
	// means a net.Dialer's DialContext.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSClientConfig configures TLS for https and wss URLs. Nil means the
	// zero config. The Dialer uses a clone with NextProtos set to
	// ["http/1.1"], and ServerName set to the URL's host if empty
	// (without brackets or an IPv6 zone).
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
	// TLS, request and response. Zero means DefaultHandshakeTimeout; a
	// negative value means no bound other than the context's.
	HandshakeTimeout time.Duration

	// MaxHeaderBytes bounds the response header bytes read (interim 1xx
	// responses included). Zero means DefaultMaxResponseHeaderBytes.
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
	Prepare func(req *http.Request) error

	// Check, if non-nil, is called with a 101 response the Dialer has
	// found valid (resp.Request is the request sent, as Prepare left it).
	// An error makes Dial close the connection and return the error
	// wrapped. A protocol adapter uses it to verify its own 101 fields,
	// such as Sec-WebSocket-Accept.
	Check func(resp *http.Response) error
}

// ResponseError is the error Dial returns when the server (or, with Proxy
// set, a proxy asked to CONNECT) answers with a final status other than
// the expected one: anything but 101 Switching Protocols from the server,
// anything but 2xx from the proxy. Use errors.As to get it.
type ResponseError struct {
	// StatusCode is the response's status code, e.g. 426; Status the
	// whole status, e.g. "426 Upgrade Required".
	StatusCode int
	Status     string

	// Header is the response header.
	Header http.Header

	// Body is the start of the response body, at most 4 KiB, read within
	// the handshake's bounds; possibly empty or cut short.
	Body []byte

	// Upgrade lists the protocols the server advertised in its Upgrade
	// field (a 426 must carry one), in its order. It is parsed leniently:
	// malformed elements are skipped, and at most 64 are kept.
	Upgrade []Protocol

	// Proxy reports whether the response came from the proxy, refusing
	// the CONNECT request, rather than from the server.
	Proxy bool
}

// Error names the status and the protocols the server advertised.
func (e *ResponseError) Error() string {
	if e.Proxy {
		return "upgrade: proxy answered CONNECT with " + strconv.Quote(e.Status)
	}
	s := "upgrade: server answered " + strconv.Quote(e.Status) + " instead of 101 Switching Protocols"
	if len(e.Upgrade) > 0 {
		s += "; it advertises Upgrade: " + formatProtocols(e.Upgrade)
	}
	return s
}

// formatProtocols formats ps as an Upgrade field value.
func formatProtocols(ps []Protocol) string {
	var b []byte
	for i, p := range ps {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = p.appendTo(b)
	}
	return string(b)
}

// Dial opens a connection upgraded to one of offers with a zero Dialer:
// see Dialer.Dial.
func Dial(ctx context.Context, rawURL string, offers ...Protocol) (*Conn, error) {
	var d Dialer
	return d.Dial(ctx, rawURL, offers...)
}

// Dial connects to the server at rawURL (scheme http, https, ws or wss; ws
// and wss are http and https), asks it to switch to one of offers, given in
// the caller's order of preference, and returns the switched connection.
//
// The server must answer 101 Switching Protocols in HTTP/1.1, with an
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
// The returned Conn's Protocol is the offer the server chose (the first
// protocol of the 101's Upgrade field), as the caller spelled it; the 101
// itself is in Response, the request sent in Request, and Context returns
// ctx without its cancellation and deadline.
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
	req, t, err := d.newRequest(ctx, rawURL, offers)
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", redactURL(rawURL), err)
	}
	wb := dialBufPool.Get().(*[]byte)
	wire, err := d.appendRequest((*wb)[:0], req, t.target, offers)
	defer func() {
		*wb = wire[:0]
		dialBufPool.Put(wb)
	}()
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", req.URL.Redacted(), err)
	}

	// The handshake's bound is a plain deadline on the connection, not a
	// derived context: with a context that cannot be cancelled
	// (context.Background), Dial sets up no timer, AfterFunc or goroutine.
	var deadline time.Time
	if timeout := d.handshakeTimeout(); timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	ctxDeadline, hasCtxDeadline := ctx.Deadline()
	if hasCtxDeadline && (deadline.IsZero() || ctxDeadline.Before(deadline)) {
		deadline = ctxDeadline
	}
	c, err := d.handshake(ctx, deadline, req, t, wire, offers)
	if err != nil {
		var cause error
		switch {
		case ctx.Err() != nil:
			cause = context.Cause(ctx)
		case !deadline.IsZero() && !time.Now().Before(deadline):
			if hasCtxDeadline && ctxDeadline.Equal(deadline) {
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
			return nil, fmt.Errorf("upgrade: dial %s: %w: %w", req.URL.Redacted(), cause, err)
		case errors.As(err, &re):
			return nil, err
		}
		return nil, fmt.Errorf("upgrade: dial %s: %w", req.URL.Redacted(), err)
	}
	c.ctx = context.WithoutCancel(ctx)
	return c, nil
}

func (d *Dialer) handshakeTimeout() time.Duration {
	switch {
	case d.HandshakeTimeout > 0:
		return d.HandshakeTimeout
	case d.HandshakeTimeout < 0:
		return 0
	}
	return DefaultHandshakeTimeout
}

func (d *Dialer) maxHeaderBytes() int64 {
	if d.MaxHeaderBytes > 0 {
		return int64(d.MaxHeaderBytes)
	}
	return DefaultMaxResponseHeaderBytes
}

// dialTarget is where a request goes.
type dialTarget struct {
	addr       string // host:port to connect to, with any IPv6 zone
	authority  string // host:port without zone, for CONNECT
	serverName string // host without port, brackets or zone, for TLS
	secure     bool   // https or wss
	target     string // request-target, origin-form
}

// newRequest parses rawURL and builds the request to send, calling
// Prepare. Nothing is validated against the wire format yet.
func (d *Dialer) newRequest(ctx context.Context, rawURL string, offers []Protocol) (*http.Request, dialTarget, error) {
	var t dialTarget
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return nil, t, fmt.Errorf("invalid URL: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "http"
	case "https", "wss":
		u.Scheme, t.secure = "https", true
	default:
		return nil, t, fmt.Errorf("unsupported URL scheme %q (want http, https, ws or wss)", u.Scheme)
	}
	if u.Hostname() == "" {
		// "http://:8080/" would dial the local host and send "Host:
		// :8080": RFC 9110 §4.2.1 forbids an http URI with an empty
		// host.
		return nil, t, errors.New("URL has an empty host")
	}
	if len(offers) == 0 {
		return nil, t, errors.New("no protocol offered")
	}
	u.Fragment, u.RawFragment = "", ""
	host, err := httpguts.PunycodeHostPort(u.Host)
	if err != nil {
		return nil, t, fmt.Errorf("invalid host %q: %w", u.Host, err)
	}
	// The zone of a scoped IPv6 address ("[fe80::1%25eth0]") names an
	// interface of this host: it is used to dial, and never sent, neither
	// in Host nor in a CONNECT request nor as the TLS server name
	// (RFC 6874 §4).
	hostname := strings.TrimSuffix(strings.TrimPrefix(hostOnly(host), "["), "]")
	t.serverName = hostname
	if strings.HasPrefix(host, "[") {
		t.serverName, _, _ = strings.Cut(hostname, "%")
		host = removeZone(host)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if t.secure {
			port = "443"
		}
	}
	t.addr = net.JoinHostPort(hostname, port)
	t.authority = net.JoinHostPort(t.serverName, port)
	t.target = u.RequestURI()

	method := d.Method
	if method == "" {
		method = http.MethodGet
	}
	h := make(http.Header, len(d.Header)+3)
	for k, vs := range d.Header {
		h[k] = append([]string(nil), vs...)
	}
	if u.User != nil && len(h["Authorization"]) == 0 {
		pw, _ := u.User.Password()
		h["Authorization"] = []string{basicAuth(u.User.Username(), pw)}
	}
	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          host,
		ContentLength: int64(len(d.Body)),
	}
	if len(d.Body) > 0 {
		body := d.Body
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	if ctx != context.Background() {
		req = req.WithContext(ctx)
	}
	if d.Prepare != nil {
		if err := d.Prepare(req); err != nil {
			return nil, t, fmt.Errorf("preparing the request: %w", err)
		}
	}
	return req, t, nil
}

// removeZone removes the zone from a bracketed IPv6 host[:port]:
// "[fe80::1%eth0]:8080" becomes "[fe80::1]:8080".
func removeZone(hostport string) string {
	end := strings.LastIndexByte(hostport, ']')
	if !strings.HasPrefix(hostport, "[") || end < 0 {
		return hostport
	}
	if i := strings.IndexByte(hostport[:end], '%'); i >= 0 {
		return hostport[:i] + hostport[end:]
	}
	return hostport
}

// checkAuthority returns "" if hostport can be sent as the Host field of
// an http or https request, or what is wrong with it. It must be
// uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2) with a non-empty
// host: a reg-name or IPv4 address (unreserved characters, sub-delims and
// percent-encodings), or a bracketed IPv6 address without a zone (a zone
// is never sent, RFC 6874 §4). The port, if any, is a decimal number up
// to 65535, or empty as the grammar allows.
func checkAuthority(hostport string) string {
	host, port, hasPort := hostport, "", false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "missing ] after IPv6 address"
		}
		host = hostport[1:end]
		switch rest := hostport[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return "unexpected " + httplist.Quote(rest) + " after IPv6 address"
		}
		if strings.IndexByte(host, '%') >= 0 {
			return "IPv6 zone identifier (it is meaningful only on this host and never sent, RFC 6874 §4)"
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return httplist.Quote(host) + " is not an IPv6 address"
		}
	} else {
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port, hasPort = hostport[:i], hostport[i+1:], true
		}
		if host == "" {
			return "empty host"
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
			case c == '%' && i+2 < len(host) && isHex(host[i+1]) && isHex(host[i+2]):
				i += 2
			default:
				return "invalid byte " + httplist.Quote(host[i:i+1]) + " in host"
			}
		}
	}
	if hasPort && port != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "invalid port " + httplist.Quote(port)
		}
	}
	return ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hostOnly strips the port from a host[:port] string, keeping IPv6
// brackets.
func hostOnly(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") {
		return hostport[:i]
	}
	return hostport
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// redactURL returns rawURL with any password replaced, for errors.
func redactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Redacted()
	}
	return "(invalid URL)"
}

// appendRequest validates req and offers and appends the request's wire
// form to b: request line, Host, Connection, Upgrade, the other header
// fields sorted, Content-Length, the empty line and the body. It records
// the Connection and Upgrade fields sent in req.Header.
func (d *Dialer) appendRequest(b []byte, req *http.Request, target string, offers []Protocol) ([]byte, error) {
	if !httpguts.ValidHeaderFieldName(req.Method) { // a method is a token
		return b, fmt.Errorf("invalid method %q", req.Method)
	}
	if req.Method == http.MethodConnect {
		return b, errors.New("method CONNECT cannot carry an upgrade")
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return b, fmt.Errorf("invalid request target %q", target)
		}
	}
	for _, p := range offers {
		if r := checkOffer(p); r != "" {
			return b, fmt.Errorf("invalid offer %q: %s", p.String(), r)
		}
	}
	h := req.Header
	host, hostField := req.Host, false
	var conn []string // extra Connection options
	keys := make([]string, 0, len(h))
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return b, fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return b, fmt.Errorf("invalid value for header field %s: %q", k, v)
			}
		}
		switch ck := textproto.CanonicalMIMEHeaderKey(k); ck {
		case "Upgrade", "Content-Length", "Transfer-Encoding", "Expect":
			return b, fmt.Errorf("header field %s is set by the Dialer or not allowed", k)
		case "Host":
			if hostField || len(vs) != 1 {
				return b, errors.New("more than one Host header field")
			}
			host, hostField = vs[0], true
			delete(h, k)
			continue
		case "Connection":
			for o := range httplist.Elements(vs) {
				if ascii.EqualFold(o, "upgrade") {
					continue
				}
				if !httplist.IsToken(o) {
					return b, fmt.Errorf("invalid Connection option %s", httplist.Quote(o))
				}
				conn = append(conn, o)
			}
			delete(h, k)
			continue
		}
		keys = append(keys, k)
	}
	// A Host given in Header or by Prepare is checked like the URL's,
	// after the same IDNA conversion.
	if h, err := httpguts.PunycodeHostPort(host); err == nil {
		host = h
	}
	if r := checkAuthority(host); r != "" {
		return b, fmt.Errorf("invalid Host %s: %s", httplist.Quote(host), r)
	}
	req.Host = host
	sortStrings(keys)

	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nConnection: Upgrade"...)
	connValue := "Upgrade"
	for _, o := range conn {
		b = append(b, ", "...)
		b = append(b, o...)
	}
	if len(conn) > 0 {
		connValue = "Upgrade, " + strings.Join(conn, ", ")
	}
	b = append(b, "\r\nUpgrade: "...)
	start := len(b)
	for i, p := range offers {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = p.appendTo(b)
	}
	upValue := string(b[start:])
	b = append(b, "\r\n"...)
	b = appendFields(b, h, keys)
	n := len(d.Body)
	if n > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		// RFC 9110 §8.6: a user agent SHOULD send Content-Length when the
		// method defines a meaning for content, even when it is zero.
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, d.Body...)

	h["Connection"] = []string{connValue}
	h["Upgrade"] = []string{upValue}
	return b, nil
}

// checkOffer returns "" if p can be sent in an Upgrade field, or what is
// wrong with it.
func checkOffer(p Protocol) string {
	if p.Name == "" {
		return "empty protocol name"
	}
	if r := httplist.CheckToken(p.Name); r != "" {
		return r + " in protocol name"
	}
	if r := httplist.CheckToken(p.Version); r != "" {
		return r + " in protocol version"
	}
	return ""
}

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked
// reads and writes at once.
var aLongTimeAgo = time.Unix(1, 0)

// http11 is the only ALPN protocol a Dialer offers.
var http11 = []string{"http/1.1"}

// dialBufPool recycles the buffers requests are assembled in.
var dialBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

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

// errLimit is returned by a limitReader past its bound.
var errLimit = errors.New("read limit reached")

// limitReader reads at most n more bytes from r, then fails with errLimit:
// it bounds what the response parser can consume without ever reading
// past the bound (unlike a read buffer, it never takes bytes it may not
// keep).
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// handshake runs the exchange under ctx: dial, CONNECT, TLS, request,
// response. On failure the connection is closed.
func (d *Dialer) handshake(ctx context.Context, deadline time.Time, req *http.Request, t dialTarget, wire []byte, offers []Protocol) (c *Conn, err error) {
	proxyFn := d.Proxy
	if proxyFn == nil {
		proxyFn = http.ProxyFromEnvironment
	}
	proxyURL, err := proxyFn(req)
	if err != nil {
		return nil, fmt.Errorf("finding the proxy: %w", err)
	}
	addr := t.addr
	if proxyURL != nil {
		if proxyURL.Scheme != "http" && proxyURL.Scheme != "https" {
			return nil, fmt.Errorf("unsupported proxy scheme %q (want http or https)", proxyURL.Scheme)
		}
		addr = proxyURL.Host
		if proxyURL.Port() == "" {
			port := "80"
			if proxyURL.Scheme == "https" {
				port = "443"
			}
			addr = net.JoinHostPort(proxyURL.Hostname(), port)
		}
	}

	raw, err := d.dial(ctx, deadline, addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	// From here on, the deadline bounds every read and write, and a
	// cancelled ctx interrupts them by moving it to the past: no goroutine
	// is started unless ctx is cancelled.
	if !deadline.IsZero() {
		_ = raw.SetDeadline(deadline)
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = raw.SetDeadline(aLongTimeAgo) })
	}
	lr := &limitReader{r: raw, n: d.maxHeaderBytes()}
	br := getDialReader(lr)
	defer func() {
		putDialReader(br)
		if err != nil {
			if stop != nil {
				stop()
			}
			raw.Close()
		}
	}()

	conn := raw
	if proxyURL != nil {
		if proxyURL.Scheme == "https" {
			pc := tls.Client(raw, d.tlsConfig(proxyURL.Hostname()))
			if err := pc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake with proxy %s: %w", addr, err)
			}
			conn, lr.r = pc, pc
		}
		if err := connectTunnel(conn, br, t.authority, proxyURL); err != nil {
			return nil, err
		}
		if t.secure && br.Buffered() > 0 {
			// Bytes the server sent through the tunnel right after the
			// CONNECT response belong to the TLS stream.
			ahead, _ := br.Peek(br.Buffered())
			conn = &Conn{nc: conn, rbuf: append([]byte(nil), ahead...)}
		}
	}
	if t.secure {
		tc := tls.Client(conn, d.tlsConfig(t.serverName))
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", t.addr, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			return nil, fmt.Errorf("TLS server %s negotiated ALPN protocol %q, not http/1.1", t.addr, p)
		}
		conn, lr.r = tc, tc
		br.Reset(lr)
	}
	lr.n = d.maxHeaderBytes()

	if _, err := conn.Write(wire); err != nil {
		return nil, fmt.Errorf("writing the request: %w", err)
	}
	resp, proto, err := readSwitch(br, lr, req, offers)
	if err != nil {
		return nil, err
	}
	if d.Check != nil {
		if err := d.Check(resp); err != nil {
			return nil, fmt.Errorf("101 response refused by Check: %w", err)
		}
	}
	if stop != nil && !stop() {
		// ctx ended just now, and has interrupted (or will) the conn.
		return nil, errors.New("handshake interrupted")
	}
	stop = nil
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clearing the handshake deadline: %w", err)
	}
	c = &Conn{nc: conn, Protocol: proto, Request: req, Response: resp}
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
// serverName (unless the config names one) offering HTTP/1.1 only.
func (d *Dialer) tlsConfig(serverName string) *tls.Config {
	cfg := d.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	// An upgrade exists only in HTTP/1.1: never let ALPN pick h2
	// (kubernetes#88781, gorilla/websocket#760).
	cfg.NextProtos = http11
	return cfg
}

// connectTunnel asks the proxy on conn to open a tunnel to addr and reads
// its answer from br.
func connectTunnel(conn net.Conn, br *bufio.Reader, addr string, proxyURL *url.URL) error {
	b := make([]byte, 0, 128)
	b = append(b, "CONNECT "...)
	b = append(b, addr...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, addr...)
	b = append(b, "\r\n"...)
	if u := proxyURL.User; u != nil {
		pw, _ := u.Password()
		b = append(b, "Proxy-Authorization: "...)
		b = append(b, basicAuth(u.Username(), pw)...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("writing CONNECT to proxy %s: %w", proxyURL.Redacted(), err)
	}
	creq := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	for interim := 0; ; interim++ {
		resp, err := http.ReadResponse(br, creq)
		if err != nil {
			return fmt.Errorf("reading the proxy's CONNECT response: %w", responseReadError(err))
		}
		switch {
		case resp.StatusCode/100 == 2:
			// The tunnel is open: no body follows (RFC 9110 §9.3.6).
			return nil
		case resp.StatusCode/100 == 1 && resp.StatusCode != http.StatusSwitchingProtocols:
			if interim >= maxInterimResponses {
				return fmt.Errorf("proxy sent more than %d interim responses", maxInterimResponses)
			}
			continue
		}
		re := newResponseError(resp)
		re.Proxy = true
		return re
	}
}

// responseReadError names a read failure: a connection that ended early
// is io.ErrUnexpectedEOF, a limitReader's bound ErrHeaderTooLarge.
func responseReadError(err error) error {
	switch {
	case errors.Is(err, errLimit):
		return fmt.Errorf("response header block too large: %w", ErrHeaderTooLarge)
	case err == io.EOF:
		return fmt.Errorf("connection closed before the response was complete: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// readSwitch reads responses from br until a final one, skipping interim
// 1xx responses. It returns a valid 101 and the offer it selects, a
// *ResponseError for another final status, or another error.
func readSwitch(br *bufio.Reader, lr *limitReader, req *http.Request, offers []Protocol) (*http.Response, Protocol, error) {
	for interim := 0; ; interim++ {
		// A 101 is parsed here: http.ReadResponse would reject (or
		// interpret) Content-Length and Transfer-Encoding fields, which a
		// 101 cannot have and a client must ignore (RFC 9112 §6.3). Other
		// responses go through http.ReadResponse, for its body framing.
		head, err := br.Peek(len("HTTP/1.1 101"))
		if err != nil {
			return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(eofIsUnexpected(err)))
		}
		if is101(head) {
			resp, proto, err := read101(br, req, offers)
			if err != nil {
				return nil, Protocol{}, err
			}
			return resp, proto, nil
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(eofIsUnexpected(err)))
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, Protocol{}, invalidSwitch("malformed status line")
		case resp.StatusCode/100 == 1:
			if interim >= maxInterimResponses {
				return nil, Protocol{}, fmt.Errorf("more than %d interim responses", maxInterimResponses)
			}
			continue
		}
		lr.n = maxErrorBody
		return nil, Protocol{}, newResponseError(resp)
	}
}

// eofIsUnexpected turns io.EOF into io.ErrUnexpectedEOF: in the middle of
// a handshake the connection can end only too early.
func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// is101 reports whether head, the first bytes of a response, is
// "HTTP/1.x 101".
func is101(head []byte) bool {
	return len(head) >= 12 && string(head[:7]) == "HTTP/1." && '0' <= head[7] && head[7] <= '9' &&
		head[8] == ' ' && string(head[9:12]) == "101"
}

// invalidSwitchError is an invalid 101 response, matching ErrInvalidSwitch.
type invalidSwitchError struct{ detail string }

func (e *invalidSwitchError) Error() string {
	return "invalid 101 Switching Protocols response: " + e.detail
}

func (e *invalidSwitchError) Is(target error) bool { return target == ErrInvalidSwitch }

func invalidSwitch(detail string) error { return &invalidSwitchError{detail: detail} }

// read101 reads a response whose status line starts "HTTP/1.x 101" and
// checks it completes the switch: HTTP/1.1 or later 1.x, an Upgrade field
// whose protocols were all offered, the first selecting the Conn's
// protocol, and Connection carrying "upgrade". The header block ends the
// response; br keeps what follows it.
func read101(br *bufio.Reader, req *http.Request, offers []Protocol) (*http.Response, Protocol, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, Protocol{}, invalidSwitch("status line too long")
		}
		return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(eofIsUnexpected(err)))
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if !is101(line) {
		return nil, Protocol{}, invalidSwitch("malformed status line")
	}
	minor := line[7]
	if minor == '0' {
		// RFC 9110 §7.8: an HTTP/1.0 message cannot switch.
		return nil, Protocol{}, invalidSwitch("HTTP/1.0 response")
	}
	reason := line[12:]
	if len(reason) > 0 {
		if reason[0] != ' ' {
			return nil, Protocol{}, invalidSwitch("malformed status line")
		}
		reason = reason[1:]
		for _, c := range reason {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return nil, Protocol{}, invalidSwitch("control byte in reason phrase")
			}
		}
	}
	status := "101 Switching Protocols"
	switch {
	case len(reason) == 0:
		status = "101"
	case string(reason) != "Switching Protocols":
		status = "101 " + string(reason)
	}
	proto := "HTTP/1.1"
	if minor != '1' {
		proto = string(line[:8])
	}
	h, err := readHeader(br)
	if err != nil {
		return nil, Protocol{}, err
	}
	resp := &http.Response{
		Status:     status,
		StatusCode: http.StatusSwitchingProtocols,
		Proto:      proto,
		ProtoMajor: 1,
		ProtoMinor: int(minor - '0'),
		Header:     h,
		Body:       http.NoBody,
		Request:    req,
	}
	var arr [4]Protocol
	got, err := AppendProtocols(arr[:0], h["Upgrade"], Limits{})
	if err != nil {
		return nil, Protocol{}, invalidSwitch(err.Error())
	}
	if len(got) == 0 {
		return nil, Protocol{}, invalidSwitch("no Upgrade field")
	}
	var chosen Protocol
	for i, p := range got {
		o, ok := matchOffer(offers, p)
		if !ok {
			return nil, Protocol{}, invalidSwitch("Upgrade names " + strconv.Quote(p.String()) + ", which was not offered")
		}
		if i == 0 {
			chosen = o
		}
	}
	if !HasConnectionOption(h, "upgrade") {
		return nil, Protocol{}, invalidSwitch("Connection field lacks the upgrade option")
	}
	return resp, chosen, nil
}

// readHeader reads a header block up to and including its empty line.
// Field names must be tokens directly followed by ":" (RFC 9112 §5.1),
// values free of control bytes other than HTAB. Obsolete line folding is
// unfolded as RFC 9112 §5.2 requires of a user agent: a line starting with
// SP or HTAB continues the previous field's value, joined to it by one SP,
// the OWS around the fold trimmed; such a line before the first field is
// malformed. Lines must end in LF (CRLF or bare LF); a block that ends
// without its empty line is io.ErrUnexpectedEOF.
func readHeader(br *bufio.Reader) (http.Header, error) {
	h := make(http.Header, 4)
	// The field being read is kept until the next line shows whether it
	// is folded, so that a value folded many times is built in one
	// buffer rather than copied at every fold.
	var (
		key   string // "" before the first field
		arr   [128]byte
		value = arr[:0]
	)
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("reading the 101 response header: %w", err)
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if key == "" {
				return nil, invalidSwitch("line folding before the first header field")
			}
			cont := trimOWSBytes(line)
			if !httpguts.ValidHeaderFieldValue(string(cont)) {
				return nil, invalidSwitch("invalid value in folded header line " + httplist.Quote(string(line)))
			}
			if len(cont) > 0 {
				if len(value) > 0 {
					value = append(value, ' ')
				}
				value = append(value, cont...)
			}
			continue
		}
		if key != "" {
			h[key] = append(h[key], string(value))
		}
		if len(line) == 0 {
			return h, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !httpguts.ValidHeaderFieldName(string(line[:colon])) {
			return nil, invalidSwitch("malformed header line " + httplist.Quote(string(line)))
		}
		v := trimOWSBytes(line[colon+1:])
		if !httpguts.ValidHeaderFieldValue(string(v)) {
			return nil, invalidSwitch("invalid value in header line " + httplist.Quote(string(line)))
		}
		key = internKey(line[:colon])
		value = append(value[:0], v...)
	}
}

// trimOWSBytes returns b without leading and trailing SP and HTAB.
func trimOWSBytes(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// readLine returns the next line from br without its CRLF or LF. The
// slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A long line: gather it (the limitReader under br bounds it).
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		return nil, responseReadError(eofIsUnexpected(err))
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// internKey returns the canonical form of a header field name, without
// allocating for the fields a 101 usually carries.
func internKey(k []byte) string {
	for _, common := range [...]string{"Upgrade", "Connection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Date", "Server"} {
		if ascii.EqualFold(string(k), common) {
			return common
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(k))
}

// matchOffer returns the offer p names: the name compared ASCII
// case-insensitively, the version exactly.
func matchOffer(offers []Protocol, p Protocol) (Protocol, bool) {
	for _, o := range offers {
		if ascii.EqualFold(o.Name, p.Name) && o.Version == p.Version {
			return o, true
		}
	}
	return Protocol{}, false
}

// newResponseError builds the error for a final response other than the
// one expected, reading an excerpt of its body (the caller bounds the
// reader).
func newResponseError(resp *http.Response) *ResponseError {
	e := &ResponseError{
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Header:     resp.Header,
		Upgrade:    parseAdvertised(resp.Header["Upgrade"]),
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		// Errors only cut the excerpt short.
		e.Body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	}
	return e
}

// parseAdvertised parses the Upgrade field of a refusal leniently:
// well-formed elements are kept, others skipped.
func parseAdvertised(values []string) []Protocol {
	var out []Protocol
	for _, v := range values {
		for len(v) > 0 && len(out) < maxAdvertised {
			var elem string
			if elem, v = httplist.Cut(v); elem == "" {
				continue
			}
			if p, reason := parseElement(elem); reason == "" {
				out = append(out, p)
			}
		}
	}
	return out
}
