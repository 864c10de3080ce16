// Command h3table compares, for the library's WebSocket route in one
// server process that speaks HTTP/1.1 and HTTP/2 (prior knowledge) on TCP
// and HTTP/3 on UDP, a switch done as an HTTP/1.1 Upgrade (a new TCP
// connection each), as an HTTP/2 extended CONNECT stream (RFC 8441) and
// as an HTTP/3 one (RFC 9220): the server process's CPU, allocations and
// bytes per switch in interleaved rounds, the client's time from request
// to first frame, and the server memory an idle WebSocket holds over each.
// It prints Markdown tables of medians and of the paired per-round ratios
// to HTTP/1.1 and HTTP/2, with their min–max.
//
//	cd bench && go run ./cmd/h3table
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
		rounds     = flag.Int("rounds", 7, "interleaved handshake rounds")
		n          = flag.Int("n", 2000, "switches per transport per round")
		conc       = flag.Int("c", 8, "client concurrency")
		seq        = flag.Int("seq", 500, "switches in a row per transport per round, timed one by one")
		k          = flag.Int("k", 3000, "idle WebSockets held per transport per held round")
		heldRounds = flag.Int("heldrounds", 3, "held rounds (a fresh server process each)")
	)
	flag.Parse()
	log.SetFlags(0)
	if lim := bench.RaiseFileLimit(); uint64(*k)+64 > lim {
		log.Fatalf("RLIMIT_NOFILE is %d: too low for -k %d", lim, *k)
	}
	fmt.Printf("machine: %d CPUs, %s %s/%s, %s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("rounds=%d n=%d c=%d seq=%d k=%d heldrounds=%d\n\n", *rounds, *n, *conc, *seq, *k, *heldRounds)

	c, err := bench.StartH3Child("upgrade")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	switches := []func(n, conc int) (bench.Round, error){c.Handshakes, c.H2Handshakes, c.H3Handshakes}
	for _, f := range switches {
		if _, err := f(min(*n, 500), *conc); err != nil {
			log.Fatal(err)
		}
	}
	rs := make([][]bench.Round, 3)
	ts := make([][]float64, 3) // median µs per round
	for r := range *rounds {
		for i, f := range switches {
			x, err := f(*n, *conc)
			if err != nil {
				log.Fatal(err)
			}
			rs[i] = append(rs[i], x)
		}
		for i, tp := range bench.Transports {
			times, err := bench.SwitchTimes(tp, c.Addr, *seq)
			if err != nil {
				log.Fatal(tp, ": ", err)
			}
			slices.Sort(times)
			ts[i] = append(ts[i], float64(times[len(times)/2])/float64(time.Microsecond))
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, *rounds)
	}
	fmt.Println("### Switch: server process cost per WebSocket, and the client's time to switch")
	fmt.Println()
	header()
	row("server CPU µs", rs, func(r bench.Round) float64 { return r.CPU / 1000 }, "%.1f")
	row("allocations", rs, func(r bench.Round) float64 { return r.Allocs }, "%.1f")
	row("bytes allocated", rs, func(r bench.Round) float64 { return r.Bytes }, "%.0f")
	row("time to switch µs (median of a round)", [][]float64{ts[0], ts[1], ts[2]}, func(x float64) float64 { return x }, "%.0f")

	hs := make([][]bench.Held, 3)
	for r := range *heldRounds {
		held, err := bench.HoldAll("upgrade", *k, *conc)
		if err != nil {
			log.Fatal(err)
		}
		for i, tp := range bench.Transports {
			hs[i] = append(hs[i], held[tp])
		}
		fmt.Fprintf(os.Stderr, "held round %d/%d done\n", r+1, *heldRounds)
	}
	fmt.Println()
	fmt.Println("### Held idle WebSockets: server HeapInuse+StackInuse per WebSocket, one process")
	fmt.Println()
	header()
	row("KB per WebSocket", hs, func(h bench.Held) float64 { return h.PerConn / 1000 }, "%.2f")
	row("heap KB", hs, func(h bench.Held) float64 { return h.Heap / 1000 }, "%.2f")
	row("stack KB", hs, func(h bench.Held) float64 { return h.Stack / 1000 }, "%.2f")
	row("goroutines", hs, func(h bench.Held) float64 { return h.Goroutines }, "%.2f")
}

func header() {
	fmt.Println("| | HTTP/1.1 | HTTP/2 | HTTP/3 | HTTP/3 ÷ HTTP/1.1, paired (min–max) | HTTP/3 ÷ HTTP/2, paired (min–max) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
}

// row prints the figure f of the rounds of HTTP/1.1, HTTP/2 and HTTP/3
// (xs[0], xs[1], xs[2]): the three medians and the medians of the
// per-round ratios of HTTP/3 to the other two, with their min–max.
func row[T any](name string, xs [][]T, f func(T) float64, format string) {
	v := make([][]float64, 3)
	for i := range xs {
		for _, x := range xs[i] {
			v[i] = append(v[i], f(x))
		}
	}
	ratio := func(a, b []float64) string {
		var q []float64
		for i := range a {
			q = append(q, b[i]/a[i])
		}
		return fmt.Sprintf("%.3f× (%.3f–%.3f)", bench.Median(q), slices.Min(q), slices.Max(q))
	}
	fmt.Printf("| %s | "+format+" | "+format+" | "+format+" | %s | %s |\n", name, bench.Median(v[0]), bench.Median(v[1]), bench.Median(v[2]),
		ratio(v[0], v[2]), ratio(v[1], v[2]))
}
