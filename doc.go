// Package upgrade implements HTTP/1.1 protocol upgrades: the Upgrade header
// field, 101 Switching Protocols and 426 Upgrade Required (RFC 9110 §7.8,
// §15.2.2, §15.5.22), on the server and on the client.
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
// a protocol can be switched to from and how large a request body it takes.
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
//     carry Upgrade or Connection.
//   - If the client sent "Expect: 100-continue", the 100 goes out before the
//     101, exactly once. A request body is read (bounded) before the switch
//     and handed to the protocol as c.Request.Body; the bytes after the
//     request belong to the new protocol and reach it intact, even those
//     net/http had already read.
//   - Every 426 lists the registered protocols in the server's order of
//     preference and carries "Connection: Upgrade".
//
// After the 101, the Handler runs in a goroutine of its own, owns the
// connection and must return when it is done with it; the connection is
// closed then. The Server tracks switched connections: Shutdown cancels
// each Conn's Context and waits for the handlers, Close closes them.
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
// The request is always HTTP/1.1, also over TLS, proxies from the
// environment are honoured through CONNECT, and a 101 is accepted only if
// it names an offered protocol. A Dialer configures all of this.
//
// The websocket and h2c sub-packages provide the WebSocket opening
// handshake (RFC 6455 §4) and the h2c upgrade (RFC 7540 §3.2) as protocols
// for a Server and for Dial.
package upgrade
