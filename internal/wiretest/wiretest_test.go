package wiretest

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadResponseKeepsConnection(t *testing.T) {
	const raw = "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nConnection: Upgrade\r\nUpgrade: a\r\nContent-Length: 2\r\n\r\nno"
	resp, err := ReadResponse(bufio.NewReader(strings.NewReader(raw)), http.MethodGet)
	require.NoError(t, err)
	assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
	assert.True(t, resp.Close)
}

func TestServeRecorded(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header()["Connection"] = []string{"close"}
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.Host+" "+r.Proto+" "+string(b))
	})
	res := Serve(t, h, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n")
	assert.Equal(t, http.StatusTeapot, res.Status)
	assert.Equal(t, []string{"close"}, res.Header["Connection"])
	assert.Equal(t, "POST h HTTP/1.1 hi", res.Body)
	assert.False(t, res.Hijacked)
	assert.Empty(t, res.Interim)

	res = Serve(t, h, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", func(r *http.Request) { r.Proto = "HTTP/2.0" })
	assert.Equal(t, "GET h HTTP/2.0 ", res.Body, "the edit applies")
}

func TestServeHijacked(t *testing.T) {
	var remote string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints)
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		remote = nc.RemoteAddr().String()
		go func() {
			defer nc.Close()
			_, _ = io.WriteString(nc, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			_, _ = io.Copy(nc, brw) // echo what follows the request, until EOF
		}()
	})
	res := Serve(t, h, "GET / HTTP/1.1\r\nHost: h\r\n\r\nafter")
	assert.True(t, res.Hijacked)
	assert.Equal(t, []int{http.StatusEarlyHints, http.StatusContinue}, res.Interim)
	assert.Equal(t, http.StatusSwitchingProtocols, res.Status)
	assert.Equal(t, "echo", res.Header.Get("Upgrade"))
	assert.Equal(t, "after", res.After)
	assert.Equal(t, clientAddr.String(), remote)
}

func TestConn(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer ts.Close()
	c := Dial(t, ts.Listener.Addr().String())
	c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	head := c.Head()
	assert.True(t, strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n"), head)
	assert.True(t, strings.HasSuffix(head, "\r\n\r\n"), head)
	assert.Equal(t, "hello", c.ReadN(5))
	resp := c.Response(http.MethodGet)
	assert.Equal(t, []string{"close"}, resp.Header["Connection"])
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))
	assert.Empty(t, c.Rest())
	var _ io.ReadWriter = c
}
