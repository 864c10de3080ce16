// Command proxytable runs the proxy benchmarks of package bench with the
// setups interleaved round by round (direct, relay, httputil, upgrade,
// direct, …), each proxy and the backend in processes of their own, and
// prints a Markdown table of medians and of the paired per-round ratios to
// the bare relay.
//
//	cd bench && go run ./cmd/proxytable
package main

import (
	"flag"
	"fmt"
	"log"
	"runtime"
	"slices"
	"time"

	"github.com/go-upgrade/upgrade/bench"
)

func main() {
	bench.MaybeRunChild()
	var (
		rounds = flag.Int("rounds", 7, "interleaved rounds")
		size   = flag.Int64("size", 256<<20, "bytes echoed per throughput transfer")
		hs     = flag.Int("n", 1000, "sequential handshakes per setup per round")
		k      = flag.Int("k", 2000, "idle pairs held per proxy (one round, fresh processes)")
	)
	flag.Parse()
	log.SetFlags(0)
	bench.RaiseFileLimit()
	fmt.Printf("machine: %d CPUs, %s %s/%s, %s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("rounds=%d size=%d MiB n=%d k=%d\n\n", *rounds, *size>>20, *hs, *k)

	impls := bench.ProxyImpls
	setups := map[string]*bench.ProxySetup{}
	for _, name := range impls {
		s, err := bench.StartProxy(name)
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close()
		setups[name] = s
	}
	type round struct{ mbps, cpu, p50, p99 float64 }
	res := map[string][]round{}
	for r := -1; r < *rounds; r++ { // round -1 warms up
		for _, name := range impls {
			s := setups[name]
			t, err := s.Throughput(*size)
			if err != nil {
				log.Fatal(err)
			}
			ds, err := s.Latencies(*hs)
			if err != nil {
				log.Fatal(err)
			}
			if r >= 0 {
				res[name] = append(res[name], round{t.MBps, t.CPUPerGB,
					us(bench.Percentile(ds, 50)), us(bench.Percentile(ds, 99))})
			}
		}
	}
	idle := map[string]bench.IdlePair{}
	for _, name := range impls[1:] {
		s, err := bench.StartProxy(name)
		if err != nil {
			log.Fatal(err)
		}
		p, err := s.HoldIdle(*k)
		s.Close()
		if err != nil {
			log.Fatal(err)
		}
		idle[name] = p
	}

	get := func(name string, f func(round) float64) []float64 {
		var xs []float64
		for _, r := range res[name] {
			xs = append(xs, f(r))
		}
		return xs
	}
	ratio := func(name string, f func(round) float64) string {
		var xs []float64
		for i, r := range res[name] {
			if base := f(res["relay"][i]); base != 0 {
				xs = append(xs, f(r)/base)
			}
		}
		if len(xs) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.3f× (%.2f–%.2f)", bench.Median(xs), slices.Min(xs), slices.Max(xs))
	}
	mbps := func(r round) float64 { return r.mbps }
	cpu := func(r round) float64 { return r.cpu }
	p50 := func(r round) float64 { return r.p50 }
	p99 := func(r round) float64 { return r.p99 }
	fmt.Println("| setup | MB/s | × relay | proxy CPU-s/GB | × relay | handshake p50 µs | p99 µs | p99 × relay | idle KiB/pair | fds/pair | goroutines/pair |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range impls {
		c, cr := "—", "—"
		if name != "direct" {
			c, cr = fmt.Sprintf("%.3f", bench.Median(get(name, cpu))), ratio(name, cpu)
		}
		i, f, g := "—", "—", "—"
		if p, ok := idle[name]; ok {
			i, f, g = fmt.Sprintf("%.1f", p.Bytes/1024), fmt.Sprintf("%.1f", p.FDs), fmt.Sprintf("%.1f", p.Goroutines)
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %.0f | %.0f | %s | %s | %s | %s |\n", name,
			bench.Median(get(name, mbps)), ratio(name, mbps), c, cr,
			bench.Median(get(name, p50)), bench.Median(get(name, p99)), ratio(name, p99), i, f, g)
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
