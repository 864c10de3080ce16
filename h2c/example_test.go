package h2c_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/h2c"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// One upgrade.Server negotiates h2c and a custom echo/1 protocol on the
// same path; requests that ask for neither go to an ordinary handler.
// Other adapters, such as the websocket package's Handler, are registered
// on the same Server beside them.
func Example() {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over %s", r.Proto)
	})

	var s upgrade.Server
	h2 := &h2c.Handler{Handler: hello}
	s.HandleRoute(h2c.Protocol, h2.Route()) // opt-in: read the package doc first
	s.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })

	srv := httptest.NewServer(s.Middleware(hello))
	defer srv.Close()
	defer s.Close()
	ctx := context.Background()

	// h2c: the upgrade request is answered over HTTP/2, on stream 1.
	status, body, err := h2cGet(ctx, srv.URL+"/api")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("h2c:", status, body)

	// echo/1.
	ec, err := upgrade.Dial(ctx, srv.URL+"/api", upgrade.Protocol{Name: "echo", Version: "1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, _ = ec.Write([]byte("ping"))
	buf := make([]byte, 4)
	_, _ = io.ReadFull(ec, buf)
	ec.Close()
	fmt.Println("echo/1:", ec.Protocol, string(buf))

	// No upgrade: the ordinary handler.
	plain, err := http.Get(srv.URL + "/api")
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := io.ReadAll(plain.Body)
	plain.Body.Close()
	fmt.Println("plain:", plain.Status, string(b))
	// Output:
	// h2c: 200 hello over HTTP/2.0
	// echo/1: echo/1 ping
	// plain: 200 OK hello over HTTP/1.1
}

// h2cGet upgrades a GET of url to h2c with an upgrade.Dialer and reads the
// response to it from stream 1 of the HTTP/2 connection.
func h2cGet(ctx context.Context, url string) (status, body string, err error) {
	d := upgrade.Dialer{Header: http.Header{
		"Connection":     {"HTTP2-Settings"},
		"Http2-Settings": {""}, // no settings: all defaults
	}}
	c, err := d.Dial(ctx, url, upgrade.Protocol{Name: h2c.Protocol})
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	fr := http2.NewFramer(c, c)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return "", "", err
	}
	if err := fr.WriteSettings(); err != nil {
		return "", "", err
	}
	dec := hpack.NewDecoder(4096, nil)
	var data bytes.Buffer
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", "", err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				return "", "", err
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					status = hf.Value
				}
			}
		case *http2.DataFrame:
			data.Write(f.Data())
			if f.StreamEnded() {
				return status, data.String(), nil
			}
		}
	}
}
