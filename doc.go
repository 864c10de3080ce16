// Package upgrade implements protocol switches, on the server and on the
// client: HTTP/1.1's Upgrade header field, 101 Switching Protocols and 426
// Upgrade Required (RFC 9110 §7.8, §15.2.2, §15.5.22), and the extended
// CONNECT of HTTP/2 and HTTP/3 (RFC 8441, RFC 9220).
//
// A client lists the protocols it would switch to, in its order of
// preference, and names "upgrade" in the Connection field:
//
//	GET /chat HTTP/1.1
//	Host: example.com
//	Connection: Upgrade
//	Upgrade: echo/1, websocket
//
// A server that agrees answers 101 naming the protocol it picked, and the
// connection speaks that protocol from the end of the 101 on. A server that
// requires an upgrade answers 426 listing what it would accept.
//
// # Server
//
// A Server holds protocols registered by pattern ("name", "name/version"
// or "name/*"), each with a Handler that serves the switched connection:
//
//	var up upgrade.Server
//	up.HandleFunc("echo/1", func(c *upgrade.Conn) {
//		io.Copy(c, c) // c is a net.Conn; bytes read ahead come first
//	})
//	up.Handle("websocket", &websocket.Handler{Serve: chat})
//
//	mux := http.NewServeMux()
//	mux.Handle("/chat", &up)             // upgrade required: 426 otherwise
//	mux.Handle("/", up.Middleware(site)) // upgrade optional
//
// The Server negotiates in the client's order of preference, checks the
// method and body a protocol takes, reads the body and sends 100 Continue
// before the 101, and hands the protocol a Conn whose Read returns first
// the bytes the client sent behind its request. A Handler that implements
// Accepter may accept, decline or reject a request before the 101. A
// library that switches by itself (gorilla/websocket, coder/websocket,
// gobwas/ws) is registered as a Route's Delegate. Server.Shutdown signals
// switched connections through Draining and waits for them, which
// http.Server.Shutdown does not do for hijacked connections.
//
// Over HTTP/2 the same registrations serve extended CONNECT streams once
// net/http's HTTP/2 server accepts them: import
// github.com/go-upgrade/upgrade/extconnect from package main, or run the
// program with GODEBUG=http2xconnect=1.
//
// # Client
//
// Dial sends an upgrade request and returns the switched connection:
//
//	c, err := upgrade.Dial(ctx, "http://example.com/chat", upgrade.Protocol{Name: "echo", Version: "1"})
//	var refused *upgrade.ResponseError
//	if errors.As(err, &refused) {
//		// refused.StatusCode is e.g. 426; refused.Upgrade lists what the server offers.
//	}
//
// The request is HTTP/1.1, also over TLS; proxies from the environment are
// honoured through CONNECT; a 101 is accepted only if it names an offered
// protocol. A Dialer with an HTTP2Transport switches an HTTP/2 stream
// instead when the server enables RFC 8441.
//
// The websocket and h2c packages provide the WebSocket opening handshake
// (RFC 6455 §4, RFC 8441 §5) and the h2c upgrade (RFC 7540 §3.2) as
// protocols for a Server and for Dial; the reverseproxy package forwards
// upgrades to a backend.
package upgrade
