package websocket

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/httplist"
)

// DialOptions configures a client opening handshake. The zero value
// offers no subprotocol and no extension, with a zero upgrade.Dialer.
type DialOptions struct {
	// Dialer, if non-nil, is the upgrade.Dialer to dial with: its
	// network, TLS, proxy, timeout and header settings apply. Dial uses a
	// copy with the handshake's fields added to Header, its own Prepare
	// (adding Sec-WebSocket-Key) run before Dialer.Prepare, and its own
	// check of the response run before Dialer.Check. Its Method must be
	// empty or GET and its Body empty: the opening handshake is a GET
	// without a body.
	//
	// With Dialer.HTTP2 set, the handshake is an extended CONNECT over
	// HTTP/2 (RFC 8441) when the server enables it, sharing the
	// HTTP2Transport's connections, and the RFC 6455 Upgrade otherwise:
	// see Dial.
	Dialer *upgrade.Dialer

	// Header holds extra request header fields, such as Origin, Cookie or
	// Authorization. It must not set the fields of the handshake itself:
	// Upgrade, Connection and the Sec-WebSocket-* fields.
	Header http.Header

	// Subprotocols lists the subprotocols to offer in
	// Sec-WebSocket-Protocol, in order of preference. Each must be a
	// token. The server selects at most one: the response says which
	// (c.Response.Header.Get("Sec-WebSocket-Protocol")).
	Subprotocols []string

	// Extensions lists the extensions to offer in
	// Sec-WebSocket-Extensions. A 101 naming any other fails the
	// handshake. The accepted ones are in the 101's
	// Sec-WebSocket-Extensions field (see ParseExtensions).
	Extensions []Extension
}

// wsOffer is the single protocol a WebSocket client offers.
var wsOffer = upgrade.Protocol{Name: "websocket"}

// Dial performs a WebSocket opening handshake (RFC 6455 §4.1) with the
// server at rawURL (ws, wss, http or https) and returns the switched
// connection, ready for a framing library. opts may be nil. The response
// is c.Response: the subprotocol the server selected, if any, is
// c.Response.Header.Get("Sec-WebSocket-Protocol").
//
// Every dial sends a fresh random Sec-WebSocket-Key (NewKey) and
// "Sec-WebSocket-Version: 13", and checks the 101 with CheckResponse. A
// 101 that fails a check, including the upgrade.Dialer's own checks
// (errors.Is(err, upgrade.ErrInvalidSwitch)), is a *HandshakeError, and
// the connection is closed. A final status other than 101 is the
// upgrade.Dialer's *upgrade.ResponseError.
//
// Over HTTP/2 (opts.Dialer.HTTP2 set, and a server that enables extended
// CONNECT), the handshake is the one of RFC 8441 §5: a CONNECT stream
// with :protocol "websocket", "sec-websocket-version: 13", the offered
// subprotocols and extensions, Origin and the other fields, and no
// Sec-WebSocket-Key; the server must answer 200, checked by
// CheckResponse; a refusal is an *upgrade.ResponseError as above. With
// opts.Dialer.HTTP3 set, the same handshake goes over HTTP/3 (RFC 9220)
// for wss and https URLs. c.Request.ProtoMajor says which handshake
// switched c.
func Dial(ctx context.Context, rawURL string, opts *DialOptions) (*upgrade.Conn, error) {
	if opts == nil {
		opts = &DialOptions{}
	}
	var d upgrade.Dialer
	if opts.Dialer != nil {
		d = *opts.Dialer
	}
	if d.Method != "" && d.Method != http.MethodGet {
		return nil, fmt.Errorf("websocket: DialOptions.Dialer.Method is %s; the opening handshake is a GET", httplist.Quote(d.Method))
	}
	if len(d.Body) > 0 {
		return nil, errors.New("websocket: DialOptions.Dialer.Body is set; the opening handshake has no body")
	}
	h, err := clientHeader(opts)
	if err != nil {
		return nil, err
	}
	for k, vs := range d.Header {
		ck := http.CanonicalHeaderKey(k)
		if _, ok := h[ck]; ok {
			return nil, fmt.Errorf("websocket: header field %s of DialOptions.Dialer.Header is also set by DialOptions.Header or by the handshake", k)
		}
		h[ck] = append([]string(nil), vs...)
	}
	d.Method, d.Header = http.MethodGet, h
	prepare := d.Prepare
	d.Prepare = func(req *http.Request) error {
		// RFC 8441 §5: over HTTP/2, :protocol replaces the key.
		if req.ProtoMajor == 1 {
			req.Header["Sec-Websocket-Key"] = []string{NewKey()}
		}
		if prepare != nil {
			return prepare(req)
		}
		return nil
	}
	check := d.Check
	d.Check = func(resp *http.Response) error {
		// resp.Request is the request as Prepare left it.
		if err := CheckResponse(resp, resp.Request.Header.Get("Sec-Websocket-Key"), opts); err != nil {
			return err
		}
		if check != nil {
			return check(resp)
		}
		return nil
	}

	c, err := d.Dial(ctx, rawURL, wsOffer)
	if err != nil {
		var he *HandshakeError
		switch {
		case errors.As(err, &he):
			return nil, he
		case errors.Is(err, upgrade.ErrInvalidSwitch):
			return nil, &HandshakeError{Reason: "invalid 101 response", Err: err}
		}
		return nil, err
	}
	return c, nil
}
