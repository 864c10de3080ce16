package bench

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkH3Handshake is BenchmarkH2Handshake with the WebSocket switched
// by HTTP/3 extended CONNECT streams (RFC 9220) on a few QUIC
// connections; cmd/h3table runs the three transports interleaved.
func BenchmarkH3Handshake(b *testing.B) {
	c, err := StartH3Child("upgrade")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := RunH3Handshakes(c.Addr, 20, 4); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r, err := c.H3Handshakes(b.N, benchConc)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.Allocs, "allocs/op")
	b.ReportMetric(r.Bytes, "B/op")
	b.ReportMetric(r.CPU, "srv-cpu-ns/op")
}

// BenchmarkH3Held holds b.N idle WebSockets over each transport in turn,
// in one server process: HTTP/1.1 connections, HTTP/2 streams, HTTP/3
// streams; the server memory each holds.
func BenchmarkH3Held(b *testing.B) {
	b.ReportAllocs()
	held, err := HoldAll("upgrade", b.N, benchConc)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(held["HTTP/1.1"].PerConn, "h1-held-B/op")
	b.ReportMetric(held["HTTP/2"].PerConn, "h2-held-B/op")
	b.ReportMetric(held["HTTP/3"].PerConn, "h3-held-B/op")
}

// BenchmarkH3SwitchTime is the client's wall time from request to first
// frame: an HTTP/1.1 Upgrade on a new connection, a stream on a warm
// HTTP/2 connection and one on a warm HTTP/3 connection, against one
// server process; b.N switches each, the medians reported.
func BenchmarkH3SwitchTime(b *testing.B) {
	c, err := StartH3Child("upgrade")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for _, tp := range Transports {
		times, err := SwitchTimes(tp, c.Addr, b.N)
		if err != nil {
			b.Fatal(tp, err)
		}
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2])/float64(time.Microsecond), map[string]string{
			"HTTP/1.1": "h1-µs/switch", "HTTP/2": "h2-µs/switch", "HTTP/3": "h3-µs/switch"}[tp])
	}
}
