package reverseproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProxyHalfCloseClient: the client's half-close reaches the backend
// as EOF, and the backend can still answer; its close then ends the
// pair.
func TestProxyHalfCloseClient(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "") != nil {
			return
		}
		got, err := io.ReadAll(br) // until the client's half-close
		if err != nil {
			return
		}
		_, _ = io.WriteString(nc, "after EOF: "+string(got))
	})
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	_, err := io.WriteString(nc, "question")
	require.NoError(t, err)
	require.NoError(t, nc.CloseWrite())
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "after EOF: question", string(rest))
	waitProxyIdle(t, p)
}

// TestProxyHalfCloseBackend: the backend's half-close reaches the client
// as EOF, and the client can still send.
func TestProxyHalfCloseBackend(t *testing.T) {
	got := make(chan string, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "bye") != nil {
			return
		}
		_ = nc.(*net.TCPConn).CloseWrite()
		rest, _ := io.ReadAll(br)
		got <- string(rest)
	})
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(rest))
	_, err = io.WriteString(nc, "still here")
	require.NoError(t, err)
	require.NoError(t, nc.CloseWrite())
	assert.Equal(t, "still here", <-got)
	waitProxyIdle(t, p)
}

// TestProxyResets: a reset on either side closes the other side with a
// reset too, and the pair is gone.
func TestProxyResets(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		seen := make(chan error, 1)
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			if backend101(nc, "echo/1", nil, "") != nil {
				return
			}
			_, err := io.Copy(io.Discard, br)
			seen <- err
		})
		p := proxyTo(b)
		addr := startProxy(t, p, nil)
		nc, _, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
		waitProxyActive(t, p, 1)
		require.NoError(t, nc.SetLinger(0))
		require.NoError(t, nc.Close())
		select {
		case err := <-seen:
			assert.True(t, isReset(err), "the backend sees a reset, got %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the backend connection stayed open")
		}
		waitProxyIdle(t, p)
	})
	t.Run("backend", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			if backend101(nc, "echo/1", nil, "x") != nil {
				return
			}
			_ = nc.(*net.TCPConn).SetLinger(0)
		})
		p := proxyTo(b)
		addr := startProxy(t, p, nil)
		_, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
		_, err := io.ReadAll(br)
		assert.True(t, isReset(err), "the client sees a reset, got %v", err)
		waitProxyIdle(t, p)
	})
}

// TestProxyIdleTimeout: a pair that moves no byte for IdleTimeout is
// closed; one that keeps moving bytes is not.
func TestProxyIdleTimeout(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.IdleTimeout = 300 * time.Millisecond
	addr := startProxy(t, p, nil)

	busy, busyBr, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	idle, idleBr, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	start := time.Now()
	for time.Since(start) < time.Second {
		checkEcho(t, busy, busyBr, "ping")
		time.Sleep(50 * time.Millisecond)
	}
	_, err := idleBr.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the idle pair is closed")
	checkEcho(t, busy, busyBr, "still alive")
	_ = idle
}

// TestProxyShutdown: Shutdown refuses new upgrades with 503, lets open
// pairs relay, waits for those that end, and closes the rest when its
// context ends.
func TestProxyShutdown(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	const n = 5
	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i], brs[i], _ = switched(t, addr, upgradeReq("GET", "echo/1"))
	}
	waitProxyActive(t, p, n)
	assert.Equal(t, map[string]int{"echo/1": n}, p.ActiveConns())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	require.Eventually(t, func() bool { return p.conns.Closing() }, 5*time.Second, time.Millisecond)

	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	for i := range conns {
		checkEcho(t, conns[i], brs[i], "during shutdown")
	}
	// One pair ends by itself; Shutdown keeps waiting for the others.
	require.NoError(t, conns[0].CloseWrite())
	_, err := io.ReadAll(brs[0])
	require.NoError(t, err)
	waitProxyActive(t, p, n-1)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with pairs open", err)
	default:
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	for i := 1; i < n; i++ {
		_, err := io.ReadAll(brs[i])
		assert.NoError(t, err, "pair %d closed", i)
	}
	waitProxyIdle(t, p)
	assert.NoError(t, p.Shutdown(context.Background()))
}

// TestProxyMaxConns: a request beyond MaxConns is answered 503 before
// the backend is dialed.
func TestProxyMaxConns(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.MaxConns = 2
	addr := startProxy(t, p, nil)
	switched(t, addr, upgradeReq("GET", "echo/1"))
	switched(t, addr, upgradeReq("GET", "echo/1"))
	b.request()
	b.request()
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	select {
	case r := <-b.reqs:
		t.Fatalf("the backend was dialed: %v", r.Header)
	default:
	}
}

// TestProxyConcurrentPairs relays 200 pairs at once, each echoing, then
// closes them: goroutines and file descriptors return to their baseline.
func TestProxyConcurrentPairs(t *testing.T) {
	const n = 200
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	ts := httptest.NewServer(p)
	base := baseline(t)

	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
			conns[i] = nc.(*net.TCPConn)
			brs[i] = bufio.NewReader(nc)
			msg := "early " + strconv.Itoa(i)
			if _, err := io.WriteString(nc, upgradeReq("GET", "echo/1")+msg); err != nil {
				errs <- err
				return
			}
			head, err := wiretest.ReadHead(brs[i])
			if err != nil || !strings.HasPrefix(head, "HTTP/1.1 101 ") {
				errs <- errors.New("no 101: " + head)
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(brs[i], got); err != nil || string(got) != msg {
				errs <- errors.New("echo: " + string(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	waitProxyActive(t, p, n)
	for i := range conns {
		require.NoError(t, conns[i].CloseWrite())
	}
	for i := range conns {
		_, err := io.ReadAll(brs[i])
		require.NoError(t, err)
		conns[i].Close()
	}
	waitProxyIdle(t, p)
	ts.Close()
	b.close()
	// Splice pipes the runtime keeps in its pool are closed by the GC.
	backTo(t, base, "after 200 pairs")
}

// TestProxyIdlePairsHoldNoPipes: pairs that have relayed bytes (spliced,
// on Linux) and are now idle hold their two sockets and nothing else: no
// splice pipe stays parked with them.
func TestProxyIdlePairsHoldNoPipes(t *testing.T) {
	const n = 50
	base := pipeFDs(t)
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	for i := range n {
		conns[i], brs[i], _ = switched(t, addr, upgradeReq("GET", "echo/1"))
		checkEcho(t, conns[i], brs[i], strings.Repeat("x", 64<<10))
	}
	waitProxyActive(t, p, n)
	assert.Eventually(t, func() bool {
		runtime.GC() // the runtime's pool of splice pipes is emptied by the GC
		return pipeFDs(t) <= base
	}, 10*time.Second, 5*time.Millisecond, "pipe descriptors still open with %d idle pairs, %d before", n, base)
	for i := range n {
		checkEcho(t, conns[i], brs[i], "after idling")
	}
}

// pipeFDs counts the process's open pipe descriptors.
func pipeFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list file descriptors: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}
