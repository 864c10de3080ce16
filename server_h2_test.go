package upgrade

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-upgrade/upgrade/extconnect" // RFC 8441 in net/http's HTTP/2 server
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// serveH2 serves h with HTTP/1.1 and HTTP/2 with prior knowledge on
// 127.0.0.1 (or HTTP/2 over TLS if secure), and returns its address; at
// the end of the test it closes the http.Server and s's connections.
func serveH2(t *testing.T, s *Server, h http.Handler, secure bool) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	if secure {
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		ts.Config.Protocols = &p
		ts.Start()
	}
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx), "handlers return once their streams are closed")
	})
	return ts.Listener.Addr().String()
}

// dialH2 connects to addr with HTTP/2 as serveH2 serves it.
func dialH2(t *testing.T, addr string, secure bool) *wiretest.H2Conn {
	t.Helper()
	if secure {
		return wiretest.DialH2(t, addr, &tls.Config{InsecureSkipVerify: true})
	}
	return wiretest.DialH2(t, addr, nil)
}

func TestExtendedConnectEnabledForTests(t *testing.T) {
	require.True(t, ExtendedConnect(), "this test binary imports extconnect")
}

// TestH2SwitchAnswers200: over HTTP/2, with prior knowledge and over TLS,
// the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, and an extended
// CONNECT naming a registered protocol is answered 200 (never 101), with
// no Upgrade or Connection field, the fields the Accepter added, and the
// stream's data then echoed by the protocol.
func TestH2SwitchAnswers200(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "prior knowledge", true: "TLS"}[secure], func(t *testing.T) {
			s := &Server{}
			seen := make(chan *Conn, 1)
			s.Handle("echo/1", accepterFunc{
				accept: func(r *http.Request, h http.Header) error { h.Set("X-Accepted", "yes"); return nil },
				serve:  func(c *Conn) { seen <- c; echo(c) },
			})
			addr := serveH2(t, s, s, secure)
			c := dialH2(t, addr, secure)
			v, ok := c.Setting(http2.SettingEnableConnectProtocol)
			require.True(t, ok, "SETTINGS_ENABLE_CONNECT_PROTOCOL advertised")
			require.EqualValues(t, 1, v)

			st := c.Connect(map[bool]string{false: "http", true: "https"}[secure], "example.com", "/chat", "echo/1")
			h := st.Header()
			assert.Equal(t, []string{"200"}, h[":status"])
			assert.Equal(t, []string{"yes"}, h["x-accepted"])
			assert.NotContains(t, h, "upgrade")
			assert.NotContains(t, h, "connection")
			st.Write([]byte("hello"))
			assert.Equal(t, "hello", string(st.Read(5)))

			sc := <-seen
			assert.Equal(t, Protocol{"echo", "1"}, sc.Protocol)
			assert.Equal(t, 2, sc.Request.ProtoMajor, "Request.ProtoMajor tells the HTTP version")
			assert.Equal(t, "/chat", sc.Request.URL.Path)
			assert.Equal(t, map[string]int{"echo/1": 1}, s.ActiveConns())
			assert.Equal(t, http.NoBody, sc.Request.Body, "the stream's data is read through the Conn")
			assert.NotNil(t, sc.RemoteAddr())
			assert.NotNil(t, sc.LocalAddr())
		})
	}
}

// TestH2EchoMiBUnderFlowControl: a MiB each way, sent while the echo comes
// back, arrives exactly: the stream respects HTTP/2 flow control both ways.
func TestH2EchoMiBUnderFlowControl(t *testing.T) {
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st.Status())
	payload := make([]byte, 1<<20)
	payload = randomBytes(rand.New(rand.NewPCG(1, 2)), len(payload))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		st.Write(payload)
		st.CloseWrite()
	}()
	got := st.Read(len(payload))
	<-wrote
	assert.True(t, bytes.Equal(payload, got), "the echo differs")
	rest, ended, reset := st.End()
	assert.Empty(t, rest)
	assert.True(t, ended, "END_STREAM after the client's")
	assert.Nil(t, reset)
}

// TestH2HalfClose: the client's END_STREAM is an EOF to the protocol, which
// can still write; the stream then ends cleanly, with END_STREAM and no
// RST_STREAM. A protocol that calls CloseWrite can write no more, and its
// END_STREAM goes out when its handler returns.
func TestH2HalfClose(t *testing.T) {
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	afterEOF := make(chan error, 1)
	s.HandleFunc("drain/1", func(c *Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			afterEOF <- err
			return
		}
		_, err = c.Write([]byte("got " + strconv.Itoa(len(b))))
		if err == nil {
			err = c.CloseWrite()
		}
		if err == nil {
			_, err = c.Write([]byte("too late"))
			if err == nil {
				err = errors.New("Write after CloseWrite succeeded")
			} else {
				err = nil
			}
		}
		afterEOF <- err
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "drain/1")
	require.Equal(t, "200", st.Status())
	st.Write([]byte("abc"))
	st.CloseWrite()
	require.NoError(t, <-afterEOF)
	rest, ended, reset := st.End()
	assert.Equal(t, "got 3", string(rest))
	assert.True(t, ended)
	assert.Nil(t, reset)
	// A full exchange on another stream orders any late frame for the
	// first one before its end.
	st2 := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st2.Status())
	st2.Write([]byte("x"))
	assert.Equal(t, "x", string(st2.Read(1)))
	assert.NotContains(t, c.Log(), "RST_STREAM stream=1 NO_ERROR", "the stream ended cleanly")
}

// TestH2ConcurrentStreams: 50 switched streams on one connection at once,
// each with its own bytes.
func TestH2ConcurrentStreams(t *testing.T) {
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	const n = 50
	streams := make([]*wiretest.H2Stream, n)
	for i := range streams {
		streams[i] = c.Connect("http", "example.com", "/", "echo/1")
	}
	var wg sync.WaitGroup
	for i, st := range streams {
		require.Equal(t, "200", st.Status(), "stream %d", i)
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i)
			st.Write(msg)
			assert.Equal(t, msg, st.Read(len(msg)), "stream %d", i)
		})
	}
	wg.Wait()
	assert.Equal(t, map[string]int{"echo/1": n}, s.ActiveConns())
	for _, st := range streams {
		st.CloseWrite()
	}
	for _, st := range streams {
		_, ended, _ := st.End()
		assert.True(t, ended)
	}
	require.Eventually(t, func() bool { return len(s.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// TestH2Refusals: what an extended CONNECT that is not switched gets: an
// error status, never a 2xx, and never Upgrade or Connection fields.
func TestH2Refusals(t *testing.T) {
	s := &Server{MaxConns: 1}
	hold := make(chan struct{})
	s.HandleFunc("hold/1", func(c *Conn) { <-hold })
	s.Handle("no/1", accepterFunc{accept: func(*http.Request, http.Header) error {
		return &RejectError{Status: http.StatusForbidden, Message: "not you"}
	}})
	s.Handle("old/1", accepterFunc{accept: func(*http.Request, http.Header) error {
		return &RejectError{Status: http.StatusUpgradeRequired, Header: http.Header{"X-Version": {"2"}}}
	}})
	s.Handle("shy/1", accepterFunc{accept: func(*http.Request, http.Header) error { return ErrDecline }})
	s.HandleRoute("cleartext/1", Route{Handler: HandlerFunc(echo), Available: func(r *http.Request) bool { return r.ProtoMajor == 1 }})
	addr := serveH2(t, s, s.Middleware(plainHandler), false)
	c := dialH2(t, addr, false)
	for _, tc := range []struct {
		protocol string
		status   string
		header   string // a field the answer must carry
	}{
		{"nosuch/1", "501", ""},
		{"echo/1 x", "400", ""},
		{"no/1", "403", ""},
		{"old/1", "400", "x-version"},
		{"shy/1", "501", ""},
		{"cleartext/1", "501", ""},
	} {
		st := c.Connect("http", "example.com", "/", tc.protocol)
		h := st.Header()
		assert.Equal(t, []string{tc.status}, h[":status"], tc.protocol)
		assert.NotContains(t, h, "upgrade", tc.protocol)
		assert.NotContains(t, h, "connection", tc.protocol)
		if tc.header != "" {
			assert.Contains(t, h, tc.header, tc.protocol)
		}
	}
	st := c.Connect("http", "example.com", "/", "hold/1")
	require.Equal(t, "200", st.Status())
	st2 := c.Connect("http", "example.com", "/", "hold/1")
	h := st2.Header()
	assert.Equal(t, []string{"503"}, h[":status"], "over MaxConns")
	assert.Equal(t, []string{"1"}, h["retry-after"])
	close(hold)
	_, ended, _ := st.End()
	assert.True(t, ended)

	// A plain HTTP/2 request goes to the middleware's next handler.
	plain := c.Open([][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/x"}, {":authority", "example.com"}}, true)
	assert.Equal(t, []string{"200"}, plain.Header()[":status"])
	rest, _, _ := plain.End()
	assert.Equal(t, "plain GET /x", string(rest))
}

// TestH2ReadDeadlineRenewable: a read deadline that passes fails the
// pending Read with a timeout, and a later Read still gets every byte,
// as with a TCP connection.
func TestH2ReadDeadlineRenewable(t *testing.T) {
	s := &Server{}
	result := make(chan error, 1)
	s.HandleFunc("patient/1", func(c *Conn) {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			result <- fmt.Errorf("first Read: %v, want a timeout", err)
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		_, _ = c.Write([]byte("ready"))
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		if err == nil && string(b) != "late" {
			err = fmt.Errorf("read %q after the timeout, want %q", b, "late")
		}
		result <- err
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "patient/1")
	require.Equal(t, "200", st.Status())
	assert.Equal(t, "ready", string(st.Read(5)))
	st.Write([]byte("late"))
	require.NoError(t, <-result)
}

// TestH2ShutdownWithOpenStreams: Shutdown closes Draining at once while the
// streams keep working; when the grace ends the streams are closed, the
// handlers return and ActiveConns is empty.
func TestH2ShutdownWithOpenStreams(t *testing.T) {
	s := &Server{}
	draining := make(chan struct{}, 3)
	s.HandleFunc("echo/1", func(c *Conn) {
		go func() {
			select {
			case <-Draining(c.Context()):
				draining <- struct{}{}
			case <-c.Context().Done():
			}
		}()
		echo(c)
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	var streams []*wiretest.H2Stream
	for range 3 {
		st := c.Connect("http", "example.com", "/", "echo/1")
		require.Equal(t, "200", st.Status())
		streams = append(streams, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	for range 3 {
		<-draining
	}
	for i, st := range streams {
		st.Write([]byte("during grace"))
		assert.Equal(t, "during grace", string(st.Read(12)), "stream %d works during the grace period", i)
	}
	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
	for i, st := range streams {
		_, ended, reset := st.End()
		assert.True(t, ended || reset != nil, "stream %d ended", i)
	}
	require.Eventually(t, func() bool { return len(s.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
	// New extended CONNECTs are refused while shut down.
	st := c.Connect("http", "example.com", "/", "echo/1")
	assert.Equal(t, "503", st.Status())
}

// TestH2PanicContained: a protocol handler that panics on a stream ends
// that stream; the connection and its other streams go on.
func TestH2PanicContained(t *testing.T) {
	lg, logs := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleFunc("boom/1", func(c *Conn) { panic("kaboom") })
	s.HandleFunc("echo/1", echo)
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "boom/1")
	require.Equal(t, "200", st.Status())
	_, ended, reset := st.End()
	assert.True(t, ended || reset != nil)
	st2 := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st2.Status())
	st2.Write([]byte("still"))
	assert.Equal(t, "still", string(st2.Read(5)))
	assert.Contains(t, logs.String(), "kaboom")
}

// TestH2NothingLost: DATA sent right behind the HEADERS, before the 200
// arrives, in frames of random sizes, reaches the protocol exactly, over
// many seeds.
func TestH2NothingLost(t *testing.T) {
	s := &Server{}
	var handled atomic.Int32
	s.HandleFunc("echo/1", func(c *Conn) { handled.Add(1); echo(c) })
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	for seed := range 20 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		payload := randomBytes(rng, rng.IntN(200<<10)+1)
		st := c.Connect("http", "example.com", "/", "echo/1")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for p := payload; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(20000))
				st.Write(p[:n])
				p = p[n:]
			}
			st.CloseWrite()
		}()
		require.Equal(t, "200", st.Status())
		got, ended, reset := st.End()
		<-done
		require.True(t, ended, "seed %d", seed)
		require.Nil(t, reset, "seed %d", seed)
		require.True(t, bytes.Equal(payload, got), "seed %d: %d bytes back, want %d", seed, len(got), len(payload))
	}
	assert.EqualValues(t, 20, handled.Load())
}
