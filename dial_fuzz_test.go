package upgrade

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// scriptConn is an in-memory net.Conn: it swallows writes and reads a
// fixed response, then io.EOF.
type scriptConn struct {
	r      *bytes.Reader
	wrote  bytes.Buffer
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)        { return c.wrote.Write(p) }
func (c *scriptConn) Close() error                       { c.closed = true; return nil }
func (c *scriptConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzDialResponse feeds arbitrary bytes to Dial as the server's answer. It
// must never panic, must close the connection on every error, and must
// return a Conn only for a valid 101: HTTP/1.1 (or a later 1.x), an
// Upgrade field whose protocols were all offered, the Conn's Protocol the
// offer naming its first, Connection carrying "upgrade", every field value
// valid and trimmed (folded lines unfolded), and the Conn yielding exactly
// the bytes after the 101's header block.
func FuzzDialResponse(f *testing.F) {
	for _, s := range []string{
		switch101,
		switch101 + "payload",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + switch101 + "x",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nContent-Length: 4\r\n\r\nbody",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ECHO/1, websocket\r\nConnection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 101\nUpgrade: echo/1\nConnection: Upgrade\n\n",
		"HTTP/1.0 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n Connection: Upgrade\r\n\r\n",
		"HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2, websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nbody until close",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConn",
		"HTTP/1.1  101 x\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n",
		// obs-fold: unfolded with one SP per fold (RFC 9112 §5.2).
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: keep-alive,\r\n Upgrade\r\n\r\nafter",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade:\r\n\t echo/1 ,\r\n  \r\n websocket\t\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 101\nX-A: a\n b\n\tc\nUpgrade: foo/2\nConnection:\n upgrade\n\n",
		"HTTP/1.1 101 Switching Protocols\r\n Upgrade: echo/1\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\nX: a\r\n \x01\r\n\r\n",
		"HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2,\r\n websocket\r\nContent-Length: 0\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	offers := []Protocol{echo1, websocket, {Name: "Foo", Version: "2"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := &scriptConn{r: bytes.NewReader(data)}
		d := Dialer{
			Proxy:          noProxy,
			MaxHeaderBytes: 4 << 10,
			NetDialContext: func(context.Context, string, string) (net.Conn, error) { return sc, nil },
		}
		c, err := d.Dial(context.Background(), "http://fuzz.invalid/", offers...)
		if err != nil {
			if c != nil {
				t.Fatal("Conn returned with an error")
			}
			if !sc.closed {
				t.Fatalf("connection left open after error %v", err)
			}
			var re *ResponseError
			if errors.As(err, &re) && (re.StatusCode == 101 || re.StatusCode/100 == 1) {
				t.Fatalf("ResponseError for status %d", re.StatusCode)
			}
			return
		}
		resp := c.Response
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.ProtoMajor != 1 || resp.ProtoMinor < 1 {
			t.Fatalf("Conn for %s %s", resp.Proto, resp.Status)
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				if !httpguts.ValidHeaderFieldValue(v) || v != httplist.TrimOWS(v) {
					t.Fatalf("Conn for a 101 whose %s field is %q: invalid or untrimmed", k, v)
				}
			}
		}
		if !hasConnectionOption(resp.Header, "upgrade") {
			t.Fatalf("Conn for a 101 whose Connection is %q", resp.Header["Connection"])
		}
		got, err := ParseProtocols(resp.Header["Upgrade"])
		if err != nil || len(got) == 0 {
			t.Fatalf("Conn for a 101 whose Upgrade is %q (%v)", resp.Header["Upgrade"], err)
		}
		for i, p := range got {
			o, ok := matchOffer(offers, p)
			if !ok {
				t.Fatalf("Conn for a 101 naming %v, not offered", p)
			}
			if i == 0 && o != c.Protocol {
				t.Fatalf("Protocol %v, but the 101 names %v first", c.Protocol, p)
			}
		}
		rest, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(data, rest) {
			t.Fatalf("Conn yields %q, not a suffix of the input", rest)
		}
		head := data[:len(data)-len(rest)]
		if !bytes.HasSuffix(head, []byte("\n\r\n")) && !bytes.HasSuffix(head, []byte("\n\n")) {
			t.Fatalf("Conn yields %q, which does not follow a header block", rest)
		}
		if sc.closed {
			t.Fatal("Conn returned closed")
		}
	})
}
