// Command benchtable runs the handshake and held-connection benchmarks of
// package bench with the implementations interleaved round by round
// (floor, upgrade, gorilla, coder, gobwas, floor, upgrade, …), each server
// in its own process, and prints Markdown tables of medians and of the
// paired per-round ratios to floor, with their min–max spread.
//
//	cd bench && go run ./cmd/benchtable
//
// The server processes are this executable started again with
// bench.ChildEnv set; set UPGRADE_BENCH_PROFILE=cpu=DIR (or mem=DIR) to
// have each write a profile.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/go-upgrade/upgrade/bench"
)

func main() {
	bench.MaybeRunChild()
	var (
		rounds     = flag.Int("rounds", 15, "interleaved handshake rounds")
		n          = flag.Int("n", 4000, "handshakes per implementation per round")
		conc       = flag.Int("c", 8, "client concurrency")
		k          = flag.Int("k", 5000, "idle connections held per implementation per held round")
		heldRounds = flag.Int("heldrounds", 3, "held-connection rounds (a fresh server process each)")
		only       = flag.String("impls", strings.Join(bench.Impls, ","), "implementations, floor first")
	)
	flag.Parse()
	log.SetFlags(0)
	impls := strings.Split(*only, ",")
	if impls[0] != "floor" {
		log.Fatal("the first implementation must be floor: ratios are to it")
	}
	if lim := bench.RaiseFileLimit(); *k > 0 && uint64(*k)+64 > lim {
		log.Fatalf("RLIMIT_NOFILE is %d: too low for -k %d", lim, *k)
	}

	machine()
	fmt.Printf("\nrounds=%d n=%d c=%d k=%d heldrounds=%d\n", *rounds, *n, *conc, *k, *heldRounds)

	if *rounds > 0 {
		hs, err := handshakes(impls, *rounds, *n, *conc)
		if err != nil {
			log.Fatal(err)
		}
		printHandshakes(impls, hs)
		printMounts(impls, hs)
	}
	if *heldRounds > 0 && *k > 0 {
		held, err := hold(impls, *heldRounds, *k, *conc)
		if err != nil {
			log.Fatal(err)
		}
		printHeld(impls, held)
	}
}

// machine prints what the numbers were measured on.
func machine() {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if name, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(name) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	fmt.Printf("machine: %d CPUs (%s), %s %s/%s, %s\n", runtime.NumCPU(), model,
		runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"))
}

// handshakes starts one server process per implementation and runs the
// rounds interleaved; result[impl][round].
func handshakes(impls []string, rounds, n, conc int) (map[string][]bench.Round, error) {
	children := make([]*bench.Child, 0, len(impls))
	defer func() {
		for _, c := range children {
			c.Close()
		}
	}()
	for _, name := range impls {
		c, err := bench.StartChild(name)
		if err != nil {
			return nil, err
		}
		children = append(children, c)
	}
	// Warm-up: one unrecorded round each.
	for _, c := range children {
		if _, err := c.Handshakes(min(n, 1000), conc); err != nil {
			return nil, err
		}
	}
	res := make(map[string][]bench.Round)
	start := time.Now()
	for r := range rounds {
		// Each round starts with the next implementation, so none
		// always runs first or right after the same neighbour.
		for i := range children {
			c := children[(r+i)%len(children)]
			x, err := c.Handshakes(n, conc)
			if err != nil {
				return nil, err
			}
			res[c.Name] = append(res[c.Name], x)
		}
		fmt.Fprintf(os.Stderr, "handshake round %d/%d done (%v)\n", r+1, rounds, time.Since(start).Round(time.Second))
	}
	return res, nil
}

// hold measures held-connection memory, interleaved, in a fresh server
// process per implementation and round.
func hold(impls []string, rounds, k, conc int) (map[string][]bench.Held, error) {
	res := make(map[string][]bench.Held)
	start := time.Now()
	for r := range rounds {
		for _, name := range impls {
			h, err := bench.HoldConns(name, k, conc)
			if err != nil {
				return nil, err
			}
			res[name] = append(res[name], h)
		}
		fmt.Fprintf(os.Stderr, "held round %d/%d done (%v)\n", r+1, rounds, time.Since(start).Round(time.Second))
	}
	return res, nil
}

// stat is the median of a metric and of its paired per-round comparison
// with floor (a ratio, or a difference), with the comparison's min–max.
type stat struct {
	med, cmp, lo, hi float64
}

func compare[T any](res map[string][]T, name string, metric func(T) float64, diff bool) stat {
	return compareTo(res, name, "floor", metric, diff)
}

// compareTo is compare with ref in floor's place.
func compareTo[T any](res map[string][]T, name, ref string, metric func(T) float64, diff bool) stat {
	floor := res[ref]
	var vals, cmps []float64
	for i, x := range res[name] {
		v, f := metric(x), metric(floor[i])
		vals = append(vals, v)
		if diff {
			cmps = append(cmps, v-f)
		} else {
			cmps = append(cmps, v/f)
		}
	}
	return stat{bench.Median(vals), bench.Median(cmps), slices.Min(cmps), slices.Max(cmps)}
}

// pairs are implementations compared, round by round, also with the one
// they wrap: what the wrapper adds.
var pairs = [][2]string{{"gorilla-upgrade", "gorilla"}}

// runPairs returns the pairs present in res.
func runPairs[T any](res map[string][]T) [][2]string {
	var ps [][2]string
	for _, p := range pairs {
		if _, ok := res[p[0]]; ok {
			if _, ok := res[p[1]]; ok {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

func ratio(s stat) string {
	return fmt.Sprintf("%.3f× (%.3f–%.3f)", s.cmp, s.lo, s.hi)
}

func printHandshakes(impls []string, res map[string][]bench.Round) {
	fmt.Println("\n### Handshake: server process cost per handshake (median of rounds; paired per-round ratio to floor, min–max in parentheses)")
	fmt.Println()
	fmt.Println("| impl | CPU µs | CPU × floor | allocs | allocs − floor | bytes | bytes × floor | handshakes/s | rate × floor |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range impls {
		cpu := compare(res, name, func(r bench.Round) float64 { return r.CPU }, false)
		al := compare(res, name, func(r bench.Round) float64 { return r.Allocs }, true)
		by := compare(res, name, func(r bench.Round) float64 { return r.Bytes }, false)
		rt := compare(res, name, func(r bench.Round) float64 { return r.Rate }, false)
		fmt.Printf("| %s | %.1f | %s | %.1f | %+.1f (%+.1f–%+.1f) | %.0f | %s | %.0f | %s |\n",
			name, cpu.med/1e3, ratio(cpu), al.med, al.cmp, al.lo, al.hi, by.med, ratio(by), rt.med, ratio(rt))
	}
	for _, p := range runPairs(res) {
		cpu := compareTo(res, p[0], p[1], func(r bench.Round) float64 { return r.CPU }, false)
		al := compareTo(res, p[0], p[1], func(r bench.Round) float64 { return r.Allocs }, true)
		by := compareTo(res, p[0], p[1], func(r bench.Round) float64 { return r.Bytes }, false)
		fmt.Printf("\n%s vs %s, paired per round: CPU %s; allocs %+.1f (%+.1f–%+.1f); bytes %s\n",
			p[0], p[1], ratio(cpu), al.cmp, al.lo, al.hi, ratio(by))
	}
	if _, ok := res["upgrade"]; ok {
		cpu := compare(res, "upgrade", func(r bench.Round) float64 { return r.CPU }, false)
		al := compare(res, "upgrade", func(r bench.Round) float64 { return r.Allocs }, true)
		by := compare(res, "upgrade", func(r bench.Round) float64 { return r.Bytes }, false)
		fmt.Println()
		// Allocations per handshake are whole numbers plus a little
		// background noise (GC, timers) spread over N handshakes; +2.05
		// is "+2" at the table's precision.
		fmt.Printf("targets for upgrade: CPU ≤ 1.03× floor: %.3f× %s; allocs ≤ floor+2: %+.1f %s; bytes ≤ 1.04×: %.3f× %s\n",
			cpu.cmp, verdict(cpu.cmp <= 1.03), al.cmp, verdict(al.cmp <= 2.05), by.cmp, verdict(by.cmp <= 1.04))
	}
}

func printHeld(impls []string, res map[string][]bench.Held) {
	fmt.Println("\n### Held idle connections: server HeapInuse+StackInuse per connection after 2 GCs (median of rounds; paired ratio to floor, min–max)")
	fmt.Println()
	fmt.Println("| impl | KB/conn | × floor | heap KB | stack KB | goroutines/conn |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, name := range impls {
		per := compare(res, name, func(h bench.Held) float64 { return h.PerConn }, false)
		heap := compare(res, name, func(h bench.Held) float64 { return h.Heap }, false)
		stack := compare(res, name, func(h bench.Held) float64 { return h.Stack }, false)
		g := compare(res, name, func(h bench.Held) float64 { return h.Goroutines }, false)
		fmt.Printf("| %s | %.2f | %s | %.2f | %.2f | %.2f |\n", name, per.med/1e3, ratio(per), heap.med/1e3, stack.med/1e3, g.med)
	}
	for _, p := range runPairs(res) {
		per := compareTo(res, p[0], p[1], func(h bench.Held) float64 { return h.PerConn }, false)
		heap := compareTo(res, p[0], p[1], func(h bench.Held) float64 { return h.Heap }, true)
		stack := compareTo(res, p[0], p[1], func(h bench.Held) float64 { return h.Stack }, true)
		fmt.Printf("\n%s vs %s, paired per round: held %s; heap %+.2f KB, stack %+.2f KB per connection\n",
			p[0], p[1], ratio(per), heap.cmp/1e3, stack.cmp/1e3)
	}
	// The target is for a handler that keeps Conn.Request, as most do.
	if _, ok := res["upgrade-keep"]; ok {
		per := compare(res, "upgrade-keep", func(h bench.Held) float64 { return h.PerConn }, false)
		fmt.Printf("\ntarget for upgrade-keep: held ≤ 0.35× floor: %.3f× %s\n", per.cmp, verdict(per.cmp <= 0.35))
	}
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}
