package upgrade

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDialResponseKeepsAnswer: DialResponse hands back a final answer
// other than 101 with all of its body, where Dial keeps a 4 KiB excerpt
// in a *ResponseError; a 101 is a Conn as with Dial.
func TestDialResponseKeepsAnswer(t *testing.T) {
	body := strings.Repeat("0123456789", 10000)
	fs := startFake(t, respond("HTTP/1.1 403 Forbidden\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nX-Why: policy\r\n\r\n"+body))
	d := Dialer{Proxy: noProxy}
	c, resp, err := d.DialResponse(ctxTimeout(t), fs.url("http"), echo1)
	require.NoError(t, err)
	require.Nil(t, c)
	require.NotNil(t, resp)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "policy", resp.Header.Get("X-Why"))
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, body, string(got))

	_, err = d.Dial(ctxTimeout(t), fs.url("http"), echo1)
	var re *ResponseError
	require.ErrorAs(t, err, &re)
	assert.Len(t, re.Body, maxErrorBody, "Dial keeps an excerpt")

	s := echoServer("echo/1")
	srv := serve(t, s, s)
	c, resp, err = d.DialResponse(ctxTimeout(t), "http://"+srv.addr, echo1)
	require.NoError(t, err)
	assert.Nil(t, resp)
	require.NotNil(t, c)
	roundTrip(t, c, "ping")
	c.Close()
}

// TestDialResponseHTTP2: over HTTP/2, the last refusal's stream is the
// response body.
func TestDialResponseHTTP2(t *testing.T) {
	s := newH2Server(t, true)
	d := s.dialer(newTransport(t))
	c, resp, err := d.DialResponse(ctxTimeout(t), s.url, Protocol{Name: "refuse", Version: "1"}, Protocol{Name: "refuse", Version: "2"})
	require.NoError(t, err)
	require.Nil(t, c)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, 2, resp.ProtoMajor)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.True(t, bytes.Equal([]byte("no refuse/2 here\n"), got), "%q", got)
}
