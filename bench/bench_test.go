package bench

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/go-upgrade/upgrade"
	upws "github.com/go-upgrade/upgrade/websocket"
	"golang.org/x/net/http/httpguts"
)

// TestMain doubles as the server process: the benchmarks start this test
// binary again with ChildEnv set.
func TestMain(m *testing.M) {
	MaybeRunChild()
	RaiseFileLimit()
	os.Exit(m.Run())
}

// TestImplementations checks that every implementation answers the same
// handshake with a valid 101 and exactly the frame 81 01 78, closes on
// EOF, and holds connections until the client closes.
func TestImplementations(t *testing.T) {
	for _, name := range Impls {
		t.Run(name, func(t *testing.T) {
			c, err := StartChild(name)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Handshakes(20, 4); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Do("mem 0"); err != nil {
				t.Fatal(err)
			}
			conns, err := OpenConns(c.Addr, 3, 3)
			for _, nc := range conns {
				defer nc.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Do("mem 3"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestParallel checks that parallel calls f once for each index, and
// that after a failure it returns that error and starts no further call.
func TestParallel(t *testing.T) {
	var calls [100]atomic.Int32
	if err := parallel(len(calls), 7, func(i int) error {
		calls[i].Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Errorf("f(%d) called %d times, want 1", i, n)
		}
	}

	errStop := errors.New("stop")
	var started []int
	err := parallel(10, 1, func(i int) error {
		started = append(started, i)
		if i == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Errorf("parallel returned %v, want %v", err, errStop)
	}
	if want := []int{0, 1, 2, 3}; !slices.Equal(started, want) {
		t.Errorf("calls %v, want %v", started, want)
	}
	if err := parallel(0, 4, func(int) error { return errStop }); err != nil {
		t.Errorf("parallel of no calls returned %v", err)
	}
}

const benchConc = 8

// BenchmarkHandshake measures complete handshakes against each
// implementation's server process. allocs/op and B/op are overridden with
// the server process's numbers (the in-process client's are not counted);
// srv-cpu-ns/op is the server's user+sys CPU time per handshake; ns/op is
// wall time with the client on the same machine. cmd/benchtable runs the
// implementations interleaved and prints ratios.
func BenchmarkHandshake(b *testing.B) {
	for _, name := range Impls {
		b.Run(name, func(b *testing.B) {
			c, err := StartChild(name)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := RunHandshakes(c.Addr, 20, 4); err != nil { // warm-up
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			r, err := c.Handshakes(b.N, benchConc)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.Allocs, "allocs/op")
			b.ReportMetric(r.Bytes, "B/op")
			b.ReportMetric(r.CPU, "srv-cpu-ns/op")
		})
	}
}

// maxHeld caps the connections held at once by one server process.
const maxHeld = 5000

// BenchmarkHeld measures the server memory an idle upgraded connection
// holds: b.N connections are open at once (in batches of at most
// maxHeld, each batch in a fresh server process), and held-B/op is the
// server's HeapInuse+StackInuse delta per connection after two GCs. Use
// -benchtime=5000x for a meaningful number; -benchtime=1x holds one.
func BenchmarkHeld(b *testing.B) {
	for _, name := range Impls {
		b.Run(name, func(b *testing.B) {
			var sum, heap, stack float64
			for left := b.N; left > 0; {
				k := min(left, maxHeld)
				h, err := HoldConns(name, k, benchConc)
				if err != nil {
					b.Fatal(err)
				}
				sum += h.PerConn * float64(k)
				heap += h.Heap * float64(k)
				stack += h.Stack * float64(k)
				left -= k
			}
			n := float64(b.N)
			b.ReportMetric(sum/n, "held-B/op")
			b.ReportMetric(heap/n, "heap-B/op")
			b.ReportMetric(stack/n, "stack-B/op")
		})
	}
}

// typicalRequest is a WebSocket opening handshake as clients send it.
func typicalRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/chat", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Sec-WebSocket-Key", testKey)
	r.Header.Set("Sec-WebSocket-Version", "13")
	return r
}

// BenchmarkParse measures the header work before negotiation: the
// project's Upgrade parser and Connection check (the root package's
// BenchmarkParseNegotiate covers negotiation itself, which is unexported)
// against the floor's two httpguts token checks. Neither may allocate.
func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct{ name, upgrade, connection string }{
		{"websocket", "websocket", "Upgrade"},
		{"firefox", "websocket", "keep-alive, Upgrade"},
		{"three", "h2c, websocket, echo/1", "Upgrade, HTTP2-Settings"},
	} {
		r := typicalRequest()
		r.Header.Set("Upgrade", bc.upgrade)
		r.Header.Set("Connection", bc.connection)
		b.Run("upgrade/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				offers, err := upgrade.ParseProtocols(r.Header["Upgrade"])
				if err != nil || len(offers) == 0 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
					b.Fatal("bad request")
				}
			}
		})
		b.Run("floor/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
					!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") {
					b.Fatal("bad request")
				}
			}
		})
	}
}

// BenchmarkAcceptUpgrade measures the websocket adapter's whole pre-101
// step (method, body, version, key, origin, subprotocol checks and the
// accept value) into a reused 101 header.
func BenchmarkAcceptUpgrade(b *testing.B) {
	h := &upws.Handler{Serve: func(*upgrade.Conn, string) {}}
	r := typicalRequest()
	hdr := make(http.Header, 4)
	b.ReportAllocs()
	for b.Loop() {
		if err := h.AcceptUpgrade(r, hdr); err != nil {
			b.Fatal(err)
		}
		clear(hdr)
	}
}

var sink string

// BenchmarkAcceptKey compares ways of computing Sec-WebSocket-Accept.
// gorilla, coder and gobwas keep theirs unexported: "naive" is what
// gorilla's and coder's do (sha1.New, writes, EncodeToString); "stack" is
// the floor's stack-buffer version.
func BenchmarkAcceptKey(b *testing.B) {
	b.Run("upgrade", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = upws.AcceptKey(testKey)
		}
		if sink != testAccept {
			b.Fatal(sink)
		}
	})
	b.Run("stack", func(b *testing.B) {
		b.ReportAllocs()
		var buf [28]byte
		for b.Loop() {
			sink = string(AppendAccept(buf[:0], testKey))
		}
		if sink != testAccept {
			b.Fatal(sink)
		}
	})
	b.Run("naive", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := sha1.New()
			_, _ = io.WriteString(h, testKey)
			_, _ = io.WriteString(h, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
			sink = base64.StdEncoding.EncodeToString(h.Sum(nil))
		}
		if sink != testAccept {
			b.Fatal(sink)
		}
	})
}
