package bench

import "testing"

// BenchmarkH2Handshake is BenchmarkHandshake for the library's route
// switched by HTTP/2 extended CONNECT streams instead of HTTP/1.1
// Upgrades, against a server process that speaks both; cmd/h2table runs
// the two interleaved and prints their ratio.
func BenchmarkH2Handshake(b *testing.B) {
	c, err := StartH2Child("upgrade")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := RunH2Handshakes(c.Addr, 20, 4); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r, err := c.H2Handshakes(b.N, benchConc)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.Allocs, "allocs/op")
	b.ReportMetric(r.Bytes, "B/op")
	b.ReportMetric(r.CPU, "srv-cpu-ns/op")
}

// BenchmarkH2Held is BenchmarkHeld with the idle WebSockets held as HTTP/2
// streams, many on each connection.
func BenchmarkH2Held(b *testing.B) {
	h, err := HoldH2Streams("upgrade", b.N, benchConc)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(h.PerConn, "held-B/op")
	b.ReportMetric(h.Heap, "heap-B/op")
	b.ReportMetric(h.Stack, "stack-B/op")
}

// BenchmarkH2EchoConns measures the server memory of idle echo/1 connections,
// b.N of them (at most maxHeld), just opened and after one echo each: the
// library over HTTP/1.1 and over HTTP/2 (on 20 connections), and the
// compact server over HTTP/2. cmd/h2table prints them side by side.
func BenchmarkH2EchoConns(b *testing.B) {
	for _, c := range []struct {
		name, impl string
		t          Transport
	}{
		{"upgrade-h1", "upgrade", Transport{}},
		{"upgrade-h2", "upgrade", Transport{HTTP2: true, Conns: 20}},
		{"h2-compact", "h2-compact", Transport{HTTP2: true, Conns: 20}},
	} {
		b.Run(c.name, func(b *testing.B) {
			h, err := HoldEchoConns(c.impl, c.t, min(b.N, maxHeld), benchConc)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(h.Opened.PerConn, "opened-B/op")
			b.ReportMetric(h.Echoed.PerConn, "echoed-B/op")
			b.ReportMetric(h.Echoed.Heap, "echoed-heap-B/op")
			b.ReportMetric(h.Echoed.Stack, "echoed-stack-B/op")
		})
	}
}
