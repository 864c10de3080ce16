package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestDialResponses(t *testing.T) {
	offers := []Protocol{echo1, websocket}
	type result struct {
		proto Protocol
		after string // bytes the Conn yields first
	}
	tests := []struct {
		name    string
		resp    string
		want    *result
		wantErr error          // errors.Is target, if any
		wantRE  *ResponseError // expected ResponseError fields, if any
	}{
		{name: "101 with bytes in the same write", resp: switch101 + "HELLO", want: &result{echo1, "HELLO"}},
		{name: "101 without trailing bytes", resp: switch101, want: &result{echo1, ""}},
		{name: "100 then 103 then 101", resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + switch101 + "X",
			want: &result{echo1, "X"}},
		{name: "101 with a fake Content-Length", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nHELLO WORLD",
			want: &result{echo1, "HELLO WORLD"}},
		{name: "101 claiming chunked", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			want: &result{echo1, "5\r\nhello\r\n0\r\n\r\n"}},
		{name: "101 with bogus framing fields", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\nTransfer-Encoding: gzip\r\nContent-Length: abc\r\nContent-Length: 7\r\n\r\nraw",
			want: &result{echo1, "raw"}},
		{name: "101 naming the second offer", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", want: &result{websocket, ""}},
		{name: "101 name in other case keeps the offer's spelling", resp: "HTTP/1.1 101 OK\r\nUpgrade: ECHO/1\r\nConnection: upgrade\r\n\r\n", want: &result{echo1, ""}},
		{name: "101 without reason phrase, bare LF", resp: "HTTP/1.1 101\nUpgrade: echo/1\nConnection: Upgrade\n\nz", want: &result{echo1, "z"}},
		{name: "101 layered, all offered", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1, websocket\r\nConnection: Upgrade\r\n\r\n", want: &result{echo1, ""}},
		{name: "101 with split Connection lines", resp: "HTTP/1.1 101 Switching Protocols\r\nConnection: keep-alive\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", want: &result{echo1, ""}},

		{name: "426 with Upgrade list and body", resp: "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2, websocket, bad@x\r\nConnection: Upgrade\r\nContent-Length: 11\r\n\r\nupgrade pls",
			wantRE: &ResponseError{StatusCode: 426, Status: "426 Upgrade Required", Upgrade: []Protocol{{Name: "echo", Version: "2"}, websocket}, Body: []byte("upgrade pls")}},
		{name: "426 with chunked body", resp: "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/3\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n",
			wantRE: &ResponseError{StatusCode: 426, Status: "426 Upgrade Required", Upgrade: []Protocol{{Name: "echo", Version: "3"}}, Body: []byte("nope")}},
		{name: "200", resp: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", wantRE: &ResponseError{StatusCode: 200, Status: "200 OK", Body: []byte("ok")}},
		{name: "401", resp: "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n", wantRE: &ResponseError{StatusCode: 401, Status: "401 Unauthorized", Body: []byte{}}},
		{name: "200 after 100", resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", wantRE: &ResponseError{StatusCode: 200, Status: "200 OK", Body: []byte{}}},

		{name: "101 without Upgrade", resp: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with empty Upgrade", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ,\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 naming an unoffered protocol", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 naming another version", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/2\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 naming a version not offered", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket/13\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with Kelvin sign look-alike", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websoc\u212at\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 layered with an unoffered protocol", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1, h2c\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with malformed Upgrade", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1/2\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 without Connection", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with Connection: upgrades", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: upgrades\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "HTTP/1.0 101", resp: "HTTP/1.0 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with glued reason", resp: "HTTP/1.1 101Switching\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with double space", resp: "HTTP/1.1  101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", wantErr: ErrInvalidSwitch},
		{name: "101 with malformed header line", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade echo/1\r\nConnection: Upgrade\r\n\r\n"},
		{name: "headers cut", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConn", wantErr: io.ErrUnexpectedEOF},
		{name: "status line cut", resp: "HTTP/1.1 4", wantErr: io.ErrUnexpectedEOF},
		{name: "426 header cut", resp: "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "nothing at all", resp: "", wantErr: io.ErrUnexpectedEOF},
		{name: "not HTTP", resp: "SSH-2.0-OpenSSH_9.2\r\n\r\n"},
		{name: "too many interim responses", resp: strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 9) + switch101},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, nil)
			fs.script = func(c net.Conn, _ []byte) {
				if _, err := io.WriteString(c, tt.resp); err != nil {
					return
				}
				if tt.want == nil || tt.resp == "" {
					// Error cases: the client must close. Cut responses
					// end with a half-close so the client sees EOF.
					_ = c.(*net.TCPConn).CloseWrite()
				}
				fs.drain(c)
			}
			d := Dialer{Proxy: noProxy, HandshakeTimeout: 5 * time.Second}
			ctx := context.WithValue(context.Background(), ctxKey{}, "v")
			c, err := d.Dial(ctx, fs.url("ws"), offers...)
			if tt.want == nil {
				require.Error(t, err)
				require.Nil(t, c)
				t.Logf("error: %v", err)
				if tt.wantErr != nil {
					require.ErrorIs(t, err, tt.wantErr)
				}
				var re *ResponseError
				if tt.wantRE != nil {
					require.ErrorAs(t, err, &re)
					assert.Equal(t, tt.wantRE.StatusCode, re.StatusCode)
					assert.Equal(t, tt.wantRE.Status, re.Status)
					assert.Equal(t, "HTTP/1.1", re.Proto)
					assert.Equal(t, tt.wantRE.Upgrade, re.Upgrade)
					assert.Equal(t, string(tt.wantRE.Body), string(re.Body))
					assert.False(t, re.Proxy)
					assert.Contains(t, err.Error(), tt.wantRE.Status)
					for _, p := range tt.wantRE.Upgrade {
						assert.Contains(t, err.Error(), p.String())
					}
				} else {
					require.False(t, errors.As(err, &re), "unexpected ResponseError")
				}
				fs.waitClosed()
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.want.proto, c.Protocol)
			assert.Equal(t, 101, c.Response.StatusCode)
			assert.Equal(t, http.NoBody, c.Response.Body)
			assert.Same(t, c.Request, c.Response.Request)
			assert.Equal(t, "v", c.Context().Value(ctxKey{}))
			assert.Equal(t, len(tt.want.after), c.Buffered())
			if tt.want.after != "" {
				got := make([]byte, len(tt.want.after))
				_, err = io.ReadFull(c, got)
				require.NoError(t, err)
				assert.Equal(t, tt.want.after, string(got))
			}
			require.NoError(t, c.Close())
			fs.waitClosed()
		})
	}
}

func TestDialRequestBytes(t *testing.T) {
	tests := []struct {
		name   string
		d      Dialer
		path   string
		offers []Protocol
		want   string // with HOST for the server's address
	}{
		{
			name:   "default GET",
			path:   "",
			offers: []Protocol{echo1},
			want:   "GET / HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		},
		{
			name:   "POST with headers and body, offers in order",
			d:      Dialer{Method: "POST", Header: http.Header{"X-B": {"2", "3"}, "X-A": {"1"}, "Connection": {"keep-alive, Upgrade"}}, Body: []byte("body!")},
			path:   "/p/a%20th?q=1&r=%2F#frag",
			offers: []Protocol{{Name: "websocket"}, echo1, {Name: "h2c"}},
			want: "POST /p/a%20th?q=1&r=%2F HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket, echo/1, h2c\r\n" +
				"X-A: 1\r\nX-B: 2\r\nX-B: 3\r\nContent-Length: 5\r\n\r\nbody!",
		},
		{
			name:   "Host override and empty PUT",
			d:      Dialer{Method: "PUT", Header: http.Header{"Host": {"example.com:8080"}}},
			path:   "/x",
			offers: []Protocol{echo1},
			want:   "PUT /x HTTP/1.1\r\nHost: example.com:8080\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name:   "Host override: IPv6 literal",
			d:      Dialer{Header: http.Header{"Host": {"[::1]:8080"}}},
			offers: []Protocol{echo1},
			want:   "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		},
		{
			name:   "Host override: internationalized name",
			d:      Dialer{Header: http.Header{"Host": {"bücher.example"}}},
			offers: []Protocol{echo1},
			want:   "GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		},
		{
			name:   "Prepare sets req.Host: sub-delims and an escape",
			d:      Dialer{Prepare: func(r *http.Request) error { r.Host = "a-b_c~d!e%41.example:65535"; return nil }},
			offers: []Protocol{echo1},
			want:   "GET / HTTP/1.1\r\nHost: a-b_c~d!e%41.example:65535\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		},
		{
			name: "Prepare adds a header; h2c-style Connection option",
			d: Dialer{
				Header: http.Header{"Connection": {"HTTP2-Settings"}, "Http2-Settings": {"AAMAAABkAAQAAP__"}},
				Prepare: func(r *http.Request) error {
					r.Header.Set("X-Key", "k1")
					return nil
				},
			},
			offers: []Protocol{{Name: "h2c"}},
			want:   "GET / HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHttp2-Settings: AAMAAABkAAQAAP__\r\nX-Key: k1\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t, respond("HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"))
			d := tt.d
			d.Proxy = noProxy
			_, err := d.Dial(context.Background(), fs.url("http")+tt.path, tt.offers...)
			var re *ResponseError
			require.ErrorAs(t, err, &re)
			require.Equal(t, 418, re.StatusCode)
			got := string(fs.request())
			want := strings.ReplaceAll(tt.want, "HOST", fs.ln.Addr().String())
			assert.Equal(t, want, got)
			assert.Equal(t, 1, strings.Count(got, "\r\nHost: "))
			assert.NotContains(t, strings.ToLower(got), "expect:")
		})
	}
}

func TestDialUserinfoAuthorization(t *testing.T) {
	fs := startFake(t, respond(switch101))
	u := "http://alice:s3cret@" + fs.ln.Addr().String() + "/"
	c, err := (&Dialer{Proxy: noProxy}).Dial(context.Background(), u, echo1)
	require.NoError(t, err)
	defer c.Close()
	req := string(fs.request())
	assert.Contains(t, req, "\r\nAuthorization: Basic "+base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))+"\r\n")
	assert.Equal(t, "http", c.Request.URL.Scheme)
	assert.Equal(t, "Upgrade", c.Request.Header.Get("Connection"))
	assert.Equal(t, "echo/1", c.Request.Header.Get("Upgrade"))
}

func TestDialInvalidInputSendsNothing(t *testing.T) {
	tests := []struct {
		name   string
		url    string // "" for the fake server
		d      Dialer
		offers []Protocol
	}{
		{name: "no offers"},
		{name: "empty name", offers: []Protocol{{Name: ""}}},
		{name: "empty name with version", offers: []Protocol{{Version: "1"}}},
		{name: "space in name", offers: []Protocol{{Name: "a b"}}},
		{name: "comma in name", offers: []Protocol{echo1, {Name: "a,b"}}},
		{name: "slash in name", offers: []Protocol{{Name: "a/b"}}},
		{name: "CRLF in version", offers: []Protocol{{Name: "a", Version: "1\r\nX-Evil: 1"}}},
		{name: "non-ASCII name", offers: []Protocol{{Name: "écho"}}},
		{name: "comma in version", offers: []Protocol{{Name: "a", Version: "1,2"}}},
		{name: "CRLF in header value", d: Dialer{Header: http.Header{"X-A": {"v\r\nX-Evil: 1"}}}},
		{name: "LF in header value", d: Dialer{Header: http.Header{"X-A": {"v\nX-Evil: 1"}}}},
		{name: "bad header name", d: Dialer{Header: http.Header{"Bad Name": {"v"}}}},
		{name: "Upgrade header", d: Dialer{Header: http.Header{"Upgrade": {"h2c"}}}},
		{name: "Expect header", d: Dialer{Header: http.Header{"Expect": {"100-continue"}}}},
		{name: "Content-Length header", d: Dialer{Header: http.Header{"Content-Length": {"3"}}}},
		{name: "Transfer-Encoding header", d: Dialer{Header: http.Header{"Transfer-Encoding": {"chunked"}}}},
		{name: "two Host values", d: Dialer{Header: http.Header{"Host": {"a", "b"}}}},
		{name: "Host with CRLF", d: Dialer{Header: http.Header{"Host": {"a\r\nb"}}}},
		{name: "Host with a space", d: Dialer{Header: http.Header{"Host": {"a b"}}}},
		{name: "Host with a tab", d: Dialer{Header: http.Header{"Host": {"a\tb"}}}},
		{name: "Host with DEL", d: Dialer{Header: http.Header{"Host": {"a\x7fb"}}}},
		{name: "empty Host", d: Dialer{Header: http.Header{"Host": {""}}}},
		{name: "Host with only a port", d: Dialer{Header: http.Header{"Host": {":80"}}}},
		{name: "Host with an IPv6 zone", d: Dialer{Header: http.Header{"Host": {"[fe80::1%eth0]:80"}}}},
		{name: "Host with an encoded IPv6 zone", d: Dialer{Header: http.Header{"Host": {"[fe80::1%25eth0]"}}}},
		{name: "Host with unbracketed IPv6", d: Dialer{Header: http.Header{"Host": {"fe80::1"}}}},
		{name: "Host with a bracketed name", d: Dialer{Header: http.Header{"Host": {"[example.com]"}}}},
		{name: "Host with bracketed IPv4", d: Dialer{Header: http.Header{"Host": {"[127.0.0.1]:80"}}}},
		{name: "Host with junk after ]", d: Dialer{Header: http.Header{"Host": {"[::1]x"}}}},
		{name: "Host without ]", d: Dialer{Header: http.Header{"Host": {"[::1"}}}},
		{name: "Host with a named port", d: Dialer{Header: http.Header{"Host": {"example.com:http"}}}},
		{name: "Host with a port over 65535", d: Dialer{Header: http.Header{"Host": {"example.com:65536"}}}},
		{name: "Host with a signed port", d: Dialer{Header: http.Header{"Host": {"example.com:+80"}}}},
		{name: "Host with userinfo", d: Dialer{Header: http.Header{"Host": {"user@example.com"}}}},
		{name: "Host with a path", d: Dialer{Header: http.Header{"Host": {"example.com/x"}}}},
		{name: "Host with a bad escape", d: Dialer{Header: http.Header{"Host": {"a%zzb"}}}},
		{name: "Prepare sets a Host with a zone", d: Dialer{Prepare: func(r *http.Request) error { r.Host = "[fe80::1%eth0]:8080"; return nil }}},
		{name: "Prepare sets a Host with a space", d: Dialer{Prepare: func(r *http.Request) error { r.Host = "a b"; return nil }}},
		{name: "Prepare sets an empty Host", d: Dialer{Prepare: func(r *http.Request) error { r.Host = ""; return nil }}},
		{name: "bad Connection option", d: Dialer{Header: http.Header{"Connection": {"a b"}}}},
		{name: "bad method", d: Dialer{Method: "GE T"}},
		{name: "CONNECT", d: Dialer{Method: "CONNECT"}},
		{name: "Prepare fails", d: Dialer{Prepare: func(*http.Request) error { return errors.New("no key") }}},
		{name: "Prepare adds a bad header", d: Dialer{Prepare: func(r *http.Request) error { r.Header["X"] = []string{"\x00"}; return nil }}},
		{name: "ftp scheme", url: "ftp://HOST/"},
		{name: "no host", url: "http:///x"},
		{name: "empty host with port", url: "http://:PORT/"},
		{name: "empty host, ws", url: "ws://:0"},
		{name: "empty host with userinfo", url: "http://u:p@:PORT/"},
		{name: "empty brackets", url: "http://[]:PORT/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t, respond(switch101))
			u := tt.url
			if u == "" {
				u = fs.url("ws") + "/"
			}
			u = strings.ReplaceAll(u, "HOST", fs.ln.Addr().String())
			_, port, _ := net.SplitHostPort(fs.ln.Addr().String())
			u = strings.ReplaceAll(u, "PORT", port)
			offers := tt.offers
			if offers == nil && tt.name != "no offers" {
				offers = []Protocol{echo1}
			}
			d := tt.d
			d.Proxy = func(*http.Request) (*url.URL, error) {
				t.Error("Proxy called: the request was not rejected before dialing")
				return nil, nil
			}
			c, err := d.Dial(context.Background(), u, offers...)
			require.Error(t, err)
			require.Nil(t, c)
			t.Logf("error: %v", err)
			assert.True(t, strings.HasPrefix(err.Error(), "upgrade: dial "), err.Error())
			assert.Zero(t, fs.accepts.Load(), "the server saw a connection")
		})
	}
}

func TestDialHandshakeBounds(t *testing.T) {
	silent := func(fs **fakeServer) func(net.Conn, []byte) {
		return func(c net.Conn, _ []byte) { (*fs).drain(c) }
	}
	huge := func(fs **fakeServer) func(net.Conn, []byte) {
		return func(c net.Conn, _ []byte) {
			go func() { _, _ = io.Copy(io.Discard, c) }()
			line := "X-Fill: " + strings.Repeat("a", 1000) + "\r\n"
			w := bufio.NewWriter(c)
			_, _ = w.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n")
			for n := 0; n < 2<<20; n += len(line) {
				if _, err := w.WriteString(line); err != nil {
					return
				}
			}
			_, _ = w.WriteString("\r\n")
			_ = w.Flush()
		}
	}
	hugeLine := func(fs **fakeServer) func(net.Conn, []byte) {
		return func(c net.Conn, _ []byte) {
			go func() { _, _ = io.Copy(io.Discard, c) }()
			_, _ = io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nX-Fill: "+strings.Repeat("b", 2<<20)+"\r\n\r\n")
		}
	}
	tests := []struct {
		name    string
		script  func(fs **fakeServer) func(net.Conn, []byte)
		d       Dialer
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
		bound   time.Duration
	}{
		{name: "silence past HandshakeTimeout", script: silent, d: Dialer{HandshakeTimeout: 200 * time.Millisecond}, wantErr: context.DeadlineExceeded, bound: 2 * time.Second},
		{name: "silence past ctx deadline", script: silent,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 200*time.Millisecond)
			},
			wantErr: context.DeadlineExceeded, bound: 2 * time.Second},
		{name: "2 MiB of headers", script: huge, wantErr: ErrHeaderTooLarge, bound: 5 * time.Second},
		{name: "2 MiB header line", script: hugeLine, wantErr: ErrHeaderTooLarge, bound: 5 * time.Second},
		{name: "MaxHeaderBytes configurable", script: respond(switch101 + "x"), d: Dialer{MaxHeaderBytes: 40}, wantErr: ErrHeaderTooLarge, bound: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t, tt.script)
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			d := tt.d
			d.Proxy = noProxy
			start := time.Now()
			c, err := d.Dial(ctx, fs.url("http"), echo1)
			elapsed := time.Since(start)
			require.Error(t, err)
			require.Nil(t, c)
			t.Logf("after %v: %v", elapsed, err)
			require.ErrorIs(t, err, tt.wantErr)
			require.Less(t, elapsed, tt.bound)
		})
	}
}

// TestDialContextCancel: cancelling Dial's context in the middle of the
// handshake (the server has sent part of its 101, then stalls) ends Dial
// at once with context.Canceled and closes the connection; a context
// cancelled before the call dials nothing.
func TestDialContextCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fs *fakeServer
	fs = newFakeServer(t, func(c net.Conn, _ []byte) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n") // then stall
		cancel()
		fs.drain(c)
	})
	start := time.Now()
	c, err := (&Dialer{Proxy: noProxy, HandshakeTimeout: -1}).Dial(ctx, fs.url("http"), echo1)
	require.Nil(t, c)
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 2*time.Second)
	fs.waitClosed()
	fs.close()

	// Cancelled before the call: nothing is dialed.
	c, err = (&Dialer{Proxy: noProxy}).Dial(ctx, "http://127.0.0.1:1/", echo1)
	require.Nil(t, c)
	require.ErrorIs(t, err, context.Canceled)
}

// TestDialDeadlinesCleared: neither the handshake's deadline nor the end
// of Dial's context reaches the Conn. The server sends its next bytes once
// the context has ended, when the handshake's deadline (the earlier of
// HandshakeTimeout and the context's) has passed too, and the Conn reads
// them.
func TestDialDeadlinesCleared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	var fs *fakeServer
	fs = newFakeServer(t, func(c net.Conn, _ []byte) {
		_, _ = io.WriteString(c, switch101)
		<-ctx.Done()
		_, _ = io.WriteString(c, "late")
		fs.drain(c)
	})
	c, err := (&Dialer{Proxy: noProxy, HandshakeTimeout: 100 * time.Millisecond}).Dial(ctx, fs.url("http"), echo1)
	require.NoError(t, err)
	defer c.Close()
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err, "handshake deadline or cancel leaked into the Conn")
	assert.Equal(t, "late", string(buf))
	assert.NoError(t, c.Context().Err())
	_, ok := c.Context().Deadline()
	assert.False(t, ok)
}

func TestDialCoreServer(t *testing.T) {
	s := echoServer("plain", "versioned/1", "any/*")
	s.HandleRoute("body/1", Route{Methods: []string{"POST"}, Handler: HandlerFunc(func(c *Conn) {
		b, _ := io.ReadAll(c.Request.Body)
		_, _ = c.Write(append([]byte("body="), b...))
		_, _ = io.Copy(c, c)
	})})
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()

	tests := []struct {
		name   string
		d      Dialer
		offers []Protocol
		want   Protocol
		first  string // what the handler writes first
	}{
		{name: "name", offers: []Protocol{{Name: "plain"}}, want: Protocol{Name: "plain"}},
		{name: "name, other case", offers: []Protocol{{Name: "PLAIN"}}, want: Protocol{Name: "PLAIN"}},
		{name: "name/ver", offers: []Protocol{{Name: "versioned", Version: "1"}}, want: Protocol{Name: "versioned", Version: "1"}},
		{name: "name/*", offers: []Protocol{{Name: "any", Version: "42"}}, want: Protocol{Name: "any", Version: "42"}},
		{name: "name/* without version", offers: []Protocol{{Name: "any"}}, want: Protocol{Name: "any"}},
		{name: "first acceptable offer", offers: []Protocol{{Name: "versioned", Version: "2"}, {Name: "nope"}, {Name: "any", Version: "x"}, {Name: "plain"}}, want: Protocol{Name: "any", Version: "x"}},
		{name: "POST body before the switch", d: Dialer{Method: "POST", Body: []byte("payload")}, offers: []Protocol{{Name: "body", Version: "1"}}, want: Protocol{Name: "body", Version: "1"}, first: "body=payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			d.Proxy = noProxy
			c, err := d.Dial(context.Background(), ts.URL+"/path", tt.offers...)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.want, c.Protocol)
			if tt.first != "" {
				buf := make([]byte, len(tt.first))
				_, err := io.ReadFull(c, buf)
				require.NoError(t, err)
				assert.Equal(t, tt.first, string(buf))
			}
			roundTrip(t, c, "hello, "+tt.name)
			roundTrip(t, c, strings.Repeat("x", 100<<10))
			require.NoError(t, c.CloseWrite())
			n, err := io.Copy(io.Discard, c)
			assert.NoError(t, err)
			assert.Zero(t, n)
		})
	}

	t.Run("426 lists the registered protocols", func(t *testing.T) {
		_, err := (&Dialer{Proxy: noProxy}).Dial(context.Background(), ts.URL, Protocol{Name: "versioned", Version: "9"})
		var re *ResponseError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, http.StatusUpgradeRequired, re.StatusCode)
		assert.Equal(t, []Protocol{{Name: "plain"}, {Name: "versioned", Version: "1"}, {Name: "any"}, {Name: "body", Version: "1"}}, re.Upgrade)
		assert.Contains(t, string(re.Body), "requires a protocol upgrade")
	})
}

// keyAccepter is a protocol whose 101 carries X-Accept, derived from the
// request's X-Key, like Sec-WebSocket-Accept.
type keyAccepter struct{}

func (keyAccepter) ServeUpgrade(c *Conn) { echo(c) }

func (keyAccepter) AcceptUpgrade(r *http.Request, h http.Header) error {
	h.Set("X-Accept", acceptFor(r.Header.Get("X-Key")))
	return nil
}

func TestDialPrepareCheck(t *testing.T) {
	var s Server
	s.Handle("keyed", keyAccepter{})
	ts := httptest.NewServer(&s)
	defer ts.Close()
	defer s.Close()

	var n atomic.Int32
	adapter := Dialer{
		Proxy: noProxy,
		Prepare: func(r *http.Request) error {
			r.Header.Set("X-Key", "key-"+strconv.Itoa(int(n.Add(1))))
			return nil
		},
		Check: func(resp *http.Response) error {
			if got, want := resp.Header.Get("X-Accept"), acceptFor(resp.Request.Header.Get("X-Key")); got != want {
				return fmt.Errorf("X-Accept %q, want %q", got, want)
			}
			return nil
		},
	}
	for i := 0; i < 3; i++ {
		c, err := adapter.Dial(context.Background(), ts.URL, Protocol{Name: "keyed"})
		require.NoError(t, err)
		roundTrip(t, c, "hi")
		c.Close()
	}

	errBad := errors.New("bad accept")
	bad := adapter
	bad.Check = func(*http.Response) error { return errBad }
	c, err := bad.Dial(context.Background(), ts.URL, Protocol{Name: "keyed"})
	require.Nil(t, c)
	require.ErrorIs(t, err, errBad)
	require.Eventually(t, func() bool { return len(s.ActiveConns()) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the refused connection was not closed")
}

func TestDialTLS(t *testing.T) {
	s := echoServer("echo/1")
	ts := httptest.NewUnstartedServer(s)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	defer s.Close()
	require.Contains(t, ts.TLS.NextProtos, "h2", "the server must offer h2 for this test to mean anything")

	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	// A client offering h2 gets it: this is the trap.
	raw, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	require.NoError(t, err)
	require.Equal(t, "h2", raw.ConnectionState().NegotiatedProtocol)
	raw.Close()

	for _, scheme := range []string{"https", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			// The caller's NextProtos asks for h2: the Dialer must still
			// offer http/1.1 only.
			d := Dialer{Proxy: noProxy, TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}}
			c, err := d.Dial(context.Background(), scheme+"://"+ts.Listener.Addr().String()+"/", echo1)
			require.NoError(t, err)
			defer c.Close()
			tc, ok := c.NetConn().(*tls.Conn)
			require.True(t, ok)
			assert.Contains(t, []string{"", "http/1.1"}, tc.ConnectionState().NegotiatedProtocol)
			assert.Equal(t, []string{"h2", "http/1.1"}, d.TLSClientConfig.NextProtos, "caller's config modified")
			roundTrip(t, c, "over TLS")
		})
	}

	t.Run("untrusted certificate", func(t *testing.T) {
		_, err := (&Dialer{Proxy: noProxy}).Dial(context.Background(), "https://"+ts.Listener.Addr().String(), echo1)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "TLS handshake")
	})
}

// connectProxy is an in-test HTTP CONNECT proxy that records the CONNECT
// request line and Proxy-Authorization of each request.
type connectProxy struct {
	ln     net.Listener
	reject string // if set, the raw response refusing every CONNECT
	extra  string // bytes written right after the 200 response, in the same write
	mu     sync.Mutex
	lines  []string
	auths  []string
	wg     sync.WaitGroup
	conns  []net.Conn
}

func newConnectProxy(t *testing.T) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &connectProxy{ln: ln}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.lines = append(p.lines, req.Method+" "+req.RequestURI+" "+req.Proto)
			p.auths = append(p.auths, req.Header.Get("Proxy-Authorization"))
			p.mu.Unlock()
			if p.reject != "" {
				_, _ = io.WriteString(c, p.reject)
				return
			}
			if req.Method != http.MethodConnect {
				_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
				return
			}
			if p.extra != "" {
				_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+p.extra)
				_, _ = io.Copy(io.Discard, br)
				return
			}
			up, err := net.Dial("tcp", req.RequestURI)
			if err != nil {
				_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
				return
			}
			p.track(up)
			defer up.Close()
			_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.Copy(up, br)
				_ = up.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, up)
			_ = c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

func TestDialConnectProxy(t *testing.T) {
	s := echoServer("echo/1")
	ts := httptest.NewServer(s)
	defer ts.Close()
	tlsTS := httptest.NewUnstartedServer(s)
	tlsTS.EnableHTTP2 = true
	tlsTS.StartTLS()
	defer tlsTS.Close()
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AddCert(tlsTS.Certificate())

	p := newConnectProxy(t)
	var proxied []string
	proxyFn := func(r *http.Request) (*url.URL, error) {
		proxied = append(proxied, r.URL.String())
		return url.Parse("http://bob:pa%20ss@" + p.ln.Addr().String())
	}
	d := Dialer{Proxy: proxyFn, TLSClientConfig: &tls.Config{RootCAs: pool}}

	for _, target := range []string{"ws://" + ts.Listener.Addr().String() + "/a", "wss://" + tlsTS.Listener.Addr().String() + "/b"} {
		t.Run(target[:strings.Index(target, ":")], func(t *testing.T) {
			c, err := d.Dial(context.Background(), target, echo1)
			require.NoError(t, err)
			defer c.Close()
			roundTrip(t, c, "through the tunnel")
			hostport := target[strings.Index(target, "//")+2 : strings.LastIndex(target, "/")]
			p.mu.Lock()
			defer p.mu.Unlock()
			assert.Equal(t, "CONNECT "+hostport+" HTTP/1.1", p.lines[len(p.lines)-1])
			assert.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte("bob:pa ss")), p.auths[len(p.auths)-1])
		})
	}
	assert.Equal(t, []string{"http://" + ts.Listener.Addr().String() + "/a", "https://" + tlsTS.Listener.Addr().String() + "/b"}, proxied)

	t.Run("101 in the same packet as the CONNECT response", func(t *testing.T) {
		p2 := newConnectProxy(t)
		p2.extra = switch101 + "tail"
		c, err := (&Dialer{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: p2.ln.Addr().String()})}).Dial(context.Background(), "http://upstream.invalid/", echo1)
		require.NoError(t, err)
		defer c.Close()
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		assert.Equal(t, "tail", string(buf))
		assert.Equal(t, []string{""}, p2.auths)
	})

	t.Run("proxy refuses", func(t *testing.T) {
		p3 := newConnectProxy(t)
		p3.reject = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 6\r\n\r\ndenied"
		_, err := (&Dialer{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: p3.ln.Addr().String()})}).Dial(context.Background(), "http://upstream.invalid/", echo1)
		var re *ResponseError
		require.ErrorAs(t, err, &re)
		assert.True(t, re.Proxy)
		assert.Equal(t, 407, re.StatusCode)
		assert.Equal(t, "denied", string(re.Body))
		assert.Contains(t, err.Error(), "proxy")
	})

	t.Run("unsupported proxy scheme", func(t *testing.T) {
		_, err := (&Dialer{Proxy: http.ProxyURL(&url.URL{Scheme: "socks5", Host: p.ln.Addr().String()})}).Dial(context.Background(), "http://upstream.invalid/", echo1)
		require.ErrorContains(t, err, "unsupported proxy scheme")
	})
}

// TestDialTinyproxy dials through a real forward proxy, Debian's tinyproxy,
// with CONNECT allowed to the test server's port only.
func TestDialTinyproxy(t *testing.T) {
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tinyproxy is required under CI=true: apt-get install -y tinyproxy")
		}
		t.Skip("tinyproxy not installed (apt-get install -y tinyproxy)")
	}
	s := echoServer("echo/1")
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()
	_, targetPort, _ := net.SplitHostPort(ts.Listener.Addr().String())

	// A free port for the proxy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	proxyAddr := ln.Addr().String()
	ln.Close()
	_, proxyPort, _ := net.SplitHostPort(proxyAddr)

	// ConnectPort: without any such line tinyproxy allows CONNECT to every
	// port; listing the target's makes it the only one allowed.
	conf := filepath.Join(t.TempDir(), "tinyproxy.conf")
	require.NoError(t, os.WriteFile(conf, []byte("Port "+proxyPort+"\nListen 127.0.0.1\nTimeout 30\nMaxClients 8\n"+
		"Allow 127.0.0.1\nConnectPort "+targetPort+"\nLogLevel Connect\n"), 0o600))
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-d", "-c", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("tinyproxy output:\n%s", logs.String())
		}
	}()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", proxyAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "tinyproxy did not start")

	d := Dialer{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr})}
	c, err := d.Dial(context.Background(), ts.URL+"/via-tinyproxy", echo1)
	require.NoError(t, err)
	roundTrip(t, c, "through tinyproxy")
	roundTrip(t, c, strings.Repeat("y", 64<<10))
	require.NoError(t, c.Close())

	// A port outside ConnectPort is refused by the proxy.
	_, err = d.Dial(context.Background(), "http://127.0.0.1:1/", echo1)
	var re *ResponseError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Proxy)
	assert.Equal(t, http.StatusForbidden, re.StatusCode)
}

func TestDialPunycodeAndIPv6Hosts(t *testing.T) {
	for _, tt := range []struct{ in, host, addr string }{
		{"http://bücher.example/", "xn--bcher-kva.example", "xn--bcher-kva.example:80"},
		{"wss://[::1]:8443/", "[::1]:8443", "[::1]:8443"},
		{"ws://[::1]/", "[::1]", "[::1]:80"},
		{"wss://[fe80::1%25en0]/", "[fe80::1]", "[fe80::1%en0]:443"},
	} {
		var d Dialer
		req, target, err := d.newRequest(context.Background(), tt.in, []Protocol{echo1})
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.host, req.Host, tt.in)
		assert.Equal(t, tt.addr, target.addr, tt.in)
	}
}

func TestResponseErrorMessage(t *testing.T) {
	e := &ResponseError{StatusCode: 426, Status: "426 Upgrade Required", Upgrade: []Protocol{{Name: "echo", Version: "2"}, websocket}}
	assert.Equal(t, `upgrade: server answered "426 Upgrade Required" instead of 101 Switching Protocols; it advertises Upgrade: echo/2, websocket`, e.Error())
	e = &ResponseError{StatusCode: 407, Status: "407 Proxy Authentication Required", Proxy: true}
	assert.Equal(t, `upgrade: proxy answered CONNECT with "407 Proxy Authentication Required"`, e.Error())
	e = &ResponseError{StatusCode: 404, Status: "404 Not Found", Proto: "HTTP/2.0"}
	assert.Equal(t, `upgrade: server answered "404 Not Found" to an HTTP/2 extended CONNECT`, e.Error())
}

func BenchmarkDial(b *testing.B) {
	s := echoServer("echo/1")
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()
	d := Dialer{Proxy: noProxy}
	ctx := context.Background()
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial(ctx, ts.URL, echo1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkDialTransport sends the same upgrade request through
// net/http.Transport, which returns a 101's body as an io.ReadWriteCloser.
func BenchmarkDialTransport(b *testing.B) {
	s := echoServer("echo/1")
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, ts.URL, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "echo/1")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatal(resp.Status)
		}
		rwc := resp.Body.(io.ReadWriteCloser)
		if _, err := rwc.Write([]byte("x")); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rwc, buf); err != nil {
			b.Fatal(err)
		}
		rwc.Close()
	}
}

func TestDialErrorsRedactPasswords(t *testing.T) {
	for _, u := range []string{"ftp://u:hunter2@example.com/", "http://u:hunter2@exa mple.com/", "http://u:hunter2@" + closedAddr(t) + "/"} {
		_, err := (&Dialer{Proxy: noProxy, HandshakeTimeout: time.Second}).Dial(context.Background(), u, echo1)
		require.Error(t, err, u)
		assert.NotContains(t, err.Error(), "hunter2")
	}
}

// TestDialObsFold: a 101 whose fields are folded (obs-fold) is unfolded as
// RFC 9112 §5.2 requires of a user agent: each fold becomes one SP, the
// OWS around it trimmed. A continuation line before any field is still
// malformed.
func TestDialObsFold(t *testing.T) {
	const status = "HTTP/1.1 101 Switching Protocols\r\n"
	for _, tt := range []struct {
		name, head string
		want       http.Header
	}{
		{"folded Connection", "Upgrade: echo/1\r\nConnection: keep-alive,\r\n Upgrade\r\n",
			http.Header{"Upgrade": {"echo/1"}, "Connection": {"keep-alive, Upgrade"}}},
		{"value on the continuation line", "Upgrade:\r\n\techo/1\r\nConnection: Upgrade\r\n",
			http.Header{"Upgrade": {"echo/1"}, "Connection": {"Upgrade"}}},
		{"folded Upgrade list", "Upgrade: echo/1,\r\n websocket\r\nConnection: Upgrade\r\n",
			http.Header{"Upgrade": {"echo/1, websocket"}, "Connection": {"Upgrade"}}},
		{"several folds, OWS trimmed", "Upgrade: echo/1\r\nConnection: Upgrade\r\nX-Long: a \r\n \t b\t\r\n   c  \r\n",
			http.Header{"Upgrade": {"echo/1"}, "Connection": {"Upgrade"}, "X-Long": {"a b c"}}},
		{"blank continuation", "X-E: a\r\n \r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n",
			http.Header{"X-E": {"a"}, "Upgrade": {"echo/1"}, "Connection": {"Upgrade"}}},
		{"fold of a repeated field", "Connection: keep-alive\r\nUpgrade: echo/1\r\nConnection:\r\n Upgrade\r\n",
			http.Header{"Upgrade": {"echo/1"}, "Connection": {"keep-alive", "Upgrade"}}},
		{"bare LF", "Upgrade: echo/1\nConnection:\n Upgrade\n",
			http.Header{"Upgrade": {"echo/1"}, "Connection": {"Upgrade"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t, respond(status+tt.head+"\r\ntail"))
			c, err := (&Dialer{Proxy: noProxy}).Dial(context.Background(), fs.url("http")+"/", echo1, websocket)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, echo1, c.Protocol)
			assert.Equal(t, tt.want, c.Response.Header)
			got := make([]byte, 4)
			_, err = io.ReadFull(c, got)
			require.NoError(t, err)
			assert.Equal(t, "tail", string(got), "the bytes after the header block")
		})
	}

	for _, tt := range []struct{ name, head, want string }{
		{"continuation before any field", " Upgrade: echo/1\r\nConnection: Upgrade\r\n", "before the first header field"},
		{"tab continuation before any field", "\tx\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n", "before the first header field"},
		{"control byte in a continuation", "Upgrade: echo/1\r\nConnection: Upgrade\r\nX: a\r\n b\x01\r\n", "invalid value"},
		{"fold makes Upgrade malformed", "Upgrade: echo/1\r\n Connection: Upgrade\r\n", "Upgrade"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t, respond(status+tt.head+"\r\n"))
			c, err := (&Dialer{Proxy: noProxy}).Dial(context.Background(), fs.url("http")+"/", echo1)
			require.ErrorIs(t, err, ErrInvalidSwitch)
			require.Nil(t, c)
			assert.ErrorContains(t, err, tt.want)
			fs.waitClosed()
		})
	}
}

// redirectDialer returns a NetDialContext that records the address it is
// asked for and connects to addr instead.
func redirectDialer(addr string, asked chan<- string) func(ctx context.Context, network, a string) (net.Conn, error) {
	return func(ctx context.Context, network, a string) (net.Conn, error) {
		asked <- a
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// TestDialIPv6Zone: the zone of a scoped IPv6 address is used to dial and
// never sent (RFC 6874 §4): not in Host, not in a proxy's CONNECT, not as
// the TLS server name.
func TestDialIPv6Zone(t *testing.T) {
	const zoned = "[fe80::1%25eth0]:8080"

	t.Run("direct", func(t *testing.T) {
		fs := startFake(t, respond(switch101))
		asked := make(chan string, 1)
		d := Dialer{Proxy: noProxy, NetDialContext: redirectDialer(fs.ln.Addr().String(), asked)}
		c, err := d.Dial(context.Background(), "http://"+zoned+"/path", echo1)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "[fe80::1%eth0]:8080", <-asked, "the zone-scoped address is dialed")
		req := string(fs.request())
		assert.True(t, strings.HasPrefix(req, "GET /path HTTP/1.1\r\nHost: [fe80::1]:8080\r\n"), req)
		assert.NotContains(t, req, "%")
		assert.NotContains(t, req, "eth0")
		assert.Equal(t, "[fe80::1]:8080", c.Request.Host)
	})

	t.Run("through a proxy", func(t *testing.T) {
		// A raw CONNECT proxy: it records the CONNECT request, opens the
		// "tunnel" and records the request that comes through it.
		var fs *fakeServer
		fs = newFakeServer(t, func(c net.Conn, _ []byte) {
			if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
				return
			}
			req, err := readRawRequest(c)
			if err != nil {
				return
			}
			fs.reqs <- req
			if _, err := io.WriteString(c, switch101); err != nil {
				return
			}
			fs.drain(c)
		})
		asked := make(chan string, 1)
		d := Dialer{
			Proxy:          http.ProxyURL(&url.URL{Scheme: "http", Host: fs.ln.Addr().String()}),
			NetDialContext: redirectDialer(fs.ln.Addr().String(), asked),
		}
		c, err := d.Dial(context.Background(), "ws://"+zoned+"/", echo1)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, fs.ln.Addr().String(), <-asked, "the proxy is dialed")
		assert.Equal(t, "CONNECT [fe80::1]:8080 HTTP/1.1\r\nHost: [fe80::1]:8080\r\n\r\n", string(fs.request()))
		tunneled := string(fs.request())
		assert.True(t, strings.HasPrefix(tunneled, "GET / HTTP/1.1\r\nHost: [fe80::1]:8080\r\n"), tunneled)
		assert.NotContains(t, tunneled, "%")
	})

	t.Run("TLS server name", func(t *testing.T) {
		// A certificate for fe80::1 only: verification passes only if the
		// server name is the address without its zone.
		cert := selfSignedIP(t, net.ParseIP("fe80::1"))
		s := echoServer("echo/1")
		ts := httptest.NewUnstartedServer(s)
		ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		ts.StartTLS()
		defer ts.Close()
		defer s.Close()
		pool := x509.NewCertPool()
		pool.AddCert(cert.Leaf)

		asked := make(chan string, 1)
		d := Dialer{
			Proxy:           noProxy,
			NetDialContext:  redirectDialer(ts.Listener.Addr().String(), asked),
			TLSClientConfig: &tls.Config{RootCAs: pool},
		}
		c, err := d.Dial(context.Background(), "wss://[fe80::1%25eth0]:8443/", echo1)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "[fe80::1%eth0]:8443", <-asked)
		assert.Equal(t, "[fe80::1]:8443", c.Request.Host)
		roundTrip(t, c, "scoped")
	})
}

// selfSignedIP returns a self-signed certificate for ip, with its Leaf set.
func selfSignedIP(t *testing.T, ip net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "upgrade test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{ip},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
