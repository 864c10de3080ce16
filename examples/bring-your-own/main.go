// Command bring-your-own serves WebSocket connections switched by
// gorilla/websocket, coder/websocket and gobwas/ws behind one
// upgrade.Server, next to a protocol of the Server's own (echo/1), on one
// endpoint: the Server negotiates, lists every protocol in its 426,
// enforces MaxConns and shuts every connection down gracefully; each
// library does its own handshake, as its users already wrote it.
//
//	go run . -addr 127.0.0.1:8080
//
// The WebSocket echo of each library is at its own path: ws://HOST/gorilla,
// ws://HOST/coder, ws://HOST/gobwas; `upgrade dial http://HOST/ echo/1`
// reaches the native echo. On SIGINT or SIGTERM the server stops
// accepting, tells every WebSocket peer 1001 Going Away, and closes what
// is left after a grace period.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log"
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
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gorilla "github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	maxConns := flag.Int("max-conns", 0, "cap on switched connections (0: none)")
	grace := flag.Duration("grace", 10*time.Second, "shutdown grace period")
	flag.Parse()

	up := newServer(*maxConns)
	srv := &http.Server{Addr: *addr, Handler: up, ReadHeaderTimeout: 10 * time.Second}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), *grace)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := up.Shutdown(ctx); err != nil {
			log.Printf("closed the connections left after %v", *grace)
		}
	}()
	log.Printf("serving on http://%s/ (gorilla, coder, gobwas, echo/1)", *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-done
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
