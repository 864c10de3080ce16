// Package reverseproxy is a reverse proxy for protocol upgrades
// (RFC 9110 §7.8): a Proxy forwards an upgrade request to a backend,
// checks the backend's switch against what the client offered, and relays
// the switched connections without losing a byte. It is to the upgrade
// package what net/http/httputil is to net/http, and works beside
// httputil: put a Proxy's Middleware in front of an httputil.ReverseProxy
// for the rest of a site. Clients of HTTP/2 (RFC 8441) and HTTP/3
// (RFC 9220) extended CONNECT reach HTTP/1.1 backends through it.
package reverseproxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade"
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
//   - The client's offers are parsed strictly, as upgrade.ParseProtocols
//     parses them (malformed: 400; over its limits: 431), and filtered by
//     Allow, in the client's order. Which protocols may pass is the
//     proxy's decision.
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
// An extended CONNECT (ProtoMajor 2 or more, Method CONNECT, its :protocol
// in Header[":protocol"]) is forwarded the same way, as an HTTP/1.1 GET
// offering its :protocol, and the backend's 101 is relayed as a 200 on the
// client's stream, which is then relayed for as long as ServeHTTP runs:
// a stream of net/http's HTTP/2 server (RFC 8441; see
// upgrade.ExtendedConnect), or, when the ResponseWriter (or one its Unwrap
// returns) is an upgrade.StreamAccepter, the stream it switches (HTTP/3,
// RFC 9220). A WebSocket is bridged: an extended CONNECT has no
// Sec-WebSocket-Key, so the proxy sends the backend a fresh one, checks
// its Sec-WebSocket-Accept (502 if wrong) and keeps it from the client.
// Any other answer is relayed without Upgrade and Connection fields, which
// HTTP/2 and HTTP/3 lack (a 426 as 400), except a 2xx, which would tell
// the client its stream had switched: that is a 502. The client's
// END_STREAM reaches the backend as a half-close, and the backend's
// half-close ends the sending side of a StreamAccepter's stream. net/http's
// HTTP/2 server ends a stream only when its handler returns, so there the
// backend's EOF ends the pair at once: the client gets END_STREAM (and a
// RST_STREAM NO_ERROR if it is still sending) and the backend connection
// is closed. A reset on either side is passed on as a reset; net/http
// resets the client's stream with INTERNAL_ERROR, the one code its server
// resets a stream with from a handler (RFC 9113 §8.5 would have
// CONNECT_ERROR), and a StreamAccepter's stream whose net.Conn has a
// Reset method, as http3.Handler's has, is reset with it (there,
// H3_CONNECT_ERROR: RFC 9114 §8.1).
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
	// set Out's header fields. New sets one for a single backend.
	// Without Rewrite every upgrade is answered 500.
	Rewrite func(*Request)

	// Dialer opens the connection to the backend: its network, TLS,
	// proxy, handshake timeout, Prepare and Check settings apply; HTTP2
	// does not (the backend is asked over HTTP/1.1). Its Method, Header
	// and Body are replaced by each request's. Nil means a zero Dialer
	// (which honours HTTP_PROXY and HTTPS_PROXY, as http.DefaultTransport
	// does). Its HandshakeTimeout (zero: 10 s, as for any Dialer) bounds
	// the dial and the backend's answer, reading the client's request
	// body, writing the 101 to the client, and each read of the body of an
	// answer that is not a switch.
	Dialer *upgrade.Dialer

	// Allow lists the protocols that may be forwarded, as patterns like
	// those of upgrade.Server.Handle: "websocket", "echo/1", "name/*". A
	// request offering none of them is refused with 403 Forbidden
	// (Middleware passes it on as a plain request instead, without its
	// upgrade); offers that are not allowed are left out of the request to
	// the backend. Nil means every protocol except h2c: an h2c upgrade
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
	// the backend is dialed and sent with the request. Zero means 1 MiB;
	// larger bodies are answered 413. A request body with
	// Transfer-Encoding is never forwarded (400): a switch must not depend
	// on chunked framing.
	MaxRequestBody int64

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
	allow     []pattern // Allow, parsed
	allowErr  error     // a malformed Allow pattern

	conns track.Tracker // the relayed pairs, by their client side
}

// New returns a Proxy that forwards every allowed upgrade to target (its
// path joined with the request's, see Request.SetURL), keeping the
// client's Host field, as httputil.NewSingleHostReverseProxy does, so that
// a backend comparing Origin with Host still sees the host the browser
// used.
func New(target *url.URL) *Proxy {
	return &Proxy{Rewrite: func(pr *Request) {
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
//
// http.Server's Shutdown does not end relayed pairs: it forgets hijacked
// connections, and waits for the handlers relaying HTTP/2 streams. Start
// this Shutdown from a function registered with the http.Server's
// RegisterOnShutdown, which runs when its Shutdown starts, and call it
// again once that returns to wait for the pairs (see the example).
func (p *Proxy) Shutdown(ctx context.Context) error { return p.conns.Shutdown(ctx) }

// Close closes every relayed pair at once and refuses new upgrades.
func (p *Proxy) Close() error {
	p.conns.StartDraining()
	p.conns.CloseAll()
	return nil
}

// logger returns ErrorLog, or slog.Default().
func (p *Proxy) logger() *slog.Logger {
	if p.ErrorLog != nil {
		return p.ErrorLog
	}
	return slog.Default()
}
