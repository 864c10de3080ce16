// Package upgrade implements protocol switches: HTTP/1.1's Upgrade header
// field, 101 Switching Protocols and 426 Upgrade Required (RFC 9110 §7.8,
// §15.2.2, §15.5.22), and their HTTP/2 successor, the extended CONNECT of
// RFC 8441, on the server and on the client.
//
// A client asks to continue a connection in another protocol by listing
// protocols, in its order of preference, in an Upgrade field and naming
// "upgrade" in the Connection field:
//
//	GET /chat HTTP/1.1
//	Host: example.com
//	Connection: Upgrade
//	Upgrade: echo/1, websocket
//
// A server that agrees answers 101 Switching Protocols naming the protocol
// it picked, and the connection speaks it from the end of that response
// on. A server that requires an upgrade answers 426 Upgrade Required
// listing what it would accept.
//
// # Server
//
// A Server holds protocols registered by pattern — "name", "name/version"
// or "name/*" — each with a Handler that serves the switched connection:
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
// method and body a protocol can take, reads the body and sends 100
// Continue before the 101, hijacks the connection through
// http.ResponseController, and hands the protocol a Conn whose Read
// returns first the bytes the client sent behind its request. A Handler
// that implements Accepter sees the request before the 101 and may accept
// it, decline it or reject it with a status. A library that switches by
// itself (gorilla/websocket, coder/websocket, gobwas/ws) is registered as
// a Route's Delegate.
//
// Switched connections are tracked: Server.Shutdown signals them through
// Draining and waits for them, which http.Server.Shutdown does not do for
// hijacked connections.
//
// Over HTTP/2 the same registrations serve extended CONNECT streams, once
// net/http's HTTP/2 server accepts them: import
// github.com/go-upgrade/upgrade/extconnect from package main, or start the
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
