package websocket_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/websocket"
)

func ExampleAcceptKey() {
	// The example of RFC 6455 §1.3.
	fmt.Println(websocket.AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="))
	// Output: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
}

// The server registers a Handler for "websocket" with an upgrade.Server;
// the client dials it. After the handshake both sides hold a plain
// connection that a WebSocket framing library takes over; here the server
// writes one unmasked text frame by hand.
func ExampleDial() {
	var s upgrade.Server
	s.Handle("websocket", &websocket.Handler{
		Subprotocols: []string{"chat.v2", "chat.v1"},
		Serve: func(c *upgrade.Conn, subprotocol string) {
			msg := "welcome to " + subprotocol
			frame := append([]byte{0x81, byte(len(msg))}, msg...) // FIN + text, short length
			_, _ = c.Write(frame)
		},
	})
	srv := httptest.NewServer(&s)
	defer srv.Close()
	defer s.Close()

	c, err := websocket.Dial(context.Background(), "ws"+srv.URL[len("http"):]+"/chat", &websocket.DialOptions{
		Header:       http.Header{"Origin": {srv.URL}},
		Subprotocols: []string{"chat.v1", "chat.v2"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(c.Response.Status)
	fmt.Println("subprotocol:", c.Response.Header.Get("Sec-WebSocket-Protocol"))

	var head [2]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		fmt.Println(err)
		return
	}
	payload := make([]byte, head[1]&0x7f)
	if _, err := io.ReadFull(c, payload); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("text frame: %s\n", payload)
	// Output:
	// 101 Switching Protocols
	// subprotocol: chat.v2
	// text frame: welcome to chat.v2
}
