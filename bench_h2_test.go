package upgrade

import (
	"context"
	"io"
	"testing"
)

// BenchmarkSwitchHTTP2 compares, against one server, switching a stream
// of a shared HTTP/2 connection with an extended CONNECT and switching a
// new connection with an HTTP/1.1 Upgrade: Dial, one byte each way,
// Close. Over TLS, the HTTP/1.1 Upgrade pays for a TLS handshake each
// time; the stream does not.
func BenchmarkSwitchHTTP2(b *testing.B) {
	for _, secure := range []bool{true, false} {
		name := "cleartext"
		if secure {
			name = "tls"
		}
		s := newH2Server(b, secure)
		h2 := s.dialer(newTransport(b))
		h1 := s.dialer(nil)
		b.Run(name+"/h2-stream", func(b *testing.B) { benchSwitch(b, h2, s.url, 2) })
		b.Run(name+"/h1-upgrade", func(b *testing.B) { benchSwitch(b, h1, s.url, 1) })
	}
}

func benchSwitch(b *testing.B, d Dialer, url string, major int) {
	ctx := context.Background()
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial(ctx, url, echo1)
		if err != nil {
			b.Fatal(err)
		}
		if c.Request.ProtoMajor != major {
			b.Fatalf("switched over HTTP/%d", c.Request.ProtoMajor)
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
