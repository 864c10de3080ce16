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
		k          = flag.Int("k", 2000, "idle echo/1 connections (or streams) held per server per held round")
		h2Conns    = flag.Int("h2conns", 20, "HTTP/2 connections the held streams share")
		heldRounds = flag.Int("heldrounds", 3, "held rounds (a fresh server process per server each)")
	)
	flag.Parse()
	log.SetFlags(0)
	if lim := bench.RaiseFileLimit(); uint64(*k)+64 > lim {
		log.Fatalf("RLIMIT_NOFILE is %d: too low for -k %d", lim, *k)
	}
	fmt.Printf("machine: %d CPUs, %s %s/%s, %s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("rounds=%d n=%d c=%d k=%d h2conns=%d heldrounds=%d\n\n", *rounds, *n, *conc, *k, *h2Conns, *heldRounds)

	if *rounds > 0 {
		if err := handshakes(*rounds, *n, *conc); err != nil {
			log.Fatal(err)
		}
	}
	if *heldRounds > 0 {
		if err := echoConns(*heldRounds, *k, *h2Conns, *conc); err != nil {
			log.Fatal(err)
		}
	}
}

// handshakes measures WebSocket switches over HTTP/1.1 and HTTP/2 in
// interleaved rounds and prints their table.
func handshakes(rounds, n, conc int) error {
	h1, err := bench.StartChild("upgrade")
	if err != nil {
		return err
	}
	defer h1.Close()
	h2, err := bench.StartH2Child("upgrade")
	if err != nil {
		return err
	}
	defer h2.Close()
	if _, err := h1.Handshakes(min(n, 1000), conc); err != nil {
		return err
	}
	if _, err := h2.H2Handshakes(min(n, 1000), conc); err != nil {
		return err
	}
	var r1, r2 []bench.Round
	for r := range rounds {
		a, err := h1.Handshakes(n, conc)
		if err != nil {
			return err
		}
		b, err := h2.H2Handshakes(n, conc)
		if err != nil {
			return err
		}
		r1, r2 = append(r1, a), append(r2, b)
		fmt.Fprintf(os.Stderr, "handshake round %d/%d done\n", r+1, rounds)
	}
	fmt.Println("### Handshake: server process cost per WebSocket switch")
	fmt.Println()
	fmt.Println("| | HTTP/1.1 Upgrade | HTTP/2 stream | HTTP/2 ÷ HTTP/1.1, paired (min–max) |")
	fmt.Println("|---|---:|---:|---:|")
	pairedRow("CPU µs", r1, r2, func(r bench.Round) float64 { return r.CPU / 1000 }, "%.1f")
	pairedRow("allocs", r1, r2, func(r bench.Round) float64 { return r.Allocs }, "%.1f")
	pairedRow("bytes", r1, r2, func(r bench.Round) float64 { return r.Bytes }, "%.0f")
	pairedRow("handshakes/s", r1, r2, func(r bench.Round) float64 { return r.Rate }, "%.0f")
	return nil
}

// echoConns measures idle echo/1 connections: the library over HTTP/1.1 and
// HTTP/2, and the compact server over HTTP/2, each in a fresh process per
// round, and prints their table.
func echoConns(rounds, k, h2Conns, conc int) error {
	h1t, h2t := bench.Transport{}, bench.Transport{HTTP2: true, Conns: h2Conns}
	var s1, s2, sc []bench.HeldEchoConns
	for r := range rounds {
		a, err := bench.HoldEchoConns("upgrade", h1t, k, conc)
		if err != nil {
			return err
		}
		b, err := bench.HoldEchoConns("upgrade", h2t, k, conc)
		if err != nil {
			return err
		}
		c, err := bench.HoldEchoConns("h2-compact", h2t, k, conc)
		if err != nil {
			return err
		}
		s1, s2, sc = append(s1, a), append(s2, b), append(sc, c)
		fmt.Fprintf(os.Stderr, "held round %d/%d done\n", r+1, rounds)
	}
	fmt.Println()
	fmt.Printf("### Idle echo/1 connections: server HeapInuse+StackInuse per connection or stream (%d of them; HTTP/2: %d connections)\n", k, h2Conns)
	fmt.Println()
	fmt.Println("| per idle echo/1 connection or stream | upgrade, HTTP/1.1 | upgrade, HTTP/2 | h2-compact, HTTP/2 | upgrade ÷ h2-compact, HTTP/2, paired (min–max) |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, st := range []struct {
		name string
		f    func(bench.HeldEchoConns) bench.Held
	}{
		{"opened", func(h bench.HeldEchoConns) bench.Held { return h.Opened }},
		{"after one echo", func(h bench.HeldEchoConns) bench.Held { return h.Echoed }},
	} {
		echoRow(st.name+": KiB", s1, s2, sc, func(h bench.HeldEchoConns) float64 { return st.f(h).PerConn / 1024 })
		echoRow(st.name+": heap KiB", s1, s2, sc, func(h bench.HeldEchoConns) float64 { return st.f(h).Heap / 1024 })
		echoRow(st.name+": stack KiB", s1, s2, sc, func(h bench.HeldEchoConns) float64 { return st.f(h).Stack / 1024 })
		echoRow(st.name+": goroutines", s1, s2, sc, func(h bench.HeldEchoConns) float64 { return st.f(h).Goroutines })
	}
	return nil
}

// echoRow prints a row of the echo/1 table: the medians over rounds
// of f for HTTP/1.1, HTTP/2 and the compact server, and the median of the
// per-round ratios of HTTP/2 to the compact server with their min–max.
func echoRow(name string, h1, h2, compact []bench.HeldEchoConns, f func(bench.HeldEchoConns) float64) {
	var a, b, c, q []float64
	for i := range h1 {
		a, b, c = append(a, f(h1[i])), append(b, f(h2[i])), append(c, f(compact[i]))
		q = append(q, f(h2[i])/f(compact[i]))
	}
	fmt.Printf("| %s | %.2f | %.2f | %.2f | %.3f× (%.3f–%.3f) |\n", name,
		bench.Median(a), bench.Median(b), bench.Median(c), bench.Median(q), slices.Min(q), slices.Max(q))
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
	fmt.Printf("| %s | "+format+" | "+format+" | %.3f× (%.3f–%.3f) |\n", name,
		bench.Median(ra), bench.Median(rb), bench.Median(q), slices.Min(q), slices.Max(q))
}
