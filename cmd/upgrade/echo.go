package main

import (
	"errors"
	"io"
	"net"
	"sync/atomic"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wsframe"
)

// serveEcho serves echo/1: every byte read is written back, until the
// client half-closes or closes. At the client's EOF everything read has
// been written, so the write side is closed (FIN) and the connection
// closed.
//
// echo/1 has no way to say goodbye, so a shutdown does not interrupt it:
// it keeps echoing during the grace period, and ends when the server
// closes the connection at the end of it.
func (s *demoServer) serveEcho(c *upgrade.Conn) connEnd {
	buf := make([]byte, 32<<10)
	// Read from c, not c.NetConn(): c returns the bytes that arrived with the
	// request first.
	n, err := io.CopyBuffer(c, c, buf)
	end := connEnd{attrs: []any{"echoed", n}}
	switch {
	case err == nil:
		end.how = "client half-closed"
		_ = c.CloseWrite()
	case isClosed(upgrade.Draining(c.Context())) && errors.Is(err, net.ErrClosed):
		end.how = "closed at the end of the shutdown grace period"
	default:
		end.how, end.err = "connection failed", err
	}
	return end
}

// demoSubprotocol is the WebSocket subprotocol of the demo page: echo,
// after a first message "via HTTP/1.1" or "via HTTP/2.0" naming the HTTP
// version the WebSocket was opened over.
const demoSubprotocol = "demo"

// viaPrefix starts the first message of the demo subprotocol.
const viaPrefix = "via "

// serveWebSocket serves the websocket protocol: every text and binary
// message is echoed, pings are answered and the close handshake
// completed (wsframe.Echo); with the demo subprotocol, a first message
// names the HTTP version.
//
// When the server starts shutting down (upgrade.Draining), it sends a close
// frame with 1001 Going Away and keeps reading until the client's close
// frame completes the handshake; messages the client sent before it saw
// the close frame are dropped, since no data may follow a close frame
// (RFC 6455 §5.5.1). A client that does not answer is closed at the end
// of the grace period.
func (s *demoServer) serveWebSocket(c *upgrade.Conn, subprotocol string) connEnd {
	// The upgrade.Conn, not its net.Conn: it holds any frame bytes that
	// arrived with the handshake.
	ws := wsframe.NewConn(c, false)
	if subprotocol == demoSubprotocol {
		// The demo page's subprotocol: say first which HTTP version
		// carries the WebSocket, which a page cannot find out itself.
		if err := ws.WriteMessage(wsframe.OpText, []byte(viaPrefix+c.Request.Proto)); err != nil {
			return connEnd{how: "connection failed", err: err}
		}
	}
	var goingAway atomic.Bool
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-upgrade.Draining(c.Context()):
			goingAway.Store(true)
			_ = ws.WriteClose(wsframe.CloseGoingAway, "server shutting down")
		case <-served:
		}
	}()
	err := wsframe.Echo(ws)
	// Complete (or, after an error, end) the closing handshake; nothing is
	// sent if a close frame already was.
	_ = ws.Close(wsframe.CloseNormalClosure, "")

	var end connEnd
	if subprotocol != "" {
		end.attrs = []any{"subprotocol", subprotocol}
	}
	var pe *wsframe.ProtocolError
	switch {
	case err == nil && goingAway.Load():
		end.how = "closed on shutdown (1001)"
	case err == nil:
		end.how = "closed by the client"
	case errors.As(err, &pe):
		end.how, end.err, end.warn = "protocol error", err, true
	case isClosed(upgrade.Draining(c.Context())) && errors.Is(err, net.ErrClosed):
		end.how = "closed at the end of the shutdown grace period"
	default:
		end.how, end.err = "connection failed", err
	}
	return end
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
