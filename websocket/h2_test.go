package websocket

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	_ "github.com/go-upgrade/upgrade/extconnect" // RFC 8441 in net/http's HTTP/2 server
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
)

// h2Server serves h, registered for "websocket" on an upgrade.Server, with
// HTTP/1.1 and HTTP/2 with prior knowledge on 127.0.0.1.
func h2Server(t *testing.T, h *Handler) string {
	t.Helper()
	if h.Serve == nil {
		h.Serve = func(c *upgrade.Conn, subprotocol string) {
			_, _ = io.WriteString(c, "subprotocol="+subprotocol+"\n")
			_, _ = io.Copy(c, c)
		}
	}
	s := &upgrade.Server{}
	s.Handle("websocket", h)
	ts := httptest.NewUnstartedServer(s)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = &p
	ts.Start()
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx))
	})
	return ts.Listener.Addr().String()
}

// TestH2OpeningHandshake: over HTTP/2 (RFC 8441 §5) the opening handshake
// is an extended CONNECT with :protocol websocket: no Sec-WebSocket-Key,
// so a 200 without Sec-WebSocket-Accept; the version, subprotocol,
// extension and Origin rules are those of HTTP/1.1, and the same Serve
// function runs.
func TestH2OpeningHandshake(t *testing.T) {
	addr := h2Server(t, &Handler{Subprotocols: []string{"chat"}})
	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/ws", "websocket",
		[2]string{"sec-websocket-version", "13"},
		[2]string{"sec-websocket-protocol", "other, chat"},
		[2]string{"origin", "http://example.com"})
	h := st.Header()
	assert.Equal(t, []string{"200"}, h[":status"])
	assert.Equal(t, []string{"chat"}, h["sec-websocket-protocol"])
	assert.NotContains(t, h, "sec-websocket-accept", "there is no key to accept over HTTP/2")
	assert.Equal(t, "subprotocol=chat\n", string(st.Read(len("subprotocol=chat\n"))))
	st.Write([]byte{0x81, 0x80, 1, 2, 3, 4}) // a masked empty text frame
	assert.Equal(t, []byte{0x81, 0x80, 1, 2, 3, 4}, st.Read(6))
}

// TestH2OpeningHandshakeRefusals: over HTTP/2 a missing or wrong version is
// refused with 400 and "Sec-WebSocket-Version: 13" (HTTP/2 has no 426: it
// would need an Upgrade field), and a foreign Origin with 403, as over
// HTTP/1.1. A Sec-WebSocket-Key is not needed.
func TestH2OpeningHandshakeRefusals(t *testing.T) {
	addr := h2Server(t, &Handler{})
	c := wiretest.DialH2(t, addr, nil)
	for _, tc := range []struct {
		name   string
		fields [][2]string
		status string
	}{
		{"no version", nil, "400"},
		{"version 8", [][2]string{{"sec-websocket-version", "8"}}, "400"},
		{"foreign origin", [][2]string{{"sec-websocket-version", "13"}, {"origin", "http://evil.example"}}, "403"},
		{"malformed subprotocol", [][2]string{{"sec-websocket-version", "13"}, {"sec-websocket-protocol", "a b"}}, "400"},
	} {
		st := c.Connect("http", "example.com", "/ws", "websocket", tc.fields...)
		h := st.Header()
		assert.Equal(t, []string{tc.status}, h[":status"], tc.name)
		if tc.status == "400" && tc.name != "malformed subprotocol" {
			assert.Equal(t, []string{"13"}, h["sec-websocket-version"], tc.name)
		}
	}
	st := c.Connect("http", "example.com", "/ws", "websocket", [2]string{"sec-websocket-version", "13"})
	assert.Equal(t, "200", st.Status(), "no key needed")
}
