package upgrade

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The backend's side of a Proxy when the backend does not switch: its
// answer, relayed whole, and its failures, named.

// handOver gives the connection to the body of re's live response: the
// handshake's deadline, context and header bound no longer apply, and
// closing the body closes the connection. It returns re, or an error if
// the context ended the handshake just now, having closed the connection.
func (sc *serverConn) handOver(re *ResponseError) error {
	if sc.stop != nil && !sc.stop() {
		sc.close()
		return errors.New("handshake interrupted")
	}
	sc.stop = nil
	if err := sc.raw.SetDeadline(time.Time{}); err != nil {
		sc.close()
		return fmt.Errorf("clearing the handshake deadline: %w", err)
	}
	sc.lr.n = math.MaxInt64
	re.live.Body = &answerBody{body: re.live.Body, conn: sc.raw}
	sc.br = nil // the body reads through it: it never goes back to the pool
	return re
}

// answerBody is the body of a backend's answer that is not a switch: it
// reads the rest of the answer from the connection, each read bounded by
// timeout (zero: no bound), and closing it closes the connection.
type answerBody struct {
	body    io.ReadCloser
	conn    net.Conn // the TCP connection to the backend (or its proxy)
	timeout time.Duration
}

func (b *answerBody) Read(p []byte) (int, error) {
	if b.timeout > 0 {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.timeout))
	}
	return b.body.Read(p)
}

// Close closes the connection. The body itself is not closed: net/http's
// would read the rest of the answer first.
func (b *answerBody) Close() error { return b.conn.Close() }

// relayAnswer relays a backend's final answer other than 101 to the
// client, whole and as it comes: status, end-to-end fields, the body in
// its own framing (a HEAD's Content-Length kept) and its trailers. A 426
// lists only the protocols the proxy would forward (403 from the proxy if
// none); an HTTP/2 client gets no Upgrade or Connection field, a 426 as
// 400, and a 502 for a 2xx, which would read as a switched stream. The
// client's HTTP/1.x connection is closed after it.
func (p *Proxy) relayAnswer(w http.ResponseWriter, r *http.Request, resp *http.Response, rec *proxyLog) {
	body := resp.Body.(*answerBody)
	defer body.Close()
	status := resp.StatusCode
	how := "refused by backend with " + strconv.Itoa(status)
	src := resp.Header
	upgrade := src["Upgrade"]
	removeHopByHop(src)
	delete(src, "Upgrade")
	delete(src, "Content-Length")
	var advertise []Protocol
	switch {
	case r.ProtoMajor != 1 && status/100 == 2:
		p.logger().Warn("upgrade: proxy: backend answered an upgrade with a 2xx without switching", "remote", r.RemoteAddr,
			"backend", rec.backend, "status", resp.Status)
		p.refuse(w, r, http.StatusBadGateway, http.StatusText(http.StatusBadGateway))
		rec.end(how, "status", http.StatusBadGateway)
		return
	case status == http.StatusUpgradeRequired && r.ProtoMajor != 1:
		// A 426 must list protocols in Upgrade (RFC 9110 §15.5.22),
		// which HTTP/2 does not have: answer 400, as a Server does.
		status = http.StatusBadRequest
	case status == http.StatusUpgradeRequired:
		if advertise = p.advertisable(upgrade); len(advertise) == 0 {
			p.refuse(w, r, http.StatusForbidden, "upgrade: the backend requires a protocol this proxy does not forward")
			rec.end(how, "status", http.StatusForbidden)
			return
		}
	}
	h := w.Header()
	for k, vs := range src {
		h[k] = vs
	}
	if r.ProtoMajor == 1 {
		h["Connection"] = []string{"close"}
		if advertise != nil {
			h["Upgrade"] = []string{formatProtocols(advertise)}
			h["Connection"] = []string{"close", "Upgrade"}
		}
	}
	if resp.ContentLength >= 0 && status != http.StatusNoContent && !isChunked(resp) {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = keys
	}
	body.timeout = p.dialer0().handshakeTimeout()
	if r.ProtoMajor != 1 {
		// A stream reset by the client ends the request's context.
		stop := context.AfterFunc(r.Context(), func() { body.conn.Close() })
		defer stop()
	}
	w.WriteHeader(status)
	n, err := copyAnswer(w, body, resp.ContentLength < 0)
	if err == nil {
		for k, vs := range resp.Trailer {
			h[k] = vs
		}
	}
	attrs := []any{"status", status, "received", n}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	rec.end(how, attrs...)
}

// isChunked reports whether resp came with chunked framing.
func isChunked(resp *http.Response) bool {
	return len(resp.TransferEncoding) > 0 && resp.TransferEncoding[len(resp.TransferEncoding)-1] == "chunked"
}

// copyAnswer copies body to w as it arrives, flushing after each write
// when flush is set (a body of unknown length, as httputil.ReverseProxy
// does), and returns the bytes copied.
func copyAnswer(w http.ResponseWriter, body io.Reader, flush bool) (int64, error) {
	rc := http.NewResponseController(w)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := body.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && flush {
				werr = rc.Flush()
			}
			if werr != nil {
				return n, fmt.Errorf("writing to the client: %w", werr)
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, fmt.Errorf("reading from the backend: %w", rerr)
		}
	}
}

// advertisable returns the protocols of a backend's Upgrade list the
// proxy would forward, in the backend's order.
func (p *Proxy) advertisable(upgrade []string) []Protocol {
	allow, err := p.allowed()
	if err != nil {
		return nil
	}
	return filterOffers(parseAdvertised(upgrade), allow)
}

// backendFailure names how the backend failed to switch, for the log,
// and the status answering it: 504 for a timeout, 502 otherwise.
func backendFailure(err error) (how string, code int) {
	var (
		re     *ResponseError
		verify *tls.CertificateVerificationError
		ua     x509.UnknownAuthorityError
		host   x509.HostnameError
		inv    x509.CertificateInvalidError
		alert  tls.AlertError
		record tls.RecordHeaderError
		op     *net.OpError
	)
	switch {
	case errors.As(err, &re) && re.Proxy:
		return "refused by forward proxy with " + strconv.Itoa(re.StatusCode), http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded):
		return "backend timed out", http.StatusGatewayTimeout
	case errors.As(err, &verify) || errors.As(err, &ua) || errors.As(err, &host) || errors.As(err, &inv):
		return "backend TLS verification failed", http.StatusBadGateway
	case errors.As(err, &alert) || errors.As(err, &record):
		return "backend TLS handshake failed", http.StatusBadGateway
	case errors.As(err, &op) && op.Op == "dial":
		return "backend unreachable", http.StatusBadGateway
	case errors.Is(err, ErrInvalidSwitch), errors.Is(err, errBadAccept):
		return "backend sent an invalid 101", http.StatusBadGateway
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "backend closed before answering", http.StatusBadGateway
	}
	return "backend failed", http.StatusBadGateway
}
