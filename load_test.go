package upgrade

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// loadSizes returns how many upgraded connections to hold at once and how
// many upgrades to run one after the other. The defaults suit CI under
// -race; UPGRADE_LOAD=full asks for the sizes, which -short
// declines.
func loadSizes(t *testing.T) (concurrent, sequential int) {
	full := os.Getenv("UPGRADE_LOAD") == "full"
	switch {
	case testing.Short() && full:
		t.Skip("UPGRADE_LOAD=full is not run with -short")
	case testing.Short():
		return 200, 500
	case full:
		return 5000, 20000
	}
	return 1000, 2000
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least n, up to the hard
// limit, and skips the test if that is not enough.
func raiseNoFile(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur >= n {
		return
	}
	old := lim
	lim.Cur = min(n, lim.Max)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	if lim.Cur < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed", lim.Max, n)
	}
}

// peak records the largest value seen.
type peak struct{ v atomic.Int64 }

func (p *peak) see(v int) {
	for {
		old := p.v.Load()
		if int64(v) <= old || p.v.CompareAndSwap(old, int64(v)) {
			return
		}
	}
}

// TestLoadConcurrentAndSequential holds many upgraded echo connections at
// once (all dialled with Dial, every one echoing a distinct message), then
// runs many upgrades one after the other: zero errors, every echoed byte
// as sent, and goroutines and file descriptors back to their baseline. No
// assertion on speed.
func TestLoadConcurrentAndSequential(t *testing.T) {
	concurrent, sequential := loadSizes(t)
	raiseNoFile(t, uint64(2*concurrent+512))
	base := baseline(t)

	s := &Server{}
	s.HandleFunc("echo/1", echo)
	// once echoes one message and closes: the server closes first, so the
	// TIME_WAIT states of many sequential connections are on its side.
	s.HandleFunc("once/1", func(c *Conn) {
		buf := make([]byte, 32)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf)
		}
	})
	srv := serve(t, s, s)
	d := Dialer{Proxy: noProxy}
	url := "http://" + srv.addr + "/"
	var errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	var peakG, peakFD peak
	sample := func() {
		peakG.see(runtime.NumGoroutine())
		peakFD.see(openFDs(t))
	}
	sample()

	// Phase 1: hold `concurrent` upgraded connections at once.
	conns := make([]*Conn, concurrent)
	const workers = 32
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= concurrent {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, err := d.Dial(ctx, url, Protocol{Name: "echo", Version: "1"})
				cancel()
				if err != nil {
					fail(fmt.Errorf("dial %d: %w", i, err))
					continue
				}
				conns[i] = c
				if i%256 == 0 {
					sample()
				}
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool { return s.ActiveConns()["echo/1"] == concurrent-int(errs.Load()) },
		30*time.Second, 10*time.Millisecond, "active: %v", s.ActiveConns())
	sample()
	held := snapshot(t)

	// Every held connection echoes a message of its own, all at once.
	next.Store(0)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(next.Load()), 7))
			for {
				i := int(next.Add(1) - 1)
				if i >= concurrent {
					return
				}
				c := conns[i]
				if c == nil {
					continue
				}
				msg := make([]byte, 64+rng.IntN(1024))
				binary.BigEndian.PutUint64(msg, uint64(i))
				for j := 8; j < len(msg); j++ {
					msg[j] = byte(rng.Uint32())
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(msg); err != nil {
					fail(fmt.Errorf("conn %d: write: %w", i, err))
					continue
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					fail(fmt.Errorf("conn %d: read: %w", i, err))
					continue
				}
				if !bytes.Equal(msg, got) {
					fail(fmt.Errorf("conn %d: echo differs at byte %d", i, firstDiff(msg, got)))
				}
			}
		}()
	}
	wg.Wait()
	sample()
	// Close them all: half-close, expect EOF (the handler returned), close.
	for i, c := range conns {
		if c == nil {
			continue
		}
		if err := c.CloseWrite(); err != nil {
			fail(fmt.Errorf("conn %d: close write: %w", i, err))
		}
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			fail(fmt.Errorf("conn %d: after half-close: %q, %v", i, rest, err))
		}
		c.Close()
		conns[i] = nil
	}
	waitNoActive(t, s)

	// Phase 2: `sequential` upgrades, one after the other.
	rng := rand.New(rand.NewPCG(42, 42))
	msg := make([]byte, 32)
	got := make([]byte, 64)
	for i := range sequential {
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := d.Dial(ctx, url, Protocol{Name: "once", Version: "1"})
		cancel()
		if err != nil {
			fail(fmt.Errorf("sequential %d: dial: %w", i, err))
			continue
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(msg); err != nil {
			fail(fmt.Errorf("sequential %d: write: %w", i, err))
		} else if n, err := io.ReadFull(c, got[:len(msg)+1]); err != io.ErrUnexpectedEOF || !bytes.Equal(msg, got[:n]) {
			// The echo, then EOF: exactly the message, nothing after.
			fail(fmt.Errorf("sequential %d: read %d bytes, %v", i, n, err))
		}
		c.Close()
		if i%1024 == 0 {
			sample()
		}
	}
	waitNoActive(t, s)
	srv.stop()
	after := backTo(t, base, "after the load")
	goleak.VerifyNone(t)

	t.Logf("load: %d concurrent connections, %d sequential upgrades, %d errors; peak goroutines %d (baseline %d, %d while held); fds before %d, peak %d, after %d",
		concurrent, sequential, errs.Load(), peakG.v.Load(), base.goroutines, held.goroutines, base.fds, peakFD.v.Load(), after.fds)
	if err, _ := firstErr.Load().(error); err != nil {
		t.Errorf("first error: %v", err)
	}
	require.Zero(t, errs.Load(), "errors")
}
