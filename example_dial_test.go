package upgrade_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"

	"github.com/go-upgrade/upgrade"
)

// Dial a custom protocol endpoint, use the switched connection, and read
// the protocols a server advertises when it refuses an offer.
func ExampleDial() {
	// A server speaking "echo/1".
	var s upgrade.Server
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	ts := httptest.NewServer(&s)
	defer ts.Close()
	defer s.Close()

	ctx := context.Background()
	c, err := upgrade.Dial(ctx, ts.URL, upgrade.Protocol{Name: "echo", Version: "1"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("switched to", c.Protocol)
	_, _ = io.WriteString(c, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println("echoed", string(buf))
	c.Close()

	// An offer the server does not support: it answers 426 Upgrade
	// Required with the protocols it would accept.
	_, err = upgrade.Dial(ctx, ts.URL, upgrade.Protocol{Name: "echo", Version: "2"})
	var re *upgrade.ResponseError
	if errors.As(err, &re) {
		fmt.Println(re.StatusCode, "advertised:", re.Upgrade)
	}
	// Output:
	// switched to echo/1
	// echoed hello
	// 426 advertised: [echo/1]
}

// Switch over HTTP/2 when the server enables extended CONNECT (RFC 8441),
// with the Dials sharing one connection, and over HTTP/1.1 otherwise.
func ExampleDialer_http2() {
	// Create the transport once and share it: it holds the connections.
	tr := &upgrade.HTTP2Transport{}
	defer tr.CloseIdleConnections()
	d := upgrade.Dialer{HTTP2: tr}

	ctx := context.Background()
	c, err := d.Dial(ctx, "https://example.com/chat", upgrade.Protocol{Name: "echo", Version: "1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if c.Request.ProtoMajor == 2 {
		fmt.Println("switched a stream of a shared HTTP/2 connection to", c.Protocol)
	} else {
		fmt.Println("switched an HTTP/1.1 connection to", c.Protocol)
	}
}
