package h2c

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestUpgradeRawFrames(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	c, resp, body := send(t, addr, upgradeRequest("GET", "", "Accept: text/plain"))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	assert.Equal(t, "h2c", resp.Header.Get("Upgrade"))
	assert.True(t, httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade"))

	fr := startH2(t, c, false)
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
	c, resp, body := send(t, addr, upgradeRequest("POST", "the request body"))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	st := readResponse(t, startH2(t, c, false), 1)
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
	c, resp, body := send(t, addr, upgradeRequest("POST", "", "Transfer-Encoding: chunked")+"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, `plain HTTP/1.1 "abcde"`, body)
	assert.True(t, resp.Close, "the connection is closed after the answer")
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}

// TestPrefaceWithRequest sends the client preface in the same write as
// the upgrade request: the bytes read ahead must reach the HTTP/2 server.
func TestPrefaceWithRequest(t *testing.T) {
	addr, _ := h2cServer(t, &Handler{Handler: describe}, nil)
	var frames bytes.Buffer
	frames.WriteString(http2.ClientPreface)
	require.NoError(t, http2.NewFramer(&frames, nil).WriteSettings())
	c, resp, body := send(t, addr, upgradeRequest("PUT", "abc")+frames.String())
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	st := readResponse(t, startH2(t, c, true), 1)
	assert.Equal(t, `PUT /path HTTP/2.0 body="abc" upgrade="" settings="" connection=""`, st.body)
}

// The refusals below depend on the request alone: they are served in
// process.

func TestUpgradeBodyLimit(t *testing.T) {
	t.Parallel()
	res := inProcess(t, newServer(&Handler{Handler: describe, MaxBody: 4}), nil, upgradeRequest("POST", "too long"))
	assert.Equal(t, http.StatusRequestEntityTooLarge, res.Status)
}

func TestDeclined(t *testing.T) {
	t.Parallel()
	for name, lines := range map[string][]string{
		"no HTTP2-Settings":                {"HTTP2-Settings:"},
		"HTTP2-Settings not in Connection": {"Connection: Upgrade"},
		"h2 token":                         {"Upgrade: h2"},
		"h2c with a version":               {"Upgrade: h2c/2"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := inProcess(t, newServer(&Handler{Handler: describe}), plain, upgradeRequest("GET", "", lines...))
			assert.Equal(t, http.StatusOK, res.Status)
			assert.Equal(t, "plain HTTP/1.1", res.Body)

			res = inProcess(t, newServer(&Handler{Handler: describe}), nil, upgradeRequest("GET", "", lines...))
			assert.Equal(t, http.StatusUpgradeRequired, res.Status)
			assert.Equal(t, "h2c", res.Header.Get("Upgrade"))
		})
	}
}

// TestH2NeverSwitched registers the Handler under "h2" by mistake: an
// offer of h2 (the TLS token) is still not switched.
func TestH2NeverSwitched(t *testing.T) {
	t.Parallel()
	s := &upgrade.Server{}
	s.HandleRoute("h2", (&Handler{Handler: describe}).Route())
	res := inProcess(t, s, nil, upgradeRequest("GET", "", "Upgrade: h2"))
	assert.Equal(t, http.StatusUpgradeRequired, res.Status, res.Body)
}

func TestMalformedSettings(t *testing.T) {
	t.Parallel()
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
			t.Parallel()
			res := inProcess(t, newServer(&Handler{Handler: describe}), nil, upgradeRequest("GET", "", tc.lines...))
			require.Equal(t, http.StatusBadRequest, res.Status, res.Body)
			assert.Contains(t, res.Body, "HTTP2-Settings")
			assert.Contains(t, res.Body, tc.msg)
		})
	}
}

func TestDecodeSettings(t *testing.T) {
	t.Parallel()
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
	c, resp, body := send(t, addr, upgradeRequest("GET", ""))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, body)
	fr := startH2(t, c, false)
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
	t.Parallel()
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
	t.Parallel()
	newServer := func() *upgrade.Server {
		s := &upgrade.Server{}
		s.HandleFunc("echo/1", func(c *upgrade.Conn) {})
		s.Handle(Protocol, &Handler{Handler: describe})
		return s
	}
	const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

	res := inProcess(t, newServer(), nil, get, overTLS)
	assert.Equal(t, http.StatusUpgradeRequired, res.Status)
	assert.Equal(t, []string{"echo/1"}, res.Header["Upgrade"], "over TLS")

	res = inProcess(t, newServer(), nil, upgradeRequest("GET", ""), overTLS)
	assert.Equal(t, http.StatusUpgradeRequired, res.Status, "h2c is not switched over TLS")
	assert.Equal(t, []string{"echo/1"}, res.Header["Upgrade"])

	res = inProcess(t, newServer(), nil, get)
	assert.Equal(t, http.StatusUpgradeRequired, res.Status)
	assert.Equal(t, []string{"echo/1, h2c"}, res.Header["Upgrade"], "over cleartext")
}

// TestNotSwitchedOverTLSOnTheWire: the same over a real TLS connection: an
// h2c upgrade request is answered 426 listing only echo/1, and the
// connection is closed after the refusal.
func TestNotSwitchedOverTLSOnTheWire(t *testing.T) {
	s := &upgrade.Server{}
	s.HandleFunc("echo/1", func(c *upgrade.Conn) {})
	s.Handle(Protocol, &Handler{Handler: describe})
	ts := httptest.NewTLSServer(s)
	t.Cleanup(func() { _ = s.Close(); ts.Close() })
	nc, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(nc, upgradeRequest("GET", ""))
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	resp, err := wiretest.ReadResponse(br, http.MethodGet)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1"}, resp.Header["Upgrade"])
	assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "closed after the refusal")
}
