package upgrade

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// setProxy sets the proxy to reach t through, if any, and the address
// to dial: the proxy's, or t's.
func (d *Dialer) setProxy(req *http.Request, t *dialTarget) error {
	proxyFn := d.Proxy
	if proxyFn == nil {
		proxyFn = http.ProxyFromEnvironment
	}
	u, err := proxyFn(req)
	if err != nil {
		return fmt.Errorf("finding the proxy: %w", err)
	}
	t.proxy, t.dial = u, t.addr
	if u == nil {
		return nil
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("unsupported proxy scheme %q (want http or https)", u.Scheme)
	}
	t.dial = u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		t.dial = net.JoinHostPort(u.Hostname(), port)
	}
	return nil
}

// tunnel opens a CONNECT tunnel to t through its proxy, connected on raw
// (over TLS to an https proxy), and returns the connection that carries
// the tunnel.
func (d *Dialer) tunnel(raw net.Conn, br *bufio.Reader, lr *limitReader, t dialTarget) (net.Conn, error) {
	conn := raw
	if t.proxy.Scheme == "https" {
		pc := tls.Client(raw, d.tlsConfig(t.proxy.Hostname(), http11))
		if err := pc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with proxy %s: %w", t.dial, err)
		}
		conn, lr.r = pc, pc
	}
	if err := connectTunnel(conn, br, t.authority, t.proxy); err != nil {
		return nil, err
	}
	if ahead := buffered(br); t.secure && ahead != nil {
		// Bytes the server sent through the tunnel right after the
		// CONNECT response belong to the TLS stream.
		conn = &Conn{nc: conn, rbuf: ahead}
	}
	return conn, nil
}

// connectTunnel asks the proxy on conn to open a tunnel to addr and reads
// its answer from br.
func connectTunnel(conn net.Conn, br *bufio.Reader, addr string, proxyURL *url.URL) error {
	head := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := proxyURL.User; u != nil {
		pw, _ := u.Password()
		head += "Proxy-Authorization: " + basicAuth(u.Username(), pw) + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		return fmt.Errorf("writing CONNECT to proxy %s: %w", proxyURL.Redacted(), err)
	}
	creq := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	for interim := 0; ; interim++ {
		resp, err := http.ReadResponse(br, creq)
		if err != nil {
			return fmt.Errorf("reading the proxy's CONNECT response: %w", responseReadError(err))
		}
		switch {
		case resp.StatusCode/100 == 2:
			// The tunnel is open: no body follows (RFC 9110 §9.3.6).
			return nil
		case resp.StatusCode/100 == 1 && resp.StatusCode != http.StatusSwitchingProtocols:
			if interim >= maxInterimResponses {
				return fmt.Errorf("proxy sent more than %d interim responses", maxInterimResponses)
			}
			continue
		}
		re := newResponseError(resp)
		re.Body, re.Proxy = excerpt(resp.Body), true
		return re
	}
}
