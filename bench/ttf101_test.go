package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
)

// BenchmarkTimeTo101 measures how long a client waits for the whole 101
// response, from writing its request, when the protocol handler waits
// before its first I/O (a handler that loads state, or subscribes before
// it pushes): an upgrade.Server against a hand-written hijack that writes
// the 101 first. Handshakes alternate between the two, one at a time; the
// metrics are the medians (p50) and 90th percentiles in microseconds and
// the difference of the medians.
//
//	go test -run '^$' -bench TimeTo101 -benchtime 300x
func BenchmarkTimeTo101(b *testing.B) {
	for _, wait := range []time.Duration{0, 2 * time.Millisecond, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("wait=%v", wait), func(b *testing.B) {
			floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer nc.Close()
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: push/1\r\nConnection: Upgrade\r\n\r\n")
				if brw.Flush() != nil {
					return
				}
				push(nc, wait)
			}))
			defer floor.Close()
			var up upgrade.Server
			up.HandleFunc("push/1", func(c *upgrade.Conn) { push(c, wait) })
			srv := httptest.NewServer(&up)
			defer srv.Close()
			defer up.Close()

			var tf, tu []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				tf = append(tf, timeTo101(b, floor.Listener.Addr().String()))
				tu = append(tu, timeTo101(b, srv.Listener.Addr().String()))
			}
			pf, pu := percentile(tf, 50), percentile(tu, 50)
			b.ReportMetric(us(pf), "floor-p50-µs")
			b.ReportMetric(us(pu), "upgrade-p50-µs")
			b.ReportMetric(us(percentile(tf, 90)), "floor-p90-µs")
			b.ReportMetric(us(percentile(tu, 90)), "upgrade-p90-µs")
			b.ReportMetric(us(pu-pf), "Δp50-µs")
		})
	}
}

// push is the protocol: wait, then write one byte, then read until EOF.
func push(c net.Conn, wait time.Duration) {
	time.Sleep(wait)
	if _, err := c.Write([]byte("x")); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, c)
}

// timeTo101 sends an upgrade request to push/1 on a new connection and
// returns how long the 101's header block took to arrive; then it reads
// the pushed byte and closes.
func timeTo101(b *testing.B, addr string) time.Duration {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	start := time.Now()
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: push/1\r\n\r\n"); err != nil {
		b.Fatal(err)
	}
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		head = append(head, line...)
	}
	d := time.Since(start)
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		b.Fatalf("not a 101: %q", head)
	}
	if c, err := br.ReadByte(); err != nil || c != 'x' {
		b.Fatalf("pushed byte: %q, %v", c, err)
	}
	return d
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
