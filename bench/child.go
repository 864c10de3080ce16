package bench

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ChildEnv names the environment variable that turns a benchmark binary
// (the test binary or cmd/benchtable) into the server process: its value is
// the implementation to serve.
const ChildEnv = "UPGRADE_BENCH_SERVE"

// MaybeRunChild runs the server process and exits if ChildEnv is set; it
// returns at once otherwise. Call it first thing in main or TestMain.
func MaybeRunChild() {
	name := os.Getenv(ChildEnv)
	if name == "" {
		return
	}
	run := RunChild
	if strings.HasPrefix(name, "proxy") {
		run = runProxyChild
	}
	if err := run(name, os.Stdin, os.Stdout); err != nil {
		log.Fatal(err)
	}
	os.Exit(0)
}

// ProfileEnv names the environment variable that makes the server process
// profile its whole life: "cpu=DIR" writes DIR/IMPL.cpu.pprof, "mem=DIR"
// writes DIR/IMPL.mem.pprof with every allocation sampled (which slows
// the process down: do not mix the two). "heap=DIR" samples every
// allocation too, and writes what is in use when memory is measured
// with connections held (the mem command): DIR/IMPL.N.heap.pprof and
// DIR/IMPL.N.goroutine.pprof for the Nth measurement. IMPL is suffixed
// with -h2 in a process that speaks HTTP/2 too.
const ProfileEnv = "UPGRADE_BENCH_PROFILE"

// heapProfiles is the prefix of the held-memory profiles ("heap=DIR"),
// and heapProfileN counts them.
var (
	heapProfiles string
	heapProfileN int
)

// writeHeldProfiles writes the heap and goroutine profiles of a
// held-memory measurement, if asked for.
func writeHeldProfiles() {
	if heapProfiles == "" {
		return
	}
	heapProfileN++
	for _, p := range []string{"heap", "goroutine"} {
		f, err := os.Create(fmt.Sprintf("%s.%d.%s.pprof", heapProfiles, heapProfileN, p))
		if err != nil {
			log.Print(err)
			return
		}
		_ = pprof.Lookup(p).WriteTo(f, 0)
		f.Close()
	}
}

func startProfiles(spec, name string) (stop func(), err error) {
	kind, dir, _ := strings.Cut(spec, "=")
	prefix := filepath.Join(dir, name)
	switch kind {
	case "heap":
		runtime.MemProfileRate = 1
		heapProfiles = prefix
		return func() {}, nil
	case "cpu":
		f, err := os.Create(prefix + ".cpu.pprof")
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		return func() {
			pprof.StopCPUProfile()
			f.Close()
		}, nil
	case "mem":
		runtime.MemProfileRate = 1
		return func() {
			runtime.GC()
			if m, err := os.Create(prefix + ".mem.pprof"); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(m, 0)
				m.Close()
			}
		}, nil
	}
	return nil, fmt.Errorf("%s: want cpu=DIR, mem=DIR or heap=DIR, got %q", ProfileEnv, spec)
}

// RaiseFileLimit raises RLIMIT_NOFILE's soft limit to the hard limit and
// returns the new soft limit.
func RaiseFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// RunChild serves implementation name on 127.0.0.1 and answers the
// parent's commands, one line each way, until in reaches EOF or "quit":
//
//	(at start)   -> "addr HOST:PORT"
//	begin        -> "ok": runs a GC, then records rusage, MemStats and the
//	                done counter as the round's baseline
//	end N        -> "end UTIME_NS STIME_NS MALLOCS BYTES DONE": waits
//	                (bounded) until N more handlers have finished since
//	                begin, then reports the deltas since begin
//	mem K        -> "mem HEAPINUSE STACKINUSE GOROUTINES": waits (bounded)
//	                until K connections are active, GCs twice, reports
//	wait N       -> "ok": waits (bounded) until done reaches N in total
//	quit         -> exits
func RunChild(name string, in *os.File, out *os.File) error {
	h := NewHandler(name)
	if h == nil {
		return fmt.Errorf("unknown implementation %q", name)
	}
	RaiseFileLimit()
	if spec := os.Getenv(ProfileEnv); spec != "" {
		pname := name
		if os.Getenv(H2Env) != "" {
			pname += "-h2"
		}
		stop, err := startProfiles(spec, pname)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if os.Getenv(H2Env) != "" {
		if name != "upgrade" && name != "h2-compact" {
			return fmt.Errorf("%s: %w", name, errNoH2)
		}
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	if os.Getenv(H3Env) != "" {
		h3, err := serveH3(ln.Addr().String(), h)
		if err != nil {
			return err
		}
		defer h3.Close()
	}

	w := bufio.NewWriter(out)
	reply := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		w.Flush()
	}
	reply("addr %s", ln.Addr())

	var (
		base   runtime.MemStats
		baseRU syscall.Rusage
		done0  int64
	)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := int64(0)
		if len(f) > 1 {
			arg, _ = strconv.ParseInt(f[1], 10, 64)
		}
		switch f[0] {
		case "begin":
			runtime.GC()
			done0 = done.Load()
			runtime.ReadMemStats(&base)
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &baseRU)
			reply("ok")
		case "end":
			waitFor(func() bool { return done.Load()-done0 >= arg })
			var ru syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			reply("end %d %d %d %d %d", tvNanos(ru.Utime)-tvNanos(baseRU.Utime), tvNanos(ru.Stime)-tvNanos(baseRU.Stime),
				ms.Mallocs-base.Mallocs, ms.TotalAlloc-base.TotalAlloc, done.Load()-done0)
		case "mem":
			waitFor(func() bool { return active.Load() >= arg })
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if arg > 0 {
				writeHeldProfiles()
			}
			reply("mem %d %d %d", ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
		case "wait":
			waitFor(func() bool { return done.Load() >= arg })
			reply("ok")
		case "quit":
			return nil
		default:
			reply("error unknown command %q", f[0])
		}
	}
	return sc.Err()
}

// waitFor polls cond for up to 30 seconds.
func waitFor(cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Microsecond)
	}
}

func tvNanos(tv syscall.Timeval) int64 { return tv.Nano() }
