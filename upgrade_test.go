package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- test helpers ----

// logBuffer collects what a Server logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// serve starts an HTTP server for h on 127.0.0.1 and, at cleanup, shuts s
// down so no protocol handler outlives the test.
func serve(t *testing.T, s *Server, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		// Close the switched connections, then wait for their handlers.
		assert.NoError(t, s.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx), "handlers must return once their connections close")
	})
	return ts.Listener.Addr().String()
}

// rawConn is a client that writes exact bytes and reads responses.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) write(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.nc, s)
	require.NoError(c.t, err)
}

// head reads one response header block, raw.
func (c *rawConn) head() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		require.NoError(c.t, err, "reading response head, got so far %q", b.String())
		b.WriteString(line)
		if line == "\r\n" {
			return b.String()
		}
	}
}

// response reads one whole response, body included. Its Header keeps the
// Connection field as sent (http.ReadResponse drops it when it carries
// "close").
func (c *rawConn) response(method string) *http.Response {
	c.t.Helper()
	resp, err := wiretest.ReadResponse(c.br, method)
	require.NoError(c.t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func (c *rawConn) readN(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(c.br, b)
	require.NoError(c.t, err)
	return b
}

func bodyString(t *testing.T, r *http.Response) string {
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
}

func echo(c *Conn) { _, _ = io.Copy(c, c) }

// plainHandler answers any request with its method and path.
var plainHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Plain", "1")
	io.WriteString(w, "plain "+r.Method+" "+r.URL.Path)
})

// accepterFunc is a Handler with a pre-101 step.
type accepterFunc struct {
	accept func(r *http.Request, h http.Header) error
	serve  func(c *Conn)
}

func (a accepterFunc) AcceptUpgrade(r *http.Request, h http.Header) error { return a.accept(r, h) }
func (a accepterFunc) ServeUpgrade(c *Conn) {
	if a.serve != nil {
		a.serve(c)
		return
	}
	echo(c)
}

func upgradeReq(method, upgrade string, extra ...string) string {
	s := method + " / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: " + upgrade + "\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	return s + "\r\n"
}

// ---- the 101 on the wire ----

func TestSwitchWritesExact101AndKeepsPipelinedBytes(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1") + "first bytes")
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", c.head())
	assert.Equal(t, "first bytes", string(c.readN(len("first bytes"))))
	c.write("more")
	assert.Equal(t, "more", string(c.readN(4)))
}

func TestSwitchLargePipelinedPayloadIntact(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	payload := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	// Request and payload in one write: most of the payload is read ahead
	// by net/http's bufio.Reader.
	msg := append([]byte(upgradeReq("GET", "echo/1")), payload...)
	done := make(chan error, 1)
	go func() { _, err := c.nc.Write(msg); done <- err }()
	head := c.head()
	assert.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	got := c.readN(len(payload))
	require.NoError(t, <-done)
	assert.True(t, bytes.Equal(payload, got), "echoed payload differs")
}

func TestSwitchExtraHeadersSortedAndValidated(t *testing.T) {
	lg, logs := testLogger(t)
	s := Server{ErrorLog: lg}
	s.Handle("good", accepterFunc{accept: func(r *http.Request, h http.Header) error {
		h.Set("X-Zeta", "z")
		h.Set("X-Alpha", "a")
		return nil
	}})
	s.Handle("evil", accepterFunc{accept: func(r *http.Request, h http.Header) error {
		h.Set("X-Evil", "a\r\nInjected: yes")
		return nil
	}})
	s.Handle("owned", accepterFunc{accept: func(r *http.Request, h http.Header) error {
		h.Set("Content-Length", "0")
		return nil
	}})
	addr := serve(t, &s, &s)

	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "good"))
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: good\r\nConnection: Upgrade\r\nX-Alpha: a\r\nX-Zeta: z\r\n\r\n", c.head())

	for _, p := range []string{"evil", "owned"} {
		c := dialRaw(t, addr)
		c.write(upgradeReq("GET", p))
		resp := c.response("GET")
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode, p)
		assert.Empty(t, resp.Header.Get("Injected"))
		assert.Empty(t, resp.Header.Get("Upgrade"))
	}
	assert.Contains(t, logs.String(), "invalid value for 101 header field X-Evil")
	assert.Contains(t, logs.String(), "Content-Length is set by the server or not allowed")
}

// ---- negotiation ----

func TestNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		register []string
		policy   Policy
		offer    string
		want     string // Upgrade of the 101, or "" for no switch
	}{
		{"name matches name", []string{"websocket"}, ClientOrder, "websocket", "websocket"},
		{"name case-insensitive, registered spelling", []string{"WebSocket"}, ClientOrder, "WEBSOCKET", "WebSocket"},
		{"name does not match versioned offer", []string{"echo"}, ClientOrder, "echo/1", ""},
		{"version exact", []string{"echo/1"}, ClientOrder, "echo/1", "echo/1"},
		{"version differs", []string{"echo/1"}, ClientOrder, "echo/2", ""},
		{"version case-sensitive", []string{"echo/v1"}, ClientOrder, "echo/V1", ""},
		{"versioned does not match bare offer", []string{"echo/1"}, ClientOrder, "echo", ""},
		{"wildcard takes any version", []string{"echo/*"}, ClientOrder, "echo/7", "echo/7"},
		{"wildcard takes no version", []string{"echo/*"}, ClientOrder, "echo", "echo"},
		{"client order", []string{"a", "b"}, ClientOrder, "b, a", "b"},
		{"server order", []string{"a", "b"}, ServerOrder, "b, a", "a"},
		{"client order skips unknown", []string{"a", "b"}, ClientOrder, "x, y/2, b, a", "b"},
		{"server order skips unregistered", []string{"x", "b", "a"}, ServerOrder, "a, b", "b"},
		{"exact before wildcard in server order", []string{"echo/2", "echo/*"}, ServerOrder, "echo/1, echo/2", "echo/2"},
		{"nothing offered matches", []string{"a"}, ClientOrder, "b, c", ""},
		{"empty list", []string{"a"}, ClientOrder, " , ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Server{Policy: tt.policy}
			for _, p := range tt.register {
				s.HandleFunc(p, echo)
			}
			addr := serve(t, &s, &s)
			c := dialRaw(t, addr)
			c.write(upgradeReq("GET", tt.offer))
			resp := c.response("GET")
			if tt.want == "" {
				assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
				return
			}
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, []string{tt.want}, resp.Header["Upgrade"])
		})
	}
}

func TestDeclineMovesToNextOffer(t *testing.T) {
	var calls []string
	var mu sync.Mutex
	decliner := func(name string, err error) Handler {
		return accepterFunc{accept: func(r *http.Request, h http.Header) error {
			mu.Lock()
			calls = append(calls, name)
			mu.Unlock()
			return err
		}}
	}
	s := Server{}
	s.Handle("a", decliner("a", ErrDecline))
	s.Handle("b", decliner("b", nil))
	s.Handle("c", decliner("c", nil))
	addr := serve(t, &s, &s)

	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "a, a, b, c"))
	resp := c.response("GET")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, "b", resp.Header.Get("Upgrade"))
	mu.Lock()
	assert.Equal(t, []string{"a", "b"}, calls, "each protocol asked at most once, in offer order")
	mu.Unlock()
}

func TestDeclineAllFallsThroughToNext(t *testing.T) {
	s := Server{}
	s.Handle("a", accepterFunc{accept: func(*http.Request, http.Header) error {
		return fmtErr("wrapped: %w", ErrDecline)
	}})
	addr := serve(t, &s, s.Middleware(plainHandler))
	c := dialRaw(t, addr)
	// The bytes after a declined upgrade request are HTTP again.
	c.write(upgradeReq("GET", "a") + "GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n")
	r1 := c.response("GET")
	assert.Equal(t, http.StatusOK, r1.StatusCode)
	assert.Equal(t, "plain GET /", bodyString(t, r1))
	r2 := c.response("GET")
	assert.Equal(t, "plain GET /second", bodyString(t, r2))
}

func fmtErr(format string, err error) error {
	return &wrapErr{msg: strings.Replace(format, "%w", err.Error(), 1), err: err}
}

type wrapErr struct {
	msg string
	err error
}

func (e *wrapErr) Error() string { return e.msg }
func (e *wrapErr) Unwrap() error { return e.err }

func TestRejectAnswersStatus(t *testing.T) {
	s := Server{}
	s.Handle("forbidden", accepterFunc{accept: func(*http.Request, http.Header) error {
		return &RejectError{Status: http.StatusForbidden, Message: "no entry"}
	}})
	s.Handle("old", accepterFunc{accept: func(*http.Request, http.Header) error {
		return &RejectError{Status: http.StatusUpgradeRequired, Message: "version", Header: http.Header{"X-Version": {"13"}}}
	}})
	s.Handle("ok", HandlerFunc(echo))
	addr := serve(t, &s, &s)

	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "forbidden, ok"))
	resp := c.response("GET")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "a rejection ends negotiation")
	assert.Equal(t, "no entry\n", bodyString(t, resp))
	assert.Empty(t, resp.Header.Get("Upgrade"))

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "old"))
	resp = c.response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, "forbidden, old, ok", resp.Header.Get("Upgrade"), "every 426 lists what would be accepted")
	assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
	assert.Equal(t, "13", resp.Header.Get("X-Version"))

	// Any other error is the server's fault.
	lg, logs := testLogger(t)
	s2 := Server{ErrorLog: lg}
	s2.Handle("broken", accepterFunc{accept: func(*http.Request, http.Header) error { return errors.New("database down") }})
	addr = serve(t, &s2, &s2)
	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "broken"))
	assert.Equal(t, http.StatusInternalServerError, c.response("GET").StatusCode)
	assert.Contains(t, logs.String(), "database down")
}

// ---- 426 and plain requests ----

func TestRequired426AndPipelinedRequest(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	s.HandleFunc("websocket", echo)
	s.HandleFunc("h2c", echo)
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + upgradeReq("GET", "nope") + upgradeReq("GET", "echo/1") + "after")
	// A plain request: 426, and the connection stays open.
	resp := c.response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1, websocket, h2c"}, resp.Header["Upgrade"])
	assert.Equal(t, []string{"Upgrade"}, resp.Header["Connection"])
	assert.Contains(t, bodyString(t, resp), "echo/1, websocket, h2c")
	// A refused upgrade request: 426, and the connection is closed after
	// it, so the next request (or raw bytes) behind it is never read.
	resp = c.response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1, websocket, h2c"}, resp.Header["Upgrade"])
	assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
	rest, err := io.ReadAll(c.br)
	require.NoError(t, err)
	assert.Empty(t, string(rest), "nothing after a refused upgrade is answered")

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1") + "after")
	head := c.head()
	assert.True(t, strings.HasPrefix(head, "HTTP/1.1 101"), head)
	assert.Equal(t, "after", string(c.readN(5)))
}

func TestConnectionHeaderForms(t *testing.T) {
	tests := []struct {
		name       string
		connection []string
		switched   bool
	}{
		{"Firefox keep-alive, Upgrade", []string{"keep-alive, Upgrade"}, true},
		{"split over two lines", []string{"keep-alive", "upgrade"}, true},
		{"upper case", []string{"UPGRADE"}, true},
		{"substring upgrades", []string{"upgrades"}, false},
		{"missing", nil, false},
		{"close only", []string{"close"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Server{}
			s.HandleFunc("echo/1", echo)
			addr := serve(t, &s, s.Middleware(plainHandler))
			c := dialRaw(t, addr)
			req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo/1\r\n"
			for _, l := range tt.connection {
				req += "Connection: " + l + "\r\n"
			}
			c.write(req + "\r\n")
			resp := c.response("GET")
			if tt.switched {
				assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			} else {
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, "1", resp.Header.Get("X-Plain"))
			}
		})
	}
}

func TestMalformedAndOversizedUpgrade(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, s.Middleware(plainHandler))

	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1, web socket"))
	resp := c.response("GET")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, bodyString(t, resp), `element "web socket"`)

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", strings.Repeat("x, ", 5000)+"echo/1"))
	resp = c.response("GET")
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", strings.Repeat("p,", 17)+"echo/1"))
	resp = c.response("GET")
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	assert.Contains(t, bodyString(t, resp), "more than 16 protocols")
}

func TestHTTP10IgnoresUpgrade(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	mw := serve(t, &s, s.Middleware(plainHandler))
	ep := serve(t, &s, &s)

	c := dialRaw(t, mw)
	c.write("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	all, err := io.ReadAll(c.br)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(all), "HTTP/1.0 200 OK\r\n"), "no 1xx, ever: %q", all)
	assert.True(t, strings.HasSuffix(string(all), "plain GET /"))

	c = dialRaw(t, ep)
	c.write("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	all, err = io.ReadAll(c.br)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(all), "HTTP/1.0 426 Upgrade Required\r\n"), "%q", all)
}

func TestHTTP2NeverSwitches(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	mux := http.NewServeMux()
	mux.Handle("/required", &s)
	mux.Handle("/", s.Middleware(plainHandler))
	ts := httptest.NewUnstartedServer(mux)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	client := ts.Client()

	resp, err := client.Get(ts.URL + "/required")
	require.NoError(t, err)
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Equal(t, http.StatusHTTPVersionNotSupported, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Upgrade"))
	assert.Empty(t, resp.Header.Get("Connection"))
	resp.Body.Close()

	resp, err = client.Get(ts.URL + "/x")
	require.NoError(t, err)
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Equal(t, "plain GET /x", bodyString(t, resp))
	resp.Body.Close()
	client.CloseIdleConnections()

	// An HTTP/2 request carrying Upgrade (a broken or hostile peer):
	// still no switch and no Upgrade or Connection on the response.
	for _, h := range []http.Handler{&s, s.Middleware(plainHandler)} {
		r := httptest.NewRequest("GET", "/", nil)
		r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "echo/1")
		r.TLS = &tls.ConnectionState{}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		assert.NotEqual(t, http.StatusSwitchingProtocols, rec.Code)
		assert.NotEqual(t, http.StatusUpgradeRequired, rec.Code)
		assert.Empty(t, rec.Header().Get("Upgrade"))
		assert.Empty(t, rec.Header().Get("Connection"))
	}
}

// ---- methods, bodies, 100-continue ----

func TestMethodRules(t *testing.T) {
	s := Server{}
	s.HandleFunc("getonly", echo)
	s.HandleRoute("post", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}})
	s.HandleRoute("any", Route{Handler: HandlerFunc(echo), Methods: []string{"*"}})
	addr := serve(t, &s, &s)
	tests := []struct {
		method, offer string
		want          int
	}{
		{"GET", "getonly", 101},
		{"OPTIONS", "getonly", 101},
		{"POST", "getonly", 405},
		{"POST", "getonly, post", 101},
		{"PUT", "any", 101},
		{"GET", "post", 405},
	}
	for _, tt := range tests {
		c := dialRaw(t, addr)
		c.write(upgradeReq(tt.method, tt.offer, "Content-Length: 0"))
		resp := c.response(tt.method)
		assert.Equal(t, tt.want, resp.StatusCode, "%s %s", tt.method, tt.offer)
		if tt.want == http.StatusMethodNotAllowed {
			assert.NotEmpty(t, resp.Header.Get("Allow"), "405 lists the allowed methods")
		}
	}
	c := dialRaw(t, addr)
	c.write(upgradeReq("DELETE", "getonly, post", "Content-Length: 0"))
	assert.Equal(t, "GET, OPTIONS, POST", c.response("DELETE").Header.Get("Allow"))
}

// bodyRecorder records the request body a protocol receives, then echoes.
func bodyRecorder(got chan<- string) HandlerFunc {
	return func(c *Conn) {
		b, err := io.ReadAll(c.Request.Body)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
		echo(c)
	}
}

func TestRequestBodyBeforeSwitch(t *testing.T) {
	got := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(got), Methods: []string{"POST"}, MaxBody: 16})
	s.HandleRoute("nobody", Route{Handler: bodyRecorder(got), Methods: []string{"POST"}, MaxBody: -1})
	addr := serve(t, &s, &s)

	t.Run("content-length", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "up", "Content-Length: 5") + "hello" + "stream")
		assert.True(t, strings.HasPrefix(c.head(), "HTTP/1.1 101 "))
		assert.Equal(t, "hello", <-got)
		assert.Equal(t, "stream", string(c.readN(6)), "the new protocol starts right after the body")
	})
	t.Run("chunked is never switched", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "up", "Transfer-Encoding: chunked") + "3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n" + "stream")
		resp := c.response("POST")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Equal(t, []string{"close"}, resp.Header["Connection"])
		assert.Contains(t, bodyString(t, resp), "Content-Length")
		rest, err := io.ReadAll(c.br)
		require.NoError(t, err)
		assert.Empty(t, string(rest), "the connection is closed after the answer")
		assert.Empty(t, got, "the handler never ran")
	})
	t.Run("too large", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "up", "Content-Length: 17") + strings.Repeat("x", 17))
		resp := c.response("POST")
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		assert.Equal(t, []string{"close"}, resp.Header["Connection"])
	})
	t.Run("protocol takes no body", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "nobody", "Content-Length: 2") + "hi")
		resp := c.response("POST")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Contains(t, bodyString(t, resp), "does not accept a request body")
	})
	t.Run("client vanishes mid-body", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "up", "Content-Length: 10") + "abc")
		require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
		resp := c.response("POST")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
}

// TestContentLengthWithTransferEncoding: a request carrying both
// Content-Length and Transfer-Encoding (RFC 9112 §6.1: possibly request
// smuggling; the connection must be closed after the answer) is never
// switched. net/http drops the Content-Length, so every upgrade request
// framed by Transfer-Encoding is treated so: the endpoint answers 400,
// Middleware serves it as a plain request; both close the connection, and
// the bytes behind the request are never read as a next request.
func TestContentLengthWithTransferEncoding(t *testing.T) {
	ran := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(ran), Methods: []string{"POST"}})
	ep := serve(t, &s, &s)
	mw := serve(t, &s, s.Middleware(plainHandler))
	smuggled := upgradeReq("POST", "up", "Content-Length: 4", "Transfer-Encoding: chunked") +
		"3\r\nabc\r\n0\r\n\r\n" + "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name string
		addr string
		code int
	}{{"endpoint", ep, http.StatusBadRequest}, {"middleware", mw, http.StatusOK}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tc.addr)
			c.write(smuggled)
			resp := c.response("POST")
			assert.Equal(t, tc.code, resp.StatusCode)
			assert.Equal(t, []string{"close"}, resp.Header["Connection"])
			assert.Empty(t, resp.Header["Upgrade"])
			rest, err := io.ReadAll(c.br)
			require.NoError(t, err)
			assert.Empty(t, string(rest), "the request behind it is never answered")
		})
	}
	assert.Empty(t, ran, "never switched")
}

func TestExpectContinue(t *testing.T) {
	got := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(got), Methods: []string{"POST", "GET"}})
	addr := serve(t, &s, &s)

	t.Run("with body", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("POST", "up", "Content-Length: 5", "Expect: 100-continue"))
		// The client waits for the 100 before sending the body.
		assert.Equal(t, "HTTP/1.1 100 Continue\r\n\r\n", c.head())
		c.write("hello" + "stream")
		assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: up\r\nConnection: Upgrade\r\n\r\n", c.head())
		assert.Equal(t, "hello", <-got)
		// Exactly once: the next bytes are the echo, not another 100.
		assert.Equal(t, "stream", string(c.readN(6)))
	})
	t.Run("without body", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("GET", "up", "Expect: 100-continue") + "stream")
		assert.Equal(t, "HTTP/1.1 100 Continue\r\n\r\n", c.head())
		assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: up\r\nConnection: Upgrade\r\n\r\n", c.head())
		assert.Equal(t, "", <-got)
		assert.Equal(t, "stream", string(c.readN(6)))
	})
	t.Run("rejected: no 100", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.write(upgradeReq("PUT", "up", "Content-Length: 5", "Expect: 100-continue"))
		resp := c.response("PUT")
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	})
}

// ---- wrapped ResponseWriters ----

type unwrapWriter struct{ http.ResponseWriter }

func (w unwrapWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type opaqueWriter struct{ http.ResponseWriter }

func TestWrappedResponseWriter(t *testing.T) {
	lg, logs := testLogger(t)
	s := Server{ErrorLog: lg}
	s.HandleFunc("echo/1", echo)
	wrap := func(mk func(http.ResponseWriter) http.ResponseWriter) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.ServeHTTP(mk(w), r) })
	}
	addr := serve(t, &s, wrap(func(w http.ResponseWriter) http.ResponseWriter { return unwrapWriter{unwrapWriter{w}} }))
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1") + "x")
	assert.True(t, strings.HasPrefix(c.head(), "HTTP/1.1 101 "))
	assert.Equal(t, "x", string(c.readN(1)))

	addr = serve(t, &s, wrap(func(w http.ResponseWriter) http.ResponseWriter { return opaqueWriter{w} }))
	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusInternalServerError, c.response("GET").StatusCode)
	assert.Contains(t, logs.String(), "does not support hijacking")
}

// ---- the Conn ----

func TestConnCarriesRequestProtocolAndContext(t *testing.T) {
	type ctxKey struct{}
	type seen struct {
		proto  Protocol
		path   string
		value  any
		ctxErr error
	}
	got := make(chan seen, 1)
	s := Server{}
	s.HandleFunc("Echo/*", func(c *Conn) {
		got <- seen{c.Protocol, c.Request.URL.Path, c.Context().Value(ctxKey{}), c.Context().Err()}
		<-c.Draining()
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, "v")))
	})
	addr := serve(t, &s, h)
	c := dialRaw(t, addr)
	c.write("GET /path HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: ECHO/v2\r\n\r\n")
	assert.Contains(t, c.head(), "Upgrade: Echo/v2\r\n")
	g := <-got
	assert.Equal(t, Protocol{"Echo", "v2"}, g.proto)
	assert.Equal(t, "/path", g.path)
	assert.Equal(t, "v", g.value, "Context carries the request's values")
	assert.NoError(t, g.ctxErr)
	assert.Equal(t, map[string]int{"Echo/*": 1}, s.ActiveConns())
	// Shutdown (at cleanup) closes Draining, and the handler returns.
}

func TestConnReadAheadAndCloseWrite(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{nc: a, rbuf: []byte("abc")}
	assert.Equal(t, a, c.NetConn())
	assert.Equal(t, 3, c.Buffered())
	buf := make([]byte, 2)
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "ab", string(buf[:n]))
	n, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "c", string(buf[:n]))
	assert.Zero(t, c.Buffered())
	go b.Write([]byte("d"))
	n, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "d", string(buf[:n]))
	assert.ErrorIs(t, c.CloseWrite(), errors.ErrUnsupported, "net.Pipe has no half-close")
}

func TestEchoHalfClose(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1") + "bye")
	c.head()
	require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
	rest, err := io.ReadAll(c.br)
	require.NoError(t, err, "the server closes after the handler returns")
	assert.Equal(t, "bye", string(rest))
}

// ---- life cycle ----

func TestHandlerPanicIsContained(t *testing.T) {
	lg, logs := testLogger(t)
	s := Server{ErrorLog: lg}
	s.HandleFunc("boom", func(c *Conn) { panic("kaboom") })
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "boom"))
	c.head()
	_, err := c.br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection is closed")
	assert.Eventually(t, func() bool { return strings.Contains(logs.String(), "kaboom") }, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "protocol=boom")

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1") + "ok")
	c.head()
	assert.Equal(t, "ok", string(c.readN(2)), "the server keeps serving")
}

func TestShutdownRefusesNewUpgradesAndWaits(t *testing.T) {
	s := Server{}
	finished := make(chan struct{})
	s.HandleFunc("wait", func(c *Conn) {
		<-c.Draining()
		io.WriteString(c, "goodbye")
		close(finished)
	})
	ts := httptest.NewServer(s.Middleware(plainHandler))
	defer ts.Close()
	ep := httptest.NewServer(&s)
	defer ep.Close()
	addr := ts.Listener.Addr().String()

	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "wait"))
	c.head()
	require.Eventually(t, func() bool { return s.ActiveConns()["wait"] == 1 }, 5*time.Second, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	<-finished
	rest, err := io.ReadAll(c.br)
	require.NoError(t, err)
	assert.Equal(t, "goodbye", string(rest))
	assert.Empty(t, s.ActiveConns())

	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "wait"))
	assert.Equal(t, http.StatusOK, c.response("GET").StatusCode, "middleware serves it as a plain request")
	c = dialRaw(t, ep.Listener.Addr().String())
	c.write(upgradeReq("GET", "wait"))
	resp := c.response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
}

func TestShutdownForcesStubbornHandlers(t *testing.T) {
	s := Server{}
	s.HandleFunc("stubborn", func(c *Conn) {
		_, _ = io.Copy(io.Discard, c) // ignores the context; returns when closed
	})
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "stubborn"))
	c.head()
	require.Eventually(t, func() bool { return s.ActiveConns()["stubborn"] == 1 }, 5*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	_, err := c.br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection was closed")
}

// TestShutdownDrainsThenCloses: Shutdown closes Draining at once, but the
// connection keeps working and its Context stays alive through the grace
// period; when the grace ends the connection is closed and the Context
// cancelled.
func TestShutdownDrainsThenCloses(t *testing.T) {
	s := Server{}
	conns := make(chan *Conn, 1)
	ctxErr := make(chan error, 1)
	s.HandleFunc("echo/1", func(c *Conn) {
		ctx := c.Context()
		conns <- c
		echo(c) // ignores Draining: returns when the connection is closed
		ctxErr <- ctx.Err()
	})
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "echo/1"))
	c.head()
	sc := <-conns

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	select {
	case <-sc.Draining():
	case <-time.After(5 * time.Second):
		t.Fatal("Draining not closed by Shutdown")
	}
	c.write("still here")
	assert.Equal(t, "still here", string(c.readN(len("still here"))), "the connection works during the grace period")
	assert.NoError(t, sc.Context().Err(), "Context is not cancelled by the start of Shutdown")

	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
	assert.ErrorIs(t, <-ctxErr, context.Canceled, "Context is cancelled when the grace ends")
	_, err := c.br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection was closed at the end of the grace period")
}

// TestContextEndsWithHandler: a Conn's Context is cancelled when its
// handler returns, whether or not it was asked for before.
func TestContextEndsWithHandler(t *testing.T) {
	s := Server{}
	conns := make(chan *Conn, 2)
	s.HandleFunc("early/1", func(c *Conn) { _ = c.Context(); conns <- c })
	s.HandleFunc("late/1", func(c *Conn) { conns <- c })
	addr := serve(t, &s, &s)
	for _, p := range []string{"early/1", "late/1"} {
		c := dialRaw(t, addr)
		c.write(upgradeReq("GET", p))
		c.head()
		sc := <-conns
		_, err := c.br.ReadByte()
		require.ErrorIs(t, err, io.EOF, "%s: closed when the handler returned", p)
		select {
		case <-sc.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Context not cancelled after the handler returned", p)
		}
	}
}

func TestRegisterOnShutdown(t *testing.T) {
	s := Server{}
	s.HandleFunc("wait", func(c *Conn) { <-c.Draining() })
	ts := httptest.NewUnstartedServer(&s)
	s.RegisterOnShutdown(ts.Config, time.Second)
	ts.Start()
	defer ts.Close()
	c := dialRaw(t, ts.Listener.Addr().String())
	c.write(upgradeReq("GET", "wait"))
	c.head()
	require.Eventually(t, func() bool { return s.ActiveConns()["wait"] == 1 }, 5*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, ts.Config.Shutdown(ctx))
	require.NoError(t, s.Shutdown(ctx), "waits for what http.Server.Shutdown started")
	assert.Empty(t, s.ActiveConns())
}

func TestShouldUpgrade(t *testing.T) {
	s := Server{ShouldUpgrade: func(r *http.Request) bool { return r.Header.Get("X-Allow") == "yes" }}
	s.HandleFunc("echo/1", echo)
	mw := serve(t, &s, s.Middleware(plainHandler))
	ep := serve(t, &s, &s)
	c := dialRaw(t, mw)
	c.write(upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusOK, c.response("GET").StatusCode)
	c = dialRaw(t, ep)
	c.write(upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusForbidden, c.response("GET").StatusCode)
	c = dialRaw(t, ep)
	c.write(upgradeReq("GET", "echo/1", "X-Allow: yes"))
	assert.Equal(t, http.StatusSwitchingProtocols, c.response("GET").StatusCode)
}

func TestHandleRoutePanics(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	assert.PanicsWithValue(t, "upgrade: multiple registrations for ECHO/1", func() { s.HandleFunc("ECHO/1", echo) })
	assert.Panics(t, func() { s.HandleFunc("bad name", echo) })
	assert.Panics(t, func() { s.Handle("x", nil) })
	assert.NotPanics(t, func() { s.HandleFunc("echo/*", echo) })
	assert.Equal(t, "echo/1, echo", s.Protocols())
}

func TestMaxConns(t *testing.T) {
	s := Server{MaxConns: 2}
	hold := func(c *Conn) { _, _ = io.Copy(io.Discard, c) }
	s.HandleRoute("a", Route{Handler: HandlerFunc(hold), MaxConns: 1})
	s.HandleFunc("b", hold)
	addr := serve(t, &s, s.Middleware(plainHandler))

	c1 := dialRaw(t, addr)
	c1.write(upgradeReq("GET", "a"))
	assert.Contains(t, c1.head(), "Upgrade: a\r\n")

	// "a" is at its cap: refused with 503 and Retry-After, not dropped.
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "a"))
	resp := c.response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	// The client's next acceptable offer is used instead.
	c2 := dialRaw(t, addr)
	c2.write(upgradeReq("GET", "a, b"))
	assert.Contains(t, c2.head(), "Upgrade: b\r\n")
	assert.Equal(t, map[string]int{"a": 1, "b": 1}, s.ActiveConns())

	// The server-wide cap.
	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "b"))
	assert.Equal(t, http.StatusServiceUnavailable, c.response("GET").StatusCode)

	// A slot frees when its handler returns.
	c1.nc.Close()
	require.Eventually(t, func() bool { return s.ActiveConns()["a"] == 0 }, 5*time.Second, 5*time.Millisecond)
	c = dialRaw(t, addr)
	c.write(upgradeReq("GET", "a"))
	assert.Contains(t, c.head(), "Upgrade: a\r\n")
}

func TestMiddlewareWithoutHijackerServesPlain(t *testing.T) {
	lg, logs := testLogger(t)
	s := Server{ErrorLog: lg}
	s.HandleFunc("echo/1", echo)
	mw := s.Middleware(plainHandler)
	for _, offer := range []string{"h2c", "echo/1"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", offer)
		rec := httptest.NewRecorder() // cannot hijack
		mw.ServeHTTP(rec, r)
		assert.Equal(t, http.StatusOK, rec.Code, offer)
		assert.Equal(t, "plain GET /", rec.Body.String())
	}
	assert.Empty(t, logs.String(), "an upgrade that cannot happen is not an error")

	// The endpoint must switch, so it is: 500, logged.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "echo/1")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.Contains(t, logs.String(), "does not support hijacking")
	// An unregistered offer at the endpoint is a 426, not a 500.
	r.Header.Set("Upgrade", "h2c")
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusUpgradeRequired, rec.Code)
}

func TestAccepterPanicReleasesSlot(t *testing.T) {
	var calls atomic.Int32
	s := Server{MaxConns: 1}
	s.Handle("x", accepterFunc{accept: func(*http.Request, http.Header) error {
		if calls.Add(1) <= 2 {
			panic(http.ErrAbortHandler)
		}
		return nil
	}})
	addr := serve(t, &s, &s)
	for range 2 {
		c := dialRaw(t, addr)
		c.write(upgradeReq("GET", "x"))
		_, err := c.br.ReadByte()
		assert.Error(t, err, "net/http aborts the connection")
	}
	assert.Empty(t, s.ActiveConns(), "no slot is leaked")
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "x"))
	assert.Contains(t, c.head(), "101 Switching Protocols")
}

func TestRejectStatusMustBeError(t *testing.T) {
	lg, logs := testLogger(t)
	s := Server{ErrorLog: lg}
	for _, st := range []int{101, 103, 200} {
		st := st
		s.Handle("p"+strconv.Itoa(st), accepterFunc{accept: func(*http.Request, http.Header) error {
			return &RejectError{Status: st}
		}})
	}
	addr := serve(t, &s, &s)
	for _, st := range []string{"101", "103", "200"} {
		c := dialRaw(t, addr)
		c.write(upgradeReq("GET", "p"+st))
		all, err := io.ReadAll(io.LimitReader(c.br, 40))
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(string(all), "HTTP/1.1 500 "), "status %s: %q", st, all)
	}
	assert.Contains(t, logs.String(), "RejectError.Status 101 is not a 4xx or 5xx status")
}

func TestBodyRefusalIsPartOfNegotiation(t *testing.T) {
	got := make(chan string, 1)
	s := Server{}
	s.HandleRoute("nobody", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}, MaxBody: -1})
	s.HandleRoute("body", Route{Handler: bodyRecorder(got), Methods: []string{"POST"}})
	ep := serve(t, &s, &s)
	mw := serve(t, &s, s.Middleware(plainHandler))

	c := dialRaw(t, ep)
	c.write(upgradeReq("POST", "nobody, body", "Content-Length: 2") + "hi")
	assert.Contains(t, c.head(), "Upgrade: body\r\n", "the next offer that takes a body")
	assert.Equal(t, "hi", <-got)

	c = dialRaw(t, ep)
	c.write(upgradeReq("POST", "nobody", "Content-Length: 2") + "hi")
	assert.Equal(t, http.StatusBadRequest, c.response("POST").StatusCode)

	c = dialRaw(t, mw)
	c.write(upgradeReq("POST", "nobody", "Content-Length: 2") + "hi")
	assert.Equal(t, "plain POST /", bodyString(t, c.response("POST")), "as if no upgrade was asked")
}

func TestShutdownDuringHandshakeRefusesBefore101(t *testing.T) {
	entered := make(chan struct{})
	proceed := make(chan struct{})
	s := Server{}
	s.Handle("slow", accepterFunc{accept: func(*http.Request, http.Header) error {
		close(entered)
		<-proceed
		return nil
	}})
	addr := serve(t, &s, &s)
	c := dialRaw(t, addr)
	c.write(upgradeReq("GET", "slow"))
	<-entered
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a switch was in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(proceed)
	resp := c.response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "refused before the 101, not switched and dropped")
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.NoError(t, <-done)
}
