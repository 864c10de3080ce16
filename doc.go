// Package upgrade implements protocol switches: HTTP/1.1's Upgrade header
// field, 101 Switching Protocols and 426 Upgrade Required (RFC 9110 §7.8,
// §15.2.2, §15.5.22), and their HTTP/2 successor, the extended CONNECT of
// RFC 8441, on the server, on the client and in a reverse proxy.
//
// An HTTP/1.1 client may ask to continue a connection in another protocol
// by listing protocols, in its order of preference, in an Upgrade field
// and naming "upgrade" in the Connection field:
//
//	GET /chat HTTP/1.1
//	Host: example.com
//	Connection: Upgrade
//	Upgrade: echo/1, websocket
//
// A server that agrees answers 101 Switching Protocols naming the protocol
// it picked, and from the end of that response on the connection speaks
// it. A server that requires an upgrade answers 426 Upgrade Required and
// lists what it would accept.
//
// # Server
//
// A Server holds protocols registered by pattern — "name" (offers without a
// version), "name/version" (that version exactly) or "name/*" (any version)
// — each with a Handler that serves the switched connection:
//
//	var up upgrade.Server
//	up.HandleFunc("echo/1", func(c *upgrade.Conn) {
//		io.Copy(c, c) // c is a net.Conn; read-ahead bytes come first
//	})
//	up.Handle("websocket", &websocket.Handler{Serve: chat})
//
//	mux := http.NewServeMux()
//	mux.Handle("/chat", &up)                  // upgrade required: 426 otherwise
//	mux.Handle("/", up.Middleware(site))      // upgrade optional: site serves the rest
//	srv := &http.Server{Addr: ":8080", Handler: mux}
//	up.RegisterOnShutdown(srv, 10*time.Second) // srv.Shutdown starts draining switched conns;
//	                                           // up.Shutdown(ctx) after it waits for them
//
// Negotiation follows the client's order of preference by default
// (Server.Policy selects the server's registration order instead). A
// Handler that implements Accepter sees the request before the 101 and may
// accept it (adding 101 header fields), decline it (negotiation moves on to
// the next offer) or reject it with a status. A Route states which methods
// a protocol can be switched to from, how large a request body it takes,
// and, with Available, on which connections it can be switched to at all:
// h2c is unavailable over TLS, so it is neither switched to nor listed in
// a 426 there. Handle uses a handler's own Route when it has a Route
// method, as the websocket and h2c handlers do: WebSocket allows GET only,
// so another method offering only websocket gets 405 with "Allow: GET".
//
// A protocol whose switch an existing http.Handler does by itself —
// gorilla/websocket's Upgrader, coder/websocket's Accept, gobwas/ws's
// UpgradeHTTP — is registered with Delegate: the Server negotiates, the
// handler switches, and the connection it hijacks is counted, capped and
// shut down like the Server's own.
//
// The rules the Server enforces:
//
//   - Every Upgrade line is parsed as an RFC 9110 list of token ["/" token];
//     a malformed list is answered with 400, an oversized one (see Limits)
//     with 431. Protocol names compare ASCII case-insensitively (never
//     Unicode folding), versions exactly, and only an offered protocol is
//     ever switched to.
//   - Upgrade counts only in an HTTP/1.1 request whose Connection field
//     carries the "upgrade" option, as a whole list element on any line. In
//     HTTP/1.0 it is ignored. HTTP/2 has no 101, and its responses never
//     carry Upgrade or Connection: there, a CONNECT carrying a :protocol
//     pseudo-header (RFC 8441) is negotiated as a one-protocol offer against
//     the same registrations and answered 200, its stream becoming the
//     Conn. net/http accepts such requests only when ExtendedConnect is on:
//     import github.com/go-upgrade/upgrade/extconnect from package main, or
//     start the program with GODEBUG=http2xconnect=1.
//   - If the client sent "Expect: 100-continue", the 100 goes out before the
//     101, exactly once. A request body is read (bounded) before the switch
//     and handed to the protocol as c.Request.Body; the bytes after the
//     request belong to the new protocol and reach it intact, even those
//     net/http had already read. Memory for the body follows the bytes
//     received, not the length declared.
//   - An upgrade request framed by Transfer-Encoding is never switched:
//     net/http drops a Content-Length sent beside it, so it cannot be told
//     from the request-smuggling form of RFC 9112 §6.1. The endpoint answers
//     400, Middleware serves it as a plain request; both close the
//     connection after the response.
//   - Having refused a request that carried an Upgrade field, whatever the
//     status (400, 403, 405, 408, 413, 426, 431, 500, 503 or an
//     Accepter's own), the Server closes the connection: bytes the client sent behind the request are never read
//     as a next request, so a proxy that looked only at the request and
//     assumed a switch cannot smuggle requests through (WebSocket
//     smuggling). Requests Middleware passes on to its handler keep their
//     connection as net/http decides.
//   - Every response carrying Upgrade carries the "upgrade" connection
//     option; every 426 lists the protocols available for the request in
//     the server's order of preference (RFC 9110 §15.5.22). When the
//     connection is closed, Connection is sent as two lines, "close" and
//     then "Upgrade": net/http closes the connection only when the first
//     line is exactly "close".
//   - OPTIONS * can be switched like any request (RFC 9110 §7.8), but
//     net/http answers it by itself unless the http.Server sets
//     DisableGeneralOptionsHandler.
//
// After the switch, the Handler runs in a goroutine of its own, owns the
// connection and must return when it is done with it; the connection is
// closed then. Read the connection through the Conn: Conn.NetConn returns
// the underlying connection (for socket options or the TLS state), and
// reading it directly skips the bytes that arrived with the request, which
// Conn.Read returns first (Conn.Buffered counts them).
//
// The Server tracks switched connections. Shutdown refuses new upgrades
// and closes every Conn's Draining channel: the moment to say goodbye (a
// WebSocket close frame with 1001, an HTTP/2 GOAWAY, which the h2c handler
// sends itself) and return, while the connection keeps working. A Conn's
// Context is cancelled only when the connection is really closed: by
// Close, at the end of Shutdown's grace period, or when the handler
// returns. So a handler that ignores Draining keeps serving until the
// grace period ends.
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
// The request is HTTP/1.1, also over TLS, proxies from the environment are
// honoured through CONNECT, and a 101 is accepted only if it names an
// offered protocol. Before anything is dialed, Dial refuses a URL with an
// empty host and checks a Host override as an authority; it never sends
// the zone of a scoped IPv6 address. Folded header lines (obs-fold) in a
// 101 are unfolded. A Dialer configures the method, header fields, body,
// TLS, proxy and timeouts.
//
// A Dialer with an HTTP2Transport switches an HTTP/2 stream instead when
// the server enables the extended CONNECT of RFC 8441, several streams
// sharing one connection, and falls back to HTTP/1.1 when it does not:
//
//	tr := &upgrade.HTTP2Transport{} // create once, share: it holds the connections
//	d := upgrade.Dialer{HTTP2: tr}
//	c, err := d.Dial(ctx, "https://example.com/chat", upgrade.Protocol{Name: "echo", Version: "1"})
//	// c.Request.ProtoMajor is 2 for a stream, 1 for an HTTP/1.1 upgrade.
//
// # Reverse proxy
//
// A Proxy forwards upgrades to a backend and relays the switched
// connections both ways without losing a byte; it forwards HTTP/2
// extended CONNECT streams as HTTP/1.1 upgrades, bridging WebSockets.
//
// The websocket and h2c sub-packages provide the WebSocket opening
// handshake (RFC 6455 §4; RFC 8441 §5 over HTTP/2) and the h2c upgrade
// (RFC 7540 §3.2) as protocols for a Server and for Dial.
package upgrade
