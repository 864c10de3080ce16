// Command wsframing shows that the connection the upgrade package hands
// over after a WebSocket opening handshake works with an existing framing
// library operating on a raw net.Conn: github.com/gobwas/ws and its wsutil
// package.
//
// It starts an upgrade.Server on 127.0.0.1 whose "websocket" protocol
// echoes every message, dials it with websocket.Dial, exchanges a few
// messages, closes the WebSocket connection with a close frame, shuts the
// server down and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func main() {
	if err := run(os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// echo serves a switched connection with gobwas/ws: it reads client
// messages and writes them back, until the client closes (wsutil answers
// the close frame) or the connection ends.
func echo(c *upgrade.Conn, _ string) {
	for {
		// c, not c.NetConn(): Read returns the bytes that arrived with the
		// handshake first.
		msg, op, err := wsutil.ReadClientData(c)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(c, op, msg); err != nil {
			return
		}
	}
}

// run performs the demo, writing what happens to out.
func run(out io.Writer) error {
	var s upgrade.Server
	s.Handle("websocket", &websocket.Handler{
		Subprotocols: []string{"echo"},
		Serve:        echo,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: &s, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		_ = s.Shutdown(ctx) // the switched connections, which hs does not track
		<-served
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws://" + ln.Addr().String() + "/echo"
	c, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"echo"}})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(out, "%s, subprotocol %q\n", c.Response.Status, c.Response.Header.Get("Sec-WebSocket-Protocol"))

	for _, msg := range []string{"hello", "framing by gobwas/ws"} {
		if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
			return err
		}
		got, err := wsutil.ReadServerText(c)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "echoed %q\n", got)
	}

	// Closing handshake (RFC 6455 §7): send a close frame, read the
	// server's.
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(body))); err != nil {
		return err
	}
	_, err = wsutil.ReadServerText(c)
	var closed wsutil.ClosedError
	if !errors.As(err, &closed) {
		return fmt.Errorf("want the server's close frame, got %v", err)
	}
	fmt.Fprintf(out, "closed by the server with status %d\n", closed.Code)
	return nil
}
