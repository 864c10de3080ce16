package bench

import (
	"slices"
	"testing"
	"time"
)

// TestProxyImplementations checks that every proxy setup switches,
// echoes a transfer intact and holds idle pairs.
func TestProxyImplementations(t *testing.T) {
	for _, name := range ProxyImpls {
		t.Run(name, func(t *testing.T) {
			s, err := StartProxy(name)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Throughput(4 << 20); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Latencies(5); err != nil {
				t.Fatal(err)
			}
			if name != "direct" {
				if _, err := s.HoldIdle(5); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProxyThroughput echoes 64 MiB per iteration through each
// setup on one connection: MB/s is payload echoed per second (each byte
// crosses the proxy twice), proxy-cpu-s/GB the proxy process's CPU per
// GB relayed (both directions counted). cmd/proxytable runs the setups
// interleaved and prints ratios to the bare relay.
func BenchmarkProxyThroughput(b *testing.B) {
	const size = 64 << 20
	for _, name := range ProxyImpls {
		b.Run(name, func(b *testing.B) {
			s, err := StartProxy(name)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetBytes(size)
			var mbps, cpu float64
			for b.Loop() {
				r, err := s.Throughput(size)
				if err != nil {
					b.Fatal(err)
				}
				mbps += r.MBps
				cpu += r.CPUPerGB
			}
			b.ReportMetric(mbps/float64(b.N), "MB/s")
			b.ReportMetric(cpu/float64(b.N), "proxy-cpu-s/GB")
		})
	}
}

// BenchmarkProxyHandshake measures sequential handshakes (connect,
// request, 101) through each setup; p50 and p99 are of the client's
// latencies.
func BenchmarkProxyHandshake(b *testing.B) {
	for _, name := range ProxyImpls {
		b.Run(name, func(b *testing.B) {
			s, err := StartProxy(name)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			ds, err := s.Latencies(max(b.N, 20))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(Percentile(ds, 50))/float64(time.Microsecond), "p50-µs")
			b.ReportMetric(float64(Percentile(ds, 99))/float64(time.Microsecond), "p99-µs")
		})
	}
}

// BenchmarkProxyIdle holds b.N idle pairs (at least 20) through each
// proxy and reports the proxy process's memory and descriptors per pair.
func BenchmarkProxyIdle(b *testing.B) {
	for _, name := range ProxyImpls[1:] {
		b.Run(name, func(b *testing.B) {
			s, err := StartProxy(name)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			p, err := s.HoldIdle(max(b.N, 20))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(p.Bytes, "B/pair")
			b.ReportMetric(p.FDs, "fds/pair")
			b.ReportMetric(p.Goroutines, "goroutines/pair")
		})
	}
}

// TestMedian checks Median on empty, odd and even inputs, and that it
// leaves its input unsorted.
func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(tc.xs)
		if got := Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", in, got, tc.want)
		}
		if !slices.Equal(tc.xs, in) {
			t.Errorf("Median(%v) reordered its input to %v", in, tc.xs)
		}
	}
}
