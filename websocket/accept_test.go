package websocket

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http/httpguts"
)

func TestAcceptKey(t *testing.T) {
	assert.Equal(t, rfcAccept, AcceptKey(rfcKey))
	// The key is hashed exactly as received, even a key of another
	// length (which a server rejects, but the function must not break on).
	assert.Len(t, AcceptKey("short"), 28)
	assert.Len(t, AcceptKey(strings.Repeat("x", 200)), 28)
	assert.NotEqual(t, AcceptKey("short"), AcceptKey("Short"))
}

func TestAcceptKeyAllocs(t *testing.T) {
	n := testing.AllocsPerRun(100, func() { _ = AcceptKey(rfcKey) })
	assert.LessOrEqual(t, n, 1.0, "AcceptKey allocates more than its result")
}

func TestCheckKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{rfcKey, true},
		{NewKey(), true},
		{"dGhlIHNhbXBsZSBub25jZR==", true},  // non-zero pad bits: lenient, like base64.StdEncoding
		{"dGhlIHNhbXBsZSBub25jZQ", false},   // unpadded: 22 characters
		{"dGhlIHNhbXBsZQ==", false},         // 10 bytes
		{"dGhlIHNhbXBsZSBub25jZSEh", false}, // 24 characters, 18 bytes
		{"!!!!!!!!!!!!!!!!!!!!!!==", false},
		{"dGhlIHNhbXBsZSBub25jZQ=" + "=", true},
		{"dGhlIHNhbXBsZSBub25j ZQ=", false},
		{"", false},
	} {
		why := checkKey(tc.key)
		assert.Equal(t, tc.ok, why == "", "key %q: %s", tc.key, why)
	}
}

// TestServerHandshakeRFCExample: the 101 on the wire for the example of
// RFC 6455 §1.3, and the bytes sent behind the request reach Serve.
func TestServerHandshakeRFCExample(t *testing.T) {
	c := wiretest.Dial(t, wsServer(t, &Handler{}, false))
	c.Send(request("GET") + "ping")
	resp := c.Response(http.MethodGet)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, []string{rfcAccept}, resp.Header["Sec-Websocket-Accept"])
	assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
	assert.True(t, httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade"))
	assert.NotContains(t, resp.Header, "Sec-Websocket-Protocol")
	assert.NotContains(t, resp.Header, "Sec-Websocket-Extensions")
	assert.NotContains(t, resp.Header, "Content-Length")
	line, err := c.BR.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "subprotocol=\n", line)
	// Bytes sent in the same packet as the request reach Serve.
	assert.Equal(t, "ping", c.ReadN(4))
}

// The refusals below, and the negotiation of subprotocols, extensions and
// origins, depend on the request alone: they are served in process.

func TestServerRejectsKey(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		lines []string
		msg   string
	}{
		"missing":    {[]string{"-Sec-WebSocket-Key"}, "missing Sec-WebSocket-Key"},
		"duplicated": {[]string{"Sec-WebSocket-Key: " + rfcKey + "\r\nSec-WebSocket-Key: " + rfcKey}, "more than once"},
		"length":     {[]string{"Sec-WebSocket-Key: dGhlIHNhbXBsZQ=="}, "length 16"},
		"18 bytes":   {[]string{"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSEh"}, "decodes to 18 bytes"},
		"base64":     {[]string{"Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="}, "not base64"},
		"empty":      {[]string{"Sec-WebSocket-Key:"}, "length 0"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := handshake(t, &Handler{}, request("GET", tc.lines...))
			rejected(t, res, http.StatusBadRequest, tc.msg)
			assert.Contains(t, res.Body, "Sec-WebSocket-Key")
		})
	}
}

func TestServerRejectsVersion(t *testing.T) {
	t.Parallel()
	for name, lines := range map[string][]string{
		"missing":    {"-Sec-WebSocket-Version"},
		"8":          {"Sec-WebSocket-Version: 8"},
		"list":       {"Sec-WebSocket-Version: 13, 8"},
		"two lines":  {"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8"},
		"whitespace": {"Sec-WebSocket-Version: 1 3"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := handshake(t, &Handler{}, request("GET", lines...))
			rejected(t, res, http.StatusUpgradeRequired, "Sec-WebSocket-Version")
			assert.Equal(t, []string{"13"}, res.Header["Sec-Websocket-Version"])
			// RFC 9110 §15.5.22: a 426 names what would be accepted.
			assert.Equal(t, "websocket", res.Header.Get("Upgrade"))
			assert.True(t, httpguts.HeaderValuesContainsToken(res.Header["Connection"], "upgrade"))
		})
	}
}

// TestServerRejectsMethod: whether registered with Handle or with its
// Route, a websocket Handler takes GET only, and the 405 that refuses
// another method names exactly the methods that would work.
func TestServerRejectsMethod(t *testing.T) {
	t.Parallel()
	for name, route := range map[string]bool{"Handle": false, "Route": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, m := range []string{"POST", "PUT", "OPTIONS"} {
				res := inProcess(t, newServer(&Handler{}, route), request(m))
				rejected(t, res, http.StatusMethodNotAllowed, "method "+m)
				assert.Equal(t, []string{"GET"}, res.Header["Allow"], m)
			}
			res := inProcess(t, newServer(&Handler{}, route), request("GET"))
			assert.Equal(t, http.StatusSwitchingProtocols, res.Status, res.Body)
		})
	}
	t.Run("wider Route", func(t *testing.T) {
		t.Parallel()
		// A Route that lets other methods through still meets the
		// Handler's own check, which names the same list.
		s := &upgrade.Server{}
		s.HandleRoute("websocket", upgrade.Route{Handler: &Handler{Serve: func(*upgrade.Conn, string) {}}, Methods: []string{"*"}})
		res := inProcess(t, s, request("OPTIONS"))
		rejected(t, res, http.StatusMethodNotAllowed, "method OPTIONS")
		assert.Equal(t, []string{"GET"}, res.Header["Allow"])
	})
}

func TestServerRejectsBody(t *testing.T) {
	t.Parallel()
	for _, route := range []bool{false, true} {
		res := inProcess(t, newServer(&Handler{}, route), request("GET", "Content-Length: 5")+"hello")
		rejected(t, res, http.StatusBadRequest, "body")
		res = inProcess(t, newServer(&Handler{}, route), request("GET", "Transfer-Encoding: chunked")+"5\r\nhello\r\n0\r\n\r\n")
		rejected(t, res, http.StatusBadRequest, "body")
	}
}

func TestServerOrigin(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, h *Handler, origin string, want int) {
		t.Helper()
		lines := []string{"Host: Example.COM:8080"}
		if origin != "" {
			lines = append(lines, "Origin: "+origin)
		}
		res := handshake(t, h, request("GET", lines...))
		require.Equal(t, want, res.Status, "origin %q: %s", origin, res.Body)
		if want == http.StatusForbidden {
			assert.Contains(t, res.Body, "origin")
			assert.NotContains(t, res.Header, "Sec-Websocket-Accept")
		}
	}
	t.Run("same host", func(t *testing.T) {
		t.Parallel()
		check(t, &Handler{}, "https://example.com:8080", 101)
		check(t, &Handler{}, "http://EXAMPLE.com:8080", 101)
	})
	t.Run("absent", func(t *testing.T) { t.Parallel(); check(t, &Handler{}, "", 101) })
	t.Run("mismatch", func(t *testing.T) {
		t.Parallel()
		check(t, &Handler{}, "https://evil.example", 403)
		check(t, &Handler{}, "https://example.com", 403) // port differs
		check(t, &Handler{}, "https://example.com:8080.evil", 403)
		check(t, &Handler{}, "null", 403)
		// A Unicode look-alike is not the same host.
		check(t, &Handler{}, "https://example.co\u1d0d:8080", 403)
	})
	t.Run("pattern", func(t *testing.T) {
		t.Parallel()
		h := func() *Handler { return &Handler{OriginPatterns: []string{"*.Trusted.example", "localhost:*"}} }
		check(t, h(), "https://app.trusted.example", 101)
		check(t, h(), "http://localhost:3000", 101)
		check(t, h(), "https://trusted.example", 403)
		check(t, h(), "https://app.trusted.example.evil", 403)
	})
	t.Run("bad pattern", func(t *testing.T) {
		t.Parallel()
		check(t, &Handler{OriginPatterns: []string{"[invalid"}}, "https://other.example", 500)
	})
	t.Run("opt-out", func(t *testing.T) {
		t.Parallel()
		check(t, &Handler{InsecureSkipOriginCheck: true}, "https://evil.example", 101)
	})
	t.Run("CheckOrigin", func(t *testing.T) {
		t.Parallel()
		h := func() *Handler {
			return &Handler{CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "https://ok.example" }}
		}
		check(t, h(), "https://ok.example", 101)
		check(t, h(), "https://example.com:8080", 403) // replaces the same-host rule
		check(t, h(), "", 403)
	})
}

func TestServerSubprotocol(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		h     Handler
		lines []string
		want  []string // the 101's Sec-WebSocket-Protocol lines
	}{
		"server order": {
			Handler{Subprotocols: []string{"v2.chat", "v1.chat"}},
			[]string{"Sec-WebSocket-Protocol: v1.chat, v2.chat"},
			[]string{"v2.chat"},
		},
		"client order": {
			Handler{Subprotocols: []string{"v2.chat", "v1.chat"}, PreferClientOrder: true},
			[]string{"Sec-WebSocket-Protocol: v1.chat, v2.chat"},
			[]string{"v1.chat"},
		},
		"over several lines": {
			Handler{Subprotocols: []string{"b"}},
			[]string{"Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: c, b"},
			[]string{"b"},
		},
		"none matching": {
			Handler{Subprotocols: []string{"mqtt"}},
			[]string{"Sec-WebSocket-Protocol: chat, superchat"},
			nil,
		},
		"case-sensitive": {
			Handler{Subprotocols: []string{"Chat"}},
			[]string{"Sec-WebSocket-Protocol: chat"},
			nil,
		},
		"server speaks none": {
			Handler{},
			[]string{"Sec-WebSocket-Protocol: chat"},
			nil,
		},
		"client offers none": {
			Handler{Subprotocols: []string{"chat"}},
			nil,
			nil,
		},
		"empty values": {
			Handler{Subprotocols: []string{"", "chat"}},
			[]string{"Sec-WebSocket-Protocol:", "Sec-WebSocket-Protocol: , ,"},
			nil,
		},
		"empty elements around a match": {
			Handler{Subprotocols: []string{"", "chat"}, PreferClientOrder: true},
			[]string{"Sec-WebSocket-Protocol: ,, chat ,"},
			[]string{"chat"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := tc.h
			res := handshake(t, &h, request("GET", tc.lines...))
			require.Equal(t, http.StatusSwitchingProtocols, res.Status, res.Body)
			assert.Equal(t, tc.want, res.Header["Sec-Websocket-Protocol"])
			want := ""
			if tc.want != nil {
				want = tc.want[0]
			}
			assert.Equal(t, "subprotocol="+want+"\n", res.After, "Subprotocol(c) in Serve")
		})
	}
	t.Run("malformed", func(t *testing.T) {
		t.Parallel()
		res := handshake(t, &Handler{Subprotocols: []string{"chat"}}, request("GET", `Sec-WebSocket-Protocol: chat, "quoted"`))
		rejected(t, res, http.StatusBadRequest, "Sec-WebSocket-Protocol")
	})
}

func TestSelectSubprotocolAllocs(t *testing.T) {
	h := &Handler{Subprotocols: []string{"v3", "v2", "v1"}}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header["Sec-Websocket-Protocol"] = []string{"v0, v1", "v2"}
	assert.Equal(t, "v2", h.SelectSubprotocol(r))
	assert.Zero(t, testing.AllocsPerRun(100, func() { h.SelectSubprotocol(r) }))
}

func TestServerExtensions(t *testing.T) {
	t.Parallel()
	const offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"
	t.Run("none accepted by default", func(t *testing.T) {
		t.Parallel()
		res := handshake(t, &Handler{}, request("GET", offer))
		require.Equal(t, 101, res.Status, res.Body)
		assert.NotContains(t, res.Header, "Sec-Websocket-Extensions")
	})
	t.Run("malformed ignored by default", func(t *testing.T) {
		t.Parallel()
		res := handshake(t, &Handler{}, request("GET", "Sec-WebSocket-Extensions: ;;"))
		require.Equal(t, 101, res.Status, res.Body)
	})
	// accept returns a Handler whose AcceptExtensions records the offers
	// it is called with in seen and answers v, err.
	accept := func(seen *[]Extension, v string, err error) *Handler {
		return &Handler{AcceptExtensions: func(r *http.Request, offers []Extension) (string, error) {
			*seen = offers
			return v, err
		}}
	}
	t.Run("accepted", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "permessage-deflate", nil), request("GET", offer))
		require.Equal(t, 101, res.Status, res.Body)
		assert.Equal(t, []string{"permessage-deflate"}, res.Header["Sec-Websocket-Extensions"])
		assert.Equal(t, []Extension{
			{Name: "permessage-deflate", Params: []ExtensionParam{{Name: "client_max_window_bits"}}},
			{Name: "x-webkit-deflate-frame"},
		}, seen)
	})
	t.Run("declined", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "", nil), request("GET", offer))
		require.Equal(t, 101, res.Status, res.Body)
		assert.NotContains(t, res.Header, "Sec-Websocket-Extensions")
	})
	t.Run("unrequested answer", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "permessage-deflate, x-other", nil), request("GET", offer))
		rejected(t, res, http.StatusInternalServerError, "")
	})
	t.Run("not called without offers", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "permessage-deflate", nil), request("GET"))
		require.Equal(t, 101, res.Status, res.Body)
		assert.NotContains(t, res.Header, "Sec-Websocket-Extensions")
		assert.Nil(t, seen)
	})
	t.Run("rejected by the func", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "", &upgrade.RejectError{Status: 400, Message: "no thanks"}), request("GET", offer))
		rejected(t, res, http.StatusBadRequest, "no thanks")
	})
	t.Run("malformed", func(t *testing.T) {
		t.Parallel()
		var seen []Extension
		res := handshake(t, accept(&seen, "", nil), request("GET", "Sec-WebSocket-Extensions: a; b=\"unterminated"))
		rejected(t, res, http.StatusBadRequest, "Sec-WebSocket-Extensions")
	})
}

func TestParseExtensions(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []Extension
		err  string
	}{
		{nil, nil, ""},
		{[]string{"", " , "}, nil, ""},
		{[]string{"foo"}, []Extension{{Name: "foo"}}, ""},
		{[]string{"foo; a=1 ;b ; c=\"x\"", "bar"}, []Extension{
			{Name: "foo", Params: []ExtensionParam{{"a", "1"}, {"b", ""}, {"c", "x"}}},
			{Name: "bar"},
		}, ""},
		{[]string{"foo, bar"}, []Extension{{Name: "foo"}, {Name: "bar"}}, ""},
		{[]string{"foo;"}, nil, "missing parameter name"},
		{[]string{"; a"}, nil, "missing extension name"},
		{[]string{"foo bar"}, nil, "unexpected"},
		{[]string{"foo; a="}, nil, "missing value"},
		{[]string{`foo; a="x y"`}, nil, "not a token"},
		{[]string{`foo; a="x`}, nil, "unterminated"},
		{[]string{`foo; a=@`}, nil, "not a token"},
	} {
		got, err := ParseExtensions(tc.in)
		if tc.err != "" {
			require.Error(t, err, "%q", tc.in)
			assert.Contains(t, err.Error(), tc.err)
			assert.Contains(t, err.Error(), "Sec-WebSocket-Extensions")
			var he *HeaderError
			assert.True(t, errors.As(err, &he))
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
	e := Extension{Name: "foo", Params: []ExtensionParam{{"a", "1"}, {"b", ""}, {"c", "x y"}}}
	assert.Equal(t, `foo; a=1; b; c="x y"`, e.String())
}

// sink keeps benchmark results alive, so their allocation is counted.
var sink string

// BenchmarkAccept measures the Sec-WebSocket-Accept computation,
// including the header value string (its one allocation).
func BenchmarkAccept(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sink = AcceptKey(rfcKey)
	}
	if sink != rfcAccept {
		b.Fatal(sink)
	}
}

// BenchmarkServerHandshake measures a whole opening handshake over
// loopback through upgrade.Server: connect, send the request, read the
// 101, close. Client and server allocations are both counted.
func BenchmarkServerHandshake(b *testing.B) {
	addr := wsServer(b, &Handler{Subprotocols: []string{"chat"}, Serve: func(*upgrade.Conn, string) {}}, false)
	req := []byte(request("GET", "Sec-WebSocket-Protocol: chat", "Origin: http://example.com"))
	buf := make([]byte, 512)
	want := []byte("HTTP/1.1 101 ")
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := io.ReadAtLeast(nc, buf, len(want))
		if err != nil || string(buf[:len(want)]) != string(want) {
			b.Fatalf("read %q: %v", buf[:n], err)
		}
		nc.Close()
	}
}

// TestAcceptUpgradeAllocs bounds the allocations of the pre-101 step for
// a valid request with Origin and a subprotocol: the accept string and
// the 101 header slices only.
func TestAcceptUpgradeAllocs(t *testing.T) {
	h := &Handler{Subprotocols: []string{"chat"}}
	r := httptest.NewRequest("GET", "http://example.com/", nil)
	r.Header.Set("Sec-WebSocket-Key", rfcKey)
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Protocol", "superchat, chat")
	r.Header.Set("Origin", "http://example.com")
	hdr := http.Header{}
	require.NoError(t, h.AcceptUpgrade(r, hdr))
	assert.Equal(t, rfcAccept, hdr.Get("Sec-WebSocket-Accept"))
	n := testing.AllocsPerRun(100, func() {
		clear(hdr)
		_ = h.AcceptUpgrade(r, hdr)
	})
	assert.LessOrEqual(t, n, 3.0)
	t.Logf("AcceptUpgrade: %v allocs", n)
}
