package http3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/httplist"
	"github.com/quic-go/quic-go"
	qhttp3 "github.com/quic-go/quic-go/http3"
)

// Defaults of a Transport.
const (
	defaultIdleConnTimeout = 90 * time.Second
	defaultMaxStreams      = 100
	defaultMaxHeaderBytes  = 64 << 10
	defaultKeepAlive       = 15 * time.Second
)

// maxInterimResponses bounds the interim (1xx) responses skipped before
// the final one.
const maxInterimResponses = 8

// ErrClosed is returned by OpenStream after Close.
var ErrClosed = errors.New("http3: transport closed")

// A Transport opens HTTP/3 request streams switched by extended CONNECT
// (RFC 9220) for an upgrade.Dialer: set it as the Dialer's HTTP3 field.
// It keeps QUIC connections and shares them: a stream to a server goes on
// a connection the Transport has to the same address when that connection
// carries fewer than MaxStreamsPerConn streams, and Dials that find none
// wait for one another Dial is opening rather than opening their own.
//
// A new connection is usable once the server's SETTINGS enable extended
// CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL); a server that does not is
// refused with an error saying so. A stream the server did not process,
// on a pooled connection that went away (a GOAWAY, an idle timeout), is
// opened again on a new connection.
//
// The zero value is ready to use. A Transport is safe for concurrent use
// and must not be copied after first use. Connections stay open until
// they have carried no stream for IdleConnTimeout, the server closes
// them, or CloseIdleConnections or Close is called.
type Transport struct {
	// TLSClientConfig configures TLS. Nil means the zero config. The
	// Transport uses a clone with NextProtos set to ["h3"] and
	// ServerName set to the URL's host if empty.
	TLSClientConfig *tls.Config

	// QUICConfig configures the QUIC connections. Nil means quic-go's
	// defaults with a KeepAlivePeriod of 15 seconds, so that a switched
	// stream that is idle does not let its connection time out.
	QUICConfig *quic.Config

	// MaxResponseHeaderBytes bounds the header block of a response. Zero
	// means 64 KiB.
	MaxResponseHeaderBytes int

	// MaxStreamsPerConn is how many streams a connection carries at once
	// before streams to the same server go on another. Zero means 100,
	// what servers commonly allow (QUIC's initial_max_streams_bidi);
	// past the server's own limit a stream waits for one to end.
	MaxStreamsPerConn int

	// IdleConnTimeout is how long a connection without streams is kept
	// open. Zero means 90 seconds; a negative value means no limit.
	IdleConnTimeout time.Duration

	initOnce sync.Once
	h3       *qhttp3.Transport // makes ClientConns; never dials

	mu      sync.Mutex
	closed  bool
	conns   map[string][]*clientConn
	dialing map[string]chan struct{} // closed when the dial is done
}

// clientConn is a QUIC connection of a Transport.
type clientConn struct {
	t   *Transport
	key string
	qc  *quic.Conn
	cc  *qhttp3.ClientConn

	// Guarded by t.mu.
	streams int         // streams open on it
	idle    *time.Timer // closes it once idle; nil while streams are open
	gone    bool        // out of the pool: no new stream
}

func (t *Transport) init() {
	t.initOnce.Do(func() {
		n := t.MaxResponseHeaderBytes
		if n <= 0 {
			n = defaultMaxHeaderBytes
		}
		t.h3 = &qhttp3.Transport{DisableCompression: true, MaxResponseHeaderBytes: n}
	})
}

func (t *Transport) maxStreams() int {
	if t.MaxStreamsPerConn > 0 {
		return t.MaxStreamsPerConn
	}
	return defaultMaxStreams
}

func (t *Transport) idleConnTimeout() time.Duration {
	switch {
	case t.IdleConnTimeout > 0:
		return t.IdleConnTimeout
	case t.IdleConnTimeout < 0:
		return 0
	}
	return defaultIdleConnTimeout
}

// OpenStream sends req, an extended CONNECT (Method CONNECT, an https URL,
// the protocol in req.Header[":protocol"], a token), on a stream of a
// connection to the URL's host, and waits within ctx for the final
// response: see upgrade.StreamTransport. The stream is a net.Conn as
// described in Handler. Fields HTTP/3 forbids (Connection and the like)
// are not sent, nor a User-Agent unless req has one.
func (t *Transport) OpenStream(ctx context.Context, req *http.Request) (*http.Response, net.Conn, error) {
	t.init()
	protocol, err := checkRequest(req)
	if err != nil {
		return nil, nil, err
	}
	addr, serverName := targetAddr(req)
	key := serverName + " " + addr
	for retried := false; ; retried = true {
		c, reused, err := t.getConn(ctx, key, addr, serverName)
		if err != nil {
			return nil, nil, err
		}
		resp, sc, sent, err := c.open(ctx, req, protocol)
		if err == nil {
			return resp, sc, nil
		}
		c.done()
		if !sent && reused && !retried && ctx.Err() == nil {
			// The pooled connection went away before the request
			// left: try a new one.
			t.remove(c)
			continue
		}
		return nil, nil, err
	}
}

// checkRequest checks that req is an extended CONNECT that HTTP/3 can
// carry and returns its :protocol.
func checkRequest(req *http.Request) (string, error) {
	ps := req.Header[":protocol"]
	switch {
	case req.Method != http.MethodConnect:
		return "", fmt.Errorf("http3: method %s, want an extended CONNECT", req.Method)
	case len(ps) != 1:
		return "", errors.New("http3: request without exactly one :protocol")
	case req.URL == nil || req.URL.Scheme != "https":
		return "", errors.New("http3: the URL of an extended CONNECT must be https")
	case !httplist.IsToken(ps[0]):
		return "", fmt.Errorf("http3: :protocol %q is not a token (RFC 9220 takes it from the Upgrade Token Registry)", ps[0])
	}
	return ps[0], nil
}

// targetAddr returns the address to dial for req, host:port (443 by
// default), and the TLS server name, its host.
func targetAddr(req *http.Request) (addr, serverName string) {
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "443"
	}
	serverName, _, _ = strings.Cut(host, "%")
	return net.JoinHostPort(host, port), serverName
}

// getConn returns a connection to addr with a stream slot taken for the
// caller: a pooled one (reused), or one it dials, waiting for a dial in
// progress to key rather than starting another.
func (t *Transport) getConn(ctx context.Context, key, addr, serverName string) (c *clientConn, reused bool, err error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, false, ErrClosed
		}
		for _, pc := range t.conns[key] {
			if pc.takeLocked() {
				t.mu.Unlock()
				return pc, true, nil
			}
		}
		if wait, ok := t.dialing[key]; ok {
			t.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		if t.dialing == nil {
			t.dialing = make(map[string]chan struct{})
		}
		ch := make(chan struct{})
		t.dialing[key] = ch
		t.mu.Unlock()

		c, err = t.dial(ctx, key, addr, serverName)
		t.mu.Lock()
		delete(t.dialing, key)
		close(ch)
		if err == nil && t.closed {
			err = ErrClosed
		}
		if err != nil {
			t.mu.Unlock()
			if c != nil {
				c.close()
			}
			return nil, false, err
		}
		if t.conns == nil {
			t.conns = make(map[string][]*clientConn)
		}
		t.conns[key] = append(t.conns[key], c)
		c.streams = 1
		t.mu.Unlock()
		// Out of the pool once the connection is gone, whoever ends it.
		context.AfterFunc(c.qc.Context(), func() { t.remove(c) })
		return c, false, nil
	}
}

// dial opens a QUIC connection to addr and HTTP/3 on it, and waits for
// the server's SETTINGS to enable extended CONNECT.
func (t *Transport) dial(ctx context.Context, key, addr, serverName string) (*clientConn, error) {
	tlsConf := t.TLSClientConfig.Clone()
	if tlsConf == nil {
		tlsConf = new(tls.Config)
	}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName = serverName
	}
	tlsConf.NextProtos = []string{qhttp3.NextProtoH3}
	qconf := t.QUICConfig
	if qconf == nil {
		qconf = &quic.Config{KeepAlivePeriod: defaultKeepAlive}
	}
	qc, err := quic.DialAddr(ctx, addr, tlsConf, qconf)
	if err != nil {
		return nil, fmt.Errorf("http3: dialing %s over QUIC: %w", addr, err)
	}
	c := &clientConn{t: t, key: key, qc: qc, cc: t.h3.NewClientConn(qc)}
	select {
	case <-c.cc.ReceivedSettings():
	case <-qc.Context().Done():
		return c, fmt.Errorf("http3: connection to %s closed before the server's SETTINGS: %w", addr, context.Cause(qc.Context()))
	case <-ctx.Done():
		return c, ctx.Err()
	}
	if !c.cc.Settings().EnableExtendedConnect {
		return c, fmt.Errorf("http3: the server at %s does not enable extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL): it cannot switch protocols over HTTP/3", addr)
	}
	return c, nil
}

// takeLocked takes a stream slot on c if it is usable and has one.
func (c *clientConn) takeLocked() bool {
	if c.gone || c.streams >= c.t.maxStreams() || c.qc.Context().Err() != nil {
		return false
	}
	c.streams++
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	return true
}

// done gives back a stream slot; a connection left without streams is
// closed after IdleConnTimeout, or at once if it is out of the pool.
func (c *clientConn) done() {
	t := c.t
	t.mu.Lock()
	c.streams--
	closeNow := c.streams == 0 && c.gone
	if d := t.idleConnTimeout(); c.streams == 0 && !c.gone && d > 0 {
		c.idle = time.AfterFunc(d, func() {
			t.mu.Lock()
			idle := c.streams == 0 && !c.gone
			if idle {
				t.removeLocked(c)
			}
			t.mu.Unlock()
			if idle {
				c.close()
			}
		})
	}
	t.mu.Unlock()
	if closeNow {
		c.close()
	}
}

// close closes the connection, streams included.
func (c *clientConn) close() {
	_ = c.cc.CloseWithError(quic.ApplicationErrorCode(qhttp3.ErrCodeNoError), "")
}

// remove takes c out of the pool: it takes no new stream, and is closed
// once it carries none.
func (t *Transport) remove(c *clientConn) {
	t.mu.Lock()
	t.removeLocked(c)
	idle := c.streams == 0
	t.mu.Unlock()
	if idle {
		c.close()
	}
}

func (t *Transport) removeLocked(c *clientConn) {
	c.gone = true
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	cs := t.conns[c.key]
	for i, pc := range cs {
		if pc == c {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(t.conns, c.key)
	} else {
		t.conns[c.key] = cs
	}
}

// CloseIdleConnections closes the connections that carry no stream.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []*clientConn
	for _, cs := range t.conns {
		for _, c := range cs {
			if c.streams == 0 {
				idle = append(idle, c)
			}
		}
	}
	for _, c := range idle {
		t.removeLocked(c)
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// Close closes every connection, with the streams they carry, and makes
// later OpenStream calls fail with ErrClosed.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	var all []*clientConn
	for _, cs := range t.conns {
		all = append(all, cs...)
	}
	for _, c := range all {
		t.removeLocked(c)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	return nil
}

// open sends req on a new stream of c and reads the response. sent
// reports whether the request may have reached the server.
func (c *clientConn) open(ctx context.Context, req *http.Request, protocol string) (_ *http.Response, _ net.Conn, sent bool, _ error) {
	rs, err := c.cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("http3: opening a stream: %w", err)
	}
	abort := func() {
		rs.CancelWrite(codeCancelled)
		rs.CancelRead(codeCancelled)
	}
	// ctx bounds the exchange: when it ends, the stream is reset.
	stop := context.AfterFunc(ctx, abort)
	resp, err := exchange(rs, outgoing(req, protocol))
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		abort()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nil, true, err
	}
	st := c.qc.ConnectionState().TLS
	resp.TLS = &st
	return resp, newStreamConn(rs, c.cc.LocalAddr(), c.cc.RemoteAddr(), c.done), true, nil
}

// outgoing returns req as quic-go sends an extended CONNECT: the
// :protocol in Proto, and no User-Agent unless req has one.
func outgoing(req *http.Request, protocol string) *http.Request {
	h := make(http.Header, len(req.Header)+1)
	for k, vs := range req.Header {
		if k != ":protocol" {
			h[k] = vs
		}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // omitted: quic-go would send its own
	}
	return &http.Request{
		Method: http.MethodConnect,
		URL:    req.URL,
		Proto:  protocol,
		Header: h,
		Host:   req.Host,
	}
}

// exchange sends req on rs and returns the final response, skipping
// interim ones.
func exchange(rs *qhttp3.RequestStream, req *http.Request) (*http.Response, error) {
	if err := rs.SendRequestHeader(req); err != nil {
		return nil, fmt.Errorf("http3: sending the request: %w", err)
	}
	for interim := 0; ; interim++ {
		resp, err := rs.ReadResponse()
		if err != nil {
			return nil, fmt.Errorf("http3: reading the response: %w", err)
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			// RFC 9114 §4.5: HTTP/3 has no 101.
			return nil, errors.New("http3: the server answered 101 Switching Protocols, which HTTP/3 does not have")
		case resp.StatusCode >= 200:
			return resp, nil
		case interim >= maxInterimResponses:
			return nil, fmt.Errorf("http3: more than %d interim responses", maxInterimResponses)
		}
	}
}
