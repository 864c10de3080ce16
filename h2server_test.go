package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	// net/http's HTTP/2 server advertises and serves extended CONNECT only
	// with this package initialized before it.
	_ "github.com/go-upgrade/upgrade/extconnect"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Server is a net/http server on 127.0.0.1 speaking HTTP/2, over TLS
// (ALPN h2 or http/1.1) or cleartext (prior knowledge, or HTTP/1.1), with
// RFC 8441 enabled. An extended CONNECT is answered as its :protocol says
// (see extended); an HTTP/1.1 request goes to an upgrade.Server echoing
// echo/1 and echo/2.
type h2Server struct {
	ts      *httptest.Server
	url     string
	pool    *x509.CertPool // trusts the server's certificate
	up      *Server
	accepts atomic.Int32 // TCP connections accepted
	h1      atomic.Int32 // HTTP/1.1 requests served
	seen    chan seenRequest
	release chan struct{} // "slow" answers once it is closed
	ended   chan error    // "hold" reports how its read of the stream ended
}

// seenRequest is an extended CONNECT as the handler saw it.
type seenRequest struct {
	proto, method, protocol, target, host string
	header                                http.Header
}

func newH2Server(t testing.TB, secure bool) *h2Server {
	t.Helper()
	return newTestServer(t, secure, true)
}

// newH1Server is newH2Server without HTTP/2: over TLS, ALPN picks
// http/1.1.
func newH1Server(t testing.TB, secure bool) *h2Server {
	t.Helper()
	return newTestServer(t, secure, false)
}

func newTestServer(t testing.TB, secure, h2 bool) *h2Server {
	t.Helper()
	s := &h2Server{
		up:      echoServer("echo/1", "echo/2"),
		seen:    make(chan seenRequest, 64),
		release: make(chan struct{}),
		ended:   make(chan error, 8),
	}
	s.ts = httptest.NewUnstartedServer(s)
	s.ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepts.Add(1)
		}
	}
	switch {
	case secure:
		s.ts.EnableHTTP2 = h2
		s.ts.StartTLS()
		s.pool = x509.NewCertPool()
		s.pool.AddCert(s.ts.Certificate())
	case h2:
		s.ts.Config.Protocols = new(http.Protocols)
		s.ts.Config.Protocols.SetHTTP1(true)
		s.ts.Config.Protocols.SetUnencryptedHTTP2(true)
		s.ts.Start()
	default:
		s.ts.Start()
	}
	s.url = s.ts.URL
	t.Cleanup(func() {
		s.ts.Close()
		s.up.Close()
	})
	return s
}

// dialer returns a Dialer for s using tr.
func (s *h2Server) dialer(tr *HTTP2Transport) Dialer {
	return Dialer{
		Proxy:            noProxy,
		TLSClientConfig:  &tls.Config{RootCAs: s.pool},
		HandshakeTimeout: 5 * time.Second,
		HTTP2:            tr,
	}
}

// newTransport returns an HTTP2Transport whose connections are closed
// when the test ends (before the servers it made are).
func newTransport(t testing.TB) *HTTP2Transport {
	tr := &HTTP2Transport{UnencryptedHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func (s *h2Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && r.Method == http.MethodConnect && r.Header.Get(":protocol") != "" {
		select {
		case s.seen <- seenRequest{r.Proto, r.Method, r.Header.Get(":protocol"), r.RequestURI, r.Host, r.Header.Clone()}:
		default: // a benchmark: nobody looks
		}
		s.extended(w, r)
		return
	}
	s.h1.Add(1)
	s.up.ServeHTTP(w, r)
}

// extended answers an extended CONNECT to /http1 with 505 HTTP Version
// Not Supported, and others as their :protocol says:
//   - refuse/N: 403 with a body naming it;
//   - slow: 200 once s.release is closed;
//   - halfclose: 200, reads the stream to its end, then says how much it
//     read;
//   - hold: 200, reads until the stream fails, and reports how on s.ended
//     (or how the 200 failed);
//   - sink: 200, then never reads;
//   - flood: 200, then writes until the stream fails;
//   - anything else: 200, then echoes the stream, flushing each read.
func (s *h2Server) extended(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	p := r.Header.Get(":protocol")
	switch {
	case r.URL.Path == "/http1":
		http.Error(w, "upgrade over HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	case strings.HasPrefix(p, "refuse/"):
		http.Error(w, "no "+p+" here", http.StatusForbidden)
		return
	case p == "slow":
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	err := rc.Flush()
	if p == "hold" {
		// The client's reset may reach the server before the handler has
		// learnt that the 200 went out: Flush then fails instead.
		if err == nil {
			_, err = io.Copy(io.Discard, r.Body)
		}
		s.ended <- err
		return
	}
	if err != nil {
		return
	}
	switch p {
	case "halfclose":
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "[saw EOF after %d bytes, err=%v]", n, err)
	case "sink":
		<-r.Context().Done()
	case "flood":
		buf := make([]byte, 32<<10)
		for {
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
		}
	default:
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if rc.Flush() != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// nextSeen returns the next extended CONNECT the server saw.
func (s *h2Server) nextSeen(t *testing.T) seenRequest {
	t.Helper()
	select {
	case r := <-s.seen:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no extended CONNECT")
		return seenRequest{}
	}
}

// fakeH2Server is a frame-level server on 127.0.0.1: a connection that
// starts with the HTTP/2 preface (cleartext) or negotiates h2 (TLS) gets
// settings as the server's first SETTINGS frame, then each HEADERS frame
// is recorded and answered with :status 200, and DATA is echoed, END_STREAM
// included. Other connections are served HTTP/1.1 by an upgrade.Server
// echoing echo/1 (for GET and POST). It records, as events, what the
// client sent: "HEADERS", "END_STREAM" and "RST_STREAM <code>".
type fakeH2Server struct {
	rawServer
	url      string
	pool     *x509.CertPool
	settings []http2.Setting
	prefaces atomic.Int32 // connections that spoke HTTP/2
	headers  chan []hpack.HeaderField
	events   chan string
	h1       *http.Server
	h1ln     *chanListener
	up       *Server
}

func newFakeH2Server(t *testing.T, secure bool, settings ...http2.Setting) *fakeH2Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fs := &fakeH2Server{
		url:      "http://" + ln.Addr().String(),
		settings: settings,
		headers:  make(chan []hpack.HeaderField, 16),
		events:   make(chan string, 64),
		h1ln:     newChanListener(ln.Addr()),
		up:       new(Server),
	}
	fs.up.HandleRoute("echo/1", Route{Methods: []string{http.MethodGet, http.MethodPost}, Handler: HandlerFunc(echo)})
	fs.h1 = &http.Server{Handler: fs.up}
	if secure {
		cert := selfSignedIP(t, net.IPv4(127, 0, 0, 1))
		fs.pool = x509.NewCertPool()
		fs.pool.AddCert(cert.Leaf)
		fs.url = "https://" + ln.Addr().String()
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	}
	fs.wg.Add(1)
	go func() {
		defer fs.wg.Done()
		_ = fs.h1.Serve(fs.h1ln)
	}()
	fs.start(ln, fs.handle)
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeH2Server) dialer(tr *HTTP2Transport) Dialer {
	return Dialer{Proxy: noProxy, TLSClientConfig: &tls.Config{RootCAs: fs.pool}, HandshakeTimeout: 5 * time.Second, HTTP2: tr}
}

// handle serves c: HTTP/2 itself, HTTP/1.1 through fs.h1.
func (fs *fakeH2Server) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var r io.Reader = c
	h2 := false
	if tc, ok := c.(*tls.Conn); ok {
		if tc.Handshake() != nil {
			c.Close()
			return
		}
		h2 = tc.ConnectionState().NegotiatedProtocol == "h2"
	} else {
		br := bufio.NewReader(c)
		head, _ := br.Peek(len(http2.ClientPreface))
		h2 = string(head) == http2.ClientPreface
		r = br
		c = &peekedConn{Conn: c, r: br}
	}
	if !h2 {
		_ = c.SetDeadline(time.Time{})
		fs.h1ln.hand(c)
		return
	}
	defer c.Close()
	fs.serveH2(c, r)
}

// serveH2 speaks HTTP/2 on c, reading from r.
func (fs *fakeH2Server) serveH2(c net.Conn, r io.Reader) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fs.prefaces.Add(1)
	fr := http2.NewFramer(c, r)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings(fs.settings...) != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			fs.headers <- append([]hpack.HeaderField(nil), f.Fields...)
			fs.events <- "HEADERS"
			var block bytes.Buffer
			_ = hpack.NewEncoder(&block).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: block.Bytes(), EndHeaders: true})
		case *http2.DataFrame:
			if n := len(f.Data()); n > 0 {
				err = fr.WriteData(f.StreamID, false, f.Data())
				if err == nil {
					err = fr.WriteWindowUpdate(0, uint32(n))
				}
				if err == nil {
					err = fr.WriteWindowUpdate(f.StreamID, uint32(n))
				}
			}
			if err == nil && f.StreamEnded() {
				fs.events <- "END_STREAM"
				err = fr.WriteData(f.StreamID, true, nil)
			}
		case *http2.RSTStreamFrame:
			fs.events <- "RST_STREAM " + f.ErrCode.String()
		}
		if err != nil {
			return
		}
	}
}

// event returns the next event.
func (fs *fakeH2Server) event(t *testing.T) string {
	t.Helper()
	select {
	case e := <-fs.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no frame from the client")
		return ""
	}
}

func (fs *fakeH2Server) close() {
	fs.h1.Close()
	fs.rawServer.close()
}

// chanListener is a listener whose connections come from a channel.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// hand gives c to the server, or closes it if the listener is closed.
func (l *chanListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn is a connection whose first bytes were peeked with r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// hangListener accepts connections and never answers on them, until it is
// closed.
type hangListener struct {
	net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newHangListener(t *testing.T) *hangListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &hangListener{Listener: ln}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.wg.Wait()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
	})
	return h
}

// ctxTimeout returns a context bounding a test step.
func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
