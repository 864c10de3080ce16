package bench

import (
	"net"
	"net/http"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/go-upgrade/upgrade"
)

// stackProbe wraps a server's handler and counts the requests during whose
// ServeHTTP net/http's connection goroutine got a new stack: a local
// variable of the probe's frame is at another address after the call when
// the runtime has copied the stack (runtime.newstack → copystack, which
// only growth does outside a GC). Its own frame is kept small: it deepens
// every implementation's stack alike.
type stackProbe struct {
	h     http.Handler
	moved atomic.Int64
}

func (p *stackProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var mark byte
	before := uintptr(unsafe.Pointer(&mark))
	p.h.ServeHTTP(w, r)
	if uintptr(unsafe.Pointer(&mark)) != before {
		p.moved.Add(1)
	}
}

// padder calls h under n frames of padded, to find how much stack the
// handler leaves unused.
type padder struct {
	h http.Handler
	n atomic.Int32
}

func (p *padder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := int(p.n.Load()); n > 0 {
		padded(n, func() { p.h.ServeHTTP(w, r) })
		return
	}
	p.h.ServeHTTP(w, r)
}

var padSink byte

// padded calls f under n frames of its own.
//
//go:noinline
func padded(n int, f func()) {
	var buf [8]byte
	buf[n%len(buf)] = byte(n)
	if n > 1 {
		padded(n-1, f)
	} else {
		f()
	}
	padSink = buf[(n+1)%len(buf)]
}

// padDepth returns how many more bytes of stack a handler runs under
// through a padder at level n than through nothing: the padder's own
// frames, measured with a handler that takes the address of a local.
func padDepth(n int) int {
	var at uintptr
	rec := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		var x byte
		at = uintptr(unsafe.Pointer(&x))
	})
	p := &padder{h: rec}
	p.n.Store(int32(n))
	callThrough(rec)
	direct := at
	callThrough(p)
	return int(direct - at)
}

// callThrough calls h.ServeHTTP as the probe does.
//
//go:noinline
func callThrough(h http.Handler) { h.ServeHTTP(nil, nil) }

// protoMoved counts the protocol handlers whose goroutine got a new stack
// while they ran; with protoPad > 0 they run under that many padded
// frames.
var protoMoved atomic.Int64
var protoPad atomic.Int32

func serveProbed(c *upgrade.Conn) {
	var mark byte
	before := uintptr(unsafe.Pointer(&mark))
	if n := int(protoPad.Load()); n > 0 {
		padded(n, func() { serveUpgrade(c) })
	} else {
		serveUpgrade(c)
	}
	if uintptr(unsafe.Pointer(&mark)) != before {
		protoMoved.Add(1)
	}
}

// headroom returns the most stack, in bytes, that try(level) could add
// under the handler without a stack move, to within one padded frame: it
// tries levels 0, 1, … until try reports one; depth(level) is what a
// level adds.
func headroom(try func(level int) bool, depth func(level int) int) int {
	h := 0
	for lvl := 0; lvl <= 128; lvl++ {
		if try(lvl) {
			break
		}
		h = depth(lvl)
	}
	return h
}

// protoDepth is what serveProbed's padding at level n adds.
func protoDepth(n int) int {
	var at uintptr
	rec := func() {
		var x byte
		at = uintptr(unsafe.Pointer(&x))
	}
	callPadded(0, rec)
	direct := at
	callPadded(n, rec)
	return int(direct - at)
}

//go:noinline
func callPadded(n int, f func()) {
	if n > 0 {
		padded(n, f)
	} else {
		f()
	}
}

// BenchmarkStack measures, for the floor and the library mounted directly,
// under an http.ServeMux and behind a wrapping middleware, whether
// net/http's connection goroutine has to grow its stack before the 101
// (runtime.newstack copies the whole stack: microseconds per handshake):
//
//   - stack-moves/op: handshakes whose ServeHTTP ran on a grown stack
//     (counted by a probe wrapped around the mounted handler, the same for
//     every implementation, which adds one small frame);
//   - proto-moves/op, proto-headroom-B: the same for the library's
//     protocol goroutine, while its handler runs (it starts with a 2 KiB
//     stack when start-B is 2048);
//   - headroom-B: how many more bytes of stack the handshake could take
//     before the connection goroutine grows, to within one padded frame
//     (48 bytes): the probe calls the handler under more and more frames
//     until it does;
//   - start-B: the runtime's starting stack size for new goroutines (it
//     adapts to the average stack at each GC; a handshake's goroutine
//     grows past it before ServeHTTP when it is 2 KiB).
//
// The client runs in this process, one handshake at a time.
func BenchmarkStack(b *testing.B) {
	for _, v := range []struct {
		name, how string
		lib       bool
	}{
		{"floor", "", false}, {"upgrade", "", true},
		{"floor-mux", "mux", false}, {"upgrade-mux", "mux", true},
		{"floor-wrapped", "wrapped", false}, {"upgrade-wrapped", "wrapped", true},
	} {
		b.Run(v.name, func(b *testing.B) {
			var h http.Handler = http.HandlerFunc(floorHandler)
			if v.lib {
				h = newUpgradeServerFor(serveProbed)
			}
			h = mount(v.how, h)
			pad := &padder{h: h}
			padProbe := &stackProbe{h: pad}
			padAddr, stopPad := serve(b, padProbe)
			defer stopPad()
			p := &stackProbe{h: h}
			addr, stop := serve(b, p)
			defer stop()
			buf := make([]byte, 1024)
			run := func(addr string, n int) {
				req := request(addr)
				for range n {
					if err := Handshake(addr, req, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
			run(padAddr, 50)
			room := headroom(func(lvl int) bool {
				pad.n.Store(int32(lvl))
				padProbe.moved.Store(0)
				run(padAddr, 8)
				return padProbe.moved.Load() > 0
			}, padDepth)
			pad.n.Store(0)
			protoRoom := 0
			if v.lib {
				protoRoom = headroom(func(lvl int) bool {
					protoPad.Store(int32(lvl))
					protoMoved.Store(0)
					run(padAddr, 8)
					return protoMoved.Load() > 0
				}, protoDepth)
				protoPad.Store(0)
			}
			run(addr, 50)
			p.moved.Store(0)
			protoMoved.Store(0)
			b.ResetTimer()
			run(addr, b.N)
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(p.moved.Load())/n, "stack-moves/op")
			if v.lib {
				b.ReportMetric(float64(protoMoved.Load())/n, "proto-moves/op")
				b.ReportMetric(float64(protoRoom), "proto-headroom-B")
			}
			b.ReportMetric(float64(room), "headroom-B")
			s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
			metrics.Read(s)
			b.ReportMetric(float64(s[0].Value.Uint64()), "start-B")
		})
	}
}

// serve serves h on a loopback port until stop is called.
func serve(b *testing.B, h http.Handler) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { srv.Close() }
}
