package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-upgrade/upgrade/http3"
	"github.com/quic-go/quic-go"
	qhttp3 "github.com/quic-go/quic-go/http3"
)

// http3Endpoint is the HTTP/3 side of serve -http3 or proxy -http3: a
// quic-go server on UDP, on the port of the TCP listener.
type http3Endpoint struct {
	srv *qhttp3.Server
	pc  net.PacketConn
}

// listenHTTP3 listens on UDP at tcpAddr, the TCP listener's address, and
// returns the HTTP/3 server of h there, with the TCP server's TLS
// certificates. quic-go advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, and
// http3.Handler presents its extended CONNECTs to h.
func listenHTTP3(tcpAddr net.Addr, tlsConf *tls.Config, h http.Handler, log *slog.Logger) (*http3Endpoint, error) {
	pc, err := net.ListenPacket("udp", tcpAddr.String())
	if err != nil {
		return nil, fmt.Errorf("cannot listen on UDP %s for HTTP/3: %w", tcpAddr, listenReason(err))
	}
	srv := &qhttp3.Server{
		TLSConfig: &tls.Config{Certificates: tlsConf.Certificates},
		Handler:   http3.Handler(h),
		// Switched streams may idle as long as their protocol allows:
		// keep-alives hold their connection open; a connection without
		// streams goes after two minutes, as the TCP server's do.
		QUICConfig:  &quic.Config{KeepAlivePeriod: 15 * time.Second},
		IdleTimeout: 2 * time.Minute,
		Logger:      log,
	}
	return &http3Endpoint{srv: srv, pc: pc}, nil
}

// serve serves HTTP/3 until Shutdown or Close.
func (e *http3Endpoint) serve() error { return e.srv.Serve(e.pc) }

// port is the UDP port served.
func (e *http3Endpoint) port() int { return e.pc.LocalAddr().(*net.UDPAddr).Port }

// altSvc returns h with every response carrying Alt-Svc: h3=":PORT", so
// that browsers learn they may use HTTP/3 (RFC 7838, RFC 9114 §3.1.1).
func (e *http3Endpoint) altSvc(h http.Handler) http.Handler {
	v := `h3=":` + strconv.Itoa(e.port()) + `"; ma=86400`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", v)
		h.ServeHTTP(w, r)
	})
}
