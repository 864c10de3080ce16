package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/go-upgrade/upgrade/internal/wsframe"
	"github.com/go-upgrade/upgrade/websocket"
)

// httpClient is used for the plain requests of the tests; its idle
// connections are closed at the end of each test that uses it.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

func TestServeAddressLine(t *testing.T) {
	s := startServer(t)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, s.wait(t, 10*time.Second))
	assert.Equal(t, "listening on http://"+s.addr+"\n", s.stdout.String(), "stdout holds exactly one line")
	assert.Contains(t, s.stderr.String(), "level=INFO", "logs go to stderr, as slog text")
}

// TestEchoRawSocket switches to echo/1 with bytes pipelined behind the
// request, echoes more, half-closes and expects the server to finish and
// close.
func TestEchoRawSocket(t *testing.T) {
	s := startServer(t)
	c, br, status, h := sendHead(t, s.addr, "POST /echo HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nearly bytes|")
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	assert.Equal(t, "echo/1", h.Get("Upgrade"))
	assert.Equal(t, "Upgrade", h.Get("Connection"))

	got := make([]byte, len("early bytes|"))
	_, err := io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, "early bytes|", string(got))

	_, err = io.WriteString(c, "late bytes")
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the server closes after the half-close")
	assert.Equal(t, "late bytes", string(rest))
}

func TestRequired426(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		req        string
		connection []string
	}{
		// A refused upgrade request closes the connection.
		{"GET /required HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: nosuch/1\r\n\r\n", []string{"close", "Upgrade"}},
		{"GET /required HTTP/1.1\r\nHost: x\r\n\r\n", []string{"Upgrade"}},
	} {
		_, _, status, h := sendHead(t, s.addr, tc.req)
		assert.Equal(t, "HTTP/1.1 426 Upgrade Required", status, "%q", tc.req)
		assert.Equal(t, "echo/1, websocket, h2c", h.Get("Upgrade"))
		assert.Equal(t, tc.connection, h.Values("Connection"))
	}
}

// TestUnwantedUpgradeServedNormally checks that an offer the server does
// not speak, on any path but /required, is an ordinary request.
func TestUnwantedUpgradeServedNormally(t *testing.T) {
	s := startServer(t)
	resp, _ := rawRequest(t, s.addr, "GET /protocols HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: nosuch/1\r\n\r\n")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Upgrade"))
}

func TestPage(t *testing.T) {
	s := startServer(t)
	client := httpClient(t)

	resp, err := client.Get("http://" + s.addr + "/")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	page := string(body)
	assert.Contains(t, page, "new WebSocket(")
	assert.Contains(t, page, `location.protocol === "https:" ? "wss:" : "ws:"`)
	assert.Contains(t, page, `<div id="result"></div>`)
	assert.Contains(t, page, "<code>echo/1</code>, <code>websocket</code>, <code>h2c</code>")
	assert.NotContains(t, page, `id="pending"`, "no load-event hold without ?auto")

	resp, err = client.Get("http://" + s.addr + "/?auto=hi%3Cthere")
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	page = string(body)
	assert.Regexp(t, `<img id="pending" src="/hold\?token=[0-9a-f]{32}"`, page)
	assert.Contains(t, page, `const autoMessage = "hi\u003cthere";`, "the message is escaped as a JS string")

	resp, err = client.Get("http://" + s.addr + "/nosuchpage")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestProtocolsEndpoint(t *testing.T) {
	for _, policy := range []string{"client", "server"} {
		s := startServer(t, "-policy", policy)
		resp, err := httpClient(t).Get("http://" + s.addr + "/protocols")
		require.NoError(t, err)
		var got struct {
			Protocols []string `json:"protocols"`
			Policy    string   `json:"policy"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, []string{"echo/1", "websocket", "h2c"}, got.Protocols)
		assert.Equal(t, policy, got.Policy)
	}
}

// TestHoldRelease checks the load-event hold of the page's auto mode:
// /hold answers only once /release with the same token arrives, also
// when the release comes first.
func TestHoldRelease(t *testing.T) {
	s := startServer(t)
	client := httpClient(t)
	base := "http://" + s.addr

	const token = "0123456789abcdef0123456789abcdef"
	held := make(chan time.Time, 1)
	go func() {
		resp, err := client.Get(base + "/hold?token=" + token)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		held <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-held:
		t.Fatal("/hold answered before the release")
	default:
	}
	released := time.Now()
	resp, err := client.Post(base+"/release?token="+token, "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	select {
	case at := <-held:
		assert.True(t, !at.Before(released))
	case <-time.After(5 * time.Second):
		t.Fatal("/hold not answered after the release")
	}

	// Release first, then hold: answered at once.
	const token2 = "fedcba9876543210fedcba9876543210"
	resp, err = client.Post(base+"/release?token="+token2, "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	start := time.Now()
	resp, err = client.Get(base + "/hold?token=" + token2)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "image/gif", resp.Header.Get("Content-Type"))
	assert.Less(t, time.Since(start), 2*time.Second)
}

// TestPolicy offers "websocket, echo/1" (with the WebSocket handshake
// fields): the client's order picks websocket, the server's echo/1.
func TestPolicy(t *testing.T) {
	for _, tc := range []struct{ policy, want string }{
		{"client", "websocket"},
		{"server", "echo/1"},
	} {
		s := startServer(t, "-policy", tc.policy)
		_, _, status, h := sendHead(t, s.addr, "GET / HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade\r\nUpgrade: websocket, echo/1\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		require.Equal(t, "HTTP/1.1 101 Switching Protocols", status, tc.policy)
		assert.Equal(t, tc.want, h.Get("Upgrade"), tc.policy)

		r := runDialCmd(t, strings.NewReader(""), "http://"+s.addr+"/", "websocket,echo/1")
		assert.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stderr, "switched to "+tc.want+"\n")
	}
}

// TestH2CRaw sends an h2c upgrade by hand and checks the server's SETTINGS
// follows the 101.
func TestH2CRaw(t *testing.T) {
	s := startServer(t)
	_, br, status, h := sendHead(t, s.addr, "GET / HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	assert.Equal(t, "h2c", h.Get("Upgrade"))
	var frame [9]byte
	_, err := io.ReadFull(br, frame[:])
	require.NoError(t, err)
	assert.Equal(t, byte(0x4), frame[3], "the server's first frame is SETTINGS")
}

// switchEcho opens a connection to addr switched to echo/1 and checks
// that it echoes.
func switchEcho(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, br, status, _ := sendHead(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nping")
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	got := make([]byte, 4)
	_, err := io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, "ping", string(got))
	return c, br
}

// openWebSocket opens a connection to addr switched to websocket and
// returns it with the reader holding what followed the 101.
func openWebSocket(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := rawConn(t, addr)
	key := websocket.NewKey()
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	status, h := readResponseHead(t, br)
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	require.Equal(t, websocket.AcceptKey(key), h.Get("Sec-WebSocket-Accept"))
	return c, br
}

// TestSIGTERMEcho sends SIGTERM while an echo/1 connection is open. echo/1
// has no way to say goodbye, so it keeps echoing during the grace period,
// bytes written after the signal included; the connection is closed when
// the grace period ends, and the exit status is 0. A WebSocket opened
// beside it witnesses that the shutdown has begun: it gets its 1001.
func TestSIGTERMEcho(t *testing.T) {
	const grace = time.Second
	s := startServer(t, "-grace", grace.String())
	c, br := switchEcho(t, s.addr)
	wc, wbr := openWebSocket(t, s.addr)
	ws := wsframe.NewConn(readWriter{wbr, wc}, true)

	start := time.Now()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	_, _, err := ws.ReadMessage()
	var ce *wsframe.CloseError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, wsframe.CloseGoingAway, ce.Code, "the shutdown has begun")

	for _, msg := range []string{"written after SIGTERM", "and more"} {
		_, err := io.WriteString(c, msg)
		require.NoError(t, err)
		got := make([]byte, len(msg))
		_, err = io.ReadFull(br, got)
		require.NoError(t, err, "echoed during the grace period")
		assert.Equal(t, msg, string(got))
	}

	rest, err := io.ReadAll(br) // ends when the server closes the connection
	elapsed := time.Since(start)
	assert.Empty(t, rest)
	if err != nil {
		var ne net.Error
		require.ErrorAs(t, err, &ne, "the connection ends with EOF or a reset")
		require.False(t, ne.Timeout(), "the connection was not closed")
	}
	assert.GreaterOrEqual(t, elapsed, grace, "closed before the grace period ended")
	assert.Less(t, elapsed, grace+2*time.Second, "not closed when the grace period ended")
	assert.Equal(t, 0, s.wait(t, 5*time.Second))
	assert.Contains(t, s.stderr.String(), "shutting down")

	// Nothing listens any more.
	_, err = net.DialTimeout("tcp", s.addr, time.Second)
	assert.Error(t, err)
}

// TestSIGTERMWebSocket: an open WebSocket gets a 1001 close frame on
// shutdown, and the server exits 0 once the handshake completes.
func TestSIGTERMWebSocket(t *testing.T) {
	s := startServer(t, "-grace", "2s")
	c := rawConn(t, s.addr)
	key := websocket.NewKey()
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	status, h := readResponseHead(t, br)
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	require.Equal(t, websocket.AcceptKey(key), h.Get("Sec-WebSocket-Accept"))

	ws := wsframe.NewConn(readWriter{br, c}, true)
	require.NoError(t, ws.WriteMessage(wsframe.OpText, []byte("hello")))
	op, p, err := ws.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, wsframe.OpText, op)
	assert.Equal(t, "hello", string(p))

	start := time.Now()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	_, _, err = ws.ReadMessage() // answers the server's close frame
	var ce *wsframe.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, wsframe.CloseGoingAway, ce.Code)
	assert.Equal(t, 0, s.wait(t, 5*time.Second))
	assert.Less(t, time.Since(start), 2*time.Second, "the server did not need the whole grace period")
}

// TestSIGTERMWebSocketLateMessage: a message the client sends after the
// server's 1001 close frame, before it has read it, is not echoed (no data
// may follow a close frame, RFC 6455 §5.5.1), and the close handshake
// still completes: the client's close frame ends the connection, long
// before the grace period would.
func TestSIGTERMWebSocketLateMessage(t *testing.T) {
	s := startServer(t, "-grace", "10s")
	c, br := openWebSocket(t, s.addr)
	ws := wsframe.NewConn(readWriter{br, c}, true)
	require.NoError(t, ws.WriteMessage(wsframe.OpText, []byte("hello")))
	_, p, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "hello", string(p))

	start := time.Now()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	// Read the server's close frame by hand, without answering it yet.
	want := append([]byte{0x88, byte(2 + len("server shutting down")), 0x03, 0xe9}, "server shutting down"...)
	got := make([]byte, len(want))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, want, got, "a close frame with 1001 Going Away")

	require.NoError(t, ws.WriteMessage(wsframe.OpText, []byte("late")))
	require.NoError(t, ws.WriteClose(wsframe.CloseGoingAway, ""))
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the server closes the connection after the handshake")
	assert.Empty(t, rest, "nothing follows the server's close frame")
	assert.Equal(t, 0, s.wait(t, 5*time.Second))
	assert.Less(t, time.Since(start), 5*time.Second, "the handshake ended the connection, not the grace period")
}

// TestServeLogging: without -v, switched connections write nothing to
// the log, only the start and the shutdown do; with -v, each writes
// exactly one line when it ends, naming the protocol, the remote address
// and the HTTP version of the request that switched.
func TestServeLogging(t *testing.T) {
	connLine := regexp.MustCompile(`(?m)^.* msg="connection closed" .*$`)
	for _, verbose := range []bool{false, true} {
		t.Run(fmt.Sprintf("-v=%v", verbose), func(t *testing.T) {
			args := []string{"-grace", "5s"}
			if verbose {
				args = append(args, "-v")
			}
			s := startServer(t, args...)

			ec, ebr := switchEcho(t, s.addr)
			require.NoError(t, ec.CloseWrite())
			rest, err := io.ReadAll(ebr)
			require.NoError(t, err)
			require.Empty(t, rest)

			wc, wbr := openWebSocket(t, s.addr)
			require.NoError(t, wsframe.NewConn(readWriter{wbr, wc}, true).Close(wsframe.CloseNormalClosure, ""))

			r := runDialCmd(t, strings.NewReader(""), "http://"+s.addr+"/", "h2c")
			require.Equal(t, 0, r.code, r.stderr)

			if verbose {
				// The lines are written when the handlers return.
				require.Eventually(t, func() bool {
					return len(connLine.FindAllString(s.stderr.String(), -1)) >= 3
				}, testTimeout, 10*time.Millisecond, "one line per connection")
			}
			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			require.Equal(t, 0, s.wait(t, 10*time.Second))
			logs := s.stderr.String()
			lines := connLine.FindAllString(logs, -1)
			if !verbose {
				assert.Empty(t, lines, logs)
				assert.NotContains(t, logs, "remote=", "nothing logged per connection")
				for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
					assert.Regexp(t, `msg=(serving|"shutting down"|stopped)( |$)`, l)
				}
				return
			}
			require.Len(t, lines, 3, logs)
			assert.Regexp(t, `protocol=echo/1 remote=`+regexp.QuoteMeta(ec.LocalAddr().String())+
				` proto=HTTP/1.1 duration=\S+ how="client half-closed" echoed=4$`, lines[0])
			assert.Regexp(t, `protocol=websocket remote=`+regexp.QuoteMeta(wc.LocalAddr().String())+
				` proto=HTTP/1.1 duration=\S+ how="closed by the client"$`, lines[1])
			assert.Regexp(t, `protocol=h2c remote=127\.0\.0\.1:\d+ proto=HTTP/1\.1 duration=\S+$`, lines[2])
		})
	}
}

// TestReadTimeout: a plain request whose body dribbles in is cut off by
// -read-timeout (408, and the connection closed), while a switched
// connection idle for longer than that keeps working: Hijack clears the
// deadline net/http set.
func TestReadTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	s := startServer(t, "-read-timeout", timeout.String())

	t.Run("dribbled POST body", func(t *testing.T) {
		c := rawConn(t, s.addr)
		_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
		require.NoError(t, err)
		stop := make(chan struct{})
		dribbled := make(chan struct{})
		go func() {
			defer close(dribbled)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		defer func() {
			close(stop)
			<-dribbled
		}()

		start := time.Now()
		require.NoError(t, c.SetReadDeadline(start.Add(5*time.Second)))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, "no answer while the body dribbles in")
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode, string(body))
		assert.GreaterOrEqual(t, time.Since(start), timeout)
		assert.True(t, resp.Close, "Connection: close")
		_, err = br.ReadByte()
		var ne net.Error
		if errors.As(err, &ne) {
			assert.False(t, ne.Timeout(), "the connection was not closed")
		} else {
			assert.ErrorIs(t, err, io.EOF, "the connection is closed")
		}
	})

	t.Run("idle switched connection", func(t *testing.T) {
		c, br := switchEcho(t, s.addr)
		time.Sleep(2 * timeout) // idle past the read timeout
		_, err := io.WriteString(c, "still here")
		require.NoError(t, err)
		got := make([]byte, len("still here"))
		_, err = io.ReadFull(br, got)
		require.NoError(t, err)
		assert.Equal(t, "still here", string(got))
	})
}

// TestOptionsAsterisk: OPTIONS * can be switched (RFC 9110 §7.8), to
// echo/1 or h2c; a plain one is answered 200 advertising the protocols;
// another method with the * target is a 400.
func TestOptionsAsterisk(t *testing.T) {
	s := startServer(t)

	t.Run("echo/1", func(t *testing.T) {
		c, br, status, h := sendHead(t, s.addr, "OPTIONS * HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nearly")
		require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
		assert.Equal(t, "echo/1", h.Get("Upgrade"))
		_, err := io.WriteString(c, " and late")
		require.NoError(t, err)
		got := make([]byte, len("early and late"))
		_, err = io.ReadFull(br, got)
		require.NoError(t, err)
		assert.Equal(t, "early and late", string(got))
	})

	t.Run("h2c", func(t *testing.T) {
		c, br, status, _ := sendHead(t, s.addr, "OPTIONS * HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: \r\n\r\n")
		require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
		_, err := io.WriteString(c, http2.ClientPreface)
		require.NoError(t, err)
		fr := http2.NewFramer(c, br)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		require.NoError(t, fr.WriteSettings())
		for {
			f, err := fr.ReadFrame()
			require.NoError(t, err)
			if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == 1 {
				assert.Equal(t, "200", mh.PseudoValue("status"), "the OPTIONS * request, answered on stream 1")
				break
			}
		}
	})

	t.Run("plain", func(t *testing.T) {
		resp, _ := rawRequest(t, s.addr, "OPTIONS * HTTP/1.1\r\nHost: "+s.addr+"\r\n\r\n")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "echo/1, websocket, h2c", resp.Header.Get("Upgrade"))
		assert.Equal(t, "Upgrade", resp.Header.Get("Connection"))
		assert.Zero(t, resp.ContentLength)
	})

	t.Run("GET *", func(t *testing.T) {
		resp, _ := rawRequest(t, s.addr, "GET * HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
}
