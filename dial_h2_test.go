package upgrade

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
)

var (
	echo2   = Protocol{Name: "echo", Version: "2"}
	refuse1 = Protocol{Name: "refuse", Version: "1"}
	refuse2 = Protocol{Name: "refuse", Version: "2"}
)

// enableConnect is the SETTINGS entry that enables RFC 8441.
var enableConnect = http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1}

func schemes(t *testing.T, f func(t *testing.T, secure bool)) {
	t.Run("tls", func(t *testing.T) { f(t, true) })
	t.Run("cleartext", func(t *testing.T) { f(t, false) })
}

// TestDialHTTP2: over TLS with ALPN h2, and over cleartext with prior
// knowledge, the Dialer switches an HTTP/2 stream with an extended
// CONNECT, and the Conn says so.
func TestDialHTTP2(t *testing.T) {
	schemes(t, func(t *testing.T, secure bool) {
		s := newH2Server(t, secure)
		d := s.dialer(newTransport(t))
		var prepared []string
		d.Prepare = func(req *http.Request) error {
			prepared = append(prepared, fmt.Sprintf("%s %d %v", req.Method, req.ProtoMajor, req.Header[":protocol"]))
			return nil
		}
		var checked *http.Response
		d.Check = func(resp *http.Response) error { checked = resp; return nil }

		c, err := d.Dial(ctxTimeout(t), s.url+"/chat?room=1", echo1)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, echo1, c.Protocol)
		assert.Equal(t, []string{"GET 1 []", "CONNECT 2 [echo/1]"}, prepared, "Prepare sees every request the Dial may send")

		assert.Equal(t, http.MethodConnect, c.Request.Method)
		assert.Equal(t, "HTTP/2.0", c.Request.Proto)
		assert.Equal(t, 2, c.Request.ProtoMajor)
		assert.Equal(t, []string{"echo/1"}, c.Request.Header[":protocol"])
		assert.Equal(t, http.StatusOK, c.Response.StatusCode)
		assert.Equal(t, 2, c.Response.ProtoMajor)
		assert.Equal(t, http.NoBody, c.Response.Body)
		assert.Same(t, c.Request, c.Response.Request)
		assert.Same(t, c.Response, checked)
		assert.Equal(t, secure, c.Response.TLS != nil)
		if secure {
			assert.Equal(t, "h2", c.Response.TLS.NegotiatedProtocol)
		}
		_, isTLS := c.NetConn().(*tls.Conn)
		assert.False(t, isTLS, "NetConn is the stream, not the shared connection")
		assert.Equal(t, s.ts.Listener.Addr().String(), c.RemoteAddr().String())
		assert.Equal(t, "127.0.0.1", c.LocalAddr().(*net.TCPAddr).IP.String())

		roundTrip(t, c, "hello over HTTP/2")
		r := s.nextSeen(t)
		assert.Equal(t, seenRequest{"HTTP/2.0", http.MethodConnect, "echo/1", "/chat?room=1", s.ts.Listener.Addr().String(), r.header}, r)
		assert.Empty(t, r.header.Get("Accept-Encoding"))
		assert.Empty(t, r.header.Get("User-Agent"), "no User-Agent unless the caller sets one, as over HTTP/1.1")
		assert.Zero(t, s.h1.Load())
	})
}

// TestDialHTTP2OffersInOrder: each offer is an extended CONNECT of its
// own, in the caller's order, on the same connection; a refusal moves on
// to the next. When every offer is refused, the last refusal is the
// error, and HTTP/1.1 is not tried.
func TestDialHTTP2OffersInOrder(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))

	c, err := d.Dial(ctxTimeout(t), s.url, refuse1, echo2, echo1)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, echo2, c.Protocol)
	assert.Equal(t, "refuse/1", s.nextSeen(t).protocol)
	assert.Equal(t, "echo/2", s.nextSeen(t).protocol)
	roundTrip(t, c, "second offer")

	_, err = d.Dial(ctxTimeout(t), s.url, refuse1, refuse2)
	var re *ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusForbidden, re.StatusCode)
	assert.Equal(t, "403 Forbidden", re.Status)
	assert.Equal(t, "HTTP/2.0", re.Proto)
	assert.Equal(t, "no refuse/2 here\n", string(re.Body))
	assert.Empty(t, re.Upgrade)
	assert.False(t, re.Proxy)
	assert.Equal(t, `upgrade: server answered "403 Forbidden" to an HTTP/2 extended CONNECT`, err.Error())
	assert.Equal(t, "refuse/1", s.nextSeen(t).protocol)
	assert.Equal(t, "refuse/2", s.nextSeen(t).protocol)
	assert.Zero(t, s.h1.Load(), "no HTTP/1.1 retry after HTTP/2 refusals")
	assert.Equal(t, int32(1), s.accepts.Load())
}

// TestDialHTTP2VersionNotSupported: a 505 answer to an extended CONNECT
// refuses HTTP/2, not the offer: the Dial upgrades over HTTP/1.1, without
// asking for the other offers over HTTP/2, and later Dials to other paths
// still use HTTP/2.
func TestDialHTTP2VersionNotSupported(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, err := d.Dial(ctxTimeout(t), s.url+"/http1", echo1, echo2)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 1, c.Request.ProtoMajor)
	assert.Equal(t, echo1, c.Protocol)
	roundTrip(t, c, "over HTTP/1.1")
	assert.Equal(t, "echo/1", s.nextSeen(t).protocol)
	select {
	case r := <-s.seen:
		t.Fatalf("offer %s asked for over HTTP/2 after a 505", r.protocol)
	default:
	}
	assert.Equal(t, int32(1), s.h1.Load())

	c2, err := d.Dial(ctxTimeout(t), s.url+"/chat", echo1)
	require.NoError(t, err)
	defer c2.Close()
	assert.Equal(t, 2, c2.Request.ProtoMajor)
	assert.Equal(t, int32(2), s.accepts.Load())
}

// TestDialHTTP2UpgradeServer: an upgrade.Server endpoint on an HTTP/2
// server that enables extended CONNECT is reachable by a Dialer with
// HTTP2: over HTTP/2 if the Server serves extended CONNECT, else over
// HTTP/1.1 after its 505.
func TestDialHTTP2UpgradeServer(t *testing.T) {
	up := echoServer("echo/1")
	ts := httptest.NewUnstartedServer(up)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(func() {
		ts.Close()
		up.Close()
	})
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	d := Dialer{Proxy: noProxy, TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second, HTTP2: newTransport(t)}
	c, err := d.Dial(ctxTimeout(t), ts.URL, echo1)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "to an upgrade.Server")
	t.Logf("switched over HTTP/%d", c.Request.ProtoMajor)
}

// TestDialHTTP2SharesConnections: Dials share one TCP connection, one
// stream each, whether they run one after another or all at once;
// CloseIdleConnections closes it once no stream is open.
func TestDialHTTP2SharesConnections(t *testing.T) {
	schemes(t, func(t *testing.T, secure bool) {
		s := newH2Server(t, secure)
		tr := newTransport(t)
		d := s.dialer(tr)

		var conns []*Conn
		for i := range 3 {
			c, err := d.Dial(ctxTimeout(t), s.url, echo1)
			require.NoError(t, err)
			conns = append(conns, c)
			roundTrip(t, c, fmt.Sprint("sequential ", i))
		}
		const n = 20
		var wg sync.WaitGroup
		results := make(chan *Conn, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := d.Dial(ctxTimeout(t), s.url, echo1)
				if assert.NoError(t, err) {
					_, _ = fmt.Fprint(c, i)
					results <- c
				}
			}()
		}
		wg.Wait()
		close(results)
		for c := range results {
			conns = append(conns, c)
		}
		require.Len(t, conns, 3+n)
		for i, c := range conns[:3] {
			roundTrip(t, c, fmt.Sprint("still open ", i))
		}
		assert.Equal(t, int32(1), s.accepts.Load(), "all streams on one connection")

		tr.CloseIdleConnections() // streams are open: the connection stays
		c, err := d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		conns = append(conns, c)
		assert.Equal(t, int32(1), s.accepts.Load())

		for _, c := range conns {
			require.NoError(t, c.Close())
		}
		tr.CloseIdleConnections()
		c, err = d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, int32(2), s.accepts.Load(), "CloseIdleConnections closed the idle connection")
	})
}

// TestDialHTTP2NoExtendedConnect: an HTTP/2 server whose SETTINGS lack
// SETTINGS_ENABLE_CONNECT_PROTOCOL gets no extended CONNECT: the Dial
// upgrades over HTTP/1.1 on a new connection, and the next Dials go there
// directly.
func TestDialHTTP2NoExtendedConnect(t *testing.T) {
	schemes(t, func(t *testing.T, secure bool) {
		fs := newFakeH2Server(t, secure)
		d := fs.dialer(newTransport(t))
		for i := range 2 {
			c, err := d.Dial(ctxTimeout(t), fs.url, echo1)
			require.NoError(t, err)
			assert.Equal(t, 1, c.Request.ProtoMajor)
			assert.Equal(t, 101, c.Response.StatusCode)
			roundTrip(t, c, "over HTTP/1.1")
			c.Close()
			assert.Equal(t, int32(1), fs.prefaces.Load(), "dial %d: HTTP/2 tried once", i)
			assert.Equal(t, int32(i+2), fs.accepts.Load())
		}
		select {
		case f := <-fs.headers:
			t.Fatalf("the client sent HEADERS %v", f)
		default:
		}
	})
}

// TestDialHTTP2ALPNHTTP1: a TLS server that picks http/1.1 in ALPN gets
// the HTTP/1.1 upgrade on the same connection.
func TestDialHTTP2ALPNHTTP1(t *testing.T) {
	s := newH1Server(t, true)
	require.Equal(t, []string{"http/1.1"}, s.ts.TLS.NextProtos)
	d := s.dialer(newTransport(t))
	for i := range 2 {
		c, err := d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		assert.Equal(t, 1, c.Request.ProtoMajor)
		tc := c.NetConn().(*tls.Conn)
		assert.Equal(t, "http/1.1", tc.ConnectionState().NegotiatedProtocol)
		roundTrip(t, c, "same connection")
		c.Close()
		assert.Equal(t, int32(i+1), s.accepts.Load(), "one connection per Dial")
	}
}

// TestDialHTTP2PriorKnowledgeFails: with prior knowledge, a cleartext
// server that does not speak HTTP/2 fails the preface; the Dial upgrades
// over HTTP/1.1 on a new connection, and the next Dials go there
// directly. Without UnencryptedHTTP2, cleartext URLs never try HTTP/2.
func TestDialHTTP2PriorKnowledgeFails(t *testing.T) {
	s := newH1Server(t, false)
	d := s.dialer(newTransport(t))
	for i := range 2 {
		c, err := d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		assert.Equal(t, 1, c.Request.ProtoMajor)
		roundTrip(t, c, "over HTTP/1.1")
		c.Close()
		assert.Equal(t, int32(i+2), s.accepts.Load(), "the preface is tried on the first Dial only")
	}

	d.HTTP2 = &HTTP2Transport{} // no prior knowledge
	c, err := d.Dial(ctxTimeout(t), s.url, echo1)
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, int32(4), s.accepts.Load())
}

// TestDialHTTP2HeadersFrame checks the HEADERS frame on the wire: the
// pseudo-header fields RFC 8441 §4 requires, the Dialer's fields without
// those HTTP/2 forbids, no accept-encoding or user-agent added; then that
// CloseWrite sends END_STREAM while the stream still reads, and Close
// sends RST_STREAM CANCEL.
func TestDialHTTP2HeadersFrame(t *testing.T) {
	schemes(t, func(t *testing.T, secure bool) {
		fs := newFakeH2Server(t, secure, enableConnect)
		d := fs.dialer(newTransport(t))
		d.Header = http.Header{
			"X-Custom":         {"v"},
			"Connection":       {"keep-alive, X-Hop"},
			"X-Hop":            {"gone"},
			"Keep-Alive":       {"timeout=5"},
			"Proxy-Connection": {"keep-alive"},
			"Te":               {"gzip"},
			"Host":             {"example.test:8443"},
		}
		u, err := url.Parse(fs.url + "/chat?room=1")
		require.NoError(t, err)
		u.User = url.UserPassword("user", "secret")
		c, err := d.Dial(ctxTimeout(t), u.String(), echo1)
		require.NoError(t, err)
		defer c.Close()
		require.Equal(t, 2, c.Request.ProtoMajor)
		assert.Equal(t, "example.test:8443", c.Request.Host)

		fields := <-fs.headers
		got := map[string][]string{}
		var order []string
		for _, f := range fields {
			got[f.Name] = append(got[f.Name], f.Value)
			order = append(order, f.Name)
		}
		scheme := "http"
		if secure {
			scheme = "https"
		}
		assert.Equal(t, map[string][]string{
			":method":       {"CONNECT"},
			":protocol":     {"echo/1"},
			":scheme":       {scheme},
			":path":         {"/chat?room=1"},
			":authority":    {"example.test:8443"},
			"x-custom":      {"v"},
			"authorization": {basicAuth("user", "secret")},
		}, got)
		for i, name := range order {
			if !strings.HasPrefix(name, ":") {
				assert.NotContains(t, order[i:], ":protocol", "pseudo-header fields come first")
				break
			}
		}

		assert.Equal(t, "HEADERS", fs.event(t))
		roundTrip(t, c, "echoed by the frame server")
		require.NoError(t, c.CloseWrite())
		assert.Equal(t, "END_STREAM", fs.event(t))
		b, err := io.ReadAll(c)
		require.NoError(t, err, "the server's END_STREAM is EOF")
		assert.Empty(t, b)
		_, err = c.Write([]byte("x"))
		assert.Error(t, err, "Write after CloseWrite")

		c2, err := d.Dial(ctxTimeout(t), fs.url, echo1)
		require.NoError(t, err)
		<-fs.headers
		assert.Equal(t, "HEADERS", fs.event(t))
		require.NoError(t, c2.Close())
		assert.Equal(t, "RST_STREAM CANCEL", fs.event(t))
		assert.Equal(t, int32(1), fs.accepts.Load())
	})
}

// TestDialHTTP2HalfClose: after CloseWrite the server reads EOF, and what
// it sends then still arrives.
func TestDialHTTP2HalfClose(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, err := d.Dial(ctxTimeout(t), s.url, Protocol{Name: "halfclose"})
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "abcd")
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "[saw EOF after 4 bytes, err=<nil>]", string(b))
	_, err = c.Write([]byte("late"))
	assert.Error(t, err)
}

// TestDialHTTP2CloseResets: Close resets the stream: the server's read
// fails at once; pending and later calls on the Conn fail with
// net.ErrClosed.
func TestDialHTTP2CloseResets(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, err := d.Dial(ctxTimeout(t), s.url, Protocol{Name: "hold"})
	require.NoError(t, err)
	_, err = io.WriteString(c, "some bytes")
	require.NoError(t, err)

	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	require.NoError(t, c.Close())
	select {
	case err := <-s.ended:
		assert.Error(t, err, "the server's read fails")
	case <-time.After(2 * time.Second):
		t.Fatal("the server's read of the stream did not fail after Close")
	}
	assert.ErrorIs(t, <-readErr, net.ErrClosed)
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, net.ErrClosed)
	_, err = c.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.ErrorIs(t, c.Close(), net.ErrClosed)
	assert.ErrorIs(t, c.CloseWrite(), net.ErrClosed)
}

// isTimeout reports whether err is a deadline's timeout, as net.Conn's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// TestDialHTTP2ReadDeadline: read deadlines behave as net.Conn's: a Read
// they interrupt times out and loses nothing, they can be moved and
// cleared after expiring, and moving one to the past interrupts a pending
// Read.
func TestDialHTTP2ReadDeadline(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, err := d.Dial(ctxTimeout(t), s.url, echo1)
	require.NoError(t, err)
	defer c.Close()

	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	buf := make([]byte, 64)
	_, err = c.Read(buf)
	require.True(t, isTimeout(err), "%v", err)
	_, err = c.Read(buf)
	require.True(t, isTimeout(err), "an expired deadline stays expired: %v", err)

	// The byte arrives for the Read that timed out: the next one gets it.
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:n]))

	// A deadline moved to the past interrupts a pending Read.
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		readErr <- err
	}()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Hour)))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(-time.Second)))
	select {
	case err := <-readErr:
		assert.True(t, isTimeout(err), "%v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("a past deadline did not interrupt the pending Read")
	}

	// Many Reads cut short by tiny deadlines lose no byte of a stream.
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	want := make([]byte, 256<<10)
	_, _ = rand.Read(want)
	written := make(chan error, 1)
	go func() {
		for b := want; len(b) > 0; b = b[min(len(b), 1000):] {
			if _, err := c.Write(b[:min(len(b), 1000)]); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	var got []byte
	timeouts := 0
	for len(got) < len(want) {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Microsecond)))
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			require.True(t, isTimeout(err), "%v", err)
			timeouts++
		}
	}
	require.NoError(t, <-written)
	assert.Equal(t, want, got)
	t.Logf("%d reads timed out", timeouts)
}

// TestDialHTTP2WriteDeadline: a Write blocked by flow control (the server
// does not read) times out with the bytes the stream took.
func TestDialHTTP2WriteDeadline(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, err := d.Dial(ctxTimeout(t), s.url, Protocol{Name: "sink"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(200*time.Millisecond)))
	big := make([]byte, 16<<20)
	n, err := c.Write(big)
	require.True(t, isTimeout(err), "%v", err)
	assert.Less(t, n, len(big))
	assert.Positive(t, n)
	_, err = c.Write([]byte("x"))
	require.True(t, isTimeout(err), "an expired deadline stays expired: %v", err)
}

// TestDialHTTP2LargeEcho: 1 MiB each way, at the same time.
func TestDialHTTP2LargeEcho(t *testing.T) {
	schemes(t, func(t *testing.T, secure bool) {
		s := newH2Server(t, secure)
		d := s.dialer(newTransport(t))
		c, err := d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		requireEcho(t, c, c, 1<<20)
	})
}

// TestDialHTTP2HandshakeBounds: the context and HandshakeTimeout bound
// the handshake; once it is done, they no longer touch the stream.
func TestDialHTTP2HandshakeBounds(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := d.Dial(ctx, s.url, Protocol{Name: "slow"})
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 2*time.Second)

	d.HandshakeTimeout = 100 * time.Millisecond
	_, err = d.Dial(context.Background(), s.url, Protocol{Name: "slow"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "handshake timeout")

	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	d.HandshakeTimeout = -1
	c, err := d.Dial(ctx, s.url, echo1)
	require.NoError(t, err)
	defer c.Close()
	<-ctx.Done() // the handshake's deadline has passed
	roundTrip(t, c, "after the handshake's bounds")
	assert.NoError(t, c.Context().Err())
}

// TestDialHTTP2WaitBounded: a Dial waiting for the connection another
// Dial is opening gives up when its context ends.
func TestDialHTTP2WaitBounded(t *testing.T) {
	hl := newHangListener(t)
	d := Dialer{Proxy: noProxy, HandshakeTimeout: -1, HTTP2: newTransport(t)}
	url := "https://" + hl.Addr().String()

	first, cancelFirst := context.WithCancel(context.Background())
	defer cancelFirst()
	firstErr := make(chan error, 1)
	go func() {
		_, err := d.Dial(first, url, echo1)
		firstErr <- err
	}()
	// Wait until the first Dial is connecting, as the second will see.
	require.Eventually(t, func() bool {
		d.HTTP2.mu.Lock()
		defer d.HTTP2.mu.Unlock()
		return len(d.HTTP2.dialing) == 1
	}, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := d.Dial(ctx, url, echo1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)

	cancelFirst()
	require.ErrorIs(t, <-firstErr, context.Canceled)
}

// TestDialHTTP2Through a proxy: the HTTP/2 connection runs through the
// proxy's CONNECT tunnel, and is shared there too.
func TestDialHTTP2ThroughProxy(t *testing.T) {
	s := newH2Server(t, true)
	p := newConnectProxy(t)
	d := s.dialer(newTransport(t))
	d.Proxy = func(*http.Request) (*url.URL, error) {
		return &url.URL{Scheme: "http", Host: p.ln.Addr().String()}, nil
	}
	for range 2 {
		c, err := d.Dial(ctxTimeout(t), s.url, echo1)
		require.NoError(t, err)
		assert.Equal(t, 2, c.Request.ProtoMajor)
		roundTrip(t, c, "through the tunnel")
		defer c.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	assert.Equal(t, []string{"CONNECT " + s.ts.Listener.Addr().String() + " HTTP/1.1"}, p.lines)
}

// TestDialHTTP2Fields: a Body keeps the Dial on HTTP/1.1; fields HTTP/2
// forbids, added by Prepare, and Prepare's errors fail the Dial before
// anything is dialed; Check's error fails it after the 200.
func TestDialHTTP2Fields(t *testing.T) {
	fs := newFakeH2Server(t, false, enableConnect)
	d := fs.dialer(newTransport(t))

	withBody := d
	withBody.Method, withBody.Body = http.MethodPost, []byte("body")
	c, err := withBody.Dial(ctxTimeout(t), fs.url, echo1)
	require.NoError(t, err)
	assert.Equal(t, 1, c.Request.ProtoMajor)
	c.Close()
	assert.Zero(t, fs.prefaces.Load())

	bad := d
	bad.Prepare = func(req *http.Request) error {
		if req.ProtoMajor == 2 {
			req.Header.Set("Transfer-Encoding", "chunked")
		}
		return nil
	}
	_, err = bad.Dial(ctxTimeout(t), fs.url, echo1)
	assert.ErrorContains(t, err, "header field Transfer-Encoding cannot be sent in an HTTP/2 extended CONNECT")
	bad.Prepare = func(req *http.Request) error {
		if req.ProtoMajor == 2 {
			return errors.New("no HTTP/2 for you")
		}
		return nil
	}
	_, err = bad.Dial(ctxTimeout(t), fs.url, echo1)
	assert.ErrorContains(t, err, "preparing the request: no HTTP/2 for you")
	assert.Equal(t, int32(1), fs.accepts.Load(), "nothing dialed")

	// With a pooled connection, as a failure there could look like a dead
	// connection to retry.
	warm, err := d.Dial(ctxTimeout(t), fs.url, echo1)
	require.NoError(t, err)
	defer warm.Close()
	<-fs.headers
	assert.Equal(t, "HEADERS", fs.event(t))
	bad.Prepare = nil
	bad.Check = func(resp *http.Response) error {
		assert.Equal(t, 2, resp.ProtoMajor)
		return errors.New("not this one")
	}
	_, err = bad.Dial(ctxTimeout(t), fs.url, echo1, echo2)
	assert.ErrorContains(t, err, "200 OK response refused by Check: not this one")
	<-fs.headers
	assert.Equal(t, "HEADERS", fs.event(t))
	assert.Equal(t, "RST_STREAM CANCEL", fs.event(t))
	select {
	case <-fs.headers:
		t.Fatal("a Check error must not try the next offer, nor retry")
	default:
	}
	assert.Equal(t, int32(2), fs.accepts.Load())
}

// TestDialHTTP2NoLeak: after the Conns and the transport's idle
// connections are closed, no goroutine is left.
func TestDialHTTP2NoLeak(t *testing.T) {
	s := newH2Server(t, true)
	tr := &HTTP2Transport{}
	d := s.dialer(tr)
	base := goleak.IgnoreCurrent()
	var conns []*Conn
	for _, p := range []Protocol{echo1, {Name: "hold"}, {Name: "sink"}, {Name: "halfclose"}} {
		c, err := d.Dial(ctxTimeout(t), s.url, p)
		require.NoError(t, err)
		_, err = c.Write([]byte("x"))
		require.NoError(t, err)
		conns = append(conns, c)
	}
	_, err := conns[0].Read(make([]byte, 1)) // starts the pump
	require.NoError(t, err)
	require.NoError(t, conns[3].CloseWrite())
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	<-s.ended
	tr.CloseIdleConnections()
	s.ts.Close()
	goleak.VerifyNone(t, base)
}

// TestExtendedConnectFields: the fields HTTP/2 forbids are dropped from
// the Dialer's Header, and refused when Prepare adds them.
func TestExtendedConnectFields(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Hop", "X-Other"},
		"X-Hop":             {"a"},
		"x-other":           {"b"},
		"Keep-Alive":        {"timeout=5"},
		"Proxy-Connection":  {"keep-alive"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"websocket"},
		"Te":                {"trailers"},
		"X-Kept":            {"c"},
	}
	dropConnectionFields(h)
	assert.Equal(t, http.Header{"Te": {"trailers"}, "X-Kept": {"c"}}, h)
	h = http.Header{"Te": {"trailers, gzip"}}
	dropConnectionFields(h)
	assert.Empty(t, h)

	for fields, want := range map[string]string{
		"Connection: close":     "header field Connection cannot be sent",
		"Upgrade: websocket":    "header field Upgrade cannot be sent",
		"Content-Length: 0":     "header field Content-Length cannot be sent",
		"Expect: 100-continue":  "header field Expect cannot be sent",
		"Te: gzip":              `other than "trailers"`,
		"Host: a b":             "invalid Host",
		"Bad Name: v":           "invalid header field name",
		"X-Ok: \x01":            "invalid value", // a control byte
		"Host: example.com:443": "",
	} {
		k, v, _ := strings.Cut(fields, ": ")
		req := &http.Request{Host: "127.0.0.1:1", Header: http.Header{k: {v}, ":protocol": {"echo"}}}
		err := checkH2Fields(req)
		if want == "" {
			require.NoError(t, err, fields)
			assert.Equal(t, "example.com:443", req.Host)
			assert.NotContains(t, req.Header, "Host")
			continue
		}
		assert.ErrorContains(t, err, want, fields)
	}
}
