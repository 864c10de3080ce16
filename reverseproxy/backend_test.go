package reverseproxy

// The backends of the tests, scripted byte by byte, and the Proxy under
// test in front of them.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/go-upgrade/upgrade/internal/wskey"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- a scripted backend ----

// backend is a raw TCP server on 127.0.0.1 whose every connection is
// handled by a script that reads the request and answers byte by byte.
type backend struct {
	t    *testing.T
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   []net.Conn
	reqs chan *http.Request // every request read, in order
}

// startBackend serves script on every connection: it gets the request
// already read (its header; the body is left in br) and owns nc until it
// returns. Cleanup closes the connections and waits for the scripts.
func startBackend(t *testing.T, script func(nc net.Conn, br *bufio.Reader, req *http.Request)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &backend{t: t, ln: ln, reqs: make(chan *http.Request, 512)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs = append(b.cs, nc)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(nc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				b.reqs <- req
				script(nc, br, req)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.cs {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) url() *url.URL { return &url.URL{Scheme: "http", Host: b.ln.Addr().String()} }

// request returns the next request the backend read.
func (b *backend) request() *http.Request {
	b.t.Helper()
	select {
	case r := <-b.reqs:
		return r
	case <-time.After(10 * time.Second):
		b.t.Fatal("the backend got no request")
		return nil
	}
}

// backend101 writes a 101 naming proto with extra header lines and then
// the bytes of after, all in one write.
func backend101(nc net.Conn, proto string, extra []string, after string) error {
	s := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	_, err := io.WriteString(nc, s+"\r\n"+after)
	return err
}

// echoScript switches to the first offer and echoes until EOF, then
// half-closes.
func echoScript(nc net.Conn, br *bufio.Reader, req *http.Request) {
	proto, _, _ := strings.Cut(req.Header.Get("Upgrade"), ",")
	if backend101(nc, strings.TrimSpace(proto), nil, "") != nil {
		return
	}
	// Through a buffer: io.Copy between the sockets would splice, and
	// park a pipe in this process, where the proxy's are counted.
	_, _ = io.Copy(struct{ io.Writer }{nc}, struct{ io.Reader }{br})
	_ = nc.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, nc)
}

// ---- the proxy under test ----

// startProxy serves h (p itself if nil) on 127.0.0.1; cleanup closes the
// relayed pairs and waits until every one has ended.
func startProxy(t *testing.T, p *Proxy, h http.Handler) string {
	t.Helper()
	if h == nil {
		h = p
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		assert.NoError(t, p.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx), "relays must end once their connections close; still active: %v", p.ActiveConns())
	})
	return ts.Listener.Addr().String()
}

func proxyTo(b *backend) *Proxy { return New(b.url()) }

// switched sends req on a new connection to addr and expects a 101. It
// returns the connection, for half-closes and resets, the reader to read
// it with, and the 101's head.
func switched(t *testing.T, addr, req string) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(req)
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 Switching Protocols\r\n"), head)
	return c.NC, c.BR, head
}

// refused sends req on a new connection to addr, reads the whole
// response, and checks that the proxy closes the connection after it.
func refused(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(req)
	resp := c.Response(http.MethodGet)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection is closed after a refused upgrade")
	return resp
}

// checkEcho sends msg on a switched connection to an echo and checks that
// it comes back.
func checkEcho(t *testing.T, nc net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	roundTrip(t, struct {
		io.Reader
		io.Writer
	}{br, nc}, msg)
}

func readFull(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	require.NoError(t, err)
	return string(b)
}

// switchingBackend answers a request carrying Upgrade with a 101 to its
// first offer and echoes, and any other request with 200 "plain": a
// backend that switches whenever it is asked to.
func switchingBackend(nc net.Conn, br *bufio.Reader, req *http.Request) {
	if req.Header.Get("Upgrade") != "" {
		echoScript(nc, br, req)
		return
	}
	_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain")
}

// startH2Proxy serves p with HTTP/1.1 and HTTP/2 with prior knowledge on
// 127.0.0.1; cleanup closes the relayed pairs and waits for them.
func startH2Proxy(t *testing.T, p *Proxy) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(p)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = &protocols
	ts.Start()
	t.Cleanup(func() {
		assert.NoError(t, p.Close())
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx), "still active: %v", p.ActiveConns())
	})
	return ts.Listener.Addr().String()
}

// wsBackend answers an RFC 6455 opening handshake with a correct accept
// value (or a wrong one), the subprotocol asked for, and then the bytes of
// greeting; it echoes until EOF and half-closes.
func wsBackend(wrongAccept bool, greeting string) func(net.Conn, *bufio.Reader, *http.Request) {
	return func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		accept := wskey.AcceptString(req.Header.Get("Sec-WebSocket-Key"))
		if wrongAccept {
			accept = wskey.AcceptString("something else")
		}
		extra := []string{"Sec-WebSocket-Accept: " + accept}
		if p := req.Header.Get("Sec-WebSocket-Protocol"); p != "" {
			sub, _, _ := strings.Cut(p, ",")
			extra = append(extra, "Sec-WebSocket-Protocol: "+strings.TrimSpace(sub))
		}
		if backend101(nc, "websocket", extra, greeting) != nil || wrongAccept {
			return
		}
		_, _ = io.Copy(struct{ io.Writer }{nc}, struct{ io.Reader }{br})
		_ = nc.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, nc)
	}
}

// streamEnd waits up to d for the server to end stream id, and returns
// the frame that ended it ("" if none did): "END_STREAM" or
// "RST_STREAM <code>".
func streamEnd(c *wiretest.H2Conn, id uint32, d time.Duration) string {
	prefix := " stream=" + strconv.FormatUint(uint64(id), 10)
	deadline := time.Now().Add(d)
	for {
		for _, f := range c.Log() {
			if !strings.Contains(f+" ", prefix+" ") {
				continue
			}
			switch {
			case strings.HasPrefix(f, "RST_STREAM"):
				return "RST_STREAM " + f[strings.LastIndexByte(f, ' ')+1:]
			case strings.HasSuffix(f, " END_STREAM"):
				return "END_STREAM"
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitProxyActive(t *testing.T, p *Proxy, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		total := 0
		for _, v := range p.ActiveConns() {
			total += v
		}
		return total == n
	}, 10*time.Second, 2*time.Millisecond, "active: %v, want %d", p.ActiveConns(), n)
}

func waitProxyIdle(t *testing.T, p *Proxy) {
	t.Helper()
	require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 10*time.Second, 2*time.Millisecond,
		"pairs still active: %v", p.ActiveConns())
}
