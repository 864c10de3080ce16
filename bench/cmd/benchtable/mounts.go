package main

import (
	"fmt"
	"strings"

	"github.com/go-upgrade/upgrade/bench"
)

// printMounts compares each implementation mounted under a ServeMux or
// behind a middleware ("NAME-mux", "NAME-wrapped") with the floor mounted
// the same way ("floor-mux", "floor-wrapped"), paired per round: the cost
// of the mount itself is then on both sides.
func printMounts(impls []string, res map[string][]bench.Round) {
	type pair struct{ name, floor string }
	var pairs []pair
	for _, name := range impls {
		_, suffix, ok := strings.Cut(name, "-")
		if !ok || strings.HasPrefix(name, "floor-") {
			continue
		}
		if _, ok := res["floor-"+suffix]; ok {
			pairs = append(pairs, pair{name, "floor-" + suffix})
		}
	}
	if len(pairs) == 0 {
		return
	}
	fmt.Println("\n### Same mount: paired per-round ratio to the floor mounted the same way (min–max in parentheses)")
	fmt.Println()
	fmt.Println("| impl | reference | CPU × reference | allocs − reference | bytes × reference |")
	fmt.Println("|---|---|---:|---:|---:|")
	for _, p := range pairs {
		sub := map[string][]bench.Round{"floor": res[p.floor], p.name: res[p.name]}
		cpu := compare(sub, p.name, func(r bench.Round) float64 { return r.CPU }, false)
		al := compare(sub, p.name, func(r bench.Round) float64 { return r.Allocs }, true)
		by := compare(sub, p.name, func(r bench.Round) float64 { return r.Bytes }, false)
		fmt.Printf("| %s | %s | %s | %+.1f (%+.1f–%+.1f) | %s |\n", p.name, p.floor, ratio(cpu), al.cmp, al.lo, al.hi, ratio(by))
	}
	if _, ok := res["upgrade-mux"]; ok {
		if _, ok := res["floor-mux"]; ok {
			sub := map[string][]bench.Round{"floor": res["floor-mux"], "upgrade-mux": res["upgrade-mux"]}
			cpu := compare(sub, "upgrade-mux", func(r bench.Round) float64 { return r.CPU }, false)
			fmt.Printf("\ntarget for upgrade-mux: CPU ≤ 1.03× floor-mux: %.3f× %s\n", cpu.cmp, verdict(cpu.cmp <= 1.03))
		}
	}
}
