package upgrade_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/go-upgrade/upgrade"
)

// A handler that does its own switch, as WebSocket libraries do (here by
// hand: hijack, write the 101, serve), registered next to a native
// protocol. The Server negotiates and counts the connection it hijacks.
func ExampleRoute_delegate() {
	shout := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := w.(http.Hijacker).Hijack() // as gorilla/websocket finds it
		if err != nil {
			return // the Server is shutting down: the client got 503
		}
		defer nc.Close() // the connection stops being counted
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", r.Header.Get("Upgrade"))
		_ = brw.Flush()
		sc := bufio.NewScanner(nc) // nc returns the bytes read ahead first
		for sc.Scan() {
			fmt.Fprintln(nc, strings.ToUpper(sc.Text()))
		}
	})
	var up upgrade.Server
	up.HandleRoute("shout", upgrade.Route{Delegate: shout})
	up.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	ts := httptest.NewServer(&up)
	defer ts.Close()
	defer up.Close()

	// The client offers "shout" among others; the handler sees only it.
	c, err := upgrade.Dial(context.Background(), ts.URL, upgrade.Protocol{Name: "chat"}, upgrade.Protocol{Name: "shout"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("switched to", c.Protocol)
	fmt.Fprintln(c, "hello")
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	fmt.Println(up.ActiveConns())
	// Output:
	// switched to shout
	// HELLO
	// map[shout:1]
}
