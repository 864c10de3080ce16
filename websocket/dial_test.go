package websocket

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wsframe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http/httpguts"
)

func TestDialSendsHandshake(t *testing.T) {
	url, reqs, _ := fakeServer(t, func(r *http.Request) string {
		return switching(r, "Sec-WebSocket-Protocol: chat") + "early"
	})
	opts := &DialOptions{
		Header:       http.Header{"Origin": {"http://example.com"}},
		Subprotocols: []string{"chat", "superchat"},
		Extensions:   []Extension{{Name: "permessage-deflate", Params: []ExtensionParam{{Name: "client_max_window_bits"}}}},
	}
	c, err := Dial(dialCtx(t), url, opts)
	require.NoError(t, err)
	defer c.Close()
	resp := c.Response
	r := <-reqs
	assert.Equal(t, "GET", r.Method)
	assert.Equal(t, "/chat", r.URL.Path)
	assert.Equal(t, "websocket", r.Header.Get("Upgrade"))
	assert.True(t, httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade"))
	assert.Equal(t, []string{"13"}, r.Header["Sec-Websocket-Version"])
	assert.Equal(t, []string{"chat, superchat"}, r.Header["Sec-Websocket-Protocol"])
	assert.Equal(t, []string{"permessage-deflate; client_max_window_bits"}, r.Header["Sec-Websocket-Extensions"])
	assert.Equal(t, "http://example.com", r.Header.Get("Origin"))
	require.Len(t, r.Header["Sec-Websocket-Key"], 1)
	k, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key"))
	require.NoError(t, err)
	assert.Len(t, k, 16)
	assert.Empty(t, r.Header["Expect"])

	assert.Equal(t, 101, resp.StatusCode)
	assert.Equal(t, "chat", resp.Header.Get("Sec-WebSocket-Protocol"))
	assert.Equal(t, "websocket", c.Protocol.Name)
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "early", string(buf), "bytes after the 101 belong to the caller")
}

func TestDialFreshKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		url, reqs, _ := fakeServer(t, func(r *http.Request) string { return switching(r) })
		c, err := Dial(dialCtx(t), url, nil)
		require.NoError(t, err)
		c.Close()
		key := (<-reqs).Header.Get("Sec-WebSocket-Key")
		assert.False(t, seen[key], "key %q reused", key)
		seen[key] = true
	}
}

func TestDialRejectsBadSwitch(t *testing.T) {
	opts := &DialOptions{
		Subprotocols: []string{"chat"},
		Extensions:   []Extension{{Name: "permessage-deflate"}},
	}
	for name, tc := range map[string]struct {
		script  func(r *http.Request) string
		reason  string
		invalid bool // rejected by the upgrade.Dialer's own checks
	}{
		"wrong accept": {func(r *http.Request) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n"
		}, "Sec-WebSocket-Accept \"" + rfcAccept + "\" does not match", false},
		"accept of the key without GUID": {func(r *http.Request) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + r.Header.Get("Sec-WebSocket-Key") + "\r\n\r\n"
		}, "does not match", false},
		"missing accept": {func(r *http.Request) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		}, "missing Sec-WebSocket-Accept", false},
		"duplicated accept": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Accept: "+AcceptKey(r.Header.Get("Sec-WebSocket-Key")))
		}, "Sec-WebSocket-Accept sent 2 times", false},
		"unoffered subprotocol": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Protocol: superchat")
		}, "Sec-WebSocket-Protocol \"superchat\" was not offered", false},
		"subprotocol list": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Protocol: chat, chat")
		}, "is a list", false},
		"empty subprotocol": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Protocol: ")
		}, "empty Sec-WebSocket-Protocol", false},
		"two subprotocols": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: chat")
		}, "sent 2 times", false},
		"unrequested extension": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Extensions: permessage-deflate, x-webkit-deflate-frame")
		}, "\"x-webkit-deflate-frame\", which was not offered", false},
		"malformed extension": {func(r *http.Request) string {
			return switching(r, "Sec-WebSocket-Extensions: permessage-deflate; =")
		}, "malformed Sec-WebSocket-Extensions", false},
		"Kelvin sign in Upgrade": {func(r *http.Request) string {
			return strings.Replace(switching(r), "Upgrade: websocket", "Upgrade: websoc\u212Aet", 1)
		}, "invalid 101", true},
		"no Upgrade": {func(r *http.Request) string {
			return strings.Replace(switching(r), "Upgrade: websocket\r\n", "", 1)
		}, "invalid 101", true},
		"no Connection upgrade": {func(r *http.Request) string {
			return strings.Replace(switching(r), "Connection: Upgrade", "Connection: keep-alive", 1)
		}, "invalid 101", true},
	} {
		t.Run(name, func(t *testing.T) {
			url, _, closed := fakeServer(t, tc.script)
			c, err := Dial(dialCtx(t), url, opts)
			require.Error(t, err)
			assert.Nil(t, c)
			var he *HandshakeError
			require.True(t, errors.As(err, &he), "%T %v", err, err)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Equal(t, tc.invalid, errors.Is(err, upgrade.ErrInvalidSwitch), "%v", err)
			assert.True(t, <-closed, "connection not closed by the client")
		})
	}
}

func TestDialRefused(t *testing.T) {
	url, _, closed := fakeServer(t, func(r *http.Request) string {
		return "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\norigin"
	})
	c, err := Dial(dialCtx(t), url, nil)
	require.Error(t, err)
	assert.Nil(t, c)
	var re *upgrade.ResponseError
	require.True(t, errors.As(err, &re), "%T %v", err, err)
	assert.Equal(t, 403, re.StatusCode)
	assert.Equal(t, "origin", string(re.Body))
	assert.True(t, <-closed)
}

func TestDialOptionsChecked(t *testing.T) {
	ctx := dialCtx(t)
	for name, opts := range map[string]*DialOptions{
		"handshake field":    {Header: http.Header{"Sec-WebSocket-Key": {"x"}}},
		"bad subprotocol":    {Subprotocols: []string{"a b"}},
		"empty subprotocol":  {Subprotocols: []string{""}},
		"bad extension":      {Extensions: []Extension{{Name: "a;b"}}},
		"POST dialer":        {Dialer: &upgrade.Dialer{Method: "POST"}},
		"dialer body":        {Dialer: &upgrade.Dialer{Body: []byte("x")}},
		"dialer header dups": {Dialer: &upgrade.Dialer{Header: http.Header{"Sec-WebSocket-Version": {"8"}}}},
	} {
		_, err := Dial(ctx, "ws://127.0.0.1:1/", opts)
		assert.Error(t, err, name)
		assert.NotContains(t, err.Error(), "dialing", name)
	}
}

func TestCheckResponse(t *testing.T) {
	resp := func(lines ...string) *http.Response {
		h := http.Header{"Upgrade": {"websocket"}, "Connection": {"upgrade"}, "Sec-Websocket-Accept": {rfcAccept}}
		for _, l := range lines {
			k, v, _ := strings.Cut(l, ": ")
			h[http.CanonicalHeaderKey(k)] = append(h[http.CanonicalHeaderKey(k)], v)
		}
		return &http.Response{StatusCode: 101, Header: h}
	}
	require.NoError(t, CheckResponse(resp(), rfcKey, nil))
	require.NoError(t, CheckResponse(resp("Sec-WebSocket-Protocol: b"), rfcKey, &DialOptions{Subprotocols: []string{"a", "b"}}))
	r := resp()
	r.Header["Upgrade"] = []string{"WebSocket"} // ASCII case-insensitive
	require.NoError(t, CheckResponse(r, rfcKey, nil))
	r.Header["Upgrade"] = []string{"websoc\u212Aet"}
	require.ErrorContains(t, CheckResponse(r, rfcKey, nil), "Upgrade")
	r = resp()
	r.StatusCode = 200
	require.ErrorContains(t, CheckResponse(r, rfcKey, nil), "status 200")
	require.ErrorContains(t, CheckResponse(resp("Sec-WebSocket-Protocol: a"), rfcKey, nil), "not offered")
}

// TestRoundTrip dials the package's own server through upgrade.Server and
// exchanges WebSocket frames with a framing implementation.
func TestRoundTrip(t *testing.T) {
	h := &Handler{
		Subprotocols: []string{"v2.echo", "v1.echo"},
		Serve: func(c *upgrade.Conn, subprotocol string) {
			if subprotocol != "v2.echo" {
				return
			}
			ws := wsframe.NewConn(c, false)
			_ = wsframe.Echo(ws)
			_ = ws.Close(1000, "")
		},
	}
	addr := wsServer(t, h, false)
	c, err := Dial(dialCtx(t), "ws://"+addr+"/echo", &DialOptions{
		Header:       http.Header{"Origin": {"http://" + addr}},
		Subprotocols: []string{"v1.echo", "v2.echo"},
	})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "v2.echo", c.Response.Header.Get("Sec-WebSocket-Protocol"))
	ws := wsframe.NewConn(c, true)
	for _, msg := range []string{"hello", strings.Repeat("x", 70000)} {
		require.NoError(t, ws.WriteMessage(wsframe.OpText, []byte(msg)))
		op, got, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, wsframe.OpText, op)
		assert.Equal(t, msg, string(got))
	}
	require.NoError(t, ws.Close(1000, "bye"))
}

func TestRoundTripRefusals(t *testing.T) {
	addr := wsServer(t, &Handler{}, false)
	_, err := Dial(dialCtx(t), "ws://"+addr+"/", &DialOptions{Header: http.Header{"Origin": {"https://evil.example"}}})
	var re *upgrade.ResponseError
	require.True(t, errors.As(err, &re), "%v", err)
	assert.Equal(t, 403, re.StatusCode)
	assert.Contains(t, string(re.Body), "origin")
}
