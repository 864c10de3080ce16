package websocket

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rfcKey and rfcAccept are the example of RFC 6455 §1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

func TestAcceptKey(t *testing.T) {
	assert.Equal(t, rfcAccept, AcceptKey(rfcKey))
	// The key is hashed exactly as received, even a key of another
	// length (which a server rejects, but the function must not break on).
	assert.Len(t, AcceptKey("short"), acceptLen)
	assert.Len(t, AcceptKey(strings.Repeat("x", 200)), acceptLen)
	assert.NotEqual(t, AcceptKey("short"), AcceptKey("Short"))
}

func TestAcceptKeyAllocs(t *testing.T) {
	var out [acceptLen]byte
	n := testing.AllocsPerRun(100, func() { computeAccept(&out, rfcKey) })
	assert.Zero(t, n, "computeAccept allocates")
	n = testing.AllocsPerRun(100, func() { _ = AcceptKey(rfcKey) })
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

// wsServer starts an upgrade.Server on a real 127.0.0.1 listener, with h
// registered for "websocket" (through h.Route() if route is true), and
// returns its address.
func wsServer(t testing.TB, h *Handler, route bool) string {
	t.Helper()
	if h.Serve == nil {
		h.Serve = func(c *upgrade.Conn) {
			_, _ = io.WriteString(c, "subprotocol="+Subprotocol(c)+"\n")
			_, _ = io.Copy(c, c)
		}
	}
	s := &upgrade.Server{}
	if route {
		s.HandleRoute("websocket", h.Route())
	} else {
		s.Handle("websocket", h)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
	})
	return ts.Listener.Addr().String()
}

// exchange sends raw on a new connection to addr and reads the response.
// The connection is closed at the end of the test.
func exchange(t testing.TB, addr, raw string) (*http.Response, string, *bufio.Reader, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(nc, raw)
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	resp, err := wiretest.ReadResponse(br, http.MethodGet)
	require.NoError(t, err)
	var body string
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	return resp, body, br, nc
}

// request builds a raw handshake request: the standard fields, with
// lines replacing (by name) or adding to them; a line "-Name" removes a
// field.
func request(method string, lines ...string) string {
	std := [][2]string{
		{"Host", "example.com"},
		{"Upgrade", "websocket"},
		{"Connection", "Upgrade"},
		{"Sec-WebSocket-Key", rfcKey},
		{"Sec-WebSocket-Version", "13"},
	}
	var extra []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-") {
			for i := range std {
				if strings.EqualFold(std[i][0], l[1:]) {
					std[i][0] = ""
				}
			}
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		replaced := false
		for i := range std {
			if strings.EqualFold(std[i][0], name) {
				std[i] = [2]string{name, strings.TrimSpace(l[len(name)+1:])}
				replaced = true
			}
		}
		if !replaced {
			extra = append(extra, l)
		}
	}
	var b strings.Builder
	b.WriteString(method + " /chat HTTP/1.1\r\n")
	for _, f := range std {
		if f[0] != "" {
			b.WriteString(f[0] + ": " + f[1] + "\r\n")
		}
	}
	for _, l := range extra {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func TestServerHandshakeRFCExample(t *testing.T) {
	addr := wsServer(t, &Handler{}, false)
	resp, _, br, nc := exchange(t, addr, request("GET")+"ping")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, []string{rfcAccept}, resp.Header["Sec-Websocket-Accept"])
	assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
	assert.True(t, upgrade.HasConnectionOption(resp.Header, "upgrade"))
	assert.NotContains(t, resp.Header, "Sec-Websocket-Protocol")
	assert.NotContains(t, resp.Header, "Sec-Websocket-Extensions")
	assert.NotContains(t, resp.Header, "Content-Length")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "subprotocol=\n", line)
	// Bytes sent in the same packet as the request reach Serve.
	buf := make([]byte, 4)
	_, err = io.ReadFull(br, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
	_ = nc
}

// rejected checks a response that must not switch.
func rejected(t *testing.T, resp *http.Response, body string, status int, msg string) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body: %s", body)
	assert.NotContains(t, resp.Header, "Sec-Websocket-Accept")
	assert.Contains(t, body, msg)
}

func TestServerRejectsKey(t *testing.T) {
	addr := wsServer(t, &Handler{}, false)
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
			resp, body, _, _ := exchange(t, addr, request("GET", tc.lines...))
			rejected(t, resp, body, http.StatusBadRequest, tc.msg)
			assert.Contains(t, body, "Sec-WebSocket-Key")
		})
	}
}

func TestServerRejectsVersion(t *testing.T) {
	addr := wsServer(t, &Handler{}, false)
	for name, lines := range map[string][]string{
		"missing":    {"-Sec-WebSocket-Version"},
		"8":          {"Sec-WebSocket-Version: 8"},
		"list":       {"Sec-WebSocket-Version: 13, 8"},
		"two lines":  {"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8"},
		"whitespace": {"Sec-WebSocket-Version: 1 3"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body, _, _ := exchange(t, addr, request("GET", lines...))
			rejected(t, resp, body, http.StatusUpgradeRequired, "Sec-WebSocket-Version")
			assert.Equal(t, []string{"13"}, resp.Header["Sec-Websocket-Version"])
			// RFC 9110 §15.5.22: a 426 names what would be accepted.
			assert.Equal(t, "websocket", resp.Header.Get("Upgrade"))
			assert.True(t, upgrade.HasConnectionOption(resp.Header, "upgrade"))
		})
	}
}

// TestServerRejectsMethod: whether registered with Handle or with its
// Route, a websocket Handler takes GET only, and the 405 that refuses
// another method names exactly the methods that would work.
func TestServerRejectsMethod(t *testing.T) {
	for name, route := range map[string]bool{"Handle": false, "Route": true} {
		t.Run(name, func(t *testing.T) {
			addr := wsServer(t, &Handler{}, route)
			for _, m := range []string{"POST", "PUT", "OPTIONS"} {
				resp, body, _, _ := exchange(t, addr, request(m))
				rejected(t, resp, body, http.StatusMethodNotAllowed, "method "+m)
				assert.Equal(t, []string{"GET"}, resp.Header["Allow"], m)
			}
			resp, body, _, _ := exchange(t, addr, request("GET"))
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
		})
	}
	t.Run("wider Route", func(t *testing.T) {
		// A Route that lets other methods through still meets the
		// Handler's own check, which names the same list.
		s := &upgrade.Server{}
		s.HandleRoute("websocket", upgrade.Route{Handler: &Handler{Serve: func(*upgrade.Conn) {}}, Methods: []string{"*"}})
		ts := httptest.NewServer(s)
		t.Cleanup(func() { _ = s.Close(); ts.Close() })
		resp, body, _, _ := exchange(t, ts.Listener.Addr().String(), request("OPTIONS"))
		rejected(t, resp, body, http.StatusMethodNotAllowed, "method OPTIONS")
		assert.Equal(t, []string{"GET"}, resp.Header["Allow"])
	})
}

func TestServerRejectsBody(t *testing.T) {
	for _, route := range []bool{false, true} {
		addr := wsServer(t, &Handler{}, route)
		resp, body, _, _ := exchange(t, addr, request("GET", "Content-Length: 5")+"hello")
		rejected(t, resp, body, http.StatusBadRequest, "body")
		resp, body, _, _ = exchange(t, addr, request("GET", "Transfer-Encoding: chunked")+"5\r\nhello\r\n0\r\n\r\n")
		rejected(t, resp, body, http.StatusBadRequest, "body")
	}
}

func TestServerOrigin(t *testing.T) {
	check := func(t *testing.T, h *Handler, origin string, want int) {
		t.Helper()
		addr := wsServer(t, h, false)
		lines := []string{"Host: Example.COM:8080"}
		if origin != "" {
			lines = append(lines, "Origin: "+origin)
		}
		resp, body, _, _ := exchange(t, addr, request("GET", lines...))
		require.Equal(t, want, resp.StatusCode, "origin %q: %s", origin, body)
		if want == http.StatusForbidden {
			assert.Contains(t, body, "origin")
			assert.NotContains(t, resp.Header, "Sec-Websocket-Accept")
		}
	}
	t.Run("same host", func(t *testing.T) {
		check(t, &Handler{}, "https://example.com:8080", 101)
		check(t, &Handler{}, "http://EXAMPLE.com:8080", 101)
	})
	t.Run("absent", func(t *testing.T) { check(t, &Handler{}, "", 101) })
	t.Run("mismatch", func(t *testing.T) {
		check(t, &Handler{}, "https://evil.example", 403)
		check(t, &Handler{}, "https://example.com", 403) // port differs
		check(t, &Handler{}, "https://example.com:8080.evil", 403)
		check(t, &Handler{}, "null", 403)
		// A Unicode look-alike is not the same host.
		check(t, &Handler{}, "https://example.co\u1d0d:8080", 403)
	})
	t.Run("pattern", func(t *testing.T) {
		h := func() *Handler { return &Handler{OriginPatterns: []string{"*.Trusted.example", "localhost:*"}} }
		check(t, h(), "https://app.trusted.example", 101)
		check(t, h(), "http://localhost:3000", 101)
		check(t, h(), "https://trusted.example", 403)
		check(t, h(), "https://app.trusted.example.evil", 403)
	})
	t.Run("bad pattern", func(t *testing.T) {
		check(t, &Handler{OriginPatterns: []string{"[invalid"}}, "https://other.example", 500)
	})
	t.Run("opt-out", func(t *testing.T) {
		check(t, &Handler{InsecureSkipOriginCheck: true}, "https://evil.example", 101)
	})
	t.Run("CheckOrigin", func(t *testing.T) {
		h := func() *Handler {
			return &Handler{CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "https://ok.example" }}
		}
		check(t, h(), "https://ok.example", 101)
		check(t, h(), "https://example.com:8080", 403) // replaces the same-host rule
		check(t, h(), "", 403)
	})
}

func TestServerSubprotocol(t *testing.T) {
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
			h := tc.h
			addr := wsServer(t, &h, false)
			resp, body, br, _ := exchange(t, addr, request("GET", tc.lines...))
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
			assert.Equal(t, tc.want, resp.Header["Sec-Websocket-Protocol"])
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			want := ""
			if tc.want != nil {
				want = tc.want[0]
			}
			assert.Equal(t, "subprotocol="+want+"\n", line, "Subprotocol(c) in Serve")
		})
	}
	t.Run("malformed", func(t *testing.T) {
		addr := wsServer(t, &Handler{Subprotocols: []string{"chat"}}, false)
		resp, body, _, _ := exchange(t, addr, request("GET", `Sec-WebSocket-Protocol: chat, "quoted"`))
		rejected(t, resp, body, http.StatusBadRequest, "Sec-WebSocket-Protocol")
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
	const offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"
	t.Run("none accepted by default", func(t *testing.T) {
		addr := wsServer(t, &Handler{}, false)
		resp, body, _, _ := exchange(t, addr, request("GET", offer))
		require.Equal(t, 101, resp.StatusCode, body)
		assert.NotContains(t, resp.Header, "Sec-Websocket-Extensions")
	})
	t.Run("malformed ignored by default", func(t *testing.T) {
		addr := wsServer(t, &Handler{}, false)
		resp, body, _, _ := exchange(t, addr, request("GET", "Sec-WebSocket-Extensions: ;;"))
		require.Equal(t, 101, resp.StatusCode, body)
	})
	var seen []Extension
	accept := func(v string, err error) *Handler {
		return &Handler{AcceptExtensions: func(r *http.Request, offers []Extension) (string, error) {
			seen = offers
			return v, err
		}}
	}
	t.Run("accepted", func(t *testing.T) {
		addr := wsServer(t, accept("permessage-deflate", nil), false)
		resp, body, _, _ := exchange(t, addr, request("GET", offer))
		require.Equal(t, 101, resp.StatusCode, body)
		assert.Equal(t, []string{"permessage-deflate"}, resp.Header["Sec-Websocket-Extensions"])
		assert.Equal(t, []Extension{
			{Name: "permessage-deflate", Params: []ExtensionParam{{Name: "client_max_window_bits"}}},
			{Name: "x-webkit-deflate-frame"},
		}, seen)
	})
	t.Run("declined", func(t *testing.T) {
		addr := wsServer(t, accept("", nil), false)
		resp, body, _, _ := exchange(t, addr, request("GET", offer))
		require.Equal(t, 101, resp.StatusCode, body)
		assert.NotContains(t, resp.Header, "Sec-Websocket-Extensions")
	})
	t.Run("unrequested answer", func(t *testing.T) {
		addr := wsServer(t, accept("permessage-deflate, x-other", nil), false)
		resp, body, _, _ := exchange(t, addr, request("GET", offer))
		rejected(t, resp, body, http.StatusInternalServerError, "")
	})
	t.Run("not called without offers", func(t *testing.T) {
		seen = nil
		addr := wsServer(t, accept("permessage-deflate", nil), false)
		resp, body, _, _ := exchange(t, addr, request("GET"))
		require.Equal(t, 101, resp.StatusCode, body)
		assert.NotContains(t, resp.Header, "Sec-Websocket-Extensions")
		assert.Nil(t, seen)
	})
	t.Run("rejected by the func", func(t *testing.T) {
		addr := wsServer(t, accept("", &upgrade.RejectError{Status: 400, Message: "no thanks"}), false)
		resp, body, _, _ := exchange(t, addr, request("GET", offer))
		rejected(t, resp, body, http.StatusBadRequest, "no thanks")
	})
	t.Run("malformed", func(t *testing.T) {
		addr := wsServer(t, accept("", nil), false)
		resp, body, _, _ := exchange(t, addr, request("GET", "Sec-WebSocket-Extensions: a; b=\"unterminated"))
		rejected(t, resp, body, http.StatusBadRequest, "Sec-WebSocket-Extensions")
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
	addr := wsServer(b, &Handler{Subprotocols: []string{"chat"}, Serve: func(c *upgrade.Conn) {}}, false)
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
