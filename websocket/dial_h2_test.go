package websocket

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	// net/http's HTTP/2 server advertises and serves extended CONNECT only
	// with this package initialized before it.
	_ "github.com/go-upgrade/upgrade/extconnect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2WSServer is a TLS server on 127.0.0.1 answering RFC 8441 WebSocket
// handshakes over HTTP/2 as the request path says (see ServeHTTP), and
// RFC 6455 ones over HTTP/1.1 through an upgrade.Server. With h2 false, it
// speaks HTTP/1.1 only (ALPN picks http/1.1).
type h2WSServer struct {
	url  string
	pool *x509.CertPool
	seen chan *http.Request
	up   *upgrade.Server
}

func newH2WSServer(t *testing.T, h2 bool) *h2WSServer {
	t.Helper()
	s := &h2WSServer{seen: make(chan *http.Request, 8), up: new(upgrade.Server)}
	s.up.Handle("websocket", &Handler{
		Subprotocols:   []string{"chat.v1"},
		OriginPatterns: []string{"example.com"},
		Serve:          func(c *upgrade.Conn, _ string) { _, _ = io.Copy(c, c) },
	})
	ts := httptest.NewUnstartedServer(s)
	ts.EnableHTTP2 = h2
	ts.StartTLS()
	s.url = "wss://" + ts.Listener.Addr().String()
	s.pool = x509.NewCertPool()
	s.pool.AddCert(ts.Certificate())
	t.Cleanup(func() {
		ts.Close()
		_ = s.up.Close()
	})
	return s
}

// dialOptions returns options dialing s over tr, offering the
// subprotocols chat.v1 and other.
func (s *h2WSServer) dialOptions(tr *upgrade.HTTP2Transport) *DialOptions {
	return &DialOptions{
		Dialer: &upgrade.Dialer{
			Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
			TLSClientConfig:  &tls.Config{RootCAs: s.pool},
			HandshakeTimeout: 5 * time.Second,
			HTTP2:            tr,
		},
		Header:       http.Header{"Origin": {"https://example.com"}},
		Subprotocols: []string{"chat.v1", "other"},
	}
}

// ServeHTTP answers an extended CONNECT for a WebSocket as its path says:
//   - /badproto: 200 selecting a subprotocol that was not offered;
//   - /badext: 200 with an extension that was not offered;
//   - /created: 201;
//   - /refuse: 403 "origin";
//   - anything else: 200 selecting chat.v1 if offered, then an echo.
func (s *h2WSServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		s.up.ServeHTTP(w, r)
		return
	}
	s.seen <- r
	if r.Method != http.MethodConnect || r.Header.Get(":protocol") != "websocket" {
		http.Error(w, "not a WebSocket", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/badproto":
		w.Header().Set("Sec-WebSocket-Protocol", "nope")
	case "/badext":
		w.Header().Set("Sec-WebSocket-Extensions", "x-unknown")
	case "/created":
		w.WriteHeader(http.StatusCreated)
		return
	case "/refuse":
		http.Error(w, "origin", http.StatusForbidden)
		return
	default:
		if strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), "chat.v1") {
			w.Header().Set("Sec-WebSocket-Protocol", "chat.v1")
		}
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil || rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newTransport(t *testing.T) *upgrade.HTTP2Transport {
	tr := new(upgrade.HTTP2Transport)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestDialHTTP2 runs the RFC 8441 §5 handshake: an extended CONNECT with
// :protocol websocket, version 13, subprotocols and Origin, no key; a 200
// selecting a subprotocol.
func TestDialHTTP2(t *testing.T) {
	s := newH2WSServer(t, true)
	c, err := Dial(dialCtx(t), s.url+"/chat", s.dialOptions(newTransport(t)))
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 2, c.Request.ProtoMajor)
	assert.Equal(t, http.StatusOK, c.Response.StatusCode)
	assert.Equal(t, "chat.v1", c.Response.Header.Get("Sec-WebSocket-Protocol"))
	assert.Equal(t, "websocket", c.Protocol.Name)

	r := <-s.seen
	assert.Equal(t, "websocket", r.Header.Get(":protocol"))
	assert.Empty(t, r.Header["Sec-Websocket-Key"], "no key over HTTP/2")
	assert.Equal(t, []string{"13"}, r.Header["Sec-Websocket-Version"])
	assert.Equal(t, []string{"chat.v1, other"}, r.Header["Sec-Websocket-Protocol"])
	assert.Equal(t, "https://example.com", r.Header.Get("Origin"))
	assert.Empty(t, r.Header["Upgrade"])
	assert.Empty(t, r.Header["Connection"])
	assert.Empty(t, c.Request.Header["Sec-Websocket-Key"])

	_, err = io.WriteString(c, "frames go here")
	require.NoError(t, err)
	buf := make([]byte, len("frames go here"))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "frames go here", string(buf))
}

// TestDialHTTP2Rejects: a 200 that breaks the subprotocol or extension
// rules, or a 2xx other than 200, fails the handshake; a refusal is the
// upgrade.Dialer's ResponseError.
func TestDialHTTP2Rejects(t *testing.T) {
	s := newH2WSServer(t, true)
	opts := s.dialOptions(newTransport(t))
	for path, reason := range map[string]string{
		"/badproto": `Sec-WebSocket-Protocol "nope" was not offered`,
		"/badext":   `Sec-WebSocket-Extensions names "x-unknown", which was not offered`,
		"/created":  "status 201 to the HTTP/2 extended CONNECT, want 200",
	} {
		c, err := Dial(dialCtx(t), s.url+path, opts)
		assert.Nil(t, c)
		var he *HandshakeError
		require.ErrorAs(t, err, &he, path)
		assert.Contains(t, he.Reason, reason, path)
		require.NotNil(t, he.Response, path)
		assert.Equal(t, 2, he.Response.ProtoMajor, path)
	}

	_, err := Dial(dialCtx(t), s.url+"/refuse", opts)
	var re *upgrade.ResponseError
	require.True(t, errors.As(err, &re), "%v", err)
	assert.Equal(t, http.StatusForbidden, re.StatusCode)
	assert.Equal(t, "HTTP/2.0", re.Proto)
	assert.Equal(t, "origin\n", string(re.Body))
}

// TestDialHTTP2FallsBack: a server that speaks HTTP/1.1 only gets the
// RFC 6455 handshake, key included, with the same options.
func TestDialHTTP2FallsBack(t *testing.T) {
	s := newH2WSServer(t, false)
	c, err := Dial(dialCtx(t), s.url+"/chat", s.dialOptions(newTransport(t)))
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 1, c.Request.ProtoMajor)
	assert.Equal(t, http.StatusSwitchingProtocols, c.Response.StatusCode)
	assert.Len(t, c.Request.Header.Get("Sec-Websocket-Key"), 24)
	assert.Equal(t, "chat.v1", c.Response.Header.Get("Sec-WebSocket-Protocol"))
}

func TestCheckResponseHTTP2(t *testing.T) {
	resp := func(status int, lines ...string) *http.Response {
		h := http.Header{}
		for _, l := range lines {
			k, v, _ := strings.Cut(l, ": ")
			h.Add(k, v)
		}
		return &http.Response{StatusCode: status, ProtoMajor: 2, Header: h}
	}
	opts := &DialOptions{Subprotocols: []string{"a", "b"}, Extensions: []Extension{{Name: "permessage-deflate"}}}
	require.NoError(t, CheckResponse(resp(200), "", nil))
	require.NoError(t, CheckResponse(resp(200, "Sec-WebSocket-Protocol: b", "Sec-WebSocket-Extensions: permessage-deflate"), "", opts))
	require.NoError(t, CheckResponse(resp(200, "Sec-WebSocket-Accept: relayed-by-a-proxy"), "", nil), "Accept means nothing over HTTP/2")
	require.ErrorContains(t, CheckResponse(resp(101), "", nil), "status 101")
	require.ErrorContains(t, CheckResponse(resp(200, "Sec-WebSocket-Protocol: c"), "", opts), "not offered")
	require.ErrorContains(t, CheckResponse(resp(200, "Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b"), "", opts), "sent 2 times")
	require.ErrorContains(t, CheckResponse(resp(200, "Sec-WebSocket-Extensions: x-other"), "", opts), "not offered")
}
