package bench

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-upgrade/upgrade/http3"
	"github.com/go-upgrade/upgrade/internal/selfsigned"
	qhttp3 "github.com/quic-go/quic-go/http3"
)

// H3Env, set in a child's environment with H2Env, makes it serve HTTP/3
// too, on UDP at the port of its TCP listener, with a self-signed
// certificate: one server process switches the same route by HTTP/1.1
// Upgrade, HTTP/2 extended CONNECT and HTTP/3 extended CONNECT.
const H3Env = "UPGRADE_BENCH_H3"

// StartH3Child starts a server process for implementation name that
// speaks HTTP/1.1 and HTTP/2 with prior knowledge on TCP and HTTP/3 on UDP.
func StartH3Child(name string) (*Child, error) {
	return startChildEnv(name, []string{H2Env + "=1", H3Env + "=1"})
}

// serveH3 serves h over HTTP/3 on UDP at addr, the TCP listener's
// address, and returns the server to close.
func serveH3(addr string, h http.Handler) (io.Closer, error) {
	cert, err := selfsigned.Cert("bench (self-signed)")
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	srv := &qhttp3.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Handler: http3.Handler(h)}
	go func() { _ = srv.Serve(pc) }()
	return closers{srv, pc}, nil
}

type closers []io.Closer

func (cs closers) Close() error {
	for _, c := range cs {
		c.Close()
	}
	return nil
}

// h3Transport returns an HTTP/3 client that accepts the child's
// certificate; its connections carry up to 100 streams each (the
// server's default limit).
func h3Transport() *http3.Transport {
	return &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
}

// RunH3Handshakes performs n WebSocket switches as HTTP/3 streams at
// concurrency conc, on the few connections one client needs for them:
// open, read the frame, FIN, read to the end.
func RunH3Handshakes(addr string, n, conc int) error {
	open, closeClient := streamOpener("HTTP/3", addr)
	defer closeClient()
	return parallel(n, conc, func(int) error {
		st, err := open()
		if err == nil {
			err = st.end()
		}
		return err
	})
}

// H3Handshakes is Handshakes with HTTP/3 streams (the child must have been
// started with StartH3Child).
func (c *Child) H3Handshakes(n, conc int) (Round, error) {
	return c.measure(n, func() error {
		if err := RunH3Handshakes(c.Addr, n, conc); err != nil {
			return fmt.Errorf("%s over HTTP/3: %w", c.Name, err)
		}
		return nil
	})
}

// Transports names how a WebSocket is switched, in table order.
var Transports = []string{"HTTP/1.1", "HTTP/2", "HTTP/3"}

// HoldAll measures, in one fresh server process that speaks all three
// (StartH3Child), the memory k idle WebSockets hold when switched over
// each transport in turn: k HTTP/1.1 connections, then k HTTP/2 streams,
// then k HTTP/3 streams, each against a baseline taken once the previous
// ones were closed and their handlers had returned.
func HoldAll(name string, k, conc int) (map[string]Held, error) {
	c, err := StartH3Child(name)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := RunHandshakes(c.Addr, warm, 4); err != nil {
		return nil, err
	}
	if err := RunH2Handshakes(c.Addr, warm, 4); err != nil {
		return nil, err
	}
	if err := RunH3Handshakes(c.Addr, warm, 4); err != nil {
		return nil, err
	}
	total := int64(3 * warm)
	out := make(map[string]Held, len(Transports))
	for _, tp := range Transports {
		if _, err := c.Do("wait " + strconv.FormatInt(total, 10)); err != nil {
			return nil, err
		}
		base, err := c.Do("mem 0")
		if err != nil {
			return nil, err
		}
		closeAll, err := holdOver(tp, c.Addr, k, conc)
		if err != nil {
			return nil, fmt.Errorf("%s over %s: %w", name, tp, err)
		}
		h, err := c.held(base, k)
		closeAll()
		if err != nil {
			return nil, err
		}
		out[tp] = h
		total += int64(k)
	}
	return out, nil
}

// holdOver opens k idle WebSockets to addr over tp and returns the
// function that closes them and their transport.
func holdOver(tp, addr string, k, conc int) (func(), error) {
	var closers []func()
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	switch tp {
	case "HTTP/1.1":
		conns, err := OpenConns(addr, k, conc)
		for _, nc := range conns {
			closers = append(closers, func() { nc.Close() })
		}
		if err != nil {
			closeAll()
			return nil, err
		}
		return closeAll, nil
	}
	open, closeClient := streamOpener(tp, addr)
	streams := make([]*h2Stream, k)
	err := parallel(k, conc, func(i int) error {
		st, err := open()
		streams[i] = st
		return err
	})
	for _, st := range streams {
		if st != nil {
			closers = append(closers, st.close)
		}
	}
	closers = append(closers, closeClient) // after its streams
	if err != nil {
		closeAll()
		return nil, err
	}
	return closeAll, nil
}

// SwitchTimes returns the client's wall time of n WebSocket switches in a
// row over tp to addr, each from the request to the server's first frame:
// HTTP/1.1 on a new TCP connection each, HTTP/2 and HTTP/3 on a warm
// connection.
func SwitchTimes(tp, addr string, n int) ([]time.Duration, error) {
	times := make([]time.Duration, 0, n)
	switch tp {
	case "HTTP/1.1":
		req, buf := request(addr), make([]byte, 512)
		for range n {
			start := time.Now()
			nc, err := Open(addr, req, buf)
			if err != nil {
				return nil, err
			}
			times = append(times, time.Since(start))
			nc.Close()
		}
		return times, nil
	}
	open, closeClient := streamOpener(tp, addr)
	defer closeClient()
	st, err := open() // warms the connection up
	if err != nil {
		return nil, err
	}
	defer st.close()
	for range n {
		start := time.Now()
		s, err := open()
		if err != nil {
			return nil, err
		}
		times = append(times, time.Since(start))
		if err := s.end(); err != nil {
			return nil, err
		}
	}
	return times, nil
}
