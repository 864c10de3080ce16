package h2c

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNegotiateTogether registers websocket, h2c and a custom echo/1 on
// one upgrade.Server and checks each is switched to on the same path,
// and that an h2c offer without HTTP2-Settings falls through to the next
// offer.
func TestNegotiateTogether(t *testing.T) {
	s := &upgrade.Server{}
	s.Handle("websocket", &websocket.Handler{Serve: func(c *upgrade.Conn) { _, _ = io.WriteString(c, "ws") }})
	s.HandleRoute(Protocol, (&Handler{Handler: describe}).Route())
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
	})
	addr := ts.Listener.Addr().String()
	const wsFields = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

	t.Run("websocket", func(t *testing.T) {
		resp, body, br, _ := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+wsFields+"\r\n")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
		assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", resp.Header.Get("Sec-WebSocket-Accept"))
		b := make([]byte, 2)
		_, err := io.ReadFull(br, b)
		require.NoError(t, err)
		assert.Equal(t, "ws", string(b))
	})
	t.Run("h2c", func(t *testing.T) {
		resp, body, br, nc := send(t, addr, upgradeRequest("GET", ""))
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "h2c", resp.Header.Get("Upgrade"))
		st := readResponse(t, startH2(t, br, nc, false), 1)
		assert.Equal(t, "200", st.header[":status"])
	})
	t.Run("echo/1", func(t *testing.T) {
		resp, body, br, nc := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\nabc")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "echo/1", resp.Header.Get("Upgrade"))
		_, err := nc.Write([]byte("def"))
		require.NoError(t, err)
		b := make([]byte, 6)
		_, err = io.ReadFull(br, b)
		require.NoError(t, err)
		assert.Equal(t, "abcdef", string(b))
	})
	t.Run("h2c declined, websocket next", func(t *testing.T) {
		resp, body, _, _ := send(t, addr, "GET /path HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, websocket\r\nConnection: Upgrade\r\n"+wsFields+"\r\n")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
	})
	t.Run("h2 not switched", func(t *testing.T) {
		resp, _, _, _ := send(t, addr, upgradeRequest("GET", "", "Upgrade: h2"))
		assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
		assert.Equal(t, "websocket, h2c, echo/1", resp.Header.Get("Upgrade"))
	})
}
