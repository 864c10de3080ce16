// Command h2table compares, for the library's WebSocket route, a switch
// done as an HTTP/1.1 Upgrade (a new TCP connection each) with one done as
// an HTTP/2 extended CONNECT stream (RFC 8441; many streams on a few
// connections): the server process's CPU, allocations and bytes per
// handshake, in rounds interleaved between two server processes, and the
// server memory an idle WebSocket holds either way. It prints Markdown
// tables of medians and of the paired per-round ratio of HTTP/2 to
// HTTP/1.1, with its min–max spread.
//
//	cd bench && go run ./cmd/h2table
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/go-upgrade/upgrade/bench"
)

func main() {
	bench.MaybeRunChild()
	var (
		rounds     = flag.Int("rounds", 9, "interleaved handshake rounds")
		n          = flag.Int("n", 3000, "handshakes per protocol per round")
		conc       = flag.Int("c", 8, "client concurrency")
		k          = flag.Int("k", 4000, "idle WebSockets held per protocol per held round")
		heldRounds = flag.Int("heldrounds", 3, "held rounds (a fresh server process each)")
	)
	flag.Parse()
	log.SetFlags(0)
	if lim := bench.RaiseFileLimit(); uint64(*k)+64 > lim {
		log.Fatalf("RLIMIT_NOFILE is %d: too low for -k %d", lim, *k)
	}
	fmt.Printf("machine: %d CPUs, %s %s/%s, %s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("rounds=%d n=%d c=%d k=%d heldrounds=%d\n\n", *rounds, *n, *conc, *k, *heldRounds)

	h1, err := bench.StartChild("upgrade")
	if err != nil {
		log.Fatal(err)
	}
	defer h1.Close()
	h2, err := bench.StartH2Child("upgrade")
	if err != nil {
		log.Fatal(err)
	}
	defer h2.Close()
	if _, err := h1.Handshakes(min(*n, 1000), *conc); err != nil {
		log.Fatal(err)
	}
	if _, err := h2.H2Handshakes(min(*n, 1000), *conc); err != nil {
		log.Fatal(err)
	}
	var r1, r2 []bench.Round
	for r := range *rounds {
		a, err := h1.Handshakes(*n, *conc)
		if err != nil {
			log.Fatal(err)
		}
		b, err := h2.H2Handshakes(*n, *conc)
		if err != nil {
			log.Fatal(err)
		}
		r1, r2 = append(r1, a), append(r2, b)
		fmt.Fprintf(os.Stderr, "handshake round %d/%d done\n", r+1, *rounds)
	}
	fmt.Println("### Handshake: server process cost per WebSocket switch")
	fmt.Println()
	fmt.Println("| | HTTP/1.1 Upgrade | HTTP/2 stream | HTTP/2 ÷ HTTP/1.1, paired (min–max) |")
	fmt.Println("|---|---:|---:|---:|")
	pairedRow("CPU µs", r1, r2, func(r bench.Round) float64 { return r.CPU / 1000 }, "%.1f")
	pairedRow("allocs", r1, r2, func(r bench.Round) float64 { return r.Allocs }, "%.1f")
	pairedRow("bytes", r1, r2, func(r bench.Round) float64 { return r.Bytes }, "%.0f")
	pairedRow("handshakes/s", r1, r2, func(r bench.Round) float64 { return r.Rate }, "%.0f")

	var m1, m2 []bench.Held
	for r := range *heldRounds {
		a, err := bench.HoldConns("upgrade", *k, *conc)
		if err != nil {
			log.Fatal(err)
		}
		b, err := bench.HoldH2Streams("upgrade", *k, *conc)
		if err != nil {
			log.Fatal(err)
		}
		m1, m2 = append(m1, a), append(m2, b)
		fmt.Fprintf(os.Stderr, "held round %d/%d done\n", r+1, *heldRounds)
	}
	fmt.Println()
	fmt.Println("### Held idle WebSockets: server HeapInuse+StackInuse per WebSocket")
	fmt.Println()
	fmt.Println("| | HTTP/1.1 connections | HTTP/2 streams | HTTP/2 ÷ HTTP/1.1, paired (min–max) |")
	fmt.Println("|---|---:|---:|---:|")
	pairedRow("KB per WebSocket", m1, m2, func(h bench.Held) float64 { return h.PerConn / 1000 }, "%.2f")
	pairedRow("heap KB", m1, m2, func(h bench.Held) float64 { return h.Heap / 1000 }, "%.2f")
	pairedRow("stack KB", m1, m2, func(h bench.Held) float64 { return h.Stack / 1000 }, "%.2f")
	pairedRow("goroutines", m1, m2, func(h bench.Held) float64 { return h.Goroutines }, "%.2f")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedRow prints a table row for the figure f of the paired rounds a
// (HTTP/1.1) and b (HTTP/2): both medians, and the median of the per-round
// ratios b/a with their min–max.
func pairedRow[T any](name string, a, b []T, f func(T) float64, format string) {
	var ra, rb, q []float64
	for i := range a {
		ra, rb = append(ra, f(a[i])), append(rb, f(b[i]))
		q = append(q, f(b[i])/f(a[i]))
	}
	fmt.Printf("| %s | "+format+" | "+format+" | %.3f× (%.3f–%.3f) |\n", name, median(ra), median(rb), median(q), slices.Min(q), slices.Max(q))
}
