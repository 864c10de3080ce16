// Command serve is a program that only serves upgrades, HTTP/2 extended
// CONNECT included: TestHTTP2ClientLinkedByDialOnly checks that no HTTP/2
// client is linked into it.
package main

import (
	"io"
	"log"
	"net/http"

	"github.com/go-upgrade/upgrade"
	_ "github.com/go-upgrade/upgrade/extconnect"
)

func main() {
	var s upgrade.Server
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", &s))
}
