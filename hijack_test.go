package upgrade

import (
	"context"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const greet101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: greet/1\r\nConnection: Upgrade\r\n\r\n"

// TestSwitch101BeforeHandler: the 101 is written when the switch happens,
// before the handler runs: a handler that waits for something before its
// first I/O does not delay its client's handshake.
func TestSwitch101BeforeHandler(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		close(started)
		<-release
		if _, err := c.Write([]byte("hello")); err == nil {
			echo(c)
		}
	})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	require.Equal(t, greet101, c.Head(), "the 101 arrives while the handler waits")
	<-started
	close(release)
	assert.Equal(t, "hello", c.ReadN(5))
	roundTrip(t, c, "ping")
}

// TestHandshakeTimeoutBounds101: a 101 the client does not take (too large
// for the socket buffers, and the client does not read) is abandoned after
// HandshakeTimeout: the connection is closed, the failure logged, the
// handler never runs, and the slot is released.
func TestHandshakeTimeoutBounds101(t *testing.T) {
	const bound = 200 * time.Millisecond
	lg, logs := testLogger()
	huge := strings.Repeat("h", 8<<20)
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	ran := make(chan struct{}, 1)
	s.HandleRoute("greet/1", Route{Handler: accepterFunc{
		accept: func(r *http.Request, h http.Header) error { h.Set("X-Huge", huge); return nil },
		serve:  func(c *Conn) { ran <- struct{}{} },
	}})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	start := time.Now()
	c.Send(upgradeReq("GET", "greet/1"))
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "writing the 101 response for greet/1")
	}, 10*time.Second, 10*time.Millisecond, "the 101 write was not bounded")
	assert.GreaterOrEqual(t, time.Since(start), bound)
	waitNoActive(t, s)
	select {
	case <-ran:
		t.Fatal("the handler ran without a 101")
	default:
	}
	// The connection is closed: the client reads what the socket took,
	// then EOF (or a reset).
	_, err := io.Copy(io.Discard, c.NC)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
	}
}

// TestShutdownWhileHandlerWaits: Shutdown while a handler waits for the
// drain signal: it returns once the handler has, the client having had
// its 101 at once.
func TestShutdownWhileHandlerWaits(t *testing.T) {
	started := make(chan struct{})
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		close(started)
		<-Draining(c.Context())
	})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	require.Equal(t, greet101, c.Head())
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	assert.Empty(t, s.ActiveConns())
	assert.Empty(t, c.Rest())
}
