package reverseproxy

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
)

// The requests a Proxy's Middleware passes on to the next handler: never
// as upgrades, and with their 426 answers kept valid.

// passOn serves r with next as a plain request: without its upgrade (see
// withoutUpgrade), so that next cannot forward it, and through a
// nextWriter, so that a 426 next answers with lists what the proxy would
// forward.
func (p *Proxy) passOn(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if hasUpgradeFields(r.Header) {
		r = withoutUpgrade(r)
	}
	nw := &nextWriter{ResponseWriter: w, p: p, r: r}
	next.ServeHTTP(nw, r.WithContext(context.WithValue(r.Context(), nextWriterKey{}, nw)))
}

// hasUpgradeFields reports whether h carries an upgrade: an Upgrade or
// HTTP2-Settings field, or a Connection option naming one.
func hasUpgradeFields(h http.Header) bool {
	if len(h["Upgrade"]) > 0 || len(h["Http2-Settings"]) > 0 {
		return true
	}
	for o := range httplist.Elements(h["Connection"]) {
		if ascii.EqualFold(o, "upgrade") || ascii.EqualFold(o, "http2-settings") {
			return true
		}
	}
	return false
}

// nextWriterKey is the context key of the nextWriter a request passed on
// is answered through, for Transport.
type nextWriterKey struct{}

// A nextWriter is the ResponseWriter next answers a request passed on
// with. A 426 Upgrade Required is made valid for the client of the proxy
// (RFC 9110 §15.5.22): its Upgrade list (next's, or the backend's that
// Transport kept) holds only the protocols the proxy would forward, with
// "Connection: Upgrade"; with none left, the proxy answers 403 instead;
// to an HTTP/2 client, which has no Upgrade field, it is a 400.
type nextWriter struct {
	http.ResponseWriter
	p *Proxy
	r *http.Request

	backendUpgrade atomic.Pointer[[]string] // the Upgrade list of a backend's 426, from Transport
	status         int                      // the final status written; 0 before
	discard        bool                     // next's body is not the client's: drop it
}

// WriteHeader writes the status, a 426 made valid first.
func (w *nextWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	if code == http.StatusUpgradeRequired {
		code = w.fix426()
		if code == 0 {
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// fix426 readies the header of a 426 and returns the status to write
// with it, or 0 if it answered the request itself.
func (w *nextWriter) fix426() int {
	h := w.Header()
	list := h["Upgrade"]
	if l := w.backendUpgrade.Load(); l != nil {
		list = *l
	}
	delete(h, "Upgrade")
	if w.r.ProtoMajor != 1 {
		return http.StatusBadRequest
	}
	advertise := w.p.advertisable(list)
	if len(advertise) == 0 {
		clear(h)
		w.discard = true
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		w.ResponseWriter.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w.ResponseWriter, "upgrade: the backend requires a protocol this proxy does not forward\n")
		return 0
	}
	h["Upgrade"] = []string{formatProtocols(advertise)}
	if !hasConnectionOption(h, "upgrade") {
		h["Connection"] = append(h["Connection"], "Upgrade")
	}
	return http.StatusUpgradeRequired
}

// Write writes next's body, unless the proxy has answered in its place.
func (w *nextWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.discard {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the ResponseWriter wrapped, for http.ResponseController.
func (w *nextWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport returns an http.RoundTripper that sends requests with base
// (nil means http.DefaultTransport), for the httputil.ReverseProxy that
// Middleware passes plain requests to. httputil.ReverseProxy removes the
// Upgrade field of every response, as hop-by-hop; through Transport, a
// backend's 426 Upgrade Required keeps its list, which the Proxy then
// passes on as it does for upgrade requests (see Proxy). Requests that did
// not come through Middleware are sent as they are.
func (p *Proxy) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &plainTransport{base: base}
}

// plainTransport is the RoundTripper Transport returns.
type plainTransport struct{ base http.RoundTripper }

func (t *plainTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUpgradeRequired {
		if nw, ok := req.Context().Value(nextWriterKey{}).(*nextWriter); ok {
			list := append([]string(nil), resp.Header["Upgrade"]...)
			nw.backendUpgrade.Store(&list)
		}
	}
	return resp, err
}
