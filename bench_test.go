package upgrade

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
)

// benchServer registers the protocols a typical endpoint offers.
func benchServer() *Server {
	s := &Server{}
	s.HandleFunc("echo/1", func(c *Conn) { c.Write([]byte("x")) })
	s.HandleFunc("websocket", func(c *Conn) {})
	s.HandleFunc("h2c", func(c *Conn) {})
	return s
}

// BenchmarkParseNegotiate measures parsing an Upgrade header and picking a
// registered protocol: the per-request cost before any switch. It must not
// allocate.
func BenchmarkParseNegotiate(b *testing.B) {
	s := benchServer()
	for _, bc := range []struct{ name, upgrade, want string }{
		{"websocket", "websocket", "websocket"},
		{"three", "h2c, websocket, echo/1", "h2c"},
		{"versioned-last", "foo/2, bar, echo/1", "echo"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Upgrade", bc.upgrade)
			r.Header.Set("Connection", "Upgrade")
			b.ReportAllocs()
			for b.Loop() {
				var arr [8]Protocol
				offers, err := appendProtocols(arr[:0], r.Header["Upgrade"], s.Limits)
				if err != nil || !hasConnectionOption(r.Header, "upgrade") {
					b.Fatal("bad request")
				}
				d := s.negotiate(r, s.routes, offers)
				if d.route == nil || d.route.name != bc.want {
					b.Fatal("negotiation failed")
				}
				s.release(d.route)
			}
		})
	}
}

// floorHandler is the minimal hand-written upgrade over net/http: the cost
// any hijack-based implementation must pay.
func floorHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "echo/1") {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n")); err != nil {
		return
	}
	conn.Write([]byte("x"))
}

var (
	benchRequest  = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	benchResponse = []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\nx")
)

// handshake runs one upgrade against addr with a minimal client and checks
// the exact bytes received until the server closes.
func handshake(b *testing.B, addr string, buf []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(benchRequest); err != nil {
		b.Fatal(err)
	}
	n, err := io.ReadFull(c, buf[:len(benchResponse)])
	if err != nil || !bytes.Equal(buf[:n], benchResponse) {
		b.Fatalf("got %q, %v", buf[:n], err)
	}
	if m, err := c.Read(buf); err != io.EOF {
		b.Fatalf("want EOF, got %d bytes, %v", m, err)
	}
}

// BenchmarkHandshake compares a complete loopback upgrade through Server
// with the hand-written floor, in the same run. Client and server share
// the process, so allocs/op includes the (identical) client's; compare the
// two lines, or see the extra-allocs and cpu-ratio metrics of "ratio".
func BenchmarkHandshake(b *testing.B) {
	s := benchServer()
	defer s.Close()
	ours := httptest.NewServer(s)
	defer ours.Close()
	floor := httptest.NewServer(http.HandlerFunc(floorHandler))
	defer floor.Close()
	run := func(addr string) func(b *testing.B) {
		return func(b *testing.B) {
			buf := make([]byte, 256)
			b.ReportAllocs()
			for b.Loop() {
				handshake(b, addr, buf)
			}
		}
	}
	b.Run("floor", run(floor.Listener.Addr().String()))
	b.Run("upgrade", run(ours.Listener.Addr().String()))
	b.Run("ratio", func(b *testing.B) {
		// Alternate blocks of the two so machine noise hits both alike;
		// count allocations and time per block.
		const block = 50
		buf := make([]byte, 256)
		var fl, up blockStats
		for b.Loop() {
			fl.add(func() { handshake(b, floor.Listener.Addr().String(), buf) }, block)
			up.add(func() { handshake(b, ours.Listener.Addr().String(), buf) }, block)
		}
		b.ReportMetric(up.allocsPerOp()-fl.allocsPerOp(), "extra-allocs/op")
		b.ReportMetric(up.bytesPerOp()/fl.bytesPerOp(), "bytes-ratio")
		b.ReportMetric(up.nsPerOp()/fl.nsPerOp(), "time-ratio")
	})
}

// blockStats accumulates the cost of blocks of operations.
type blockStats struct {
	n             int
	allocs, bytes uint64
	elapsed       time.Duration
}

func (s *blockStats) add(op func(), n int) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range n {
		op()
	}
	s.elapsed += time.Since(start)
	runtime.ReadMemStats(&after)
	s.n += n
	s.allocs += after.Mallocs - before.Mallocs
	s.bytes += after.TotalAlloc - before.TotalAlloc
}

func (s *blockStats) allocsPerOp() float64 { return float64(s.allocs) / float64(s.n) }
func (s *blockStats) bytesPerOp() float64  { return float64(s.bytes) / float64(s.n) }
func (s *blockStats) nsPerOp() float64     { return float64(s.elapsed.Nanoseconds()) / float64(s.n) }
