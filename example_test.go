package upgrade_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/go-upgrade/upgrade"
)

// A server that negotiates two protocols on one path, in the client's
// order of preference, and serves plain HTTP to everyone else.
func ExampleServer() {
	var up upgrade.Server
	// "echo/1": echoes bytes back.
	up.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	// "shout" (any version): echoes lines back in upper case.
	up.HandleFunc("shout/*", func(c *upgrade.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			fmt.Fprintln(c, strings.ToUpper(sc.Text()))
		}
	})
	site := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "plain HTTP")
	})
	ts := httptest.NewServer(up.Middleware(site))
	defer ts.Close()
	defer up.Close()

	ctx := context.Background()
	// The client prefers shout/2, then echo/1.
	c, err := upgrade.Dial(ctx, ts.URL, upgrade.Protocol{Name: "shout", Version: "2"}, upgrade.Protocol{Name: "echo", Version: "1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("switched to", c.Protocol)
	fmt.Fprintln(c, "hello")
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)

	// Without an upgrade, the site answers.
	resp, err := http.Get(ts.URL)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))
	// Output:
	// switched to shout/2
	// HELLO
	// plain HTTP
}

// versionGate is a protocol with a pre-101 step: it accepts clients that
// send a token, adding a header to the 101, and declines the others so
// that negotiation moves on to the next offer.
type versionGate struct{}

func (versionGate) AcceptUpgrade(r *http.Request, h http.Header) error {
	switch r.Header.Get("X-Token") {
	case "":
		return upgrade.ErrDecline
	case "secret":
		h.Set("X-Session", "42")
		return nil
	default:
		return &upgrade.RejectError{Status: http.StatusForbidden, Message: "bad token"}
	}
}

func (versionGate) ServeUpgrade(c *upgrade.Conn) { _, _ = io.WriteString(c, "welcome") }

// An Accepter inspects the request before the 101: accept, decline, or
// reject with a status.
func ExampleAccepter() {
	var up upgrade.Server
	up.Handle("gated", versionGate{})
	up.HandleFunc("open", func(c *upgrade.Conn) { _, _ = io.WriteString(c, "open to all") })
	ts := httptest.NewServer(&up)
	defer ts.Close()
	defer up.Close()

	offers := []upgrade.Protocol{{Name: "gated"}, {Name: "open"}}
	for _, token := range []string{"secret", "", "wrong"} {
		d := upgrade.Dialer{Header: http.Header{}}
		if token != "" {
			d.Header.Set("X-Token", token)
		}
		c, err := d.Dial(context.Background(), ts.URL, offers...)
		var refused *upgrade.ResponseError
		if errors.As(err, &refused) {
			fmt.Printf("token %q: %d %s", token, refused.StatusCode, refused.Body)
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		msg, _ := io.ReadAll(c)
		fmt.Printf("token %q: %s (session %q): %s\n", token, c.Protocol, c.Response.Header.Get("X-Session"), msg)
		c.Close()
	}
	// Output:
	// token "secret": gated (session "42"): welcome
	// token "": open (session ""): open to all
	// token "wrong": 403 bad token
}

// ParseProtocols reads every Upgrade line into the client's list of offers.
func ExampleParseProtocols() {
	offers, err := upgrade.ParseProtocols([]string{"h2c, websocket", " , echo/1"})
	fmt.Println(offers, err)

	_, err = upgrade.ParseProtocols([]string{"echo/1, web socket"})
	fmt.Println(err)
	// Output:
	// [h2c websocket echo/1] <nil>
	// upgrade: malformed Upgrade header: element "web socket": whitespace in protocol name
}
