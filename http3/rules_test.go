package http3_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	qhttp3 "github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawConn opens a QUIC connection speaking h3 to addr, with its control
// stream and an empty SETTINGS frame, for requests written by hand.
func rawConn(t *testing.T, addr string) *quic.Conn {
	t.Helper()
	_, pool := testCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pool, NextProtos: []string{qhttp3.NextProtoH3}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	ctrl, err := qc.OpenUniStream()
	require.NoError(t, err)
	_, err = ctrl.Write([]byte{0x00, 0x04, 0x00}) // control stream; SETTINGS, empty
	require.NoError(t, err)
	return qc
}

// headersFrame encodes fields as an HTTP/3 HEADERS frame.
func headersFrame(t *testing.T, fields ...string) []byte {
	t.Helper()
	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for i := 0; i+1 < len(fields); i += 2 {
		require.NoError(t, enc.WriteField(qpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	b := quicvarint.Append(nil, 0x01)
	b = quicvarint.Append(b, uint64(block.Len()))
	return append(b, block.Bytes()...)
}

// TestVersionedProtocolOverHTTP3: a :protocol with a version is not a
// token. The Transport refuses to send one, and quic-go's server resets
// the stream of a peer that sends one anyway with H3_MESSAGE_ERROR, before
// any handler runs: a clear error on both sides, never a hang.
func TestVersionedProtocolOverHTTP3(t *testing.T) {
	reached := make(chan struct{}, 1)
	us := echoServer("echo/1", "echo")
	srv := serveH3(t, us, http3.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		us.ServeHTTP(w, r)
	})))
	addr := strings.TrimPrefix(srv.url, "https://")

	tr := newTransport(t)
	req := &http.Request{Method: http.MethodConnect, URL: mustURL(t, srv.url+"/"), Host: addr,
		Header: http.Header{":protocol": {"echo/1"}}}
	_, _, err := tr.OpenStream(context.Background(), req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `:protocol "echo/1" is not a token`)

	qc := rawConn(t, addr)
	str, err := qc.OpenStreamSync(context.Background())
	require.NoError(t, err)
	_, err = str.Write(headersFrame(t, ":method", "CONNECT", ":protocol", "echo/1", ":scheme", "https", ":path", "/", ":authority", addr))
	require.NoError(t, err)
	require.NoError(t, str.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(str)
	var se *quic.StreamError
	require.ErrorAs(t, err, &se, "the server answers with a reset: %v", err)
	assert.Equal(t, quic.StreamErrorCode(qhttp3.ErrCodeMessageError), se.ErrorCode)
	assert.Empty(t, reached, "no handler ran")

	// The same request with a token is switched.
	c, err := dial(t, tr, srv.url+"/", "echo")
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "a token passes")
	require.NoError(t, c.Close())
}

// TestServerWithoutExtendedConnect: a server whose SETTINGS do not enable
// extended CONNECT is refused with an error saying so.
func TestServerWithoutExtendedConnect(t *testing.T) {
	c, _ := testCert(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{qhttp3.NextProtoH3}}, nil)
	require.NoError(t, err)
	served := make(chan struct{})
	go func() {
		defer close(served)
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		if ctrl, err := qc.OpenUniStream(); err == nil {
			_, _ = ctrl.Write([]byte{0x00, 0x04, 0x00}) // SETTINGS without ENABLE_CONNECT_PROTOCOL
		}
		<-qc.Context().Done()
	}()
	defer func() {
		ln.Close()
		<-served
	}()

	tr := newTransport(t)
	_, err = dial(t, tr, "https://"+ln.Addr().String()+"/", "websocket")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not enable extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL)")
}

// TestShutdownGraceOverHTTP3: Shutdown tells HTTP/3 streams to finish
// (Draining), refuses new ones with 503, and closes those still open at
// the end of the grace period.
func TestShutdownGraceOverHTTP3(t *testing.T) {
	us := new(upgrade.Server)
	us.HandleFunc("chat", func(c *upgrade.Conn) {
		<-upgrade.Draining(c.Context())
		_, _ = c.Write([]byte("draining"))
		_, _ = io.Copy(io.Discard, c) // until closed at the end of the grace
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	c, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { return us.ActiveConns()["chat"] == 1 }, 5*time.Second, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- us.Shutdown(ctx) }()

	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, len("draining"))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "draining", string(buf))

	_, err = dial(t, tr, srv.url+"/", "chat")
	var re *upgrade.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusServiceUnavailable, re.StatusCode)
	assert.Equal(t, "1", re.Header.Get("Retry-After"))

	require.ErrorIs(t, <-shut, context.DeadlineExceeded)
	_, err = io.ReadAll(c)
	require.NoError(t, err, "the stream ended at the end of the grace period")
	assert.Empty(t, us.ActiveConns())
}

// TestDelegatedRouteOverHTTP3: a handler that checks an HTTP/1.1 WebSocket
// handshake and hijacks, as gorilla/websocket does, serves HTTP/3 streams
// unchanged: it sees a GET with a key, and the 101 it writes becomes the
// stream's 200.
func TestDelegatedRouteOverHTTP3(t *testing.T) {
	seen := make(chan *http.Request, 1)
	delegate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
			websocket.AcceptKey(r.Header.Get("Sec-WebSocket-Key")))
		if brw.Flush() != nil {
			return
		}
		_, _ = io.Copy(conn, brw)
	})
	us := new(upgrade.Server)
	us.HandleRoute("websocket", upgrade.Route{Delegate: delegate})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)

	c, err := websocket.Dial(context.Background(), srv.url+"/ws", &websocket.DialOptions{
		Subprotocols: []string{"chat"},
		Dialer:       &upgrade.Dialer{HTTP3: tr},
		Header:       http.Header{"Origin": {srv.url}},
	})
	require.NoError(t, err)
	defer c.Close()
	r := <-seen
	assert.Equal(t, http.MethodGet, r.Method)
	assert.Equal(t, 1, r.ProtoMajor)
	assert.Len(t, r.Header.Get("Sec-WebSocket-Key"), 24)
	assert.Equal(t, "chat", c.Response.Header.Get("Sec-WebSocket-Protocol"))
	assert.Empty(t, c.Response.Header["Sec-Websocket-Accept"], "checked by the bridge, not relayed")
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "through the bridge")
}

// TestDialTimeoutResetsTheStream: a server that never answers fails the
// Dial at HandshakeTimeout, and the stream is reset: the handler's request
// context ends.
func TestDialTimeoutResetsTheStream(t *testing.T) {
	ended := make(chan struct{})
	srv := serveH3(t, nil, http3.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(ended)
	})))
	tr := newTransport(t)
	d := &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: 200 * time.Millisecond}
	_, err := d.Dial(context.Background(), srv.url+"/", upgrade.Protocol{Name: "chat"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's request still runs")
	}
}

// TestPoolForgetsClosedConnections: a pooled connection the server closes
// (here at its idle timeout) is left for a new one; CloseIdleConnections
// and Close end the Transport's connections.
func TestPoolForgetsClosedConnections(t *testing.T) {
	srv := serveH3(t, echoServer("chat"), nil, func(s *qhttp3.Server) { s.IdleTimeout = 100 * time.Millisecond })
	tr := newTransport(t)
	c, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	first := c.LocalAddr().String()
	require.NoError(t, c.Close())
	time.Sleep(400 * time.Millisecond) // the server closes the idle connection

	c, err = dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	assert.NotEqual(t, first, c.LocalAddr().String(), "a new connection")
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "on the new connection")

	tr.CloseIdleConnections() // the connection carries a stream: kept
	roundTrip(t, c, "still open")
	require.NoError(t, tr.Close())
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "Close ends the streams too")
	require.NoError(t, c.Close())
	_, err = dial(t, tr, srv.url+"/", "chat")
	assert.ErrorIs(t, err, http3.ErrClosed)
}

// TestHalfCloseBothWays: the client's CloseWrite is the server's EOF and
// the other way round, while the other direction keeps working.
func TestHalfCloseBothWays(t *testing.T) {
	us := new(upgrade.Server)
	us.HandleFunc("upper", func(c *upgrade.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			_, _ = c.Write([]byte(strings.ToUpper(sc.Text()) + "\n"))
		}
		_, _ = c.Write([]byte("END\n"))
		_ = c.CloseWrite()
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	c, err := dial(t, tr, srv.url+"/", "upper")
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, "a\nb\n")
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	_, err = c.Write([]byte("x"))
	assert.Error(t, err, "write after CloseWrite")
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "A\nB\nEND\n", string(got))
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}
