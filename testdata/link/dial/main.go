// Command dial switches a connection with a Dialer that can use HTTP/2:
// TestHTTP2ClientLinkedByDialOnly checks that the HTTP/2 client is linked
// into it.
package main

import (
	"context"
	"io"
	"log"
	"os"

	"github.com/go-upgrade/upgrade"
)

func main() {
	d := upgrade.Dialer{HTTP2: &upgrade.HTTP2Transport{}}
	c, err := d.Dial(context.Background(), os.Args[1], upgrade.Protocol{Name: "echo", Version: "1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, _ = io.Copy(os.Stdout, c)
}
