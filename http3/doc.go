// Package http3 serves and dials the protocols of the upgrade package
// over HTTP/3, with the extended CONNECT of RFC 9220, on
// github.com/quic-go/quic-go: the same routes, Accepters, limits and
// shutdown as over HTTP/1.1 Upgrade and HTTP/2, and the same
// *upgrade.Conn on both sides. It is the only package of the module that
// imports QUIC: a program that does not import it links none.
//
// On the server, Handler presents quic-go's extended CONNECT requests to
// an upgrade.Server (or anything that serves upgrade.StreamAccepter
// requests, such as the reverse proxy):
//
//	us := &upgrade.Server{}
//	us.Handle("websocket", &websocket.Handler{Serve: serve})
//	h3 := &qhttp3.Server{Addr: ":443", TLSConfig: tlsConfig, Handler: http3.Handler(us)}
//	go h3.ListenAndServe() // UDP, next to an http.Server on TCP
//
// where qhttp3 is github.com/quic-go/quic-go/http3, whose Server always
// advertises SETTINGS_ENABLE_CONNECT_PROTOCOL. A browser learns of the
// HTTP/3 endpoint from an Alt-Svc field (`h3=":443"`) on the TCP
// server's responses. Since both servers serve the same routes, an
// upgrade.Server's Shutdown gives the HTTP/3 streams the same grace as
// the others; shut the qhttp3.Server down alongside the http.Server.
//
// On the client, a Transport opens the streams of an upgrade.Dialer
// whose HTTP3 field it is, for https and wss URLs:
//
//	d := &upgrade.Dialer{HTTP3: &http3.Transport{}}
//	c, err := d.Dial(ctx, "https://example.com/chat", upgrade.Protocol{Name: "chat"})
//
// A :protocol is a token (RFC 9220 takes it from the Upgrade Token
// Registry): a protocol with a version, such as echo/1, cannot be asked
// for over HTTP/3. The Dialer refuses such an offer before sending
// anything, and quic-go's server resets such a request's stream with
// H3_MESSAGE_ERROR (see Handler).
package http3
