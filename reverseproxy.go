package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/track"
)

// A Proxy is an http.Handler that forwards protocol upgrades to a backend
// server and relays the switched connections: a reverse proxy for
// upgrades (RFC 9110 §7.8), like net/http/httputil.ReverseProxy is one for
// ordinary requests. It does not negotiate: the backend picks one of the
// protocols the client offered, and the Proxy checks the choice.
//
// For each upgrade request:
//
//   - The client's offers are parsed strictly, as a Server parses them
//     (malformed: 400; over Limits: 431), and filtered by Allow, in the
//     client's order. Which protocols may pass is the proxy's decision.
//   - The request goes to the backend Rewrite chose, dialed with Dialer,
//     as an HTTP/1.1 upgrade request offering the allowed protocols, with
//     the same method, target and end-to-end header fields, a
//     Content-Length body if the client sent one, and the forwarding
//     fields SetForwarded sets: the client's X-Forwarded-For and
//     Forwarded elements kept, the proxy's own appended last. Hop-by-hop
//     fields (Connection, the fields it names, Keep-Alive, TE, Trailer,
//     Proxy-*) are dropped; the upgrade's own fields are not. The backend
//     is asked over HTTP/1.1 even by a Dialer that can switch HTTP/2
//     streams, as net/http's Transport asks for a WebSocket through
//     httputil.ReverseProxy, and nginx for every upgrade.
//   - The dial and the backend's answer are bounded by the Dialer's
//     HandshakeTimeout, not by the client's connection: a client may
//     half-close right after its request, as clients of protocols whose
//     server speaks first do.
//   - A 101 from the backend is relayed only if it names protocols the
//     client offered (and the proxy forwarded): the Dialer checks it.
//     Otherwise the client gets 502 Bad Gateway and both connections are
//     closed. An unreachable backend is a 502 (504 past the handshake
//     timeout), answered by ErrorHandler.
//   - Any other final answer (2xx to 5xx: a backend that refuses, or one
//     that ignores Upgrade) is relayed whole, as httputil.ReverseProxy
//     relays a response: its status, end-to-end fields, trailers, and body
//     as it arrives, in its own framing (Content-Length, chunked or ended
//     by the close; a HEAD's Content-Length kept), each read of it bounded
//     by the handshake timeout. A 426 carries its Upgrade list
//     (RFC 9110 §15.5.22) with only the protocols Allow lets through, and
//     "Connection: Upgrade"; when none is left the proxy answers 403
//     instead: the client could not switch through it.
//   - After the 101, bytes flow both ways unchanged, starting with those
//     that arrived with the client's request and with the backend's 101.
//     When one side half-closes, the Proxy half-closes the other
//     (CloseWrite); when both have, or when either resets or fails, both
//     connections are closed (a reset is passed on as a reset). On Linux,
//     TCP to TCP, the bytes move with splice(2) and never through user
//     space; no pipe is held while a pair is idle.
//
// Every refused upgrade request is answered with "Connection: close":
// the bytes a client sends behind it must never be read as a request.
//
// An HTTP/2 extended CONNECT (RFC 8441; see ExtendedConnect) is forwarded
// the same way, as an HTTP/1.1 GET offering its :protocol, and the
// backend's 101 is relayed as a 200 on the client's stream, which is then
// relayed for as long as ServeHTTP runs. A WebSocket is bridged: RFC 8441
// has no Sec-WebSocket-Key, so the proxy sends the backend a fresh one,
// checks its Sec-WebSocket-Accept (502 if wrong) and keeps it from the
// client. Any other answer is relayed without Upgrade and Connection
// fields, which HTTP/2 lacks (a 426 as 400), except a 2xx, which would
// tell the client its stream had switched: that is a 502. The client's
// END_STREAM reaches the backend as a half-close. net/http's HTTP/2
// server ends a stream only when its handler returns, so the backend's
// EOF ends the pair at once: the client gets END_STREAM (and a RST_STREAM
// NO_ERROR if it is still sending) and the backend connection is closed.
// A reset on either side is passed on as a reset; the client's stream is
// reset with INTERNAL_ERROR, the one code net/http's server resets a
// stream with from a handler (RFC 9113 §8.5 would have CONNECT_ERROR).
//
// An HTTP/1.0 request, a request whose Connection field lacks the
// "upgrade" option, and any other HTTP/2 request are not upgrades; Proxy
// as an endpoint (ServeHTTP) answers them 400 Bad Request, Middleware
// passes them on. Whatever Middleware passes on goes without its Upgrade
// field, the Connection options naming it or HTTP2-Settings, and
// HTTP2-Settings itself (RFC 9110 §7.6.1, §7.8): the next handler cannot
// forward an upgrade the Proxy did not. A Proxy has no 426 of its own to
// give: only the backend knows which protocols it speaks.
//
// The relayed pairs are tracked: Shutdown and Close end them, ActiveConns
// counts them, MaxConns caps them.
//
// Fields must not be changed after the Proxy's first request.
type Proxy struct {
	// Rewrite routes a request to its backend: it must set Out.URL
	// (SetURL does), the backend's http, https, ws or wss URL, and may
	// change Out.Host and Out.Header. It is called after the proxy has
	// set Out's header fields. NewProxy sets one for a single backend.
	// Without Rewrite every upgrade is answered 500.
	Rewrite func(*ProxyRequest)

	// Dialer opens the connection to the backend: its network, TLS,
	// proxy, handshake timeout, Prepare and Check settings apply; HTTP2
	// does not (the backend is asked over HTTP/1.1). Its Method, Header
	// and Body are replaced by each request's. Nil means a zero Dialer
	// (which honours HTTP_PROXY and HTTPS_PROXY, as http.DefaultTransport
	// does). Its HandshakeTimeout bounds the dial and the backend's
	// answer, reading the client's request body, writing the 101 to the
	// client, and each read of the body of an answer that is not a
	// switch.
	Dialer *Dialer

	// Allow lists the protocols that may be forwarded, as patterns like
	// those of Server.Handle: "websocket", "echo/1", "name/*". A request
	// offering none of them is refused with 403 Forbidden (Middleware
	// passes it on as a plain request instead, without its upgrade);
	// offers that are not allowed are left out of the request to the
	// backend. Nil means every protocol except h2c: an h2c upgrade
	// through a proxy would let the client send requests the proxy never
	// sees, past its routing and access rules ("h2c smuggling"); list
	// "h2c" to forward it anyway.
	Allow []string

	// ErrorHandler answers a request the backend could not be reached
	// for, or whose backend answered with an invalid 101, and is given
	// the error. The response carries "Connection: close" already. Nil
	// means logging the error to ErrorLog and answering 502 Bad Gateway
	// (504 Gateway Timeout when the handshake timed out).
	ErrorHandler func(http.ResponseWriter, *http.Request, error)

	// IdleTimeout closes a relayed pair once no byte has moved in
	// either direction for that long. Zero means no limit: the pair
	// lives as long as both sides keep it open.
	IdleTimeout time.Duration

	// MaxConns caps the pairs relayed (or being set up) at once; a
	// request beyond it is answered 503 Service Unavailable with
	// Retry-After before the backend is dialed. Zero means no cap.
	MaxConns int

	// MaxRequestBody bounds the body of an upgrade request, read before
	// the backend is dialed and sent with the request. Zero means
	// defaultMaxRequestBody; larger bodies are answered 413. A request
	// body with Transfer-Encoding is never forwarded (400): a switch
	// must not depend on chunked framing.
	MaxRequestBody int64

	// Limits bounds the Upgrade header parser, as Server.Limits does.
	Limits Limits

	// ErrorLog receives errors, at slog.LevelWarn and above: backends
	// that cannot be reached or answer with an invalid 101, failed
	// hijacks. At slog.LevelDebug it also gets one record per upgrade
	// request, forwarded or not, when it ends: "upgrade: proxied
	// connection closed" with the protocol, the client's address and HTTP
	// version (proto), the backend, the duration and how it ended
	// ("closed by client", "closed by backend", "reset by client", "idle
	// timeout", "refused by backend with 426", "refused by proxy with
	// 403", "backend unreachable", "backend TLS verification failed"...).
	// Nil means slog.Default().
	ErrorLog *slog.Logger

	allowOnce sync.Once
	allow     []route // Allow, parsed
	allowErr  error   // a malformed Allow pattern

	conns track.Tracker // the relayed pairs, by their client Conn
}

// NewProxy returns a Proxy that forwards every allowed upgrade to target
// (its path joined with the request's, see SetURL), keeping the client's
// Host field, as httputil.NewSingleHostReverseProxy does, so that a
// backend comparing Origin with Host still sees the host the browser
// used.
func NewProxy(target *url.URL) *Proxy {
	return &Proxy{Rewrite: func(pr *ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
}

// ServeHTTP forwards an upgrade request to the backend and relays the
// switched connections: Proxy as an endpoint for upgrades only. A request
// that is not an upgrade is answered 400 Bad Request, one offering no
// allowed protocol 403 Forbidden.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.serve(w, r, nil)
}

// Middleware returns a handler that forwards the upgrade requests the
// Proxy accepts and passes every other request to next as a plain
// request: without Upgrade, the Connection options naming it and
// HTTP2-Settings (see Proxy), so that next, an httputil.ReverseProxy for
// one, cannot forward an upgrade on its own. Upgrade requests offering no
// allowed protocol (a speculative "Upgrade: h2c", say), HTTP/1.0 ones and
// ones whose Connection field lacks "upgrade" are passed on so. A 426
// next answers with is made to list only what the Proxy would forward,
// with "Connection: Upgrade" (403 if nothing is left; to an HTTP/2 client,
// 400); give an httputil.ReverseProxy the RoundTripper of Transport, or it
// drops the backend's list. Malformed and oversized Upgrade fields are
// still answered 400 and 431, and upgrades during Shutdown 503.
func (p *Proxy) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, next)
	})
}

// ActiveConns returns the number of relayed pairs, by protocol as the
// client spelled it; pairs whose backend handshake is still in progress
// are counted under "".
func (p *Proxy) ActiveConns() map[string]int { return p.conns.Active() }

// Shutdown shuts the proxy down gracefully: new upgrade requests are
// answered 503 with Retry-After from then on, and the relayed pairs go
// on relaying (a relay has nothing to say goodbye with) until both of
// their sides have closed. Shutdown waits for that and returns nil, or,
// if ctx ends first, closes the remaining pairs and returns ctx.Err().
// It may be called more than once.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.conns.Shutdown(ctx) }

// Close closes every relayed pair at once and refuses new upgrades.
func (p *Proxy) Close() error {
	p.conns.StartDraining()
	p.conns.CloseAll()
	return nil
}

// RegisterOnShutdown makes hs.Shutdown also start shutting down the
// proxy's pairs, bounded by timeout (zero: no bound but the pairs
// ending), as Server.RegisterOnShutdown does. hs.Shutdown does not wait
// for it: call p.Shutdown(ctx) after it to wait.
func (p *Proxy) RegisterOnShutdown(hs *http.Server, timeout time.Duration) {
	registerOnShutdown(hs, timeout, p.Shutdown)
}

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
	var arr [4]Protocol
	offers, err := appendProtocols(arr[:0], r.Header["Upgrade"], p.Limits)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, ErrHeaderTooLarge) {
			code = http.StatusRequestHeaderFieldsTooLarge
		}
		p.refuseUpgrade(w, r, &rec, code, err.Error())
		return
	}
	if len(r.TransferEncoding) > 0 {
		// Never switch a request whose framing may be smuggled
		// (RFC 9112 §6.1), as the Server does.
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

// serveStream forwards an HTTP/2 extended CONNECT (RFC 8441) to the
// backend as an HTTP/1.1 upgrade offering its :protocol, and relays the
// stream and the backend connection for as long as both last: the stream
// lives only as long as ServeHTTP does. A WebSocket is bridged: the
// backend gets the Sec-WebSocket-Key RFC 8441 does without, and its
// Sec-WebSocket-Accept is checked and not relayed. Refusals never pass
// the request on to Middleware's next handler: an extended CONNECT is
// not a plain request.
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
	offers := filterOffers([]Protocol{offer}, allow)
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

// admit returns the parsed Allow patterns for an upgrade request the
// proxy may take on now, or answers it (503 during Shutdown, 500 when
// Allow is malformed), logs it and returns false.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, rec *proxyLog) ([]route, bool) {
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

// defaultDisallowed is the protocol a nil Allow keeps out.
const defaultDisallowed = "h2c"

// allowed returns the parsed Allow patterns; nil means all but h2c.
func (p *Proxy) allowed() ([]route, error) {
	p.allowOnce.Do(func() {
		for _, pat := range p.Allow {
			rt, err := parsePattern(pat)
			if err != nil {
				p.allowErr = fmt.Errorf("upgrade: Proxy.Allow: %w", err)
				return
			}
			p.allow = append(p.allow, rt)
		}
	})
	return p.allow, p.allowErr
}

// filterOffers keeps, in order, the offers allow matches (with allow nil:
// all but h2c), in place.
func filterOffers(offers []Protocol, allow []route) []Protocol {
	out := offers[:0]
	for _, o := range offers {
		ok := false
		if allow == nil {
			ok = !ascii.EqualFold(o.Name, defaultDisallowed)
		}
		for i := range allow {
			if allow[i].matches(o) {
				ok = true
				break
			}
		}
		if ok {
			out = append(out, o)
		}
	}
	return out
}

// pendingKey is the tracker key of a pair whose backend has not switched
// yet.
const pendingKey = ""

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
	key, reserved := pendingKey, true
	defer func() {
		if reserved {
			p.conns.Release(key)
		}
	}()

	pr := newProxyRequest(r, cs.offers)
	if cs.stream {
		// RFC 8441 §5: the HTTP/1.1 form of an extended CONNECT is a
		// GET (for a WebSocket, the opening handshake of RFC 6455).
		pr.Out.Method = http.MethodGet
	}
	p.Rewrite(pr)
	if pr.Out.URL == nil {
		p.logger().Error("upgrade: Proxy.Rewrite set no URL", "path", r.URL.Path)
		p.refuseUpgrade(w, r, rec, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return
	}
	rec.backend = pr.Out.URL.Host
	d := p.dialer(pr, body, cs)
	ctx := r.Context()
	if !cs.stream {
		// net/http cancels an HTTP/1.x request's context when the client
		// half-closes, which a client of a protocol whose server speaks
		// first may do at once: the Dialer's timeout bounds the dial.
		ctx = context.WithoutCancel(ctx)
	}
	bc, err := d.Dial(ctx, pr.Out.URL.String(), cs.offers...)
	if err != nil {
		// A refusal is an ordinary response from here on: Shutdown does
		// not wait for it, the http.Server does.
		p.conns.Release(key)
		reserved = false
		p.backendFailed(w, r, err, rec)
		return
	}
	if p.conns.Closing() {
		bc.Close()
		w.Header().Set("Retry-After", "1")
		p.refuseUpgrade(w, r, rec, http.StatusServiceUnavailable, "proxy shutting down")
		return
	}
	// Count the pair under its protocol before the client learns of the
	// switch, so that ActiveConns agrees with what the client saw.
	key = bc.Protocol.String()
	p.conns.Rekey(pendingKey, key)
	up := strings.Join(bc.Response.Header["Upgrade"], ", ")
	h := switchHeader(bc.Response.Header, cs.bridgeWebSocket)
	cc, err := cs.accept(w, r, up, h)
	if err != nil {
		// The backend has switched, the client will not: tell the backend
		// as a reset, as the relay would.
		abort(bc.nc)
		bc.Close()
		rec.end("closed by client before the switch", "err", err)
		return
	}
	cc.Protocol, cc.key = offerSpelling(cs.offers, bc.Protocol), key
	rec.protocol = cc.Protocol.String()
	// Its slot was reserved before any Shutdown began, which waits for it:
	// the pair is relayed like the others until the grace period ends,
	// even if Shutdown started while the backend was answering.
	cc.trk = &p.conns
	p.conns.Adopt(cc)
	reserved = false
	// The requests and the 101 have been used: keep none of them for
	// the life of the pair.
	cc.Request, bc.Request, bc.Response = nil, nil, nil
	if cs.stream {
		p.relay(newPair(p, cc, bc, *rec))
		return
	}
	go p.relay(newPair(p, cc, bc, *rec))
}

// offerSpelling returns the offer as the client spelled it.
func offerSpelling(offers []Protocol, p Protocol) Protocol {
	if o, ok := matchOffer(offers, p); ok {
		return o
	}
	return p
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
	if timeout := p.dialer0().handshakeTimeout(); timeout > 0 {
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

// dialer0 returns the configured Dialer, or a zero one.
func (p *Proxy) dialer0() *Dialer {
	if p.Dialer != nil {
		return p.Dialer
	}
	return &Dialer{}
}

// dialer returns the Dialer for one request: the configured one with the
// request's method, header and body, upgrading over HTTP/1.1 only, and
// keeping an answer that is not a switch whole, for relayAnswer.
func (p *Proxy) dialer(pr *ProxyRequest, body []byte, cs *clientSide) *Dialer {
	d := *p.dialer0()
	d.Method, d.Body = pr.Out.Method, body
	d.HTTP2, d.keepRefusal = nil, true
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

func (p *Proxy) logger() *slog.Logger {
	if p.ErrorLog != nil {
		return p.ErrorLog
	}
	return slog.Default()
}
