// Package h2c implements the "h2c" upgrade of RFC 7540 §3.2 — HTTP/2 over
// cleartext TCP, negotiated by an HTTP/1.1 Upgrade — as a protocol for the
// upgrade package. After the switch the connection is served by
// golang.org/x/net/http2: the server's SETTINGS frame comes first, the
// upgrade request is answered on stream 1, and later requests on the
// connection go to the Handler's http.Handler.
//
// # Read this before enabling it
//
// The h2c upgrade is deprecated: RFC 9113, which obsoletes RFC 7540,
// removed it, and clients have dropped it. Go's net/http serves HTTP/2
// over cleartext natively with prior knowledge (RFC 9113 §3.3), which
// needs no upgrade at all:
//
//	var protocols http.Protocols
//	protocols.SetHTTP1(true)
//	protocols.SetUnencryptedHTTP2(true)
//	srv := &http.Server{Handler: h, Protocols: &protocols}
//
// Prefer that. Use this package only for clients that still upgrade.
//
// An h2c upgrade also opens a hole in reverse proxies that pass the
// Upgrade through to the backend ("h2c smuggling"): the proxy applies its
// access rules to the first request only and then relays an HTTP/2
// connection it does not inspect, on which the client can send any request
// to the backend. Enable h2c only on servers with no such proxy in front.
// This is why the package is opt-in: nothing registers it by default.
//
// "h2" is the token for HTTP/2 over TLS, negotiated by ALPN (RFC 9113
// §3.2); it is never a valid Upgrade over cleartext, and a Handler never
// switches to it.
package h2c

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"

	"github.com/go-upgrade/upgrade"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// Protocol is the Upgrade token of HTTP/2 over cleartext TCP, the pattern
// to register a Handler under.
const Protocol = "h2c"

// settingsField is the request header field carrying the client's
// SETTINGS payload (RFC 7540 §3.2.1).
const settingsField = "Http2-Settings" // canonical form of HTTP2-Settings

// A Handler serves h2c upgrades for an upgrade.Server. Register it with
// its Route, which allows the methods an h2c upgrade permits:
//
//	s.HandleRoute(h2c.Protocol, h.Route())
//
// AcceptUpgrade decides, before the 101:
//   - a request over TLS, or one that does not offer "h2c" in its Upgrade
//     field, is declined (upgrade.ErrDecline): h2c is for cleartext only,
//     and "h2" is never accepted as an Upgrade;
//   - a request without an HTTP2-Settings field, or whose Connection field
//     does not list "HTTP2-Settings", is declined too: it is not an h2c
//     upgrade request (RFC 7540 §3.2.1), so it is served as a plain
//     HTTP/1.1 request (by the next handler, with upgrade.Server's
//     Middleware) or by another offered protocol;
//   - HTTP2-Settings sent more than once, not base64url (unpadded), not a whole
//     number of 6-byte settings, or carrying an invalid setting value is
//     answered with 400 Bad Request and no switch.
//
// The zero Handler serves requests with http.DefaultServeMux.
type Handler struct {
	// Handler serves the requests on the HTTP/2 connection: the upgrade
	// request, on stream 1, and every later one. Nil means
	// http.DefaultServeMux.
	//
	// These requests have already upgraded: do not route them back to an
	// upgrade.Server used as an endpoint (it answers HTTP/2 requests with
	// 505). Middleware is fine: it passes HTTP/2 requests on.
	Handler http.Handler

	// Server, if non-nil, supplies the HTTP/1 server settings the HTTP/2
	// connection takes its defaults from: ReadTimeout, WriteTimeout,
	// IdleTimeout, MaxHeaderBytes, ErrorLog and HTTP2 (an
	// *http.HTTP2Config: MaxConcurrentStreams, frame and window sizes).
	// Its Handler is used when the Handler field is nil. Only those
	// fields are read; the Server is not modified.
	Server *http.Server

	// MaxBody bounds the upgrade request's body, read completely before
	// the switch (RFC 7540 §3.2: the body is sent in its entirety before
	// the client may send HTTP/2 frames). It is the Route's MaxBody:
	// zero means the upgrade.Server's MaxRequestBody, negative means no
	// body is accepted.
	MaxBody int64
}

// Route returns h's registration: any method except CONNECT (an upgrade
// request may carry a body), bounded by h.MaxBody, and available only for
// HTTP/1.1 requests on connections without TLS (RFC 7540 §3.2-3.3: over
// TLS, HTTP/2 is "h2", negotiated by ALPN; a connection speaking HTTP/2
// already has no use for it), so a 426 sent over TLS does not list h2c.
// upgrade.Server.Handle uses it.
func (h *Handler) Route() upgrade.Route {
	return upgrade.Route{Handler: h, Methods: []string{"*"}, MaxBody: h.MaxBody, Available: cleartextHTTP1}
}

// cleartextHTTP1 reports whether r is an HTTP/1 request that came over a
// connection without TLS.
func cleartextHTTP1(r *http.Request) bool { return r.ProtoMajor == 1 && r.TLS == nil }

// AcceptUpgrade decides whether r is an h2c upgrade request h switches,
// as described on Handler. It adds no field to the 101 response.
func (h *Handler) AcceptUpgrade(r *http.Request, _ http.Header) error {
	if r.TLS != nil || !offersH2C(r.Header["Upgrade"]) {
		return upgrade.ErrDecline
	}
	vs := r.Header[settingsField]
	if len(vs) == 0 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "HTTP2-Settings") {
		return upgrade.ErrDecline
	}
	if _, err := decodeSettings(vs); err != nil {
		return &upgrade.RejectError{Status: http.StatusBadRequest, Message: err.Error()}
	}
	return nil
}

// offersH2C reports whether the Upgrade lines offer "h2c" (without a
// version), compared ASCII case-insensitively.
func offersH2C(upgradeLines []string) bool {
	offers, err := upgrade.ParseProtocols(upgradeLines)
	if err != nil {
		return false
	}
	for _, p := range offers {
		if p.Version == "" && ascii.EqualFold(p.Name, Protocol) {
			return true
		}
	}
	return false
}

// decodeSettings decodes the HTTP2-Settings lines: exactly one, the
// base64url encoding without padding (RFC 7540 §3.2.1, RFC 4648 §5) of a
// SETTINGS frame payload, a whole number of valid 6-byte settings. An empty
// value is zero settings. A payload of 6-byte settings is a multiple of 3
// bytes, so its encoding never needs padding: a value with "=" is
// malformed, not merely padded.
func decodeSettings(vs []string) ([]byte, error) {
	if len(vs) != 1 {
		return nil, fmt.Errorf("h2c: HTTP2-Settings sent %d times, want exactly once", len(vs))
	}
	b, err := base64.RawURLEncoding.DecodeString(vs[0])
	if err != nil {
		return nil, fmt.Errorf("h2c: HTTP2-Settings %s is not base64url without padding: %w", httplist.Quote(vs[0]), err)
	}
	if len(b)%6 != 0 {
		return nil, fmt.Errorf("h2c: HTTP2-Settings %s decodes to %d bytes, not a whole number of 6-byte settings", httplist.Quote(vs[0]), len(b))
	}
	for i := 0; i < len(b); i += 6 {
		s := http2.Setting{
			ID:  http2.SettingID(uint16(b[i])<<8 | uint16(b[i+1])),
			Val: uint32(b[i+2])<<24 | uint32(b[i+3])<<16 | uint32(b[i+4])<<8 | uint32(b[i+5]),
		}
		if err := s.Valid(); err != nil {
			return nil, fmt.Errorf("h2c: HTTP2-Settings %s: setting %v: %w", httplist.Quote(vs[0]), s, err)
		}
	}
	return b, nil
}

// ServeUpgrade serves c as an HTTP/2 connection with
// golang.org/x/net/http2, answering the upgrade request on stream 1, until
// the client or the server ends it.
//
// The HTTP/2 server reads from c itself, not from c.NetConn(), so a client
// preface that arrived with the upgrade request is not lost. The upgrade
// request is handed to the Handler as an HTTP/2 request: its body is the
// one read before the switch, Proto is "HTTP/2.0", and the connection
// fields (Connection, the options it lists, Upgrade, HTTP2-Settings,
// Keep-Alive, Proxy-Connection) are removed.
//
// Shutdown: when upgrade.Draining(c.Context()) is closed (upgrade.Server.Shutdown), the
// connection is shut down gracefully: the server sends GOAWAY, lets the
// streams in progress finish and then closes. Request contexts carry
// c.Context()'s values and its cancellation, so in-flight requests are
// cancelled when the upgrade.Server closes the connection (Close, or the
// end of Shutdown's grace period).
func (h *Handler) ServeUpgrade(c *upgrade.Conn) {
	if !ascii.EqualFold(c.Protocol.Name, Protocol) || c.Protocol.Version != "" {
		// Registered under another token, such as "h2": AcceptUpgrade
		// declined unless h2c was offered too, but the offer chosen
		// was not h2c. Never speak HTTP/2 after a 101 naming it.
		return
	}
	settings, err := decodeSettings(c.Request.Header[settingsField])
	if err != nil {
		return // AcceptUpgrade checked it; the request cannot have changed
	}
	handler := h.Handler
	if handler == nil && h.Server != nil {
		handler = h.Server.Handler
	}
	if handler == nil {
		handler = http.DefaultServeMux
	}

	// A private http.Server per connection, configured for http2, gives
	// a graceful shutdown hook: its Shutdown makes http2 send GOAWAY on
	// the connections it serves (here: this one).
	hs := h.baseConfig()
	//lint:ignore SA1019 http2.Server, ConfigureServer and ServeConn are deprecated in favour of http.Server.Protocols, which has no h2c upgrade.
	h2s := new(http2.Server)
	//lint:ignore SA1019 see above.
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		return
	}
	shutdown := func() { _ = hs.Shutdown(context.Background()) } // returns at once: hs tracks no conn of its own
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-upgrade.Draining(c.Context()):
			shutdown()
		case <-served:
		}
	}()

	ctx := c.Context()
	handle := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isClosed(upgrade.Draining(c.Context())) {
			// Shutdown began before http2 registered the connection,
			// so the GOAWAY went nowhere: ask again, now that it is
			// registered.
			shutdown()
		}
		handler.ServeHTTP(w, r)
	})
	//lint:ignore SA1019 see above.
	h2s.ServeConn(c, &http2.ServeConnOpts{
		Context:        ctx,
		BaseConfig:     serveConnBase(hs),
		Handler:        handle,
		UpgradeRequest: h2Request(c.Request, ctx),
		Settings:       settings,
	})
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// baseConfig returns a new http.Server holding the settings of h.Server
// that http2 reads.
func (h *Handler) baseConfig() *http.Server {
	hs := new(http.Server)
	if b := h.Server; b != nil {
		hs.ReadTimeout = b.ReadTimeout
		hs.WriteTimeout = b.WriteTimeout
		hs.IdleTimeout = b.IdleTimeout
		hs.MaxHeaderBytes = b.MaxHeaderBytes
		hs.ErrorLog = b.ErrorLog
		hs.HTTP2 = b.HTTP2
	}
	return hs
}

// h2Request returns the upgrade request as the HTTP/2 request it becomes
// on stream 1: same method, target, header and body, HTTP/2.0, without the
// HTTP/1.1 connection fields (RFC 9113 §8.2.2), with context ctx (the
// HTTP/1.1 request's context ended with the switch).
func h2Request(r *http.Request, ctx context.Context) *http.Request {
	r2 := r.Clone(ctx)
	r2.Proto, r2.ProtoMajor, r2.ProtoMinor = "HTTP/2.0", 2, 0
	for opt := range httplist.Elements(r2.Header["Connection"]) {
		r2.Header.Del(opt)
	}
	for _, k := range []string{"Connection", "Upgrade", settingsField, "Keep-Alive", "Proxy-Connection"} {
		delete(r2.Header, k)
	}
	r2.Close = false
	// The upgrade.Server never switches a request framed by
	// Transfer-Encoding, so the body has a known length already.
	r2.TransferEncoding = nil
	return r2
}
