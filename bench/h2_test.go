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
