package bench

// Proxy benchmarks: an echo/1 backend behind each of
//
//	direct    no proxy: the client talks to the backend (the ceiling)
//	relay     a bare TCP relay: accept, dial the backend, two io.Copy
//	          between the raw connections (splice on Linux); it does not
//	          parse HTTP at all: the floor for any user-space proxy
//	httputil  net/http/httputil.ReverseProxy
//	upgrade   reverseproxy.Proxy
//
// The backend and each proxy run in child processes of their own (this
// executable started again with ChildEnv set to "proxy-backend" or
// "proxy:NAME"); the proxy's CPU time, memory and descriptors are
// measured in its own process.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/reverseproxy"
)

// ProxyImpls lists the proxy benchmark's implementations in table order;
// relay is the reference for ratios.
var ProxyImpls = []string{"direct", "relay", "httputil", "upgrade"}

// BackendEnv names the environment variable that gives a proxy child its
// backend's address.
const BackendEnv = "UPGRADE_BENCH_BACKEND"

// runProxyChild serves the proxy child named by ChildEnv ("proxy-backend"
// or "proxy:NAME") and answers the parent's commands, one line each way,
// until in reaches EOF or "quit":
//
//	(at start) -> "addr HOST:PORT"
//	begin      -> "ok": records rusage
//	cpu        -> "cpu NS": user+sys CPU nanoseconds since begin
//	mem        -> "mem HEAPINUSE STACKINUSE GOROUTINES FDS" after two GCs
func runProxyChild(name string, in, out *os.File) error {
	RaiseFileLimit()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	backend := os.Getenv(BackendEnv)
	switch name {
	case "proxy-backend":
		go serveHTTP(ln, echoBackend())
	case "proxy:relay":
		go bareRelay(ln, backend)
	case "proxy:httputil":
		target := &url.URL{Scheme: "http", Host: backend}
		go serveHTTP(ln, &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}})
	case "proxy:upgrade":
		go serveHTTP(ln, reverseproxy.New(&url.URL{Scheme: "http", Host: backend}))
	default:
		return fmt.Errorf("unknown proxy child %q", name)
	}
	w := bufio.NewWriter(out)
	reply := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		w.Flush()
	}
	reply("addr %s", ln.Addr())
	var base syscall.Rusage
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "begin":
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &base)
			reply("ok")
		case "cpu":
			var ru syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			reply("cpu %d", tvNanos(ru.Utime)-tvNanos(base.Utime)+tvNanos(ru.Stime)-tvNanos(base.Stime))
		case "mem":
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			reply("mem %d %d %d %d", ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine(), countFDs())
		case "quit":
			return nil
		default:
			reply("error unknown command %q", sc.Text())
		}
	}
	return sc.Err()
}

func serveHTTP(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	_ = srv.Serve(ln)
}

// countFDs counts the process's open file descriptors.
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// echoBackend is the backend: echo/1 that echoes until the client
// half-closes, then half-closes. It splices from its socket to itself
// once the read-ahead bytes are sent back, so the backend is never the
// bottleneck.
func echoBackend() http.Handler {
	s := &upgrade.Server{}
	s.HandleRoute("echo/1", upgrade.Route{Handler: upgrade.HandlerFunc(func(c *upgrade.Conn) {
		if n := c.Buffered(); n > 0 {
			buf := make([]byte, n)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			_, _ = io.Copy(tc, tc)
		} else {
			_, _ = io.Copy(c, c)
		}
		_ = c.CloseWrite()
	}), Methods: []string{"*"}})
	return s
}

// bareRelay accepts connections and relays each to backend with two
// io.Copy between the raw TCP connections.
func bareRelay(ln net.Listener, backend string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", backend)
			if err != nil {
				return
			}
			defer b.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(b, c)
				_ = b.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			_, _ = io.Copy(c, b)
			_ = c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

// ProxySetup is a running backend and, unless the implementation is
// direct, a proxy in front of it.
type ProxySetup struct {
	Name    string
	Addr    string // where clients connect
	backend *Child
	proxy   *Child // nil for direct
}

// StartProxy starts the backend and the proxy for implementation name.
func StartProxy(name string) (*ProxySetup, error) {
	b, err := startChildEnv("proxy-backend", nil)
	if err != nil {
		return nil, err
	}
	s := &ProxySetup{Name: name, Addr: b.Addr, backend: b}
	if name == "direct" {
		return s, nil
	}
	p, err := startChildEnv("proxy:"+name, []string{BackendEnv + "=" + b.Addr})
	if err != nil {
		b.Close()
		return nil, err
	}
	s.proxy, s.Addr = p, p.Addr
	return s, nil
}

// Close stops the processes.
func (s *ProxySetup) Close() {
	if s.proxy != nil {
		s.proxy.Close()
	}
	s.backend.Close()
}

// ProxyRound is the result of one throughput round.
type ProxyRound struct {
	MBps      float64 // payload MB (10^6 bytes) per second, echoed
	CPUPerGB  float64 // proxy CPU seconds per GB (10^9 bytes) relayed, both directions counted; 0 for direct
	Transfers int
}

// Throughput echoes size bytes through the setup on one connection and
// reports the rate and the proxy's CPU per GB relayed.
func (s *ProxySetup) Throughput(size int64) (ProxyRound, error) {
	if s.proxy != nil {
		if _, err := s.proxy.Do("begin"); err != nil {
			return ProxyRound{}, err
		}
	}
	start := time.Now()
	if err := echoTransfer(s.Addr, size); err != nil {
		return ProxyRound{}, fmt.Errorf("%s: %w", s.Name, err)
	}
	elapsed := time.Since(start)
	r := ProxyRound{MBps: float64(size) / 1e6 / elapsed.Seconds(), Transfers: 1}
	if s.proxy != nil {
		v, err := s.proxy.Do("cpu")
		if err != nil {
			return r, err
		}
		r.CPUPerGB = float64(v[0]) / 1e9 / (float64(2*size) / 1e9)
	}
	return r, nil
}

var echoRequest = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")

// switchEcho dials addr and completes the echo/1 handshake, returning the
// connection and a reader holding what followed the 101.
func switchEcho(addr string) (*net.TCPConn, *bufio.Reader, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := nc.(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(echoRequest); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101 ") {
		c.Close()
		return nil, nil, fmt.Errorf("no 101: %q %v", line, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		if l == "\r\n" {
			return c, br, nil
		}
	}
}

// echoTransfer sends size bytes on a switched echo/1 connection while
// reading the echo, half-closes, and checks the echo's length and content
// pattern.
func echoTransfer(addr string, size int64) error {
	c, br, err := switchEcho(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	errc := make(chan error, 1)
	go func() {
		left := size
		for left > 0 {
			n := min(left, int64(len(chunk)))
			if _, err := c.Write(chunk[:n]); err != nil {
				errc <- err
				return
			}
			left -= n
		}
		errc <- c.CloseWrite()
	}()
	buf := make([]byte, 256<<10)
	var got int64
	for {
		n, err := br.Read(buf)
		if n > 0 && got%16 == 0 && buf[0] != '0' {
			return fmt.Errorf("echo corrupted at byte %d", got)
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	if got != size {
		return fmt.Errorf("echoed %d bytes of %d", got, size)
	}
	return nil
}

// Latencies runs n sequential handshakes (connect, request, 101) and
// returns each one's duration, sorted.
func (s *ProxySetup) Latencies(n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		c, _, err := switchEcho(s.Addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		out = append(out, time.Since(start))
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Percentile returns the p-th percentile (0..100) of sorted ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds)-1) * p / 100)
	return ds[i]
}

// Median returns the median of xs, the mean of the middle two for an even
// count, or 0 if xs is empty. xs is left as it is.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// IdlePair is what one idle proxied pair holds in the proxy process.
type IdlePair struct {
	Bytes      float64 // HeapInuse+StackInuse delta per pair
	FDs        float64 // open descriptors per pair
	Goroutines float64
}

// HoldIdle opens k switched pairs, echoes one byte on each, leaves them
// idle and measures the proxy process against its state before.
func (s *ProxySetup) HoldIdle(k int) (IdlePair, error) {
	if s.proxy == nil {
		return IdlePair{}, errors.New("direct has no proxy process")
	}
	base, err := s.proxy.Do("mem")
	if err != nil {
		return IdlePair{}, err
	}
	conns := make([]*net.TCPConn, 0, k)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var mu sync.Mutex
	err = parallel(k, 8, func(int) error {
		c, br, err := switchEcho(s.Addr)
		if err != nil {
			return err
		}
		if _, err = c.Write([]byte{'x'}); err == nil {
			_, err = br.ReadByte()
		}
		if err != nil {
			c.Close()
			return err
		}
		_ = c.SetDeadline(time.Time{})
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return IdlePair{}, err
	}
	time.Sleep(200 * time.Millisecond) // let the relays settle into their idle wait
	m, err := s.proxy.Do("mem")
	if err != nil {
		return IdlePair{}, err
	}
	fk := float64(k)
	return IdlePair{
		Bytes:      float64(m[0]+m[1]-base[0]-base[1]) / fk,
		Goroutines: float64(m[2]-base[2]) / fk,
		FDs:        float64(m[3]-base[3]) / fk,
	}, nil
}
