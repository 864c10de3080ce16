package h2c

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// describe answers every HTTP/2 request with what it saw.
var describe = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	fmt.Fprintf(w, "%s %s %s body=%q upgrade=%q settings=%q connection=%q",
		r.Method, r.URL.Path, r.Proto, body, r.Header.Get("Upgrade"), r.Header.Get("HTTP2-Settings"), r.Header.Get("Connection"))
})

// settings is a valid HTTP2-Settings value: MAX_CONCURRENT_STREAMS 100,
// INITIAL_WINDOW_SIZE 65535.
var settings = encodeSettings(
	http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100},
	http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535},
)

func encodeSettings(ss ...http2.Setting) string {
	var b []byte
	for _, s := range ss {
		b = append(b, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// h2cServer starts an upgrade.Server on 127.0.0.1 with h registered for
// h2c, as an endpoint (next == nil) or as middleware in front of next.
func h2cServer(t *testing.T, h *Handler, next http.Handler) (string, *upgrade.Server) {
	t.Helper()
	s := &upgrade.Server{}
	s.HandleRoute(Protocol, h.Route())
	var handler http.Handler = s
	if next != nil {
		handler = s.Middleware(next)
	}
	ts := httptest.NewServer(handler)
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
	})
	return ts.Listener.Addr().String(), s
}

// upgradeRequest builds a raw h2c upgrade request.
func upgradeRequest(method, body string, lines ...string) string {
	var b strings.Builder
	b.WriteString(method + " /path HTTP/1.1\r\nHost: example.com\r\n")
	std := map[string]string{
		"Upgrade":        "h2c",
		"Connection":     "Upgrade, HTTP2-Settings",
		"HTTP2-Settings": settings,
	}
	for _, l := range lines {
		if raw, ok := strings.CutPrefix(l, "+"); ok { // "+Name: v" adds a line
			b.WriteString(raw + "\r\n")
			continue
		}
		name, v, _ := strings.Cut(l, ":")
		if _, ok := std[name]; ok {
			std[name] = strings.TrimSpace(v)
			if v == "" { // "Name:" alone removes it
				delete(std, name)
			}
			continue
		}
		b.WriteString(l + "\r\n")
	}
	for _, k := range []string{"Upgrade", "Connection", "HTTP2-Settings"} {
		if v, ok := std[k]; ok {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// send writes raw to a new connection to addr and reads the HTTP/1.1
// response; if it is a 101 the connection is left positioned after it.
func send(t *testing.T, addr, raw string) (*http.Response, string, *bufio.Reader, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(nc, raw)
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	var body string
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	return resp, body, br, nc
}

// stream is a response read from raw frames.
type stream struct {
	header map[string]string
	body   string
}

// decoders holds the HPACK decoder of each test connection's Framer
// (tests using it do not run in parallel).
var decoders = map[*http2.Framer]*hpack.Decoder{}

// readResponse reads frames until stream id has ended, acknowledging
// SETTINGS, and returns its response.
func readResponse(t *testing.T, fr *http2.Framer, id uint32) stream {
	t.Helper()
	dec := decoders[fr]
	st := stream{header: map[string]string{}}
	var body bytes.Buffer
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				require.NoError(t, fr.WriteSettingsAck())
			}
		case *http2.HeadersFrame:
			require.Equal(t, id, f.StreamID, "HEADERS on an unexpected stream")
			require.True(t, f.HeadersEnded(), "CONTINUATION not expected for a small response")
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			require.NoError(t, err)
			for _, hf := range fields {
				st.header[hf.Name] = hf.Value
			}
			if f.StreamEnded() {
				return st
			}
		case *http2.DataFrame:
			require.Equal(t, id, f.StreamID, "DATA on an unexpected stream")
			body.Write(f.Data())
			if f.StreamEnded() {
				st.body = body.String()
				return st
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				t.Fatalf("GOAWAY: %v %s", f.ErrCode, f.DebugData())
			}
		}
	}
}

// startH2 sends the client preface and SETTINGS on nc and checks that the
// server's first frame after the 101 is its SETTINGS.
func startH2(t *testing.T, br *bufio.Reader, nc net.Conn, prefaceSent bool) *http2.Framer {
	t.Helper()
	fr := http2.NewFramer(nc, br)
	decoders[fr] = hpack.NewDecoder(4096, nil) // one per connection: HPACK state spans frames
	t.Cleanup(func() { delete(decoders, fr) })
	if !prefaceSent {
		_, err := io.WriteString(nc, http2.ClientPreface)
		require.NoError(t, err)
		require.NoError(t, fr.WriteSettings())
	}
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	sf, ok := f.(*http2.SettingsFrame)
	require.True(t, ok, "first frame after the 101 is %T, want SETTINGS", f)
	require.False(t, sf.IsAck())
	require.NoError(t, fr.WriteSettingsAck())
	return fr
}

func TestUpgradeRawFrames(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	resp, body, br, nc := send(t, addr, upgradeRequest("GET", "", "Accept: text/plain"))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	assert.Equal(t, "h2c", resp.Header.Get("Upgrade"))
	assert.True(t, upgrade.HasConnectionOption(resp.Header, "upgrade"))

	fr := startH2(t, br, nc, false)
	st := readResponse(t, fr, 1)
	assert.Equal(t, "200", st.header[":status"])
	assert.Equal(t, `GET /path HTTP/2.0 body="" upgrade="" settings="" connection=""`, st.body)

	// A later request on the connection goes to the same handler, on
	// stream 3.
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "example.com"}, {":path", "/second"}} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}))
	st = readResponse(t, fr, 3)
	assert.Equal(t, "200", st.header[":status"])
	assert.Equal(t, `GET /second HTTP/2.0 body="" upgrade="" settings="" connection=""`, st.body)
}

func TestUpgradeWithBody(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	resp, body, br, nc := send(t, addr, upgradeRequest("POST", "the request body"))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	st := readResponse(t, startH2(t, br, nc, false), 1)
	assert.Equal(t, `POST /path HTTP/2.0 body="the request body" upgrade="" settings="" connection=""`, st.body)
}

// TestChunkedUpgradeNotSwitched: an upgrade request whose body is framed
// by Transfer-Encoding is never switched (net/http hides a Content-Length
// sent beside it: the request-smuggling form of RFC 9112 §6.1); the
// middleware serves it as a plain request and closes the connection.
func TestChunkedUpgradeNotSwitched(t *testing.T) {
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "plain %s %q", r.Proto, b)
	})
	addr, _ := h2cServer(t, &Handler{Handler: describe}, plain)
	resp, body, br, _ := send(t, addr, upgradeRequest("POST", "", "Transfer-Encoding: chunked")+"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, `plain HTTP/1.1 "abcde"`, body)
	assert.True(t, resp.Close, "the connection is closed after the answer")
	_, err := br.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}

// TestPrefaceWithRequest sends the client preface in the same write as
// the upgrade request: the bytes read ahead must reach the HTTP/2 server.
func TestPrefaceWithRequest(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	var frames bytes.Buffer
	frames.WriteString(http2.ClientPreface)
	require.NoError(t, http2.NewFramer(&frames, nil).WriteSettings())
	resp, body, br, nc := send(t, addr, upgradeRequest("PUT", "abc")+frames.String())
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	st := readResponse(t, startH2(t, br, nc, true), 1)
	assert.Equal(t, `PUT /path HTTP/2.0 body="abc" upgrade="" settings="" connection=""`, st.body)
}

func TestUpgradeBodyLimit(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe, MaxBody: 4}, nil)
	resp, _, _, _ := send(t, addr, upgradeRequest("POST", "too long"))
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

func TestDeclined(t *testing.T) {
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain %s", r.Proto)
	})
	for name, lines := range map[string][]string{
		"no HTTP2-Settings":                {"HTTP2-Settings:"},
		"HTTP2-Settings not in Connection": {"Connection: Upgrade"},
		"h2 token":                         {"Upgrade: h2"},
		"h2c with a version":               {"Upgrade: h2c/2"},
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := h2cServer(t, &Handler{Handler: describe}, plain)
			resp, body, _, _ := send(t, addr, upgradeRequest("GET", "", lines...))
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "plain HTTP/1.1", body)

			addr, _ = h2cServer(t, &Handler{Handler: describe}, nil)
			resp, _, _, _ = send(t, addr, upgradeRequest("GET", "", lines...))
			assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
			assert.Equal(t, "h2c", resp.Header.Get("Upgrade"))
		})
	}
}

// TestH2NeverSwitched registers the Handler under "h2" by mistake: an
// offer of h2 (the TLS token) is still not switched.
func TestH2NeverSwitched(t *testing.T) {
	s := &upgrade.Server{}
	s.HandleRoute("h2", (&Handler{Handler: describe}).Route())
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()
	resp, body, _, _ := send(t, ts.Listener.Addr().String(), upgradeRequest("GET", "", "Upgrade: h2"))
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode, body)
}

func TestMalformedSettings(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	for name, tc := range map[string]struct {
		lines []string
		msg   string
	}{
		"not base64url":   {[]string{"HTTP2-Settings: AAMAAABk+AAEAAD//w"}, "not base64url"},
		"partial setting": {[]string{"HTTP2-Settings: " + base64.RawURLEncoding.EncodeToString([]byte{0, 3, 0, 0, 0})}, "5 bytes"},
		"twice":           {[]string{"+HTTP2-Settings: " + settings}, "2 times"},
		"padded":          {[]string{"HTTP2-Settings: " + settings[:8] + "=="}, "not base64url"},
		"invalid value":   {[]string{"HTTP2-Settings: " + encodeSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})}, "ENABLE_PUSH"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body, _, _ := send(t, addr, upgradeRequest("GET", "", tc.lines...))
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
			assert.Contains(t, body, "HTTP2-Settings")
			assert.Contains(t, body, tc.msg)
		})
	}
}

func TestDecodeSettings(t *testing.T) {
	b, err := decodeSettings([]string{""})
	require.NoError(t, err)
	assert.Empty(t, b)
	b, err = decodeSettings([]string{settings})
	require.NoError(t, err)
	assert.Len(t, b, 12)
	_, err = decodeSettings([]string{settings + "="})
	assert.ErrorContains(t, err, "not base64url")
	_, err = decodeSettings(nil)
	assert.ErrorContains(t, err, "0 times")
}

// TestShutdownSendsGoAway checks that upgrade.Server.Shutdown makes the
// HTTP/2 connection send GOAWAY and lets the stream in progress finish.
func TestShutdownSendsGoAway(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	})
	addr, s := h2cServer(t, &Handler{Handler: slow}, nil)
	resp, body, br, nc := send(t, addr, upgradeRequest("GET", ""))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	fr := startH2(t, br, nc, false)
	<-started

	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownDone <- s.Shutdown(ctx)
	}()
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goAway = g
		}
	}
	assert.Equal(t, http2.ErrCodeNo, goAway.ErrCode)
	close(release)
	st := readResponse(t, fr, 1)
	assert.Equal(t, "finished", st.body)
	require.NoError(t, <-shutdownDone)
}

func TestAcceptUpgradeDecisions(t *testing.T) {
	h := &Handler{}
	req := func(up string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Upgrade", up)
		r.Header.Set("Connection", "Upgrade, HTTP2-Settings")
		r.Header.Set("HTTP2-Settings", settings)
		return r
	}
	assert.NoError(t, h.AcceptUpgrade(req("h2c"), http.Header{}))
	assert.NoError(t, h.AcceptUpgrade(req("foo, H2C"), http.Header{}))
	assert.ErrorIs(t, h.AcceptUpgrade(req("h2"), http.Header{}), upgrade.ErrDecline)
	assert.ErrorIs(t, h.AcceptUpgrade(req("h2c\u212A"), http.Header{}), upgrade.ErrDecline)
	r := req("h2c")
	r.TLS = &tls.ConnectionState{}
	assert.ErrorIs(t, h.AcceptUpgrade(r, http.Header{}), upgrade.ErrDecline, "h2c is cleartext only")
	r = req("h2c")
	r.Header.Set("HTTP2-Settings", "!")
	var re *upgrade.RejectError
	require.ErrorAs(t, h.AcceptUpgrade(r, http.Header{}), &re)
	assert.Equal(t, http.StatusBadRequest, re.Status)
}

// TestNotAdvertisedOverTLS: h2c exists only over cleartext (RFC 7540
// §3.2-3.3), so a 426 answered over TLS does not list it — the list names
// what the client could switch to (RFC 9110 §15.5.22) — and an h2c offer
// over TLS is not switched; over cleartext the same endpoint lists it.
func TestNotAdvertisedOverTLS(t *testing.T) {
	s := &upgrade.Server{}
	s.HandleFunc("echo/1", func(c *upgrade.Conn) {})
	s.Handle(Protocol, &Handler{Handler: describe})
	plain := httptest.NewServer(s)
	secure := httptest.NewTLSServer(s)
	t.Cleanup(func() { _ = s.Close(); plain.Close(); secure.Close() })

	ask := func(t *testing.T, nc net.Conn, raw string) *http.Response {
		t.Cleanup(func() { nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := io.WriteString(nc, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		require.NoError(t, err)
		return resp
	}
	dialTLS := func(t *testing.T) net.Conn {
		nc, err := tls.Dial("tcp", secure.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		require.NoError(t, err)
		return nc
	}
	dialPlain := func(t *testing.T) net.Conn {
		nc, err := net.Dial("tcp", plain.Listener.Addr().String())
		require.NoError(t, err)
		return nc
	}

	resp := ask(t, dialTLS(t), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1"}, resp.Header["Upgrade"], "over TLS")

	resp = ask(t, dialTLS(t), upgradeRequest("GET", ""))
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode, "h2c is not switched over TLS")
	assert.Equal(t, []string{"echo/1"}, resp.Header["Upgrade"])

	resp = ask(t, dialPlain(t), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1, h2c"}, resp.Header["Upgrade"], "over cleartext")
}
