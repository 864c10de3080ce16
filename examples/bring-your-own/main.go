// Command bring-your-own serves WebSocket connections switched by
// gorilla/websocket, coder/websocket and gobwas/ws behind one
// upgrade.Server, next to a protocol of the Server's own (echo/1), on one
// endpoint: the Server negotiates, lists every protocol in its 426,
// enforces MaxConns and shuts every connection down gracefully; each
// library does its own handshake, as its users already wrote it.
//
//	go run . -addr 127.0.0.1:8080
//	go run . -addr 127.0.0.1:8443 -tls -v
//
// The WebSocket echo of each library is at its own path: ws://HOST/gorilla,
// ws://HOST/coder, ws://HOST/gobwas; `upgrade dial http://HOST/ echo/1`
// reaches the native echo. The same handlers serve WebSockets over HTTP/2
// (RFC 8441) too: over TLS (-tls, with an ephemeral self-signed
// certificate), where browsers use them, and over cleartext with prior
// knowledge. https://HOST/demo is a page that opens a WebSocket to one of
// them. On SIGINT or SIGTERM the server stops accepting, tells every
// WebSocket peer 1001 Going Away, and closes what is left after a grace
// period.
//
// The first line on stdout is "listening on http://HOST:PORT" (https
// with -tls); logs go to stderr.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-upgrade/upgrade"

	// Extended CONNECT in net/http's HTTP/2 server, for WebSockets over
	// HTTP/2: every WebSocket endpoint here is behind the upgrade.Server,
	// which serves them.
	_ "github.com/go-upgrade/upgrade/extconnect"
	"github.com/go-upgrade/upgrade/internal/selfsigned"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gorilla "github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	maxConns := flag.Int("max-conns", 0, "cap on switched connections (0: none)")
	grace := flag.Duration("grace", 10*time.Second, "shutdown grace period")
	useTLS := flag.Bool("tls", false, "serve HTTPS with an ephemeral self-signed certificate")
	verbose := flag.Bool("v", false, "log every upgrade request and extended CONNECT")
	flag.Parse()

	ln, scheme, err := listen(*addr, *useTLS)
	if err != nil {
		log.Fatal(err)
	}
	up := newServer(*maxConns)
	page := newDemoPage()
	srv := &http.Server{Handler: newHandler(up, page, *verbose), ReadHeaderTimeout: 10 * time.Second}
	// HTTP/2 by ALPN over TLS, with prior knowledge over cleartext.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(!*useTLS)
	srv.Protocols = &protocols
	srv.RegisterOnShutdown(page.stop)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-stop
		if err := shutdown(srv, up, *grace); err != nil {
			log.Printf("closed the connections left after %v", *grace)
		}
	}()
	log.Printf("serving gorilla, coder, gobwas and echo/1 on %s://%s/", scheme, ln.Addr())
	fmt.Printf("listening on %s://%s\n", scheme, ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-done
}

// listen listens on addr, with TLS if secure (ALPN h2 and http/1.1, an
// ephemeral certificate), and returns the listener and its URL scheme.
func listen(addr string, secure bool) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || !secure {
		return ln, "http", err
	}
	cert, err := selfsigned.Cert("bring-your-own example")
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	return tls.NewListener(ln, cfg), "https", nil
}

// shutdown shuts srv and up down within grace, both at once: over HTTP/2
// a switched stream keeps its connection active, and srv's Shutdown waits
// for up's to end it. It returns an error if connections were still open
// at the end of the grace period.
func shutdown(srv *http.Server, up *upgrade.Server, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	upDone := make(chan error, 1)
	go func() { upDone <- up.Shutdown(ctx) }()
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	return errors.Join(<-upDone, err)
}

// newHandler returns the server's handler: the demo page's routes, and
// up for everything else.
func newHandler(up *upgrade.Server, page *demoPage, verbose bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", up)
	page.register(mux)
	if !verbose {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protocol := r.Header.Get(":protocol") // an extended CONNECT's
		if protocol == "" {
			protocol = r.Header.Get("Upgrade")
		}
		if protocol != "" {
			log.Printf("upgrade request: method=%s path=%s proto=%s protocol=%q remote=%s",
				r.Method, r.URL.Path, r.Proto, protocol, r.RemoteAddr)
		}
		mux.ServeHTTP(w, r)
	})
}

// newServer returns the endpoint: an upgrade.Server with the three
// libraries behind one delegated "websocket" route, told apart by path,
// and the native echo/1. maxConns caps the switched connections of all
// of them together (0: no cap).
func newServer(maxConns int) *upgrade.Server {
	libs := http.NewServeMux()
	libs.HandleFunc("/gorilla", gorillaEcho)
	libs.HandleFunc("/coder", coderEcho)
	libs.HandleFunc("/gobwas", gobwasEcho)

	up := &upgrade.Server{MaxConns: maxConns}
	up.HandleRoute("websocket", upgrade.Route{
		Delegate: libs,
		Methods:  []string{http.MethodGet}, // RFC 6455: GET, without a body
		MaxBody:  -1,
	})
	up.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	return up
}

// onDrain calls goodbye in a goroutine when the Server that switched the
// request with context ctx starts shutting down, unless the returned stop
// is called first; stop waits for that goroutine.
func onDrain(ctx context.Context, goodbye func()) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-upgrade.Draining(ctx):
			goodbye()
		case <-done:
		}
	}()
	return func() { close(done); <-exited }
}

// goingAway is the reason sent with 1001 Going Away.
const goingAway = "server shutting down"

// subprotocol is the WebSocket subprotocol each library selects when the
// client offers it: the messages it sends come back.
const subprotocol = "echo"

// gorillaUpgrader is gorilla/websocket's, with its defaults (same-origin
// requests only) and the subprotocol.
var gorillaUpgrader = gorilla.Upgrader{Subprotocols: []string{subprotocol}}

// gorillaEcho is a gorilla/websocket echo, as its users write it, plus a
// 1001 when the Server starts shutting down.
func gorillaEcho(w http.ResponseWriter, r *http.Request) {
	c, err := gorillaUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // gorilla answered the request
	}
	defer c.Close()
	defer onDrain(r.Context(), func() {
		msg := gorilla.FormatCloseMessage(gorilla.CloseGoingAway, goingAway)
		_ = c.WriteControl(gorilla.CloseMessage, msg, time.Now().Add(time.Second))
	})()
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

// coderEcho is a coder/websocket echo, as its users write it, plus a 1001
// when the Server starts shutting down. Reading with r.Context() is safe
// here: behind the Server it ends when the connection does, not when
// ServeHTTP returns.
func coderEcho(w http.ResponseWriter, r *http.Request) {
	c, err := coder.Accept(w, r, &coder.AcceptOptions{Subprotocols: []string{subprotocol}})
	if err != nil {
		return // coder answered the request
	}
	defer c.CloseNow()
	defer onDrain(r.Context(), func() { _ = c.Close(coder.StatusGoingAway, goingAway) })()
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// gobwasUpgrader is gobwas/ws's, selecting the subprotocol.
var gobwasUpgrader = ws.HTTPUpgrader{Protocol: func(p string) bool { return p == subprotocol }}

// gobwasEcho is a gobwas/ws echo, plus the same-origin check gobwas does
// not make and a 1001 when the Server starts shutting down.
func gobwasEcho(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	conn, _, _, err := gobwasUpgrader.Upgrade(r, w)
	if err != nil {
		return // gobwas answered on the connection, which the Server closes
	}
	defer conn.Close()
	var wmu sync.Mutex // gobwas leaves concurrent writes to its caller
	defer onDrain(r.Context(), func() {
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, goingAway)))
	})()
	for {
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		wmu.Lock()
		err = wsutil.WriteServerMessage(conn, op, msg)
		wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// sameOrigin reports whether r has no Origin or one whose host is r.Host,
// the default of gorilla/websocket and coder/websocket.
func sameOrigin(r *http.Request) bool {
	origin := r.Header["Origin"]
	if len(origin) == 0 {
		return true
	}
	u, err := url.Parse(origin[0])
	return err == nil && strings.EqualFold(u.Host, r.Host)
}
