package reverseproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/ascii"
)

// The flow of an upgrade request through a Proxy: checked, routed,
// dialed, and switched on both sides or answered.

const (
	// defaultHandshakeTimeout is the HandshakeTimeout a zero
	// upgrade.Dialer applies.
	defaultHandshakeTimeout = 10 * time.Second

	// defaultMaxRequestBody is the bound of a zero MaxRequestBody.
	defaultMaxRequestBody = 1 << 20

	// pendingKey is the tracker key of a pair whose backend has not
	// switched yet.
	pendingKey = ""
)

// serve is the common flow of ServeHTTP (next == nil) and Middleware.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if isExtendedConnect(r) {
		p.serveStream(w, r)
		return
	}
	if r.ProtoMajor != 1 || !isUpgradeRequest(r) {
		if next != nil {
			p.passOn(w, r, next)
			return
		}
		p.refuse(w, r, http.StatusBadRequest, "upgrade: this endpoint forwards protocol upgrades only")
		return
	}
	rec := newProxyLog(p, r, strings.Join(r.Header["Upgrade"], ", "))
	offers, err := upgrade.ParseProtocols(r.Header["Upgrade"])
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, upgrade.ErrHeaderTooLarge) {
			code = http.StatusRequestHeaderFieldsTooLarge
		}
		p.refuseUpgrade(w, r, &rec, code, err.Error())
		return
	}
	if len(r.TransferEncoding) > 0 {
		// Never switch a request whose framing may be smuggled
		// (RFC 9112 §6.1), as an upgrade.Server does not.
		if next != nil {
			w.Header()["Connection"] = []string{"close"}
			p.passOn(w, r, next)
			return
		}
		p.refuseUpgrade(w, r, &rec, http.StatusBadRequest, "a request switching protocols must not use Transfer-Encoding; send its body with Content-Length")
		return
	}
	allow, ok := p.admit(w, r, &rec)
	if !ok {
		return
	}
	offers = filterOffers(offers, allow)
	if len(offers) == 0 {
		if next != nil {
			p.passOn(w, r, next)
			return
		}
		// 403, not 426: a 426 must list protocols that would be
		// accepted, and only the backend knows those.
		p.refuseUpgrade(w, r, &rec, http.StatusForbidden, "upgrade: none of the offered protocols may be forwarded")
		return
	}
	rec.protocol = formatProtocols(offers)
	p.forward(w, r, &clientSide{offers: offers, accept: p.accept11}, &rec)
}

// serveStream forwards an extended CONNECT (RFC 8441, RFC 9220) to the
// backend as an HTTP/1.1 upgrade offering its :protocol, and relays the
// stream and the backend connection for as long as both last: the stream
// lives only as long as ServeHTTP does. A WebSocket is bridged: the
// backend gets the Sec-WebSocket-Key an extended CONNECT does without,
// and its Sec-WebSocket-Accept is checked and not relayed. Refusals never
// pass the request on to Middleware's next handler: an extended CONNECT
// is not a plain request.
func (p *Proxy) serveStream(w http.ResponseWriter, r *http.Request) {
	rec := newProxyLog(p, r, r.Header.Get(":protocol"))
	offer, err := parseProtocol(r.Header.Get(":protocol"))
	if err != nil || len(r.Header[":protocol"]) != 1 {
		p.refuseUpgrade(w, r, &rec, http.StatusBadRequest, "upgrade: malformed :protocol pseudo-header")
		return
	}
	allow, ok := p.admit(w, r, &rec)
	if !ok {
		return
	}
	offers := filterOffers([]upgrade.Protocol{offer}, allow)
	if len(offers) == 0 {
		p.refuseUpgrade(w, r, &rec, http.StatusForbidden, "upgrade: protocol "+offer.String()+" may not be forwarded")
		return
	}
	p.forward(w, r, &clientSide{
		offers:          offers,
		stream:          true,
		bridgeWebSocket: offer.Version == "" && ascii.EqualFold(offer.Name, "websocket"),
		accept:          p.acceptStream,
	}, &rec)
}

// isExtendedConnect reports whether r is an extended CONNECT (RFC 8441,
// RFC 9220): a CONNECT of HTTP/2 or later carrying the :protocol
// pseudo-header, which net/http passes on in the Header (only when
// extended CONNECT is on), as an upgrade.StreamAccepter's server must.
func isExtendedConnect(r *http.Request) bool {
	return r.ProtoMajor >= 2 && r.Method == http.MethodConnect && len(r.Header[":protocol"]) > 0
}

// isUpgradeRequest reports whether r, of HTTP/1.x, asks for an upgrade:
// HTTP/1.1 or later, with the "upgrade" Connection option.
func isUpgradeRequest(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1) && hasConnectionOption(r.Header, "upgrade")
}

// admit returns the parsed Allow patterns for an upgrade request the
// proxy may take on now, or answers it (503 during Shutdown, 500 when
// Allow is malformed), logs it and returns false.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, rec *proxyLog) ([]pattern, bool) {
	if p.conns.Closing() {
		w.Header().Set("Retry-After", "1")
		p.refuseUpgrade(w, r, rec, http.StatusServiceUnavailable, "proxy shutting down")
		return nil, false
	}
	allow, err := p.allowed()
	if err != nil {
		p.logger().Error("upgrade: proxy misconfigured", "err", err)
		p.refuseUpgrade(w, r, rec, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return nil, false
	}
	return allow, true
}

// forward sends r to the backend and, if it switches, relays the pair;
// every way it ends is logged with rec.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, cs *clientSide, rec *proxyLog) {
	if p.Rewrite == nil {
		p.logger().Error("upgrade: Proxy.Rewrite is nil: no backend to forward to")
		p.refuseUpgrade(w, r, rec, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return
	}
	var body []byte
	if !cs.stream {
		var ok bool
		if body, ok = p.readBody(w, r, rec); !ok {
			return
		}
	}
	if !p.conns.Reserve(pendingKey, 0, p.MaxConns) {
		w.Header().Set("Retry-After", "1")
		p.refuseUpgrade(w, r, rec, http.StatusServiceUnavailable, "too many proxied connections, retry later")
		return
	}
	if p.conns.Closing() {
		// Shutdown began while the body was read: it waits for no slot
		// that was not reserved yet, so the backend must not be dialed.
		p.conns.Release(pendingKey)
		w.Header().Set("Retry-After", "1")
		p.refuseUpgrade(w, r, rec, http.StatusServiceUnavailable, "proxy shutting down")
		return
	}
	pr := newRequest(r, cs.offers)
	if cs.stream {
		// RFC 8441 §5: the HTTP/1.1 form of an extended CONNECT is a
		// GET (for a WebSocket, the opening handshake of RFC 6455).
		pr.Out.Method = http.MethodGet
	}
	p.Rewrite(pr)
	if pr.Out.URL == nil {
		p.conns.Release(pendingKey)
		p.logger().Error("upgrade: Proxy.Rewrite set no URL", "path", r.URL.Path)
		p.refuseUpgrade(w, r, rec, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return
	}
	rec.backend = pr.Out.URL.Host
	ctx := r.Context()
	if !cs.stream {
		// net/http cancels an HTTP/1.x request's context when the client
		// half-closes, which a client of a protocol whose server speaks
		// first may do at once: the Dialer's timeout bounds the dial.
		ctx = context.WithoutCancel(ctx)
	}
	bc, resp, err := p.dialer(pr, body, cs).DialResponse(ctx, pr.Out.URL.String(), cs.offers...)
	if bc == nil {
		// A refusal is an ordinary response from here on: Shutdown does
		// not wait for it, the http.Server does.
		p.conns.Release(pendingKey)
		if resp != nil {
			p.relayAnswer(w, r, resp, rec)
		} else {
			p.backendFailed(w, r, err, rec)
		}
		return
	}
	p.switchBoth(w, r, cs, bc, rec)
}

// switchBoth completes a switch the backend made, whose slot is reserved:
// it switches the client too and relays the pair, or closes the backend
// connection and releases the slot.
func (p *Proxy) switchBoth(w http.ResponseWriter, r *http.Request, cs *clientSide, bc *upgrade.Conn, rec *proxyLog) {
	if p.conns.Closing() {
		bc.Close()
		p.conns.Release(pendingKey)
		w.Header().Set("Retry-After", "1")
		p.refuseUpgrade(w, r, rec, http.StatusServiceUnavailable, "proxy shutting down")
		return
	}
	// Count the pair under its protocol, as the client spelled it (the
	// Dialer's offers are the client's), before the client learns of the
	// switch, so that ActiveConns agrees with what the client saw.
	key := bc.Protocol.String()
	p.conns.Rekey(pendingKey, key)
	up := strings.Join(bc.Response.Header["Upgrade"], ", ")
	h := switchHeader(bc.Response.Header, cs.bridgeWebSocket)
	// The requests and the 101 have been used: keep none of them for the
	// life of the pair, only the connection and the bytes read ahead.
	backend := backendSide(bc)
	client, err := cs.accept(w, r, up, h)
	if err != nil {
		// The backend has switched, the client will not: tell the backend
		// as a reset, as the relay would.
		abort(backend.nc)
		p.conns.Release(key)
		rec.end("closed by client before the switch", "err", err)
		return
	}
	rec.protocol = key
	// Its slot was reserved before any Shutdown began, which waits for it:
	// the pair is relayed like the others until the grace period ends,
	// even if Shutdown started while the backend was answering.
	p.conns.Adopt(client)
	pr := newPair(p, client, backend, key, *rec)
	if cs.stream {
		p.relay(pr)
		return
	}
	go p.relay(pr)
}

// readBody reads r's body, bounded, before the backend is dialed: it is
// sent with the request. net/http sends the 100 Continue a client
// expecting one waits for. On failure it answers r and returns false.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request, rec *proxyLog) ([]byte, bool) {
	if !hasBody(r) {
		return nil, true
	}
	limit := p.MaxRequestBody
	if limit <= 0 {
		limit = defaultMaxRequestBody
	}
	if r.ContentLength > limit {
		p.refuseUpgrade(w, r, rec, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
		return nil, false
	}
	rc := http.NewResponseController(w)
	if timeout := p.handshakeTimeout(); timeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	_ = rc.SetReadDeadline(time.Time{})
	switch {
	case err == nil && int64(len(body)) > limit:
		p.refuseUpgrade(w, r, rec, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
		return nil, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.refuseUpgrade(w, r, rec, http.StatusRequestTimeout, "request body not received within the handshake timeout")
		return nil, false
	case err != nil:
		p.refuseUpgrade(w, r, rec, http.StatusBadRequest, "could not read request body")
		return nil, false
	}
	return body, true
}

// hasBody reports whether r has a request body to read.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// dialer returns the Dialer for one request: the configured one with the
// request's method, header and body, upgrading over HTTP/1.1 only.
func (p *Proxy) dialer(pr *Request, body []byte, cs *clientSide) *upgrade.Dialer {
	var d upgrade.Dialer
	if p.Dialer != nil {
		d = *p.Dialer
	}
	d.Method, d.Body, d.HTTP2 = pr.Out.Method, body, nil
	h := pr.Out.Header
	if pr.Out.Host != "" {
		h["Host"] = []string{pr.Out.Host}
	}
	d.Header = h
	if cs.bridgeWebSocket {
		bridgeWebSocket(&d)
	}
	return &d
}

// handshakeTimeout returns the bound of the Dialer's handshake; zero
// means none.
func (p *Proxy) handshakeTimeout() time.Duration {
	switch {
	case p.Dialer == nil || p.Dialer.HandshakeTimeout == 0:
		return defaultHandshakeTimeout
	case p.Dialer.HandshakeTimeout < 0:
		return 0
	}
	return p.Dialer.HandshakeTimeout
}

// refuse answers a request the proxy does not forward with a short
// text/plain message, and closes the connection after it when the request
// asked for an upgrade.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h := w.Header()
	if r.ProtoMajor == 1 && (len(r.Header["Upgrade"]) > 0 || hasBody(r)) {
		h["Connection"] = []string{"close"}
	}
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// refuseUpgrade refuses an upgrade request the proxy does not forward,
// as refuse does, and logs it.
func (p *Proxy) refuseUpgrade(w http.ResponseWriter, r *http.Request, rec *proxyLog, code int, msg string) {
	p.refuse(w, r, code, msg)
	rec.end("refused by proxy with "+strconv.Itoa(code), "status", code)
}
