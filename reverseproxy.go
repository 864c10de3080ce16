package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
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
//     Content-Length body if the client sent one, and X-Forwarded-For,
//     X-Forwarded-Host, X-Forwarded-Proto and Forwarded (RFC 7239) added.
//     Hop-by-hop fields (Connection, the fields it names, Keep-Alive, TE,
//     Trailer, Proxy-*) are dropped; the upgrade's own fields are not.
//   - A 101 from the backend is relayed only if it names protocols the
//     client offered (and the proxy forwarded): the Dialer checks it.
//     Otherwise the client gets 502 Bad Gateway and both connections are
//     closed. A refusal (426 with its Upgrade list, any 4xx or 5xx) is
//     relayed as it is, its hop-by-hop fields dropped and its body cut at
//     4 KiB. An unreachable backend is a 502 (504 past the handshake
//     timeout), answered by ErrorHandler.
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
// client. A refusal is relayed without Upgrade and Connection fields,
// which HTTP/2 lacks (a 426 as 400). net/http's HTTP/2 server sends a
// stream's END_STREAM only when its handler returns, so the backend's
// half-close reaches an HTTP/2 client when the client has ended its own
// side too; a reset on either side is passed on as a reset.
//
// An HTTP/1.0 request, a request whose Connection field lacks the
// "upgrade" option, and any other HTTP/2 request are not upgrades; Proxy
// as an endpoint (ServeHTTP) answers them 400 Bad Request, Middleware
// passes them on. A Proxy has no 426 of its own to give: only the backend
// knows which protocols it speaks.
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
	// proxy, handshake timeout, Prepare and Check settings apply. Its
	// Method, Header and Body are replaced by each request's. Nil means
	// a zero Dialer (which honours HTTP_PROXY and HTTPS_PROXY, as
	// http.DefaultTransport does). Its HandshakeTimeout also bounds
	// reading the client's request body and writing the 101 to it.
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
	// DefaultMaxRequestBody; larger bodies are answered 413. A request
	// body with Transfer-Encoding is never forwarded (400): a switch
	// must not depend on chunked framing.
	MaxRequestBody int64

	// Limits bounds the Upgrade header parser, as Server.Limits does.
	Limits Limits

	// ErrorLog receives errors: backends that fail, failed hijacks and
	// writes. At slog.LevelDebug it also gets one record per relayed
	// pair when it ends. Nil means slog.Default().
	ErrorLog *slog.Logger

	allowOnce sync.Once
	allow     []route // Allow, parsed
	allowErr  error   // a malformed Allow pattern

	conns tracker // the relayed pairs, by their client Conn
}

// A ProxyRequest is the request a Proxy received and the one it is about
// to send to the backend, given to Rewrite.
type ProxyRequest struct {
	// In is the request the client sent. It must not be modified.
	In *http.Request

	// Out is the request to send to the backend. Its URL is nil until
	// Rewrite sets it; Host is In's (sent unless empty, when the URL's
	// host is sent); Header holds In's end-to-end fields plus the
	// forwarding fields. Its Upgrade and Connection fields are set by
	// the Proxy: Rewrite must not set them, nor Content-Length,
	// Transfer-Encoding or Expect.
	Out *http.Request
}

// SetURL routes Out to target: scheme and host become target's, the
// path is target's path joined with In's, and the query is target's
// followed by In's. Out.Host is cleared, so the backend gets target's
// host in its Host field; set Out.Host = In.Host afterwards to keep the
// client's.
func (pr *ProxyRequest) SetURL(target *url.URL) {
	u := *target
	u.User = target.User
	in := pr.In.URL
	u.Path, u.RawPath = joinURLPath(target, in)
	switch {
	case target.RawQuery == "":
		u.RawQuery = in.RawQuery
	case in.RawQuery != "":
		u.RawQuery = target.RawQuery + "&" + in.RawQuery
	}
	u.Fragment, u.RawFragment = "", ""
	pr.Out.URL = &u
	pr.Out.Host = ""
}

// joinURLPath joins the paths of a and b with exactly one slash between
// them, keeping their escaping.
func joinURLPath(a, b *url.URL) (path, rawPath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	ap, bp := a.EscapedPath(), b.EscapedPath()
	joined := singleJoiningSlash(ap, bp)
	return singleJoiningSlash(a.Path, b.Path), joined
}

func singleJoiningSlash(a, b string) string {
	as, bs := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case as && bs:
		return a + b[1:]
	case !as && !bs && b != "":
		return a + "/" + b
	}
	return a + b
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
// Proxy accepts and passes every other request to next: plain requests
// unchanged, and upgrade requests offering no allowed protocol (a
// speculative "Upgrade: h2c", say) as plain requests, with their Upgrade
// field, the "upgrade" option of Connection and the fields that belong
// to the upgrade (HTTP2-Settings) removed, so that next, an
// httputil.ReverseProxy for one, cannot forward the upgrade on its own.
// Malformed and oversized Upgrade fields are still answered 400 and 431,
// and upgrades during Shutdown 503.
func (p *Proxy) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, next)
	})
}

// ActiveConns returns the number of relayed pairs, by protocol as the
// client spelled it; pairs whose backend handshake is still in progress
// are counted under "".
func (p *Proxy) ActiveConns() map[string]int { return p.conns.active() }

// Shutdown shuts the proxy down gracefully: new upgrade requests are
// answered 503 with Retry-After from then on, and the relayed pairs go
// on relaying (a relay has nothing to say goodbye with) until both of
// their sides have closed. Shutdown waits for that and returns nil, or,
// if ctx ends first, closes the remaining pairs and returns ctx.Err().
// It may be called more than once.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.conns.shutdown(ctx) }

// Close closes every relayed pair at once and refuses new upgrades.
func (p *Proxy) Close() error {
	p.conns.startDraining()
	p.conns.closeAll()
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
			next.ServeHTTP(w, r)
			return
		}
		p.refuse(w, r, http.StatusBadRequest, "upgrade: this endpoint forwards protocol upgrades only")
		return
	}
	var arr [4]Protocol
	offers, err := AppendProtocols(arr[:0], r.Header["Upgrade"], p.Limits)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, ErrHeaderTooLarge) {
			code = http.StatusRequestHeaderFieldsTooLarge
		}
		p.refuse(w, r, code, err.Error())
		return
	}
	if len(r.TransferEncoding) > 0 {
		// Never switch a request whose framing may be smuggled
		// (RFC 9112 §6.1), as the Server does.
		if next != nil {
			w.Header()["Connection"] = []string{"close"}
			next.ServeHTTP(w, withoutUpgrade(r))
			return
		}
		p.refuse(w, r, http.StatusBadRequest, "a request switching protocols must not use Transfer-Encoding; send its body with Content-Length")
		return
	}
	allow, ok := p.admit(w, r)
	if !ok {
		return
	}
	offers = filterOffers(offers, allow)
	if len(offers) == 0 {
		if next != nil {
			next.ServeHTTP(w, withoutUpgrade(r))
			return
		}
		// 403, not 426: a 426 must list protocols that would be
		// accepted, and only the backend knows those.
		p.refuse(w, r, http.StatusForbidden, "upgrade: none of the offered protocols may be forwarded")
		return
	}
	p.forward(w, r, &clientSide{offers: offers, accept: p.accept11})
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
	offer, err := ParseProtocol(r.Header.Get(":protocol"))
	if err != nil || len(r.Header[":protocol"]) != 1 {
		p.refuse(w, r, http.StatusBadRequest, "upgrade: malformed :protocol pseudo-header")
		return
	}
	allow, ok := p.admit(w, r)
	if !ok {
		return
	}
	offers := filterOffers([]Protocol{offer}, allow)
	if len(offers) == 0 {
		p.refuse(w, r, http.StatusForbidden, "upgrade: protocol "+offer.String()+" may not be forwarded")
		return
	}
	p.forward(w, r, &clientSide{
		offers:          offers,
		stream:          true,
		bridgeWebSocket: offer.Version == "" && ascii.EqualFold(offer.Name, "websocket"),
		accept:          p.acceptStream,
	})
}

// admit returns the parsed Allow patterns for an upgrade request the
// proxy may take on now, or answers it (503 during Shutdown, 500 when
// Allow is malformed) and returns false.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request) ([]route, bool) {
	if p.conns.closing.Load() {
		w.Header().Set("Retry-After", "1")
		p.refuse(w, r, http.StatusServiceUnavailable, "proxy shutting down")
		return nil, false
	}
	allow, err := p.allowed()
	if err != nil {
		p.logger().Error("upgrade: proxy misconfigured", "err", err)
		p.refuse(w, r, http.StatusInternalServerError, "upgrade: proxy misconfigured")
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

// withoutUpgrade returns r as a plain request: without its Upgrade field,
// the fields only an upgrade uses, and the options naming them in
// Connection.
func withoutUpgrade(r *http.Request) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	h := r.Header.Clone()
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
	var keep []string
	for o := range httplist.Elements(h["Connection"]) {
		if !ascii.EqualFold(o, "upgrade") && !ascii.EqualFold(o, "http2-settings") {
			keep = append(keep, o)
		}
	}
	if keep == nil {
		delete(h, "Connection")
	} else {
		h["Connection"] = []string{strings.Join(keep, ", ")}
	}
	r2.Header = h
	return r2
}

// clientSide is the client's half of a proxied switch: what the client
// offered and how it is switched once the backend agrees. An HTTP/1.1
// client is switched with a hijack and a 101 (accept11); an HTTP/2
// client (RFC 8441 extended CONNECT) with a 200 on its stream
// (acceptStream), and, for a WebSocket, bridged by bridgeWebSocket.
type clientSide struct {
	offers []Protocol // allowed offers, in the client's order

	// stream is set for an HTTP/2 client: its request has no body to
	// forward, and its stream lives only as long as ServeHTTP runs, so
	// the pair is relayed on the request's goroutine.
	stream bool

	// bridgeWebSocket is set for an RFC 8441 WebSocket, which carries no
	// Sec-WebSocket-Key: the proxy supplies one to the HTTP/1.1 backend,
	// checks its Sec-WebSocket-Accept and keeps it from the client.
	bridgeWebSocket bool

	// accept completes the switch on the client's side, telling it the
	// backend switched to the protocols in upgrade (the backend's
	// Upgrade value) with the end-to-end fields h, and returns the
	// client's Conn: its bytes read ahead included.
	accept func(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*Conn, error)
}

// pendingKey is the tracker key of a pair whose backend has not switched
// yet.
const pendingKey = ""

// forward sends r to the backend and, if it switches, relays the pair.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, cs *clientSide) {
	if p.Rewrite == nil {
		p.logger().Error("upgrade: Proxy.Rewrite is nil: no backend to forward to")
		p.refuse(w, r, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return
	}
	var body []byte
	if !cs.stream {
		var ok bool
		if body, ok = p.readBody(w, r); !ok {
			return
		}
	}
	if !p.conns.reserve(pendingKey, 0, p.MaxConns) {
		w.Header().Set("Retry-After", "1")
		p.refuse(w, r, http.StatusServiceUnavailable, "too many proxied connections, retry later")
		return
	}
	key, reserved := pendingKey, true
	defer func() {
		if reserved {
			p.conns.release(key)
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
		p.refuse(w, r, http.StatusInternalServerError, "upgrade: proxy misconfigured")
		return
	}
	d := p.dialer(pr, body, cs)
	bc, err := d.Dial(r.Context(), pr.Out.URL.String(), cs.offers...)
	if err != nil {
		p.backendFailed(w, r, err)
		return
	}
	if p.conns.closing.Load() {
		bc.Close()
		w.Header().Set("Retry-After", "1")
		p.refuse(w, r, http.StatusServiceUnavailable, "proxy shutting down")
		return
	}
	// Count the pair under its protocol before the client learns of the
	// switch, so that ActiveConns agrees with what the client saw.
	key = bc.Protocol.String()
	p.conns.rekey(pendingKey, key)
	up := strings.Join(bc.Response.Header["Upgrade"], ", ")
	h := switchHeader(bc.Response.Header, cs.bridgeWebSocket)
	cc, err := cs.accept(w, r, up, h)
	if err != nil {
		bc.Close()
		p.logger().Error("upgrade: proxy switching the client", "remote", r.RemoteAddr, "err", err)
		return
	}
	cc.Protocol, cc.key = offerSpelling(cs.offers, bc.Protocol), key
	// Its slot was reserved before any Shutdown began, which waits for it:
	// the pair is relayed like the others until the grace period ends,
	// even if Shutdown started while the backend was answering.
	p.conns.adopt(cc)
	reserved = false
	backend := pr.Out.URL.Host
	// The requests and the 101 have been used: keep none of them for
	// the life of the pair.
	cc.Request, bc.Request, bc.Response = nil, nil, nil
	if cs.stream {
		p.relay(newPair(p, cc, bc, backend))
		return
	}
	go p.relay(newPair(p, cc, bc, backend))
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
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !hasBody(r) {
		return nil, true
	}
	limit := p.MaxRequestBody
	if limit <= 0 {
		limit = DefaultMaxRequestBody
	}
	if r.ContentLength > limit {
		p.refuse(w, r, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
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
		p.refuse(w, r, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
		return nil, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.refuse(w, r, http.StatusRequestTimeout, "request body not received within the handshake timeout")
		return nil, false
	case err != nil:
		p.refuse(w, r, http.StatusBadRequest, "could not read request body")
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
// request's method, header and body.
func (p *Proxy) dialer(pr *ProxyRequest, body []byte, cs *clientSide) *Dialer {
	d := *p.dialer0()
	d.Method, d.Body = pr.Out.Method, body
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

// newProxyRequest makes the request to the backend: In's method, target
// and end-to-end fields, with the forwarding fields added. The upgrade's
// own HTTP2-Settings field is kept, named in Connection, when h2c is
// among the offers forwarded.
func newProxyRequest(r *http.Request, offers []Protocol) *ProxyRequest {
	out := &http.Request{
		Method:     r.Method,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       r.Host,
		Header:     make(http.Header, len(r.Header)+4),
	}
	out = out.WithContext(r.Context())
	h := out.Header
	for k, vs := range r.Header {
		h[k] = append([]string(nil), vs...)
	}
	keepSettings := len(h["Http2-Settings"]) > 0 && HasConnectionOption(r.Header, "HTTP2-Settings") &&
		slices.ContainsFunc(offers, func(o Protocol) bool { return ascii.EqualFold(o.Name, "h2c") })
	settings := h["Http2-Settings"]
	removeHopByHop(h)
	delete(h, "Upgrade")
	delete(h, ":protocol") // an HTTP/2 pseudo-header, in the Header of an extended CONNECT
	// The Dialer sets these from the body it sends, and never sends
	// Expect: the proxy has answered it already.
	delete(h, "Content-Length")
	delete(h, "Expect")
	delete(h, "Host")
	delete(h, "Http2-Settings")
	if keepSettings {
		h["Http2-Settings"] = settings
		h["Connection"] = []string{"HTTP2-Settings"}
	}
	addForwarded(h, r)
	return &ProxyRequest{In: r, Out: out}
}

// hopByHop lists the fields that apply to one connection only
// (RFC 9110 §7.6.1; Keep-Alive, Proxy-Connection and the Proxy-* pair by
// widespread use), as httputil.ReverseProxy removes them.
var hopByHop = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
}

// removeHopByHop removes the hop-by-hop fields of h, those named in its
// Connection field included. Upgrade is left to the caller.
func removeHopByHop(h http.Header) {
	for o := range httplist.Elements(h["Connection"]) {
		if ascii.EqualFold(o, "upgrade") {
			continue
		}
		if httplist.IsToken(o) {
			delete(h, http.CanonicalHeaderKey(o))
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// addForwarded adds r's hop to X-Forwarded-For (appended to what r
// carries, as httputil.ReverseProxy's Director path does: a proxy at the
// edge may delete the client's own in Rewrite), X-Forwarded-Host,
// X-Forwarded-Proto and Forwarded (RFC 7239).
func addForwarded(h http.Header, r *http.Request) {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = ""
	}
	if ip != "" {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip4xff := strings.Join(prior, ", ") + ", " + ip
			h["X-Forwarded-For"] = []string{ip4xff}
		} else {
			h["X-Forwarded-For"] = []string{ip}
		}
	}
	if r.Host != "" {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	h["X-Forwarded-Proto"] = []string{proto}

	var b strings.Builder
	if ip != "" {
		b.WriteString("for=")
		if strings.Contains(ip, ":") {
			// An IPv6 address is bracketed and quoted (RFC 7239 §6).
			b.WriteString(`"[` + ip + `]"`)
		} else {
			b.WriteString(ip)
		}
		b.WriteByte(';')
	}
	if r.Host != "" && validForwardedHost(r.Host) {
		b.WriteString("host=")
		b.WriteString(forwardedValue(r.Host))
		b.WriteByte(';')
	}
	b.WriteString("proto=")
	b.WriteString(proto)
	if prior := h["Forwarded"]; len(prior) > 0 {
		h["Forwarded"] = []string{strings.Join(prior, ", ") + ", " + b.String()}
	} else {
		h["Forwarded"] = []string{b.String()}
	}
}

// validForwardedHost reports whether host can be put in a Forwarded
// host parameter: printable ASCII without quotes or backslashes.
func validForwardedHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// forwardedValue returns v as a Forwarded parameter value: a token as it
// is, anything else quoted.
func forwardedValue(v string) string {
	if httplist.IsToken(v) {
		return v
	}
	return `"` + v + `"`
}

// switchHeader returns the fields of the backend's 101 to relay to the
// client: the end-to-end ones. Upgrade and Connection are the client
// side's to write; a 101 has no content, so no Content-Length; and a
// bridged WebSocket's Sec-WebSocket-Accept answers the proxy's key, not
// anything the client sent.
func switchHeader(h http.Header, bridged bool) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		out[k] = vs
	}
	removeHopByHop(out)
	delete(out, "Upgrade")
	delete(out, "Content-Length")
	if bridged {
		delete(out, "Sec-Websocket-Accept")
	}
	return out
}

// accept11 switches an HTTP/1.1 client: it hijacks the connection,
// keeps the bytes the client sent behind its request, and writes the 101
// (preceded by a 100 Continue if the client expects one that net/http
// has not sent) in one write, bounded by the handshake timeout.
func (p *Proxy) accept11(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*Conn, error) {
	rc := http.NewResponseController(w)
	nc, brw, err := rc.Hijack()
	if err != nil {
		w.Header().Set("Connection", "close")
		http.Error(w, "upgrade: could not switch protocols", http.StatusInternalServerError)
		return nil, fmt.Errorf("hijacking the connection: %w", err)
	}
	c := &Conn{nc: nc, Request: r}
	if n := brw.Reader.Buffered(); n > 0 {
		ahead, _ := brw.Reader.Peek(n)
		c.rbuf = append([]byte(nil), ahead...)
	}
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	if expectsContinue(r) && !hasBody(r) {
		b = append(b, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "...)
	b = append(b, upgrade...)
	b = append(b, "\r\nConnection: Upgrade\r\n"...)
	b = appendHeader(b, h)
	b = append(b, "\r\n"...)
	if timeout := p.dialer0().handshakeTimeout(); timeout > 0 {
		_ = nc.SetWriteDeadline(time.Now().Add(timeout))
	}
	_, err = nc.Write(b)
	*bp = b
	bufPool.Put(bp)
	if err == nil {
		err = nc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("writing the 101 response: %w", err)
	}
	return c, nil
}

// backendFailed answers a request whose backend did not switch: a
// backend's refusal is relayed, anything else goes to ErrorHandler.
func (p *Proxy) backendFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.ProtoMajor == 1 {
		// On HTTP/2, net/http would take "close" as a reason to shut
		// down the whole connection, every other stream with it.
		w.Header()["Connection"] = []string{"close"}
	}
	var re *ResponseError
	if errors.As(err, &re) && !re.Proxy {
		p.relayRefusal(w, r, re)
		return
	}
	if p.ErrorHandler != nil {
		p.ErrorHandler(w, r, err)
		return
	}
	code := http.StatusBadGateway
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	p.logger().Warn("upgrade: proxy: backend did not switch", "remote", r.RemoteAddr, "err", err)
	p.refuse(w, r, code, http.StatusText(code))
}

// relayRefusal relays a backend's final answer other than 101: its
// status, end-to-end fields (and its Upgrade list, with the "upgrade"
// option RFC 9110 §7.8 requires beside it) and body excerpt. The client's
// connection is closed after it.
func (p *Proxy) relayRefusal(w http.ResponseWriter, r *http.Request, re *ResponseError) {
	h := w.Header()
	src := re.Header.Clone()
	upgrade := src["Upgrade"]
	removeHopByHop(src)
	delete(src, "Upgrade")
	delete(src, "Content-Length")
	for k, vs := range src {
		h[k] = vs
	}
	status := re.StatusCode
	switch {
	case r.ProtoMajor != 1:
		// HTTP/2 has neither Upgrade nor Connection fields, and a 426
		// must list protocols in Upgrade (RFC 9110 §15.5.22): an HTTP/2
		// client gets 400 instead, as the Server answers it.
		if status == http.StatusUpgradeRequired {
			status = http.StatusBadRequest
		}
	case len(upgrade) > 0:
		h["Upgrade"] = upgrade
		h["Connection"] = []string{"close", "Upgrade"}
	default:
		h["Connection"] = []string{"close"}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(re.Body))}
	w.WriteHeader(status)
	_, _ = w.Write(re.Body)
}

// acceptStream switches an HTTP/2 client's stream (RFC 8441): a 200 with
// the end-to-end fields h of the backend's 101, flushed within the
// handshake timeout, after which the stream is the client's Conn.
func (p *Proxy) acceptStream(w http.ResponseWriter, r *http.Request, _ string, h http.Header) (*Conn, error) {
	sc, err := answerStream(w, r, h, p.dialer0().handshakeTimeout())
	if err != nil {
		return nil, fmt.Errorf("answering the extended CONNECT: %w", err)
	}
	return &Conn{nc: sc, Request: r}, nil
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

func (p *Proxy) logger() *slog.Logger {
	if p.ErrorLog != nil {
		return p.ErrorLog
	}
	return slog.Default()
}
