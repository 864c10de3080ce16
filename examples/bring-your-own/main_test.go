package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-upgrade/upgrade"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gorilla "github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start serves newServer(maxConns) on 127.0.0.1 and returns it with its
// address. At cleanup the listener and every switched connection are
// closed, and the handlers awaited.
func start(t *testing.T, maxConns int) (*upgrade.Server, string) {
	t.Helper()
	up := newServer(maxConns)
	ts := httptest.NewServer(up)
	t.Cleanup(func() {
		ts.Close()
		assert.NoError(t, up.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, up.Shutdown(ctx))
	})
	return up, ts.Listener.Addr().String()
}

// timeout bounds every client operation.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialGorilla opens a WebSocket connection to path with gorilla's client.
func dialGorilla(t *testing.T, addr, path string, h http.Header) (*gorilla.Conn, *http.Response, error) {
	d := gorilla.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.DialContext(timeout(t), "ws://"+addr+path, h)
	if c != nil {
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.NetConn().SetDeadline(time.Now().Add(10*time.Second)))
	}
	return c, resp, err
}

// TestEcho: each library's route echoes with that library's own client,
// and echo/1 with the Server's; all are counted under their protocol.
func TestEcho(t *testing.T) {
	up, addr := start(t, 0)
	ctx := timeout(t)

	g, _, err := dialGorilla(t, addr, "/gorilla", nil)
	require.NoError(t, err)
	require.NoError(t, g.WriteMessage(gorilla.TextMessage, []byte("hello gorilla")))
	_, msg, err := g.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "hello gorilla", string(msg))

	c, _, err := coder.Dial(ctx, "ws://"+addr+"/coder", nil)
	require.NoError(t, err)
	defer c.CloseNow()
	require.NoError(t, c.Write(ctx, coder.MessageText, []byte("hello coder")))
	_, msg, err = c.Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, "hello coder", string(msg))

	nc, br, _, err := ws.Dial(ctx, "ws://"+addr+"/gobwas")
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	var rw io.ReadWriter = nc
	if br != nil { // bytes read past the 101
		rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, nc), nc}
	}
	require.NoError(t, wsutil.WriteClientText(rw, []byte("hello gobwas")))
	msg, err = wsutil.ReadServerText(rw)
	require.NoError(t, err)
	assert.Equal(t, "hello gobwas", string(msg))

	e, err := upgrade.Dial(ctx, "http://"+addr+"/", upgrade.Protocol{Name: "echo", Version: "1"})
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(e, "hello echo")
	require.NoError(t, err)
	got := make([]byte, len("hello echo"))
	_, err = io.ReadFull(e, got)
	require.NoError(t, err)
	assert.Equal(t, "hello echo", string(got))

	assert.Equal(t, map[string]int{"websocket": 3, "echo/1": 1}, up.ActiveConns())

	require.NoError(t, c.Close(coder.StatusNormalClosure, ""))
	require.NoError(t, g.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second)))
	nc.Close()
	e.Close()
	assert.Eventually(t, func() bool { return len(up.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond,
		"each connection is uncounted when it closes: %v", up.ActiveConns())
}

// Test426 lists every registered protocol, to a plain request and to a
// client offering only what the Server does not speak.
func Test426(t *testing.T) {
	_, addr := start(t, 0)
	resp, err := http.Get("http://" + addr + "/gorilla")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, "websocket, echo/1", resp.Header.Get("Upgrade"))

	_, err = upgrade.Dial(timeout(t), "http://"+addr+"/", upgrade.Protocol{Name: "chat"})
	var refused *upgrade.ResponseError
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, http.StatusUpgradeRequired, refused.StatusCode)
	assert.Equal(t, []upgrade.Protocol{{Name: "websocket"}, {Name: "echo", Version: "1"}}, refused.Upgrade)
}

// TestMaxConns: at MaxConns, the next WebSocket handshake is refused with
// 503 and Retry-After before any 101 and before the library runs; a slot
// frees when a connection closes.
func TestMaxConns(t *testing.T) {
	up, addr := start(t, 2)
	ctx := timeout(t)
	g, _, err := dialGorilla(t, addr, "/gorilla", nil)
	require.NoError(t, err)
	c, _, err := coder.Dial(ctx, "ws://"+addr+"/coder", nil)
	require.NoError(t, err)
	defer c.CloseNow()
	assert.Equal(t, map[string]int{"websocket": 2}, up.ActiveConns())

	_, resp, err := dialGorilla(t, addr, "/gorilla", nil)
	require.ErrorIs(t, err, gorilla.ErrBadHandshake)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	// Everything the server sends back, byte for byte: one 503, no 101.
	all := exchangeRaw(t, addr, "13") // the server closes after refusing
	assert.True(t, strings.HasPrefix(string(all), "HTTP/1.1 503 Service Unavailable\r\n"), "%q", all)
	assert.NotContains(t, string(all), "101")

	g.Close()
	require.Eventually(t, func() bool { return up.ActiveConns()["websocket"] == 1 }, 10*time.Second, 5*time.Millisecond)
	nc2, _, _, err := ws.Dial(ctx, "ws://"+addr+"/gobwas")
	require.NoError(t, err, "the slot freed")
	nc2.Close()
}

// TestShutdown: Shutdown tells a gorilla and a coder connection 1001 Going
// Away at once, and, since the client answers nothing, the Server closes
// both at the end of the grace period; nothing is left counted. The
// client is gorilla's with a close handler that does not answer.
func TestShutdown(t *testing.T) {
	up, addr := start(t, 0)
	type event struct {
		path       string
		closeCode  int
		signalled  time.Duration // when the close frame arrived
		closedAt   time.Duration // when the connection was closed
		readErrEOF bool
	}
	events := make(chan event, 2)
	var begin time.Time
	started := make(chan struct{})
	for _, path := range []string{"/gorilla", "/coder"} {
		g, _, err := dialGorilla(t, addr, path, nil)
		require.NoError(t, err)
		require.NoError(t, g.WriteMessage(gorilla.TextMessage, []byte("ping")))
		_, msg, err := g.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, "ping", string(msg))
		g.SetCloseHandler(func(code int, text string) error { return nil }) // answer nothing
		go func() {
			<-started
			ev := event{path: path}
			_, _, err := g.ReadMessage()
			ev.signalled = time.Since(begin)
			var ce *gorilla.CloseError
			if errors.As(err, &ce) {
				ev.closeCode = ce.Code
			}
			_, err = g.NetConn().Read(make([]byte, 1))
			ev.closedAt = time.Since(begin)
			ev.readErrEOF = errors.Is(err, io.EOF)
			events <- ev
		}()
	}
	require.Equal(t, map[string]int{"websocket": 2}, up.ActiveConns())

	const grace = 500 * time.Millisecond
	begin = time.Now()
	close(started)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	assert.ErrorIs(t, up.Shutdown(ctx), context.DeadlineExceeded, "the connections were still open at the end of the grace period")
	for range 2 {
		ev := <-events
		assert.Equal(t, gorilla.CloseGoingAway, ev.closeCode, "%s: 1001 Going Away", ev.path)
		assert.Less(t, ev.signalled, grace, "%s: told at the start of Shutdown", ev.path)
		assert.True(t, ev.readErrEOF, "%s: then closed by the server", ev.path)
		assert.GreaterOrEqual(t, ev.closedAt, grace, "%s: closed at the end of the grace period", ev.path)
	}
	assert.Eventually(t, func() bool { return len(up.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// TestRefusedOrigin: a cross-origin handshake gets the library's own 403
// (gorilla's and coder's checks, the example's for gobwas), and nothing is
// counted.
func TestRefusedOrigin(t *testing.T) {
	up, addr := start(t, 0)
	evil := http.Header{"Origin": {"http://evil.example"}}

	_, resp, err := dialGorilla(t, addr, "/gorilla", evil)
	require.ErrorIs(t, err, gorilla.ErrBadHandshake)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "Forbidden\n", string(body), "gorilla's answer")

	_, resp, err = coder.Dial(timeout(t), "ws://"+addr+"/coder", &coder.DialOptions{HTTPHeader: evil})
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	body, _ = io.ReadAll(resp.Body)
	assert.Contains(t, string(body), `request Origin "evil.example" is not authorized for Host`, "coder's answer")

	var status int
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(evil), OnStatusError: func(s int, _ []byte, _ io.Reader) { status = s }}
	_, _, _, err = d.Dial(timeout(t), "ws://"+addr+"/gobwas")
	require.Error(t, err)
	assert.Equal(t, http.StatusForbidden, status)

	assert.Empty(t, up.ActiveConns())
}

// TestPipelinedFrame: a client frame sent in the same packet as the
// handshake reaches gorilla (which refuses such bytes on its own) and
// gobwas (whose examples lose them on their own).
func TestPipelinedFrame(t *testing.T) {
	_, addr := start(t, 0)
	for _, path := range []string{"/gorilla", "/coder", "/gobwas"} {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		defer nc.Close()
		require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
		var frame [16]byte
		n := copy(frame[:], []byte{0x81, 0x80 | 4, 1, 2, 3, 4}) // masked text "ping"
		for i, b := range []byte("ping") {
			frame[n+i] = b ^ byte(i%4+1)
		}
		_, err = io.WriteString(nc, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"+string(frame[:n+4]))
		require.NoError(t, err)
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, path)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, path)
		msg, err := wsutil.ReadServerText(struct {
			io.Reader
			io.Writer
		}{br, nc})
		require.NoError(t, err, path)
		assert.Equal(t, "ping", string(msg), path)
	}
}

// TestGobwasRefusalClosed: gobwas/ws answers a handshake it refuses on the
// hijacked connection and leaves it open; the Server closes it when the
// handler returns, and it is not counted.
func TestGobwasRefusalClosed(t *testing.T) {
	up, addr := start(t, 0)
	all := exchangeRaw(t, addr, "8") // the server closes the connection gobwas left open
	assert.True(t, strings.HasPrefix(string(all), "HTTP/1.1 426 "), "%q", all)
	assert.Eventually(t, func() bool { return len(up.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// exchangeRaw sends a WebSocket opening handshake for /gobwas with the
// given Sec-WebSocket-Version on a new connection and returns all the
// server sends until it closes the connection.
func exchangeRaw(t *testing.T, addr, version string) []byte {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(nc, "GET /gobwas HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "+version+"\r\n\r\n")
	require.NoError(t, err)
	all, err := io.ReadAll(nc)
	require.NoError(t, err, "the server closes the connection")
	return all
}
