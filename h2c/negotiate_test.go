package h2c

import (
	"io"
	"net/http"
	"testing"

	"github.com/go-upgrade/upgrade"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNegotiateTogether registers a WebSocket-like protocol (wsStandIn),
// h2c and a custom echo/1 on one upgrade.Server and checks each is
// switched to on the same path, and that an h2c offer without
// HTTP2-Settings falls through to the next offer.
func TestNegotiateTogether(t *testing.T) {
	s := &upgrade.Server{}
	s.Handle("websocket", wsStandIn{})
	s.HandleRoute(Protocol, (&Handler{Handler: describe}).Route())
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	addr := serve(t, s, nil)
	const wsFields = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

	t.Run("websocket", func(t *testing.T) {
		c, resp, body := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+wsFields+"\r\n")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
		assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", resp.Header.Get("Sec-WebSocket-Accept"))
		assert.Equal(t, "ws", c.ReadN(2))
	})
	t.Run("h2c", func(t *testing.T) {
		c, resp, body := send(t, addr, upgradeRequest("GET", ""))
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "h2c", resp.Header.Get("Upgrade"))
		st := readResponse(t, startH2(t, c, false), 1)
		assert.Equal(t, "200", st.header[":status"])
	})
	t.Run("echo/1", func(t *testing.T) {
		c, resp, body := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\nabc")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "echo/1", resp.Header.Get("Upgrade"))
		c.Send("def")
		assert.Equal(t, "abcdef", c.ReadN(6))
	})
	t.Run("h2c declined, websocket next", func(t *testing.T) {
		_, resp, body := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, websocket\r\nConnection: Upgrade\r\n"+wsFields+"\r\n")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
	})
	t.Run("h2 not switched", func(t *testing.T) {
		_, resp, _ := send(t, addr, upgradeRequest("GET", "", "Upgrade: h2"))
		assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
		assert.Equal(t, "websocket, h2c, echo/1", resp.Header.Get("Upgrade"))
	})
}
