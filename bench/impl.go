// Package bench compares the server side of a WebSocket upgrade done with
// github.com/go-upgrade/upgrade against a hand-written net/http hijack (the
// floor) and against gorilla/websocket, coder/websocket and gobwas/ws.
//
// Every implementation sits behind a plain net/http server on 127.0.0.1,
// accepts the same opening handshake, writes one text frame "x"
// (81 01 78) and then reads until EOF in its own idiomatic way. The server
// runs in a child process (see RunChild) so that the load client's
// allocations and CPU time are not counted.
package bench

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"sync/atomic"

	coder "github.com/coder/websocket"
	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/h2c"
	upws "github.com/go-upgrade/upgrade/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gorilla "github.com/gorilla/websocket"
	"golang.org/x/net/http/httpguts"
)

// Frame is the unmasked text frame every implementation writes after the
// 101: FIN + text opcode, payload length 1, "x".
var Frame = []byte{0x81, 0x01, 0x78}

// payload is the frame's payload, for the libraries that frame it.
var payload = []byte("x")

// Impls lists the implementations in table order; floor comes first and
// is the reference for every ratio.
var Impls = []string{"floor", "upgrade", "upgrade-keep", "gorilla", "gorilla-upgrade", "coder", "gobwas"}

// Counters of the server process, maintained by every implementation's
// handler: active connections (101 and frame written, reading) and
// connections whose handler has finished.
var active, done atomic.Int64

// track marks a connection as switched and returns the function that marks
// it finished.
func track() func() {
	active.Add(1)
	return finish
}

func finish() {
	active.Add(-1)
	done.Add(1)
}

// NewHandler returns the named implementation's http.Handler.
func NewHandler(name string) http.Handler {
	switch name {
	case "floor":
		return http.HandlerFunc(floorHandler)
	case "upgrade":
		return newUpgradeServer()
	case "gorilla":
		return http.HandlerFunc(gorillaHandler)
	case "gorilla-upgrade":
		return newGorillaUpgradeServer()
	case "coder":
		return http.HandlerFunc(coderHandler)
	case "gobwas":
		return http.HandlerFunc(gobwasHandler)
	case "h2-compact":
		return http.HandlerFunc(compactHandler)
	}
	return mounted(name)
}

// readBufSize is the read buffer of the two implementations that read the
// raw connection (floor and upgrade); the libraries use their own.
const readBufSize = 256

// readUntilEOF reads r until an error (EOF when the client closes).
func readUntilEOF(r io.Reader) {
	buf := make([]byte, readBufSize)
	for {
		if _, err := r.Read(buf); err != nil {
			return
		}
	}
}

// floorHandler is a minimal correct WebSocket upgrade written by hand over
// net/http: the cost any hijack-based upgrade must pay. It checks the
// method, HTTP version, Connection and Upgrade tokens, version and key,
// computes the accept value, hijacks through http.ResponseController,
// writes the 101, then the frame, and reads the hijacked connection in the
// ServeHTTP goroutine until EOF.
func floorHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	if v := r.Header["Sec-Websocket-Version"]; len(v) != 1 || v[0] != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "unsupported version", http.StatusUpgradeRequired)
		return
	}
	key := r.Header["Sec-Websocket-Key"]
	if len(key) != 1 || !validKey(key[0]) {
		http.Error(w, "bad Sec-WebSocket-Key", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	const head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
	resp := make([]byte, 0, len(head)+28+4)
	resp = append(resp, head...)
	resp = AppendAccept(resp, key[0])
	resp = append(resp, "\r\n\r\n"...)
	if _, err := conn.Write(resp); err != nil {
		return
	}
	if _, err := conn.Write(Frame); err != nil {
		return
	}
	defer track()()
	// Bytes the client sent behind the request sit in net/http's reader.
	var rd io.Reader = conn
	if brw.Reader.Buffered() > 0 {
		rd = brw.Reader
	}
	readUntilEOF(rd)
}

// validKey reports whether key is padded base64 of exactly 16 bytes.
func validKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	var in [24]byte
	var out [18]byte
	copy(in[:], key)
	n, err := base64.StdEncoding.Decode(out[:], in[:])
	return err == nil && n == 16
}

// AppendAccept appends the Sec-WebSocket-Accept value for key to b,
// computed in stack buffers: the hand-written equivalent of
// websocket.AcceptKey.
func AppendAccept(b []byte, key string) []byte {
	const guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	var buf [24 + len(guid)]byte
	var in []byte
	if len(key) == 24 {
		in = append(append(buf[:0], key...), guid...)
	} else {
		in = append([]byte(key), guid...)
	}
	sum := sha1.Sum(in)
	var out [28]byte
	base64.StdEncoding.Encode(out[:], sum[:])
	return append(b, out[:]...)
}

// newUpgradeServer is this project: an upgrade.Server with the websocket
// adapter registered next to h2c and echo/1, so that negotiation has
// several routes to choose among. The server, not ServeHTTP's goroutine,
// runs the protocol handler: the net/http connection goroutine returns.
func newUpgradeServer() http.Handler { return newUpgradeServerFor(serveUpgrade) }

func newUpgradeServerFor(serve func(c *upgrade.Conn)) *upgrade.Server {
	s := &upgrade.Server{}
	s.HandleRoute(h2c.Protocol, (&h2c.Handler{Handler: http.NotFoundHandler()}).Route())
	s.HandleFunc("echo/1", serveEcho)
	wsh := &upws.Handler{Serve: func(c *upgrade.Conn, _ string) { serve(c) }}
	s.HandleRoute("websocket", wsh.Route())
	return s
}

func serveUpgrade(c *upgrade.Conn) {
	// Nothing of the request is needed after the switch: let the
	// connection drop it, as upgrade.Conn.Request's documentation
	// suggests for long-lived connections.
	c.Request = nil
	serveFrame(c)
}

func serveFrame(c *upgrade.Conn) {
	if _, err := c.Write(Frame); err != nil {
		return
	}
	defer track()()
	readUntilEOF(c)
}

// gorillaUpgrader is gorilla/websocket's Upgrader with its defaults: the
// buffers net/http's hijack returns are reused.
var gorillaUpgrader gorilla.Upgrader

func gorillaHandler(w http.ResponseWriter, r *http.Request) {
	c, err := gorillaUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if err := c.WriteMessage(gorilla.TextMessage, payload); err != nil {
		return
	}
	defer track()()
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

// newGorillaUpgradeServer is gorillaHandler, unchanged, behind an
// upgrade.Server as a delegated route, registered next to h2c and echo/1
// like the upgrade implementation's: what the Server adds to a gorilla
// handshake (negotiation, the slot, the tracked connection).
func newGorillaUpgradeServer() http.Handler {
	s := &upgrade.Server{}
	s.HandleRoute(h2c.Protocol, (&h2c.Handler{Handler: http.NotFoundHandler()}).Route())
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	s.HandleRoute("websocket", upgrade.Route{
		Delegate: http.HandlerFunc(gorillaHandler),
		Methods:  []string{http.MethodGet},
		MaxBody:  -1,
	})
	return s
}

func coderHandler(w http.ResponseWriter, r *http.Request) {
	c, err := coder.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := context.Background()
	if err := c.Write(ctx, coder.MessageText, payload); err != nil {
		return
	}
	defer track()()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
}

func gobwasHandler(w http.ResponseWriter, r *http.Request) {
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	if err := wsutil.WriteServerText(conn, payload); err != nil {
		return
	}
	defer track()()
	for {
		if _, _, err := wsutil.ReadClientData(conn); err != nil {
			return
		}
	}
}
