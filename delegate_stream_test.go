package upgrade

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/go-upgrade/upgrade/internal/wskey"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// wsLike is a delegated handler that checks an opening handshake as the
// WebSocket libraries do (GET, HTTP/1.1, the Connection and Upgrade
// tokens, version 13, a key of 16 bytes) and switches with the Accept of
// the key it got, the subprotocol "chat" if offered, and, in the same
// write, the bytes first; then it serves the connection with serve.
// With viaWriteHeader it switches as coder/websocket does: header fields
// and WriteHeader(101), then Hijack.
func wsLike(t *testing.T, viaWriteHeader bool, first string, serve func(nc net.Conn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Sec-Websocket-Key")
		raw, err := base64.StdEncoding.DecodeString(key)
		if r.Method != http.MethodGet || !r.ProtoAtLeast(1, 1) ||
			!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
			!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") ||
			r.Header.Get("Sec-Websocket-Version") != "13" || err != nil || len(raw) != 16 {
			http.Error(w, "bad handshake", http.StatusBadRequest)
			return
		}
		if r.Header.Get("Origin") == "https://evil.example" {
			http.Error(w, "Forbidden origin", http.StatusForbidden)
			return
		}
		sub := ""
		if httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Protocol"], "chat") {
			sub = "chat"
		}
		var nc net.Conn
		if viaWriteHeader {
			h := w.Header()
			h.Set("Upgrade", "websocket")
			h.Set("Connection", "Upgrade")
			h.Set("Sec-WebSocket-Accept", wskey.AcceptString(key))
			if sub != "" {
				h.Set("Sec-WebSocket-Protocol", sub)
			}
			w.WriteHeader(http.StatusSwitchingProtocols)
			nc, _, err = http.NewResponseController(w).Hijack()
			if !assert.NoError(t, err) {
				return
			}
			if first != "" {
				_, _ = io.WriteString(nc, first)
			}
		} else {
			nc, _, err = http.NewResponseController(w).Hijack()
			if !assert.NoError(t, err) {
				return
			}
			head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wskey.AcceptString(key) + "\r\n"
			if sub != "" {
				head += "Sec-WebSocket-Protocol: " + sub + "\r\n"
			}
			_, _ = io.WriteString(nc, head+"\r\n"+first)
		}
		serve(nc)
	}
}

// echoConn echoes on nc until EOF, then closes it.
func echoConn(nc net.Conn) {
	defer nc.Close()
	_, _ = io.Copy(nc, nc)
}

// wsConnect opens an RFC 8441 WebSocket stream.
func wsConnect(c *wiretest.H2Conn, extra ...[2]string) *wiretest.H2Stream {
	fields := append([][2]string{{"sec-websocket-version", "13"}}, extra...)
	return c.Connect("http", "example.com", "/ws", "websocket", fields...)
}

// TestDelegateStreamSwitches: a delegated handler written for HTTP/1.1
// serves an extended CONNECT unchanged, switching as gorilla/websocket
// does (its own 101 on the hijacked connection) and as coder/websocket
// does (WriteHeader(101), then Hijack): the client gets a 200 with the
// subprotocol and no Sec-WebSocket-Accept, the bytes written with the
// 101, and an echo; the stream is counted while it lasts.
func TestDelegateStreamSwitches(t *testing.T) {
	for _, viaWriteHeader := range []bool{false, true} {
		t.Run(map[bool]string{false: "own 101", true: "WriteHeader(101)"}[viaWriteHeader], func(t *testing.T) {
			hs := newHandlers(t)
			s := &Server{}
			seen := make(chan *http.Request, 1)
			s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
				seen <- r
				wsLike(t, viaWriteHeader, "first", echoConn)(w, r)
			})})
			addr := serveH2(t, s, s, false)
			c := dialH2(t, addr, false)
			st := wsConnect(c, [2]string{"sec-websocket-protocol", "chat, other"}, [2]string{"origin", "http://example.com"}, [2]string{"cookie", "a=b"})
			h := st.Header()
			require.Equal(t, []string{"200"}, h[":status"])
			assert.Equal(t, []string{"chat"}, h["sec-websocket-protocol"])
			assert.NotContains(t, h, "sec-websocket-accept")
			assert.NotContains(t, h, "upgrade")
			assert.NotContains(t, h, "connection")
			assert.Equal(t, "first", string(st.Read(5)))
			st.Write([]byte("ping"))
			assert.Equal(t, "ping", string(st.Read(4)))
			assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns())

			r := <-seen
			assert.Equal(t, http.MethodGet, r.Method)
			assert.Equal(t, "HTTP/1.1", r.Proto)
			assert.Equal(t, "example.com", r.Host)
			assert.Equal(t, "/ws", r.URL.Path)
			assert.Equal(t, "a=b", r.Header.Get("Cookie"))
			assert.Equal(t, "http://example.com", r.Header.Get("Origin"))
			assert.Empty(t, r.Header[":protocol"])

			st.CloseWrite()
			_, ended, reset := st.End()
			assert.True(t, ended || reset != nil)
			waitNoActive(t, s)
		})
	}
}

// TestDelegateStreamRefusals: what the handler answers instead of
// switching is the stream's answer — a status written without hijacking
// (403 for a bad Origin), or one written on the hijacked connection — and
// a 2xx that does not switch becomes 500. Nothing stays counted.
func TestDelegateStreamRefusals(t *testing.T) {
	hs := newHandlers(t)
	lg, _ := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wire":
			nc, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_, _ = io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\nX-Reason: wire\r\n\r\nnope")
				nc.Close()
			}
		case "/ok":
			_, _ = io.WriteString(w, "not a switch")
		default:
			wsLike(t, false, "", echoConn)(w, r)
		}
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)

	st := wsConnect(c, [2]string{"origin", "https://evil.example"})
	assert.Equal(t, "403", st.Status())
	rest, ended, _ := st.End()
	assert.True(t, ended)
	assert.Equal(t, "Forbidden origin\n", string(rest))

	st = c.Connect("http", "example.com", "/wire", "websocket", [2]string{"sec-websocket-version", "13"})
	assert.Equal(t, "400", st.Status())
	assert.Equal(t, []string{"wire"}, st.Header()["x-reason"])
	rest, ended, _ = st.End()
	assert.True(t, ended)
	assert.Equal(t, "nope", string(rest))

	st = c.Connect("http", "example.com", "/ok", "websocket", [2]string{"sec-websocket-version", "13"})
	assert.Equal(t, "500", st.Status())
	waitNoActive(t, s)
}

// TestDelegateStreamBadAccept: a 101 whose Sec-WebSocket-Accept does not
// answer the key the Server made up is refused with 500, and the
// connection the handler holds is closed.
func TestDelegateStreamBadAccept(t *testing.T) {
	hs := newHandlers(t)
	lg, logs := testLogger()
	s := &Server{ErrorLog: lg}
	wrote := make(chan error, 1)
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer nc.Close()
		_, err = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n")
		wrote <- err
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := wsConnect(c)
	assert.Equal(t, "500", st.Status())
	assert.ErrorIs(t, <-wrote, errBridgeHead)
	assert.Contains(t, logs.String(), "Sec-WebSocket-Accept")
	waitNoActive(t, s)
}

// TestDelegateStreamHijackedAndDropped: a handler that hijacks and closes
// without writing anything has the stream reset.
func TestDelegateStreamHijackedAndDropped(t *testing.T) {
	hs := newHandlers(t)
	s := &Server{}
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if assert.NoError(t, err) {
			nc.Close()
		}
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := wsConnect(c)
	_, _, reset := st.End()
	require.NotNil(t, reset, "the stream is reset")
	waitNoActive(t, s)
}

// TestDelegateStreamAsyncAndShutdown: a handler that returns at once,
// leaving the connection to a goroutine (as gobwas/ws's examples do),
// keeps its stream open; Shutdown's drain signal reaches that goroutine
// through the request's context, and the stream ends when it closes.
func TestDelegateStreamAsyncAndShutdown(t *testing.T) {
	hs := newHandlers(t)
	s := &Server{}
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		hs.wg.Add(1)
		wsLike(t, false, "", func(nc net.Conn) {
			go func() {
				defer hs.wg.Done()
				defer nc.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(nc, buf); err != nil {
					return
				}
				_, _ = nc.Write(buf)
				<-Draining(r.Context())
				_, _ = io.WriteString(nc, "bye!")
			}()
		})(w, r)
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := wsConnect(c)
	require.Equal(t, "200", st.Status())
	st.Write([]byte("ping"))
	assert.Equal(t, "ping", string(st.Read(4)))
	assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	rest, _, _ := st.End()
	assert.Equal(t, "bye!", string(rest))
	assert.Empty(t, s.ActiveConns())
}

// TestDelegateStreamMaxConns: at a cap, an extended CONNECT for a
// delegated route is refused with 503 before the handler runs.
func TestDelegateStreamMaxConns(t *testing.T) {
	hs := newHandlers(t)
	s := &Server{MaxConns: 1}
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(wsLike(t, false, "", echoConn))})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st1 := wsConnect(c)
	require.Equal(t, "200", st1.Status())
	st2 := wsConnect(c)
	assert.Equal(t, "503", st2.Status())
	assert.Equal(t, []string{"1"}, st2.Header()["retry-after"])
	assert.EqualValues(t, 1, hs.calls.Load())
	st1.Reset(http2.ErrCodeCancel)
	waitNoActive(t, s)
}

// TestDelegateStreamClientGoneBeforeSwitch: when the client resets the
// stream before the handler writes its 101, the connection is closed and
// uncounted even though the handler returns without closing it when its
// write fails (as the users of gobwas/ws do on an error); net/http may
// also take the 200 before it notices the reset, and then the handler's
// next read fails.
func TestDelegateStreamClientGoneBeforeSwitch(t *testing.T) {
	hs := newHandlers(t)
	lg, _ := testLogger()
	s := &Server{ErrorLog: lg}
	reqCtx := make(chan context.Context, 1)
	held := make(chan net.Conn, 1)
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		held <- nc
		select {
		case <-(<-reqCtx).Done(): // the client reset the stream
		case <-time.After(10 * time.Second):
		}
		_, err = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			wskey.AcceptString(r.Header.Get("Sec-Websocket-Key"))+"\r\n\r\n")
		if err != nil {
			return // without closing nc
		}
		defer nc.Close()
		_, err = nc.Read(make([]byte, 1))
		assert.Error(t, err, "the stream is gone")
	})})
	addr := serveH2(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqCtx <- r.Context()
		s.ServeHTTP(w, r)
	}), false)
	c := dialH2(t, addr, false)
	st := wsConnect(c)
	nc := <-held
	st.Reset(http2.ErrCodeCancel)
	waitNoActive(t, s)
	_, err := nc.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
}

// TestDelegateStreamHandshakeTimeoutAbandoned: a handler that hijacks and
// leaves the connection without writing a response head has the stream
// reset at the handshake timeout, and the connection closed and
// uncounted.
func TestDelegateStreamHandshakeTimeoutAbandoned(t *testing.T) {
	hs := newHandlers(t)
	s := &Server{HandshakeTimeout: 50 * time.Millisecond}
	held := make(chan net.Conn, 1)
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if assert.NoError(t, err) {
			held <- nc
		}
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := wsConnect(c)
	nc := <-held
	assert.NotNil(t, st.WaitReset(10*time.Second), "the stream is reset")
	waitNoActive(t, s)
	_, err := nc.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
}

// TestDelegateStreamHeads: the 101 a delegated handler writes on a stream
// is read as an HTTP/1.1 client would: interim responses before it are
// skipped (as on HTTP/1.1), its Content-Length is not carried into the
// 200 (a 2xx to CONNECT has no content), and a 101 that does not name the
// protocol is refused (500).
func TestDelegateStreamHeads(t *testing.T) {
	hs := newHandlers(t)
	lg, _ := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleRoute("echo", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		var head string
		switch r.URL.Path {
		case "/interim":
			head = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + head101("echo")
		case "/length":
			head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
		case "/other":
			head = head101("other")
		}
		if _, err := io.WriteString(nc, head+"hello"); err == nil {
			_, _ = io.Copy(nc, nc)
		}
	})})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	for _, path := range []string{"/interim", "/length"} {
		st := c.Connect("http", "example.com", path, "echo")
		require.Equal(t, "200", st.Status(), path)
		assert.NotContains(t, st.Header(), "content-length", path)
		assert.NotContains(t, st.Header(), "link", path)
		assert.Equal(t, "hello", string(st.Read(5)), path)
		st.CloseWrite()
		st.End()
	}
	st := c.Connect("http", "example.com", "/other", "echo")
	assert.Equal(t, "500", st.Status())
	waitNoActive(t, s)
}
