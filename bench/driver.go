package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Child is a server process serving one implementation.
type Child struct {
	Name string
	Addr string

	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	dead chan struct{} // closed when the process has been waited for
}

// StartChild starts the current executable as the server process for
// implementation name. The process is killed if the parent dies
// (Pdeathsig), when its stdin closes, and by Close.
func StartChild(name string) (*Child, error) { return startChildEnv(name, nil) }

// startChildEnv is StartChild with extra environment variables.
func startChildEnv(name string, env []string) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	if len(ChildWrapper) > 0 {
		cmd = exec.Command(ChildWrapper[0], append(ChildWrapper[1:], exe)...)
	}
	cmd.Env = append(append(os.Environ(), env...), ChildEnv+"="+name)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{Name: name, cmd: cmd, in: in, out: bufio.NewReader(out), dead: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.dead)
	}()
	line, err := c.readLine(30 * time.Second)
	if err != nil || !strings.HasPrefix(line, "addr ") {
		c.Close()
		return nil, fmt.Errorf("%s: server did not start: %q, %v", name, line, err)
	}
	c.Addr = strings.TrimPrefix(line, "addr ")
	return c, nil
}

// readLine reads one reply line, killing the child if none comes in time.
func (c *Child) readLine(timeout time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.out.ReadString('\n')
		ch <- result{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		return "", fmt.Errorf("%s: no reply from server in %v", c.Name, timeout)
	}
}

// Do sends a command and returns the reply's fields.
func (c *Child) Do(cmd string) ([]int64, error) {
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return nil, err
	}
	line, err := c.readLine(60 * time.Second)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(line)
	if len(f) == 0 || f[0] == "error" {
		return nil, fmt.Errorf("%s: %s: %q", c.Name, cmd, line)
	}
	vals := make([]int64, 0, len(f)-1)
	for _, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: bad reply %q", c.Name, cmd, line)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// Close stops the child: "quit", then a kill if it has not exited within
// two seconds. It is safe to call more than once.
func (c *Child) Close() {
	_, _ = io.WriteString(c.in, "quit\n")
	_ = c.in.Close()
	select {
	case <-c.dead:
	case <-time.After(2 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.dead
	}
}

// Round is the server-side cost of one round of handshakes.
type Round struct {
	CPU    float64 // user+sys CPU nanoseconds per handshake
	Allocs float64 // heap allocations per handshake
	Bytes  float64 // bytes allocated per handshake
	Rate   float64 // handshakes per second (wall clock, client included)
}

// Handshakes runs n complete handshakes at concurrency conc against the
// child and returns the server's cost per handshake. A GC runs before the
// round starts.
func (c *Child) Handshakes(n, conc int) (Round, error) {
	return c.measure(n, func() error {
		if err := RunHandshakes(c.Addr, n, conc); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		return nil
	})
}

// measure runs n handshakes with run and returns the server's cost per
// handshake.
func (c *Child) measure(n int, run func() error) (Round, error) {
	if _, err := c.Do("begin"); err != nil {
		return Round{}, err
	}
	start := time.Now()
	if err := run(); err != nil {
		return Round{}, err
	}
	elapsed := time.Since(start)
	v, err := c.Do("end " + strconv.Itoa(n))
	if err != nil {
		return Round{}, err
	}
	if len(v) != 5 || v[4] < int64(n) {
		return Round{}, fmt.Errorf("%s: server finished %v of %d handlers", c.Name, v, n)
	}
	fn := float64(n)
	return Round{
		CPU:    float64(v[0]+v[1]) / fn,
		Allocs: float64(v[2]) / fn,
		Bytes:  float64(v[3]) / fn,
		Rate:   fn / elapsed.Seconds(),
	}, nil
}

// Held is the server memory held by idle upgraded connections.
type Held struct {
	PerConn    float64 // (HeapInuse+StackInuse) delta per connection, bytes
	Heap       float64 // HeapInuse delta per connection
	Stack      float64 // StackInuse delta per connection
	Goroutines float64 // goroutines per connection
}

// warm is the number of handshakes a held round's server process makes
// before its baseline is taken.
const warm = 50

// baseline warms the child up with a few handshakes made by run and
// returns its memory figures then: the baseline of a held round.
func (c *Child) baseline(run func(addr string, n, conc int) error) ([]int64, error) {
	if err := run(c.Addr, warm, 4); err != nil {
		return nil, fmt.Errorf("%s: warming up: %w", c.Name, err)
	}
	if _, err := c.Do("wait " + strconv.Itoa(warm)); err != nil {
		return nil, err
	}
	return c.Do("mem 0")
}

// held returns the memory per connection of the k connections the child
// holds, against base.
func (c *Child) held(base []int64, k int) (Held, error) {
	m, err := c.Do("mem " + strconv.Itoa(k))
	if err != nil {
		return Held{}, err
	}
	if len(m) != 3 || len(base) != 3 {
		return Held{}, fmt.Errorf("%s: bad mem replies %v %v", c.Name, base, m)
	}
	fk := float64(k)
	h := Held{Heap: float64(m[0]-base[0]) / fk, Stack: float64(m[1]-base[1]) / fk, Goroutines: float64(m[2]-base[2]) / fk}
	h.PerConn = h.Heap + h.Stack
	return h, nil
}

// HoldConns measures, in a fresh server process for implementation name,
// the memory k idle upgraded connections hold: heap and stack in use after
// two GCs, against a baseline taken after a short warm-up.
func HoldConns(name string, k, conc int) (Held, error) {
	c, err := StartChild(name)
	if err != nil {
		return Held{}, err
	}
	defer c.Close()
	base, err := c.baseline(RunHandshakes)
	if err != nil {
		return Held{}, err
	}
	conns, err := OpenConns(c.Addr, k, conc)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if err != nil {
		return Held{}, fmt.Errorf("%s: %w", name, err)
	}
	h, err := c.held(base, k)
	if err != nil {
		return Held{}, err
	}
	for _, nc := range conns {
		nc.Close()
	}
	conns = nil
	if _, err := c.Do("wait " + strconv.Itoa(warm+k)); err != nil {
		return Held{}, err
	}
	return h, nil
}

// The client's opening handshake: what a non-browser client sends.
const (
	testKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	testAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // RFC 6455 §1.3
)

func request(addr string) []byte {
	return []byte("GET /chat HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n")
}

// Open dials addr, performs the opening handshake and reads the frame,
// checking the 101 and the frame's exact bytes. The connection is left
// open, with a deadline cleared.
func Open(addr string, req, buf []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if err := readSwitch(c, req, buf); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func readSwitch(c net.Conn, req, buf []byte) error {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	n, end := 0, -1
	for end < 0 || n < end+len(Frame) {
		if n == len(buf) {
			return fmt.Errorf("response too long: %q", buf[:n])
		}
		m, err := c.Read(buf[n:])
		n += m
		if end < 0 {
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
				end = i + 4
			}
		}
		if err != nil && (end < 0 || n < end+len(Frame)) {
			return fmt.Errorf("after %q: %w", buf[:n], err)
		}
	}
	if err := checkSwitch(buf[:end]); err != nil {
		return err
	}
	if got := buf[end:n]; !bytes.Equal(got, Frame) {
		return fmt.Errorf("frame: got % x, want % x", got, Frame)
	}
	return c.SetDeadline(time.Time{})
}

// checkSwitch checks a 101 response head: status, Upgrade, Connection
// and Sec-WebSocket-Accept.
func checkSwitch(head []byte) error {
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 101 ") {
		return fmt.Errorf("status line %q", lines[0])
	}
	var upg, conn, acc bool
	for _, l := range lines[1:] {
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "upgrade":
			upg = strings.EqualFold(value, "websocket")
		case "connection":
			conn = strings.EqualFold(value, "upgrade")
		case "sec-websocket-accept":
			acc = value == testAccept
		}
	}
	if !upg || !conn || !acc {
		return fmt.Errorf("bad 101: %q", head)
	}
	return nil
}

// Handshake performs one complete exchange: handshake, frame, then a
// half-close and a read until the server closes.
func Handshake(addr string, req, buf []byte) error {
	c, err := Open(addr, req, buf)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	// A library may send a Close frame on EOF; whatever comes, read it
	// until the server closes.
	for range 64 {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return nil
			}
			return err
		}
	}
	return errors.New("server did not close")
}

// parallel calls f(0) to f(n-1) on conc goroutines at a time and returns
// the first error; once f has failed, no further call starts.
func parallel(n, conc int, f func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := f(int(i)); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// RunHandshakes runs n handshakes against addr on conc connections at a
// time; it stops at the first error.
func RunHandshakes(addr string, n, conc int) error {
	// Not parallel: each worker reads every handshake into its one buffer.
	req := request(addr)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for next.Add(1) <= int64(n) {
				if err := Handshake(addr, req, buf); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// OpenConns opens k upgraded connections on conc dialers at a time and
// returns them; on error it returns those opened so far too.
func OpenConns(addr string, k, conc int) ([]net.Conn, error) {
	// Not parallel, as RunHandshakes: one buffer per worker.
	req := request(addr)
	conns := make([]net.Conn, k)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(conc, k) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for {
				i := next.Add(1) - 1
				if i >= int64(k) {
					return
				}
				c, err := Open(addr, req, buf)
				if err != nil {
					once.Do(func() { first = err })
					next.Store(int64(k))
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out, first
}
