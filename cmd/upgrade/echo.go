package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wsframe"
	"github.com/go-upgrade/upgrade/websocket"
)

// serveEcho serves echo/1: every byte read is written back, until the
// client half-closes or closes. At the client's EOF everything read has
// been written, so the write side is closed (FIN) and the connection
// closed. When the server shuts down, reading stops at once, what was
// read is written back, and the connection is closed the same way.
func (s *demoServer) serveEcho(c *upgrade.Conn) {
	log := s.log.With("protocol", c.Protocol.String(), "remote", c.RemoteAddr().String())
	log.Info("switched")
	stop := context.AfterFunc(c.Context(), func() {
		// Interrupt the pending Read; the copy loop then ends.
		_ = c.SetReadDeadline(time.Now())
	})
	defer stop()

	buf := make([]byte, 32<<10)
	// Read from c, not c.Conn: c returns the bytes that arrived with the
	// request first.
	n, err := io.CopyBuffer(c, c, buf)
	switch {
	case err == nil:
		log.Info("client half-closed", "echoed", n)
	case c.Context().Err() != nil:
		log.Info("closing on shutdown", "echoed", n)
	default:
		log.Info("connection ended", "echoed", n, "err", err)
	}
	_ = c.CloseWrite()
}

// serveWebSocket serves the websocket protocol: every text and binary
// message is echoed, pings are answered and the close handshake
// completed (wsframe.Echo). On shutdown it sends a close frame with
// 1001 Going Away and finishes the handshake.
func (s *demoServer) serveWebSocket(c *upgrade.Conn) {
	log := s.log.With("protocol", c.Protocol.String(), "remote", c.RemoteAddr().String(), "subprotocol", websocket.Subprotocol(c))
	log.Info("switched")
	// The upgrade.Conn, not its net.Conn: it holds any frame bytes that
	// arrived with the handshake.
	ws := wsframe.NewConn(c, false)
	stop := context.AfterFunc(c.Context(), func() {
		_ = ws.Close(wsframe.CloseGoingAway, "server shutting down")
	})
	err := wsframe.Echo(ws)
	if stop() {
		// Not shutting down: complete (or, after an error, end) the
		// closing handshake ourselves.
		_ = ws.Close(wsframe.CloseNormalClosure, "")
	}
	var pe *wsframe.ProtocolError
	switch {
	case err == nil:
		log.Info("closed")
	case errors.As(err, &pe):
		log.Warn("protocol error", "err", err)
	default:
		log.Info("connection ended", "err", err)
	}
}
