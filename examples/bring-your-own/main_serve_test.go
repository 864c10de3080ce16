package main

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serveMain serves as main does, over cleartext (HTTP/1.1 and HTTP/2
// with prior knowledge), on 127.0.0.1, and returns the servers and the
// address. Cleanup closes what is left.
func serveMain(t *testing.T, verbose bool) (*http.Server, *upgrade.Server, string) {
	t.Helper()
	ln, scheme, err := listen("127.0.0.1:0", false)
	require.NoError(t, err)
	require.Equal(t, "http", scheme)
	up := newServer(0)
	page := newDemoPage()
	srv := &http.Server{Handler: newHandler(up, page, verbose), ReadHeaderTimeout: 10 * time.Second}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	srv.RegisterOnShutdown(page.stop)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		assert.NoError(t, up.Close())
		assert.ErrorIs(t, <-served, http.ErrServerClosed)
	})
	return srv, up, ln.Addr().String()
}

// h2Options returns options to dial addr's WebSockets over HTTP/2 with
// prior knowledge, on a transport closed at cleanup.
func h2Options(t *testing.T) *websocket.DialOptions {
	tr := &upgrade.HTTP2Transport{UnencryptedHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &websocket.DialOptions{Dialer: &upgrade.Dialer{
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
		HandshakeTimeout: 10 * time.Second,
		HTTP2:            tr,
	}}
}

// TestShutdownHTTP2Streams: main's shutdown tells WebSockets on HTTP/2
// streams 1001 Going Away at once, although their connection keeps
// http.Server's Shutdown waiting, and returns as soon as the clients
// have answered, well within the grace period.
func TestShutdownHTTP2Streams(t *testing.T) {
	srv, up, addr := serveMain(t, false)
	opts := h2Options(t)
	var conns []*upgrade.Conn
	for _, path := range libraries {
		c, err := websocket.Dial(timeout(t), "ws://"+addr+path, opts)
		require.NoError(t, err, path)
		defer c.Close()
		require.Equal(t, 2, c.Request.ProtoMajor)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		conns = append(conns, c)
	}
	codes := make(chan ws.StatusCode, len(conns))
	for _, c := range conns {
		go func() {
			var closed wsutil.ClosedError
			_, _, err := wsutil.ReadServerData(c) // answers the close frame
			errors.As(err, &closed)
			codes <- closed.Code
		}()
	}
	const grace = 5 * time.Second
	begin := time.Now()
	require.NoError(t, shutdown(srv, up, grace))
	assert.Less(t, time.Since(begin), grace/2, "not held for the grace period")
	for range conns {
		assert.Equal(t, ws.StatusGoingAway, <-codes)
	}
	assert.Empty(t, up.ActiveConns())
}

// TestVerboseLog: with -v, an extended CONNECT is logged with its
// protocol and proto=HTTP/2.0, an HTTP/1.1 upgrade with proto=HTTP/1.1.
func TestVerboseLog(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	prev := log.Writer()
	log.SetOutput(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}))
	t.Cleanup(func() { log.SetOutput(prev) })
	_, _, addr := serveMain(t, true)
	opts := h2Options(t)
	c, err := websocket.Dial(timeout(t), "ws://"+addr+"/gorilla", opts)
	require.NoError(t, err)
	c.Close()
	opts.Dialer.HTTP2 = nil
	c, err = websocket.Dial(timeout(t), "ws://"+addr+"/coder", opts)
	require.NoError(t, err)
	c.Close()
	mu.Lock()
	logged := buf.String()
	mu.Unlock()
	assert.Regexp(t, regexp.MustCompile(`upgrade request: method=CONNECT path=/gorilla proto=HTTP/2.0 protocol="websocket" remote=127.0.0.1:\d+\n`), logged)
	assert.Regexp(t, regexp.MustCompile(`upgrade request: method=GET path=/coder proto=HTTP/1.1 protocol="websocket" remote=127.0.0.1:\d+\n`), logged)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestDemoPage: /demo renders the echo page for the library asked for;
// in auto mode its /hold request is held until /release names its token.
func TestDemoPage(t *testing.T) {
	_, _, addr := serveMain(t, false)
	get := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	page := get("/demo")
	assert.Contains(t, page, `location.host + "/gorilla"`)
	assert.NotContains(t, page, `id="hold"`)
	assert.Contains(t, get("/demo?lib=coder"), `location.host + "/coder"`)
	assert.Contains(t, get("/demo?lib=nosuch"), `location.host + "/gorilla"`)

	page = get("/demo?lib=gobwas&auto=" + url.QueryEscape(`"hi"<`))
	assert.Contains(t, page, `message = "\"hi\"\u003c"`)
	m := regexp.MustCompile(`src="/hold\?token=([A-Z0-9]+)"`).FindStringSubmatch(page)
	require.Len(t, m, 2, "the page holds its load event")
	held := make(chan string, 1)
	go func() { held <- get("/hold?token=" + m[1]) }()
	select {
	case <-held:
		t.Fatal("/hold answered before the release")
	case <-time.After(100 * time.Millisecond):
	}
	resp, err := http.Post("http://"+addr+"/release?token="+m[1], "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	select {
	case gif := <-held:
		assert.True(t, strings.HasPrefix(gif, "GIF89a"))
	case <-time.After(5 * time.Second):
		t.Fatal("/hold still held after the release")
	}
	assert.True(t, strings.HasPrefix(get("/hold?token=unknown"), "GIF89a"), "an unknown token is not held")

	// A plain request elsewhere still gets the Server's 426.
	resp, err = http.Get("http://" + addr + "/gorilla")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
}
