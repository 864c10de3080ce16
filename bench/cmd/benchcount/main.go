// Command benchcount counts, with valgrind's callgrind, the user-space
// instructions the server process executes per handshake for each
// implementation, and lists the functions whose own instructions differ
// most from the first implementation's. Unlike CPU time on a shared
// machine, these counts repeat to about 1 % from run to run, which makes
// them the measure for small changes; they leave out the kernel (system
// calls), which benchtable's CPU column includes.
//
//	cd bench && CGO_ENABLED=0 go build -o /tmp/benchcount ./cmd/benchcount
//	/tmp/benchcount -impls floor,upgrade -n 1500
//
// It needs valgrind, and a binary built with CGO_ENABLED=0: callgrind
// stops on an assertion with cgo's signal handling. For the same reason
// the server runs with asynchronous preemption off, and without RDTSCP,
// which valgrind cannot execute (GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off).
// Valgrind's CPU has no SHA-NI: SHA-1 costs more instructions than on the
// real CPU, alike for every implementation. Callgrind's call counts and
// inclusive costs are not reliable for Go code (goroutines switch stacks);
// each function's own instructions and the totals are.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/bench"
)

func main() {
	bench.MaybeRunChild()
	var (
		n    = flag.Int("n", 1500, "measured handshakes per implementation")
		warm = flag.Int("warm", 300, "handshakes before measuring")
		conc = flag.Int("c", 4, "client concurrency")
		only = flag.String("impls", "floor,upgrade", "implementations; the first is the reference")
		top  = flag.Int("top", 20, "functions to list whose own instructions differ most from the reference's")
		dir  = flag.String("dir", "", "directory for the callgrind files (default: a temporary one)")
	)
	flag.Parse()
	log.SetFlags(0)
	if *dir == "" {
		d, err := os.MkdirTemp("", "benchcount")
		if err != nil {
			log.Fatal(err)
		}
		*dir = d
	}
	impls := strings.Split(*only, ",")
	fn := float64(*n)
	fmt.Printf("n=%d warm=%d c=%d; per handshake, server process, user space only\n\n", *n, *warm, *conc)
	fmt.Println("| impl | instructions | × " + impls[0] + " |")
	fmt.Println("|---|---:|---:|")
	var profiles []*profile
	for _, name := range impls {
		p, err := count(name, *dir, *n, *warm, *conc)
		if err != nil {
			log.Fatal(err)
		}
		profiles = append(profiles, p)
		fmt.Printf("| %s | %.0f | %.3f× |\n", name, float64(p.total)/fn, float64(p.total)/float64(profiles[0].total))
	}
	for i, p := range profiles[1:] {
		fmt.Printf("\n%s against %s, own instructions per handshake, largest differences:\n\n", impls[i+1], impls[0])
		ref := profiles[0].self
		var names []string
		for f := range p.self {
			names = append(names, f)
		}
		for f := range ref {
			if _, ok := p.self[f]; !ok {
				names = append(names, f)
			}
		}
		diff := func(f string) int64 { return p.self[f] - ref[f] }
		slices.SortFunc(names, func(a, b string) int { return cmpAbs(diff(b), diff(a)) })
		for _, f := range names[:min(*top, len(names))] {
			fmt.Printf("  %+8.0f  %s\n", float64(diff(f))/fn, f)
		}
	}
}

func cmpAbs(a, b int64) int {
	a, b = max(a, -a), max(b, -b)
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// count runs one server process under callgrind with instrumentation off,
// warms it up, turns instrumentation on for n handshakes, and dumps.
func count(name, dir string, n, warm, conc int) (*profile, error) {
	out := filepath.Join(dir, name+".cg")
	bench.ChildWrapper = []string{"valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
		"--compress-strings=no", "--compress-pos=no", "--callgrind-out-file=" + out}
	os.Setenv("GODEBUG", "asyncpreemptoff=1,cpu.rdtscp=off")
	c, err := bench.StartChild(name)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pid := strconv.Itoa(c.Pid())
	if err := bench.RunHandshakes(c.Addr, warm, conc); err != nil {
		return nil, err
	}
	if _, err := c.Do("begin"); err != nil {
		return nil, err
	}
	if err := control("-i", "on", pid); err != nil {
		return nil, err
	}
	if err := bench.RunHandshakes(c.Addr, n, conc); err != nil {
		return nil, err
	}
	if _, err := c.Do("end " + strconv.Itoa(n)); err != nil {
		return nil, err
	}
	if err := control("-d", pid); err != nil {
		return nil, err
	}
	if err := control("-i", "off", pid); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(out + ".*")
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no callgrind dump", name)
	}
	sort.Strings(files)
	return parse(files[len(files)-1])
}

func control(args ...string) error {
	cmd := exec.Command("callgrind_control", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control %v: %v: %s", args, err, b)
	}
	return nil
}

type profile struct {
	total int64
	self  map[string]int64 // each function's own instructions
}

// parse reads an uncompressed callgrind file: "fn=" starts a function
// whose cost lines follow; a "calls=" line makes the cost line after it
// the cost of a call, not of the function itself.
func parse(path string) (*profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &profile{self: map[string]int64{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var fn string
	inCall := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "fn="):
			fn = strings.TrimPrefix(l, "fn=")
		case strings.HasPrefix(l, "calls="):
			inCall = true
		case strings.HasPrefix(l, "summary:") || strings.HasPrefix(l, "totals:"):
			v, _ := strconv.ParseInt(strings.TrimSpace(l[strings.IndexByte(l, ':')+1:]), 10, 64)
			p.total = max(p.total, v)
		case len(l) > 0 && (l[0] >= '0' && l[0] <= '9' || l[0] == '+' || l[0] == '-' || l[0] == '*'):
			if inCall {
				inCall = false
				continue
			}
			if fs := strings.Fields(l); len(fs) >= 2 {
				v, _ := strconv.ParseInt(fs[1], 10, 64)
				p.self[fn] += v
			}
		}
	}
	return p, sc.Err()
}
