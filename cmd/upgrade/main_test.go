package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// binPath is the upgrade binary built by TestMain.
var binPath string

// TestMain builds the command once, runs the tests against the binary as a
// user would, and fails if a goroutine outlives them.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "upgrade-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "upgrade")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the upgrade command:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// testTimeout bounds every child process and network wait of a test.
const testTimeout = 20 * time.Second

// syncBuffer is a bytes.Buffer safe for a writer and readers in different
// goroutines; it signals when its first line is complete.
type syncBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	firstLine chan string
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{firstLine: make(chan string, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	hadLine := bytes.IndexByte(b.buf.Bytes(), '\n') >= 0
	b.buf.Write(p)
	if i := bytes.IndexByte(b.buf.Bytes(), '\n'); !hadLine && i >= 0 {
		b.firstLine <- string(b.buf.Bytes()[:i])
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running `upgrade serve`.
type server struct {
	addr   string // host:port
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{} // closed once the process has been waited for
	err    error         // the result of Wait, after exited
}

var listeningLine = regexp.MustCompile(`^listening on (https?)://(127\.0\.0\.1:[0-9]+)$`)

// startServer starts `upgrade serve -addr 127.0.0.1:0 args...`, waits for
// its address line, and kills it at the end of the test.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	s, _ := startCommand(t, "serve", append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	return s
}

// startCommand starts `upgrade command args...`, waits for its address
// line, whose scheme it returns too, and kills it at the end of the test.
func startCommand(t *testing.T, command string, args ...string) (*server, string) {
	t.Helper()
	return startCommandEnv(t, nil, command, args...)
}

// startCommandEnv is startCommand with env added to the environment.
func startCommandEnv(t *testing.T, env []string, command string, args ...string) (*server, string) {
	t.Helper()
	s := &server{stdout: newSyncBuffer(), stderr: newSyncBuffer(), exited: make(chan struct{})}
	s.cmd = exec.Command(binPath, append([]string{command}, args...)...)
	if env != nil {
		s.cmd.Env = append(os.Environ(), env...)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	require.NoError(t, s.cmd.Start())
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("%s stderr:\n%s", command, s.stderr)
		}
	})
	var scheme string
	select {
	case line := <-s.stdout.firstLine:
		m := listeningLine.FindStringSubmatch(line)
		require.NotNil(t, m, "first stdout line %q", line)
		scheme, s.addr = m[1], m[2]
	case <-s.exited:
		t.Fatalf("%s exited before listening: %v\n%s", command, s.err, s.stderr)
	case <-time.After(testTimeout):
		t.Fatalf("no address line from %s", command)
	}
	return s, scheme
}

// wait waits for the server process to exit and returns its exit code.
func (s *server) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("serve still running after %v", within)
		return -1
	}
}

// result is the outcome of a dial run.
type result struct {
	stdout, stderr string
	code           int
}

// runDialCmd runs `upgrade dial args...` with stdin, bounded by
// testTimeout.
func runDialCmd(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"dial"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "dial %q did not finish in time; stderr: %s", args, stderr.String())
	var ee *exec.ExitError
	if err != nil {
		require.ErrorAs(t, err, &ee, "running dial")
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// rawConn opens a TCP connection to addr, closed at the end of the test,
// with a deadline for the whole test.
func rawConn(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return c.(*net.TCPConn)
}

// rawRequest sends req, raw bytes, on a new connection to addr and
// returns the response, its body read and closed.
func rawRequest(t *testing.T, addr, req string) (*http.Response, []byte) {
	t.Helper()
	c := rawConn(t, addr)
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// sendHead sends req, raw bytes, on a new connection to addr and reads
// the response's head. The connection and its reader are returned for
// what follows the head.
func sendHead(t *testing.T, addr, req string) (*net.TCPConn, *bufio.Reader, string, http.Header) {
	t.Helper()
	c := rawConn(t, addr)
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	status, h := readResponseHead(t, br)
	return c, br, status, h
}

// readResponseHead reads a response's status line and header fields
// (not its body): enough for a 101 or to check a refusal's fields.
func readResponseHead(t *testing.T, br *bufio.Reader) (status string, h http.Header) {
	t.Helper()
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	h = make(http.Header)
	for {
		l, err := br.ReadString('\n')
		require.NoError(t, err)
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		require.True(t, ok, "header line %q", l)
		h.Add(k, strings.TrimSpace(v))
	}
	return strings.TrimRight(line, "\r\n"), h
}

// fakeServer is a TCP server for dial tests: it records each request head
// it receives and answers it with a canned response.
type fakeServer struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted []string // remote addresses, in the order accepted
	arrived  chan struct{}
	requests []string
	wg       sync.WaitGroup
}

// startFake starts a fake server whose handle function is called with
// each connection after its request head has been read.
func startFake(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeServer{ln: ln, arrived: make(chan struct{}, 1)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.accepted = append(f.accepted, c.RemoteAddr().String())
			f.mu.Unlock()
			select {
			case f.arrived <- struct{}{}:
			default:
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(l)
					if l == "\r\n" {
						break
					}
				}
				f.mu.Lock()
				f.requests = append(f.requests, head.String())
				f.mu.Unlock()
				if handle != nil {
					handle(c, br)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

// assertNothingConnected checks that no connection reached f before this
// call. It connects a sentinel and waits until f has accepted it: the
// listener hands connections over in the order they were established, so
// any earlier connection would have been accepted before the sentinel.
func (f *fakeServer) assertNothingConnected(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.addr(), testTimeout)
	require.NoError(t, err)
	defer c.Close()
	sentinel := c.LocalAddr().String()
	deadline := time.After(testTimeout)
	for {
		f.mu.Lock()
		accepted := append([]string(nil), f.accepted...)
		f.mu.Unlock()
		for i, a := range accepted {
			if a == sentinel {
				assert.Zero(t, i, "connections reached the server before the sentinel: %q", accepted[:i])
				return
			}
		}
		select {
		case <-f.arrived:
		case <-deadline:
			t.Fatal("the sentinel connection was not accepted")
		}
	}
}

func (f *fakeServer) lastRequest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return ""
	}
	return f.requests[len(f.requests)-1]
}

// command returns an `upgrade args...` command bounded by testTimeout.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, binPath, args...)
}
