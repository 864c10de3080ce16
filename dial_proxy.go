package upgrade

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
)

// proxyFor returns the proxy to reach t through, or nil, and the address
// to dial: the proxy's, or t's.
func (d *Dialer) proxyFor(req *http.Request, t dialTarget) (*url.URL, string, error) {
	proxyFn := d.Proxy
	if proxyFn == nil {
		proxyFn = http.ProxyFromEnvironment
	}
	proxyURL, err := proxyFn(req)
	if err != nil {
		return nil, "", fmt.Errorf("finding the proxy: %w", err)
	}
	if proxyURL == nil {
		return nil, t.addr, nil
	}
	if proxyURL.Scheme != "http" && proxyURL.Scheme != "https" {
		return nil, "", fmt.Errorf("unsupported proxy scheme %q (want http or https)", proxyURL.Scheme)
	}
	addr := proxyURL.Host
	if proxyURL.Port() == "" {
		port := "80"
		if proxyURL.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(proxyURL.Hostname(), port)
	}
	return proxyURL, addr, nil
}

// tunnel opens a CONNECT tunnel to t through the proxy at addr, connected
// on raw (over TLS to an https proxy), and returns the connection that
// carries the tunnel.
func (d *Dialer) tunnel(raw net.Conn, br *bufio.Reader, lr *limitReader, t dialTarget, proxyURL *url.URL, addr string) (net.Conn, error) {
	conn := raw
	if proxyURL.Scheme == "https" {
		pc := tls.Client(raw, d.tlsConfig(proxyURL.Hostname(), http11))
		if err := pc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with proxy %s: %w", addr, err)
		}
		conn, lr.r = pc, pc
	}
	if err := connectTunnel(conn, br, t.authority, proxyURL); err != nil {
		return nil, err
	}
	if t.secure && br.Buffered() > 0 {
		// Bytes the server sent through the tunnel right after the
		// CONNECT response belong to the TLS stream.
		ahead, _ := br.Peek(br.Buffered())
		conn = &Conn{nc: conn, rbuf: append([]byte(nil), ahead...)}
	}
	return conn, nil
}

// connectTunnel asks the proxy on conn to open a tunnel to addr and reads
// its answer from br.
func connectTunnel(conn net.Conn, br *bufio.Reader, addr string, proxyURL *url.URL) error {
	b := make([]byte, 0, 128)
	b = append(b, "CONNECT "...)
	b = append(b, addr...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, addr...)
	b = append(b, "\r\n"...)
	if u := proxyURL.User; u != nil {
		pw, _ := u.Password()
		b = append(b, "Proxy-Authorization: "...)
		b = append(b, basicAuth(u.Username(), pw)...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if _, err := conn.Write(b); err != nil {
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
		re.Proxy = true
		return re
	}
}
