package h2c

// The package's test helpers: a Handler behind an upgrade.Server (on a
// socket or in process), raw h2c upgrade requests, and a minimal HTTP/2
// client over raw frames. Raw connections come from internal/wiretest.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

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

// plain answers a request that was not switched with its protocol.
var plain = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "plain %s", r.Proto)
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

// ---- servers ----

// newServer returns an upgrade.Server with h registered for h2c.
func newServer(h *Handler) *upgrade.Server {
	s := &upgrade.Server{}
	s.HandleRoute(Protocol, h.Route())
	return s
}

// h2cServer serves newServer(h) on 127.0.0.1, as an endpoint (next ==
// nil) or as middleware in front of next.
func h2cServer(t *testing.T, h *Handler, next http.Handler) (string, *upgrade.Server) {
	t.Helper()
	s := newServer(h)
	return serve(t, s, next), s
}

// serve serves s on 127.0.0.1, as an endpoint (next == nil) or as
// middleware in front of next, and returns its address.
func serve(t *testing.T, s *upgrade.Server, next http.Handler) string {
	t.Helper()
	var handler http.Handler = s
	if next != nil {
		handler = s.Middleware(next)
	}
	ts := httptest.NewServer(handler)
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
	})
	return ts.Listener.Addr().String()
}

// inProcess serves raw, a request as a client sends it, to s (as an
// endpoint, or as middleware in front of next) without a socket
// (wiretest.Serve). At cleanup s is closed and shut down.
func inProcess(t *testing.T, s *upgrade.Server, next http.Handler, raw string, edit ...func(*http.Request)) *wiretest.Result {
	t.Helper()
	t.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx))
	})
	var handler http.Handler = s
	if next != nil {
		handler = s.Middleware(next)
	}
	return wiretest.Serve(t, handler, raw, edit...)
}

// overTLS marks a request served in process as received over TLS.
func overTLS(r *http.Request) { r.TLS = &tls.ConnectionState{} }

// ---- requests ----

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

// send writes raw on a new connection to addr and reads the HTTP/1.1
// response and its body; after a 101 the connection is left positioned
// after it.
func send(t *testing.T, addr, raw string) (*wiretest.Conn, *http.Response, string) {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(raw)
	resp := c.Response(http.MethodGet)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return c, resp, string(body)
}

// ---- HTTP/2 over the switched connection ----

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

// startH2 sends the client preface and SETTINGS on c (unless prefaceSent)
// and checks that the server's first frame after the 101 is its SETTINGS.
func startH2(t *testing.T, c *wiretest.Conn, prefaceSent bool) *http2.Framer {
	t.Helper()
	fr := http2.NewFramer(c.NC, c.BR)
	decoders[fr] = hpack.NewDecoder(4096, nil) // one per connection: HPACK state spans frames
	t.Cleanup(func() { delete(decoders, fr) })
	if !prefaceSent {
		c.Send(http2.ClientPreface)
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

// ---- another protocol beside h2c ----

// wsStandIn stands for a WebSocket handler registered beside h2c (the
// package's tests import no other adapter): it answers a
// Sec-WebSocket-Key with its Sec-WebSocket-Accept (RFC 6455 §4.2.2), and
// writes "ws" once switched.
type wsStandIn struct{}

func (wsStandIn) AcceptUpgrade(r *http.Request, h http.Header) error {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		return &upgrade.RejectError{Message: "missing Sec-WebSocket-Key"}
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	h.Set("Sec-WebSocket-Accept", base64.StdEncoding.EncodeToString(sum[:]))
	return nil
}

func (wsStandIn) ServeUpgrade(c *upgrade.Conn) { _, _ = io.WriteString(c, "ws") }
