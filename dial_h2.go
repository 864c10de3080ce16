package upgrade

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
)

// h2Protos is offered in ALPN by a Dialer that can switch over HTTP/2.
var h2Protos = []string{"h2", "http/1.1"}

// errUseHTTP1 says the server cannot switch over HTTP/2.
var errUseHTTP1 = errors.New("use HTTP/1.1")

// prepareHTTP2 builds the extended CONNECTs Dial sends over HTTP/2, one
// per offer, calling Prepare with each, and returns them with the key of
// the connections they may use. It returns no requests if HTTP/2 does not
// apply: with a Body, for a cleartext URL without UnencryptedHTTP2, or
// for a server remembered as unable to switch over HTTP/2.
func (d *Dialer) prepareHTTP2(ctx context.Context, req *http.Request, t dialTarget, offers []Protocol) ([]*http.Request, h2Key, error) {
	if len(d.Body) > 0 || !t.secure && !d.HTTP2.UnencryptedHTTP2 {
		return nil, h2Key{}, nil
	}
	key := d.h2Key(t)
	d.HTTP2.mu.Lock()
	useHTTP1 := d.HTTP2.useHTTP1Locked(key)
	d.HTTP2.mu.Unlock()
	if useHTTP1 {
		return nil, h2Key{}, nil
	}
	xreqs, err := d.extendedConnects(ctx, req.URL, t, offers, 2)
	return xreqs, key, err
}

// h2Key identifies the connections a Dial to t may share.
func (d *Dialer) h2Key(t dialTarget) h2Key {
	k := h2Key{scheme: "http", addr: t.addr, tls: d.TLSClientConfig, maxHeader: math.MaxUint32}
	if n := d.maxHeaderBytes(); n < math.MaxUint32 {
		k.maxHeader = uint32(n)
	}
	if t.secure {
		k.scheme, k.serverName = "https", t.serverName
	}
	if t.proxy != nil {
		k.proxy = t.proxy.String()
	}
	return k
}

// extendedConnects builds the extended CONNECTs (RFC 8441 §4, RFC 9220)
// of HTTP/major, one per offer, in its :protocol; :scheme, :path and
// :authority come from the URL (and a Host field); the Dialer's Header is
// sent without the fields HTTP/2 and HTTP/3 forbid (RFC 9113 §8.2.2,
// RFC 9114 §4.2). Prepare is called with each, and what it leaves is
// checked.
func (d *Dialer) extendedConnects(ctx context.Context, u *url.URL, t dialTarget, offers []Protocol, major int) ([]*http.Request, error) {
	reqs := make([]*http.Request, len(offers))
	for i, o := range offers {
		h := d.header(u)
		dropConnectionFields(h)
		protocol := []string{o.String()}
		h[":protocol"] = protocol
		req := &http.Request{
			Method:     http.MethodConnect,
			URL:        u,
			Proto:      "HTTP/" + strconv.Itoa(major) + ".0",
			ProtoMajor: major,
			Header:     h,
			Host:       t.host,
		}
		req = req.WithContext(ctx)
		if d.Prepare != nil {
			if err := d.Prepare(req); err != nil {
				return nil, fmt.Errorf("preparing the request: %w", err)
			}
		}
		req.Header[":protocol"] = protocol
		if err := checkH2Fields(req); err != nil {
			return nil, err
		}
		reqs[i] = req
	}
	return reqs, nil
}

// dropConnectionFields removes from h the connection-specific fields HTTP/2
// forbids (RFC 9113 §8.2.2): Connection and the fields it names,
// Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade, and TE other
// than "trailers".
func dropConnectionFields(h http.Header) {
	for k, vs := range h {
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Connection":
			for o := range httplist.Elements(vs) {
				for k2 := range h {
					if ascii.EqualFold(k2, o) {
						delete(h, k2)
					}
				}
			}
			delete(h, k)
		case "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			delete(h, k)
		case "Te":
			if !onlyTrailers(vs) {
				delete(h, k)
			}
		}
	}
}

// onlyTrailers reports whether a TE field holds "trailers" only.
func onlyTrailers(vs []string) bool {
	for e := range httplist.Elements(vs) {
		if !ascii.EqualFold(e, "trailers") {
			return false
		}
	}
	return true
}

// checkH2Fields checks the header fields of an extended CONNECT as Prepare
// left it; a Host field replaces req.Host.
func checkH2Fields(req *http.Request) error {
	host, hostField := req.Host, false
	for k, vs := range req.Header {
		if k == ":protocol" {
			continue
		}
		if err := checkField(k, vs); err != nil {
			return err
		}
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade",
			"Content-Length", "Expect":
			return fmt.Errorf("header field %s cannot be sent in an HTTP/%d extended CONNECT", k, req.ProtoMajor)
		case "Te":
			if !onlyTrailers(vs) {
				return fmt.Errorf("header field %s other than \"trailers\" cannot be sent in HTTP/%d", k, req.ProtoMajor)
			}
		case "Host":
			if hostField || len(vs) != 1 {
				return errors.New("more than one Host header field")
			}
			host, hostField = vs[0], true
			delete(req.Header, k)
		}
	}
	var err error
	req.Host, err = checkHost(host)
	return err
}

// handshakeHTTP2 sends the extended CONNECTs xreqs in turn on a shared
// connection for key until the server accepts one; the last refusal is
// the error. It upgrades over HTTP/1.1 instead when the server cannot
// switch over HTTP/2 (on the same connection if TLS negotiated
// http/1.1), or answers 505 HTTP Version Not Supported.
func (d *Dialer) handshakeHTTP2(ctx context.Context, deadline time.Time, req *http.Request, t dialTarget, key h2Key, wire []byte, offers []Protocol, xreqs []*http.Request) (*Conn, error) {
	hctx, cancel := withDeadline(ctx, deadline) // bounds every wait
	defer cancel()
	// DialResponse keeps the last refusal's stream open: any other
	// outcome closes it.
	var refused *ResponseError
	for i, xreq := range xreqs {
		c, re, sc, err := d.extendedConnect(ctx, hctx, deadline, t, key, xreq, offers[i])
		if re != nil && re.StatusCode != http.StatusHTTPVersionNotSupported {
			refused.closeLive()
			refused = re
			continue
		}
		refused.closeLive()
		switch {
		case sc != nil:
			return d.switchHTTP1(sc, req, wire, offers)
		case re != nil:
			// A 505 is about the version, not the protocol (an
			// upgrade.Server without RFC 8441 answers so).
			re.closeLive()
			return d.handshakeHTTP1(ctx, deadline, req, t, wire, offers)
		case errors.Is(err, errUseHTTP1):
			return d.handshakeHTTP1(ctx, deadline, req, t, wire, offers)
		case err != nil:
			return nil, err
		}
		return c, nil
	}
	return nil, refused
}

// extendedConnect sends xreq on a stream: it returns the Conn, the
// server's refusal, or the connection it dialed if TLS negotiated
// HTTP/1.1. A stream the server did not process (GOAWAY, REFUSED_STREAM)
// is sent once more, and so is one whose pooled connection fails before
// any answer, as browsers do: it may have died while idle.
func (d *Dialer) extendedConnect(ctx, hctx context.Context, deadline time.Time, t dialTarget, key h2Key, xreq *http.Request, offer Protocol) (*Conn, *ResponseError, *serverConn, error) {
	for retried := false; ; retried = true {
		hc, reused, sc, err := d.h2Conn(ctx, hctx, deadline, t, key)
		if sc != nil || err != nil {
			return nil, nil, sc, err
		}
		c, re, err := d.openStream(hctx, hc, xreq, t, offer)
		if err == nil {
			return c, re, nil, nil
		}
		retry := errors.Is(err, errStreamUnprocessed) || reused && errors.Is(err, errH2ConnLost)
		if retry && !retried && hctx.Err() == nil {
			continue
		}
		return nil, nil, nil, fmt.Errorf("HTTP/2 extended CONNECT: %w", err)
	}
}

// h2Conn returns a connection with a stream reserved: a pooled one, one
// another Dial is opening, or one it opens; or the connection it dialed
// if TLS negotiated HTTP/1.1.
func (d *Dialer) h2Conn(ctx, hctx context.Context, deadline time.Time, t dialTarget, key h2Key) (hc *h2Conn, reused bool, sc *serverConn, err error) {
	tr := d.HTTP2
	for {
		c, wait, useHTTP1 := tr.get(key)
		switch {
		case useHTTP1:
			return nil, false, nil, errUseHTTP1
		case c != nil:
			return c, true, nil, nil
		case wait != nil:
			select {
			case <-wait:
				continue
			case <-hctx.Done():
				return nil, false, nil, hctx.Err()
			}
		}
		c, sc, err = d.dialHTTP2(ctx, hctx, deadline, t, key)
		tr.dialed(key, c, sc != nil || errors.Is(err, errUseHTTP1))
		return c, false, sc, err
	}
}

// dialHTTP2 opens a connection for key (TLS with ALPN, or cleartext with
// prior knowledge), starts HTTP/2 and reserves a stream once the server's
// SETTINGS enable extended CONNECT. If TLS negotiated HTTP/1.1, it returns
// the connection instead, still within the handshake's bounds. It returns
// errUseHTTP1 if the SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL, or
// if a cleartext server does not answer the preface with SETTINGS.
func (d *Dialer) dialHTTP2(ctx, hctx context.Context, deadline time.Time, t dialTarget, key h2Key) (*h2Conn, *serverConn, error) {
	sc, err := d.connect(ctx, deadline, t, h2Protos)
	if err != nil {
		return nil, nil, err
	}
	var tlsState *tls.ConnectionState
	if tc, ok := sc.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		tlsState = &st
	}
	if t.secure && tlsState.NegotiatedProtocol != "h2" {
		return nil, &sc, nil
	}
	nc := sc.conn
	if ahead := buffered(sc.br); ahead != nil && !t.secure {
		// Bytes read with a proxy's response (SETTINGS, say) are HTTP/2's.
		nc = &Conn{nc: nc, rbuf: ahead}
	}
	hc, err := d.HTTP2.newConn(key, nc, tlsState)
	if err != nil {
		sc.close()
		return nil, nil, fmt.Errorf("starting HTTP/2: %w", err)
	}
	// The handshake's bounds end the wait for a server that never sends
	// SETTINGS.
	select {
	case <-hc.settingsDone:
	case <-hctx.Done():
	}
	extConnect, serr := hc.settings()
	if serr != nil {
		sc.close()
	} else if err := sc.release(); err != nil {
		hc.close()
		return nil, nil, err
	}
	switch {
	case serr != nil && !t.secure && hctx.Err() == nil:
		// Prior knowledge, and the server did not answer the preface
		// with SETTINGS: it does not speak HTTP/2.
		return nil, nil, errUseHTTP1
	case serr != nil:
		return nil, nil, fmt.Errorf("starting HTTP/2: %w", serr)
	case hctx.Err() != nil:
		hc.close()
		return nil, nil, hctx.Err()
	case !extConnect:
		// HTTP/2, without RFC 8441.
		hc.close()
		return nil, nil, errUseHTTP1
	case !hc.reserve():
		hc.close()
		if _, err := hc.settings(); err != nil {
			return nil, nil, fmt.Errorf("starting HTTP/2: %w", err)
		}
		return nil, nil, errors.New("the HTTP/2 server allows no stream (SETTINGS_MAX_CONCURRENT_STREAMS 0)")
	}
	return hc, nil, nil
}

// openStream sends xreq on a stream reserved on hc and returns the Conn
// or the refusal of its answer.
func (d *Dialer) openStream(hctx context.Context, hc *h2Conn, xreq *http.Request, t dialTarget, offer Protocol) (*Conn, *ResponseError, error) {
	scheme := "http"
	if t.secure {
		scheme = "https"
	}
	s, err := hc.open(h2RequestFields(xreq, scheme))
	if err != nil {
		return nil, nil, err
	}
	status, header, err := s.response(hctx.Done())
	if err != nil {
		s.Close()
		if errors.Is(err, errStopped) {
			return nil, nil, hctx.Err()
		}
		return nil, nil, err
	}
	resp := &http.Response{
		Status:        statusLine(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		ContentLength: -1,
		Request:       xreq,
		TLS:           hc.tls,
	}
	return d.streamAnswer(hctx, resp, s, offer)
}
