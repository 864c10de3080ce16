package reverseproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-upgrade/upgrade"
)

// The backend's side of a Proxy when the backend does not switch: its
// answer, relayed whole, and its failures, named.

// relayAnswer relays a backend's final answer other than 101 to the
// client, whole and as it comes: status, end-to-end fields, the body in
// its own framing (a HEAD's Content-Length kept) and its trailers. A 426
// lists only the protocols the proxy would forward (403 from the proxy if
// none); a client of HTTP/2 or later gets no Upgrade or Connection field,
// a 426 as 400, and a 502 for a 2xx, which would read as a switched
// stream. The client's HTTP/1.x connection is closed after it.
func (p *Proxy) relayAnswer(w http.ResponseWriter, r *http.Request, resp *http.Response, rec *proxyLog) {
	body := &timedBody{body: resp.Body, timeout: p.handshakeTimeout()}
	defer body.Close()
	status := resp.StatusCode
	how := "refused by backend with " + strconv.Itoa(status)
	src := resp.Header
	upgradeList := src["Upgrade"]
	removeHopByHop(src)
	delete(src, "Upgrade")
	delete(src, "Content-Length")
	var advertise []upgrade.Protocol
	switch {
	case r.ProtoMajor != 1 && status/100 == 2:
		p.logger().Warn("upgrade: proxy: backend answered an upgrade with a 2xx without switching", "remote", r.RemoteAddr,
			"backend", rec.backend, "status", resp.Status)
		p.refuse(w, r, http.StatusBadGateway, http.StatusText(http.StatusBadGateway))
		rec.end(how, "status", http.StatusBadGateway)
		return
	case status == http.StatusUpgradeRequired && r.ProtoMajor != 1:
		// A 426 must list protocols in Upgrade (RFC 9110 §15.5.22),
		// which HTTP/2 does not have: answer 400, as an upgrade.Server does.
		status = http.StatusBadRequest
	case status == http.StatusUpgradeRequired:
		if advertise = p.advertisable(upgradeList); len(advertise) == 0 {
			p.refuse(w, r, http.StatusForbidden, "upgrade: the backend requires a protocol this proxy does not forward")
			rec.end(how, "status", http.StatusForbidden)
			return
		}
	}
	answerHeader(w.Header(), r, resp, src, advertise)
	if r.ProtoMajor != 1 {
		// A stream reset by the client ends the request's context.
		stop := context.AfterFunc(r.Context(), func() { resp.Body.Close() })
		defer stop()
	}
	w.WriteHeader(status)
	n, err := copyAnswer(w, body, resp.ContentLength < 0)
	if err == nil {
		h := w.Header()
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

// answerHeader sets h, the header of the answer to r, from resp, whose
// end-to-end fields are src: with "Connection: close" for an HTTP/1.x
// client (and the Upgrade list advertise, if any, with its option), the
// Content-Length of a body of known length, and the names of the
// trailers to come.
func answerHeader(h http.Header, r *http.Request, resp *http.Response, src http.Header, advertise []upgrade.Protocol) {
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
	if resp.ContentLength >= 0 && resp.StatusCode != http.StatusNoContent && !isChunked(resp) {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = keys
	}
}

// isChunked reports whether resp came with chunked framing.
func isChunked(resp *http.Response) bool {
	return len(resp.TransferEncoding) > 0 && resp.TransferEncoding[len(resp.TransferEncoding)-1] == "chunked"
}

// A timedBody is the body of a backend's answer with each Read bounded by
// timeout (zero: no bound): a Read that gets nothing for that long closes
// the body, and with it the backend connection, and fails.
type timedBody struct {
	body    io.ReadCloser
	timeout time.Duration
	timer   *time.Timer // closes body; armed during a Read
	expired atomic.Bool // the timer closed body
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.timeout <= 0 {
		return b.body.Read(p)
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.timeout, b.expire)
	} else {
		b.timer.Reset(b.timeout)
	}
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && b.expired.Load() {
		err = fmt.Errorf("nothing received for %v: %w", b.timeout, os.ErrDeadlineExceeded)
	}
	return n, err
}

func (b *timedBody) expire() {
	b.expired.Store(true)
	b.body.Close()
}

// Close closes the body and the backend connection.
func (b *timedBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	return b.body.Close()
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
func (p *Proxy) advertisable(upgradeList []string) []upgrade.Protocol {
	allow, err := p.allowed()
	if err != nil {
		return nil
	}
	return filterOffers(parseAdvertised(upgradeList), allow)
}

// backendFailed answers a request whose backend could not be reached or
// answered with an invalid 101: the error goes to ErrorHandler and is
// logged as a warning.
func (p *Proxy) backendFailed(w http.ResponseWriter, r *http.Request, err error, rec *proxyLog) {
	how, code := backendFailure(err)
	p.logger().Warn("upgrade: proxy: "+how, "remote", r.RemoteAddr, "backend", rec.backend, "err", err)
	defer rec.end(how, "status", code, "err", err)
	if r.ProtoMajor == 1 {
		// On HTTP/2, net/http would take "close" as a reason to shut
		// down the whole connection, every other stream with it.
		w.Header()["Connection"] = []string{"close"}
	}
	if p.ErrorHandler != nil {
		p.ErrorHandler(w, r, err)
		return
	}
	p.refuse(w, r, code, http.StatusText(code))
}

// backendFailure names how the backend failed to switch, for the log,
// and the status answering it: 504 for a timeout, 502 otherwise.
func backendFailure(err error) (how string, code int) {
	var (
		re     *upgrade.ResponseError
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
	case errors.Is(err, upgrade.ErrInvalidSwitch), errors.Is(err, errBadAccept):
		return "backend sent an invalid 101", http.StatusBadGateway
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "backend closed before answering", http.StatusBadGateway
	}
	return "backend failed", http.StatusBadGateway
}
