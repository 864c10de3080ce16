package wiretest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Result is what a client would read back from an exchange served by
// Serve.
type Result struct {
	Status int         // status of the final response (101 for a switch)
	Header http.Header // its header; the Connection field as set
	Body   string      // its body; empty for a 101
	// Interim lists the 1xx statuses sent before the final response,
	// with WriteHeader or on the hijacked connection.
	Interim []int
	// Hijacked reports that the handler took the connection over.
	Hijacked bool
	// After is what was written on the hijacked connection after the
	// final response: the new protocol's bytes.
	After string
}

// Serve parses raw, one request as a client sends it, the way net/http's
// server does; lets each edit change the request (for what the bytes
// cannot say, such as TLS or HTTP/2); and serves it to h on a Recorder,
// in process: no socket, no goroutine of its own. The bytes of raw after
// the request (and its body) are what the client sends next: the hijacked
// connection reads them, then EOF. If h hijacks the connection, Serve
// waits (up to Timeout) until it is closed, which an upgrade.Server does
// when the protocol handler returns, and reads the response from what was
// written on it.
func Serve(t testing.TB, h http.Handler, raw string, edit ...func(*http.Request)) *Result {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	req, err := http.ReadRequest(br)
	require.NoError(t, err, "parsing the request %q", raw)
	req.RemoteAddr = clientAddr.String()
	for _, e := range edit {
		e(req)
	}
	rec := NewRecorder(br)
	h.ServeHTTP(rec, req)

	rec.mu.Lock()
	conn := rec.conn
	rec.mu.Unlock()
	if conn == nil {
		resp := rec.Result()
		return &Result{Status: resp.StatusCode, Header: resp.Header, Body: rec.Body.String(), Interim: rec.Interim}
	}
	select {
	case <-conn.closed:
	case <-time.After(Timeout):
		t.Fatalf("the hijacked connection was not closed within %v; written so far %q", Timeout, conn.written())
	}
	res := &Result{Hijacked: true, Interim: rec.Interim}
	wire := bufio.NewReader(bytes.NewReader(conn.written()))
	for {
		resp, err := ReadResponse(wire, req.Method)
		require.NoError(t, err, "reading the response written on the hijacked connection: %q", conn.written())
		if resp.StatusCode/100 == 1 && resp.StatusCode != http.StatusSwitchingProtocols {
			res.Interim = append(res.Interim, resp.StatusCode)
			continue
		}
		res.Status, res.Header = resp.StatusCode, resp.Header
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			res.Body = string(b)
		}
		after, _ := io.ReadAll(wire)
		res.After = string(after)
		return res
	}
}

// The addresses of the connection Serve stands for (TEST-NET-1, RFC 5737).
var (
	clientAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 49152}
	serverAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 80}
)

// Recorder is an httptest.ResponseRecorder that can be hijacked, as the
// ResponseWriter of net/http's HTTP/1.1 server can: the connection it
// hands over reads what the client sent after the request, then EOF, and
// records what is written to it. It also records the 1xx statuses given
// to WriteHeader, which httptest.ResponseRecorder would take for the
// final status.
type Recorder struct {
	*httptest.ResponseRecorder
	Interim []int // 1xx statuses given to WriteHeader, in order

	next io.Reader // what the client sends after the request
	mu   sync.Mutex
	conn *memConn
}

// NewRecorder returns a Recorder whose hijacked connection reads next.
func NewRecorder(next io.Reader) *Recorder {
	return &Recorder{ResponseRecorder: httptest.NewRecorder(), next: next}
}

// WriteHeader records an interim status, or passes a final one on.
func (r *Recorder) WriteHeader(code int) {
	if code >= 100 && code <= 199 {
		r.Interim = append(r.Interim, code)
		return
	}
	r.ResponseRecorder.WriteHeader(code)
}

// Hijack hands the connection over, once.
func (r *Recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		return nil, nil, errors.New("wiretest: the connection was already hijacked")
	}
	r.conn = &memConn{next: r.next, closed: make(chan struct{})}
	return r.conn, bufio.NewReadWriter(bufio.NewReader(r.conn), bufio.NewWriter(r.conn)), nil
}

// Hijacked reports whether the connection was hijacked.
func (r *Recorder) Hijacked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn != nil
}

// memConn is the connection a Recorder hands over.
type memConn struct {
	next   io.Reader // read by one goroutine at a time, like any net.Conn
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	wrote  bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.next.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.wrote.Write(p)
}

func (c *memConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.wrote.Bytes())
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return serverAddr }
func (c *memConn) RemoteAddr() net.Addr             { return clientAddr }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
