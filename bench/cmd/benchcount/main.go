// Command benchcount counts, with valgrind's callgrind, the instructions
// the server process executes per handshake for each implementation, and
// how often selected functions are called (runtime.newstack is a stack
// growth, runtime.newproc a goroutine start). Unlike CPU time on a shared
// machine, these counts repeat to within a fraction of a percent from run
// to run, which makes them the measure for small changes; they leave out
// the kernel (system calls), which benchtable's CPU column includes.
//
//	cd bench && CGO_ENABLED=0 go build -o /tmp/benchcount ./cmd/benchcount
//	/tmp/benchcount -impls floor,upgrade -n 2000
//
// It needs valgrind, and a binary built with CGO_ENABLED=0: callgrind
// stops on an assertion with cgo's signal handling. Preemption signals are
// turned off in the server (GODEBUG=asyncpreemptoff=1) for the same
// reason.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/bench"
)

func main() {
	bench.MaybeRunChild()
	var (
		n     = flag.Int("n", 2000, "measured handshakes per implementation")
		warm  = flag.Int("warm", 500, "handshakes before measuring")
		conc  = flag.Int("c", 4, "client concurrency")
		only  = flag.String("impls", "floor,upgrade", "implementations")
		funcs = flag.String("funcs", "runtime.newstack,runtime.newproc,runtime.mallocgc,syscall.Syscall,runtime.pollSetDeadline", "functions whose calls to count")
		dir   = flag.String("dir", "", "directory for the callgrind files (default: a temporary one)")
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
	want := strings.Split(*funcs, ",")
	fmt.Printf("n=%d warm=%d c=%d; per handshake, server process, user space only\n\n", *n, *warm, *conc)
	fmt.Printf("| impl | instructions |")
	for _, f := range want {
		fmt.Printf(" %s calls | %s incl. |", f, f)
	}
	fmt.Println()
	fmt.Printf("|---|---:|%s\n", strings.Repeat("---:|---:|", len(want)))
	for _, name := range strings.Split(*only, ",") {
		res, err := count(name, *dir, *n, *warm, *conc)
		if err != nil {
			log.Fatal(err)
		}
		fn := float64(*n)
		fmt.Printf("| %s | %.0f |", name, float64(res.total)/fn)
		for _, f := range want {
			fmt.Printf(" %.3f | %.0f |", float64(res.calls[f])/fn, float64(res.incl[f])/fn)
		}
		fmt.Println()
	}
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
	calls map[string]int64 // calls of each function
	incl  map[string]int64 // instructions inside calls of each function
}

// parse reads an uncompressed callgrind file: "fn=" starts a function,
// "cfn=" names the callee of the next "calls=" line, whose following cost
// line is the inclusive cost of those calls.
func parse(path string) (*profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &profile{calls: map[string]int64{}, incl: map[string]int64{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cfn string
	inCall := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "cfn="):
			cfn = strings.TrimPrefix(l, "cfn=")
		case strings.HasPrefix(l, "calls="):
			k, _ := strconv.ParseInt(strings.Fields(strings.TrimPrefix(l, "calls="))[0], 10, 64)
			p.calls[cfn] += k
			inCall = true
		case strings.HasPrefix(l, "summary:") || strings.HasPrefix(l, "totals:"):
			v, _ := strconv.ParseInt(strings.TrimSpace(l[strings.IndexByte(l, ':')+1:]), 10, 64)
			if v > p.total {
				p.total = v
			}
		case inCall && len(l) > 0 && (l[0] >= '0' && l[0] <= '9' || l[0] == '+' || l[0] == '-' || l[0] == '*'):
			fs := strings.Fields(l)
			if len(fs) >= 2 {
				v, _ := strconv.ParseInt(fs[1], 10, 64)
				p.incl[cfn] += v
			}
			inCall = false
		}
	}
	return p, sc.Err()
}
