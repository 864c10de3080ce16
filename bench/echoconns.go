package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-upgrade/upgrade"
)

// Idle echo/1 connections (over HTTP/2: streams): what an idle switched
// connection or stream holds in the server, just opened and after it has
// carried traffic, for the library over HTTP/1.1 and HTTP/2 and for the
// compact server (h2-compact), the least a server built on net/http's
// HTTP/2 server can hold.

// echoMessage is what each connection echoes once.
var echoMessage = []byte("sixteen bytes...")

// echoOffer is the protocol the connections switch to.
var echoOffer = upgrade.Protocol{Name: "echo", Version: "1"}

// compactHandler is the compact server: an extended CONNECT handler on
// net/http's HTTP/2 server, without the library, that answers 200,
// flushes, and echoes on the handler's goroutine, reading r.Body and
// writing and flushing w.
func compactHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect || r.Header.Get(":protocol") != echoOffer.String() {
		http.Error(w, "an extended CONNECT for echo/1 only", http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	defer track()()
	buf := make([]byte, readBufSize)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil || rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// serveEcho is the library's echo/1 handler: the compact server's loop on
// the switched Conn.
func serveEcho(c *upgrade.Conn) {
	c.Request = nil // as serveUpgrade: nothing of the request is needed
	defer track()()
	buf := make([]byte, readBufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A Transport is how echo connections reach a server: HTTP/1.1 Upgrades, a
// TCP connection each, or HTTP/2 extended CONNECT streams with prior
// knowledge, spread evenly over a number of connections.
type Transport struct {
	HTTP2 bool
	Conns int // HTTP/2 connections the streams share
}

func (t Transport) String() string {
	if t.HTTP2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// EchoConns are open echo/1 connections or streams.
type EchoConns struct {
	conns []*upgrade.Conn
	trs   []*upgrade.HTTP2Transport
}

// OpenEchoConns opens k echo/1 connections (streams over HTTP/2) to addr
// over t, conc at a time. On error those opened so far are closed.
func OpenEchoConns(addr string, t Transport, k, conc int) (*EchoConns, error) {
	s := &EchoConns{conns: make([]*upgrade.Conn, k)}
	dialers := []upgrade.Dialer{{Proxy: noProxy, HandshakeTimeout: 20 * time.Second}}
	if t.HTTP2 {
		dialers = dialers[:0]
		for range max(t.Conns, 1) {
			tr := &upgrade.HTTP2Transport{UnencryptedHTTP2: true}
			s.trs = append(s.trs, tr)
			dialers = append(dialers, upgrade.Dialer{Proxy: noProxy, HandshakeTimeout: 20 * time.Second, HTTP2: tr})
		}
	}
	err := parallel(k, conc, func(i int) error {
		// Stream i goes on connection i mod Conns: each gets k/Conns
		// streams.
		d := dialers[i%len(dialers)]
		c, err := d.Dial(context.Background(), "http://"+addr+"/echo", echoOffer)
		if err != nil {
			return err
		}
		if (c.Request.ProtoMajor == 2) != t.HTTP2 {
			c.Close()
			return fmt.Errorf("switched over HTTP/%d, want %v", c.Request.ProtoMajor, t)
		}
		s.conns[i] = c
		return nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Echo sends echoMessage on every connection, conc at a time, and checks that
// it comes back.
func (s *EchoConns) Echo(conc int) error {
	return parallel(len(s.conns), conc, func(i int) error { return echoOnce(s.conns[i]) })
}

func echoOnce(c *upgrade.Conn) error {
	buf := make([]byte, len(echoMessage))
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(echoMessage); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, echoMessage) {
		return fmt.Errorf("echo %q, want %q", buf, echoMessage)
	}
	return c.SetDeadline(time.Time{})
}

// Close closes every connection or stream, and the HTTP/2 connections.
func (s *EchoConns) Close() {
	for _, c := range s.conns {
		if c != nil {
			c.Close()
		}
	}
	for _, tr := range s.trs {
		tr.CloseIdleConnections()
	}
}

// runEchoes opens n echo/1 connections over t, echoes once on each and closes
// them: the warm-up of a held round.
func runEchoes(t Transport) func(addr string, n, conc int) error {
	return func(addr string, n, conc int) error {
		s, err := OpenEchoConns(addr, t, n, conc)
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Echo(conc)
	}
}

// HeldEchoConns is the server memory of idle echo/1 connections, just opened
// and after one echo each.
type HeldEchoConns struct {
	Opened, Echoed Held
}

// HoldEchoConns measures, in a fresh server process for implementation
// name (speaking HTTP/2 too if t.HTTP2), the memory k idle echo/1 connections
// over t hold: just opened, then after one echo each. Both are HeapInuse
// and StackInuse after two GCs, against a baseline taken after a warm-up.
func HoldEchoConns(name string, t Transport, k, conc int) (HeldEchoConns, error) {
	start := StartChild
	if t.HTTP2 {
		start = StartH2Child
	}
	c, err := start(name)
	if err != nil {
		return HeldEchoConns{}, err
	}
	defer c.Close()
	base, err := c.baseline(runEchoes(t))
	if err != nil {
		return HeldEchoConns{}, err
	}
	s, err := OpenEchoConns(c.Addr, t, k, conc)
	if err != nil {
		return HeldEchoConns{}, fmt.Errorf("%s over %v: opening %d echo/1 connections: %w", name, t, k, err)
	}
	defer s.Close()
	var h HeldEchoConns
	if h.Opened, err = c.held(base, k); err != nil {
		return HeldEchoConns{}, err
	}
	if err := s.Echo(conc); err != nil {
		return HeldEchoConns{}, fmt.Errorf("%s over %v: echo: %w", name, t, err)
	}
	if h.Echoed, err = c.held(base, k); err != nil {
		return HeldEchoConns{}, err
	}
	s.Close()
	if _, err := c.Do("wait " + strconv.Itoa(warm+k)); err != nil {
		return HeldEchoConns{}, err
	}
	return h, nil
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }
