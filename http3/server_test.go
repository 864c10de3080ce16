package http3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	"github.com/go-upgrade/upgrade/websocket"
	qhttp3 "github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSwitchOverHTTP3: an extended CONNECT over HTTP/3 is negotiated as an
// HTTP/2 one: the route's handler gets the stream as a Conn whose request
// is an HTTP/3 CONNECT with its :protocol, the client's Conn is the
// stream, data goes both ways, and a half-close ends it cleanly.
func TestSwitchOverHTTP3(t *testing.T) {
	got := make(chan *http.Request, 1)
	us := new(upgrade.Server)
	us.HandleFunc("chat", func(c *upgrade.Conn) {
		got <- c.Request
		echo(c)
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)

	c, err := dial(t, tr, srv.url+"/room?id=7", "chat")
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, upgrade.Protocol{Name: "chat"}, c.Protocol)
	assert.Equal(t, 3, c.Request.ProtoMajor)
	assert.Equal(t, "HTTP/3.0", c.Response.Proto)
	assert.Equal(t, http.StatusOK, c.Response.StatusCode)
	require.NotNil(t, c.Response.TLS)
	assert.Equal(t, "h3", c.Response.TLS.NegotiatedProtocol)

	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "hello over QUIC")
	roundTrip(t, c, strings.Repeat("x", 256<<10))

	r := <-got
	assert.Equal(t, http.MethodConnect, r.Method)
	assert.Equal(t, "HTTP/3.0", r.Proto)
	assert.Equal(t, 3, r.ProtoMajor)
	assert.Equal(t, []string{"chat"}, r.Header[":protocol"])
	assert.Equal(t, "/room?id=7", r.URL.RequestURI())
	assert.Empty(t, r.Header["User-Agent"], "no User-Agent unless the Dialer sends one")

	require.NoError(t, c.CloseWrite())
	n, err := c.Read(make([]byte, 1))
	assert.Equal(t, 0, n)
	assert.Equal(t, io.EOF, err, "the server ends its side after the client's")
	require.NoError(t, c.Close())
	assert.ErrorIs(t, c.Close(), net.ErrClosed)
	_, err = c.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
}

// TestOffersOverHTTP3: offers are asked for in order on one pooled QUIC
// connection; a protocol not served is refused with 501 (RFC 9220), and
// the refusals of every offer make a *ResponseError of HTTP/3.
func TestOffersOverHTTP3(t *testing.T) {
	srv := serveH3(t, echoServer("chat"), nil)
	tr := newTransport(t)

	c, err := dial(t, tr, srv.url+"/", "nosuch", "chat")
	require.NoError(t, err)
	assert.Equal(t, "chat", c.Protocol.Name)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "second offer")

	_, err = dial(t, tr, srv.url+"/", "one", "two")
	var re *upgrade.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusNotImplemented, re.StatusCode)
	assert.Equal(t, "HTTP/3.0", re.Proto)
	assert.Contains(t, string(re.Body), "two")
	assert.Contains(t, err.Error(), `"501 Not Implemented" to an HTTP/3 extended CONNECT`)

	// The streams went on one connection.
	c2, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	assert.Equal(t, c.LocalAddr().String(), c2.LocalAddr().String())
	require.NoError(t, c2.Close())
	require.NoError(t, c.Close())
}

// TestManyStreamsOneConnection: concurrent Dials share one connection up
// to MaxStreamsPerConn streams, then open another.
func TestManyStreamsOneConnection(t *testing.T) {
	srv := serveH3(t, echoServer("chat"), nil)
	tr := newTransport(t)
	tr.MaxStreamsPerConn = 4
	const n = 8
	conns := make([]*upgrade.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := dial(t, tr, srv.url+"/", "chat")
			if assert.NoError(t, err) {
				conns[i] = c
			}
		})
	}
	wg.Wait()
	locals := map[string]int{}
	for _, c := range conns {
		require.NotNil(t, c)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		roundTrip(t, c, "many")
		locals[c.LocalAddr().String()]++
	}
	assert.Len(t, locals, 2, "8 streams, 4 a connection: %v", locals)
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
}

// TestWebSocketOverHTTP3: the websocket package negotiates over HTTP/3 as
// over HTTP/2 (RFC 8441 §5): version 13, no key or accept, a subprotocol
// chosen from the client's list; a wrong version is refused with a status
// that keeps Sec-WebSocket-Version.
func TestWebSocketOverHTTP3(t *testing.T) {
	served := make(chan string, 1)
	us := new(upgrade.Server)
	us.Handle("websocket", &websocket.Handler{
		Subprotocols: []string{"b", "a"},
		Serve: func(c *upgrade.Conn, sub string) {
			served <- sub
			echo(c)
		},
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)

	c, err := websocket.Dial(context.Background(), srv.url+"/ws", &websocket.DialOptions{
		Subprotocols: []string{"a", "b"},
		Dialer:       &upgrade.Dialer{HTTP3: tr},
		Header:       http.Header{"Origin": {srv.url}},
	})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 3, c.Request.ProtoMajor)
	assert.Empty(t, c.Request.Header["Sec-Websocket-Key"])
	assert.Equal(t, []string{"13"}, c.Request.Header["Sec-Websocket-Version"])
	assert.Empty(t, c.Response.Header["Sec-Websocket-Accept"])
	assert.Equal(t, "b", c.Response.Header.Get("Sec-Websocket-Protocol"), "the handler's order")
	assert.Equal(t, "b", <-served)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	roundTrip(t, c, "frames go here")

	d := &upgrade.Dialer{HTTP3: tr, Header: http.Header{"Sec-Websocket-Version": {"8"}}}
	_, err = d.Dial(context.Background(), srv.url+"/ws", upgrade.Protocol{Name: "websocket"})
	var re *upgrade.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusBadRequest, re.StatusCode)
	assert.Equal(t, "13", re.Header.Get("Sec-Websocket-Version"))
}

// TestRefusalsKeepTheirStatus: an Accepter's rejection, the method cap and
// MaxConns are answered over HTTP/3 with their status, as over HTTP/2.
func TestRefusalsKeepTheirStatus(t *testing.T) {
	us := new(upgrade.Server)
	us.HandleRoute("chat", upgrade.Route{Handler: upgrade.HandlerFunc(echo), MaxConns: 1})
	us.Handle("private", accepter{func(r *http.Request, h http.Header) error {
		return &upgrade.RejectError{Status: http.StatusForbidden, Message: "private"}
	}})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)

	_, err := dial(t, tr, srv.url+"/", "private")
	var re *upgrade.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusForbidden, re.StatusCode)

	c, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	_, err = dial(t, tr, srv.url+"/", "chat")
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusServiceUnavailable, re.StatusCode, "MaxConns 1")
	active := us.ActiveConns()
	assert.Equal(t, map[string]int{"chat": 1}, active)
	require.NoError(t, c.Close())
}

// accepter is a protocol whose pre-switch step is accept; it echoes.
type accepter struct {
	accept func(r *http.Request, h http.Header) error
}

func (a accepter) AcceptUpgrade(r *http.Request, h http.Header) error { return a.accept(r, h) }
func (a accepter) ServeUpgrade(c *upgrade.Conn)                       { echo(c) }

// TestPlainRequestsPassThrough: requests other than extended CONNECT reach
// the handler as quic-go made them: an upgrade-optional endpoint serves
// them, an upgrade-required one refuses them.
func TestPlainRequestsPassThrough(t *testing.T) {
	us := echoServer("chat")
	mux := http.NewServeMux()
	mux.Handle("/required", us)
	mux.Handle("/", us.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "plain "+r.Proto)
	})))
	srv := serveH3(t, us, http3.Handler(mux))
	_, pool := testCert(t)
	rt := &qhttp3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer rt.Close()
	client := &http.Client{Transport: rt, Timeout: 10 * time.Second}

	resp, err := client.Get(srv.url + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "plain HTTP/3.0", string(body))

	resp, err = client.Get(srv.url + "/required")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusHTTPVersionNotSupported, resp.StatusCode)
	assert.Empty(t, resp.Header["Upgrade"])
}

// TestCloseDeliversWhatWasWritten: a handler that writes and returns has
// its data delivered whole before the end of the stream (a QUIC reset
// would discard what is not yet acknowledged).
func TestCloseDeliversWhatWasWritten(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	us := new(upgrade.Server)
	us.HandleFunc("burst", func(c *upgrade.Conn) { _, _ = c.Write(payload) })
	srv := serveH3(t, us, nil)
	tr := newTransport(t)

	c, err := dial(t, tr, srv.url+"/", "burst")
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err, "the stream ends with FIN after the data")
	assert.True(t, bytes.Equal(payload, got), "got %d bytes of %d", len(got), len(payload))
}

// TestCloseLetsAWriteInProgressFinish: a handler that returns while
// another goroutine's Write is in progress (and not held up by flow
// control) has it delivered, and the stream ends with FIN, not a reset.
func TestCloseLetsAWriteInProgressFinish(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	us := new(upgrade.Server)
	us.HandleFunc("burst", func(c *upgrade.Conn) {
		started := make(chan struct{})
		go func() {
			close(started)
			_, _ = c.Write(payload)
		}()
		<-started
		time.Sleep(time.Millisecond) // the Write is under way
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	for range 5 {
		c, err := dial(t, tr, srv.url+"/", "burst")
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		got, err := io.ReadAll(c)
		c.Close()
		require.NoError(t, err, "the stream ends with FIN after the data")
		assert.True(t, bytes.Equal(payload, got), "got %d bytes of %d", len(got), len(payload))
	}
}

// TestClientCloseStopsTheServer: a client that closes without reading to
// the end makes the server's Read see the end of the stream and its
// Writes fail, as a reset TCP connection's would.
func TestClientCloseStopsTheServer(t *testing.T) {
	errs := make(chan error, 2)
	us := new(upgrade.Server)
	us.HandleFunc("chat", func(c *upgrade.Conn) {
		_, err := io.Copy(io.Discard, c)
		errs <- err
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err = c.Write([]byte("more")); err != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		errs <- err
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	c, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	_, err = c.Write([]byte("bye"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, <-errs, "the client's FIN ends the server's reading")
	err = <-errs
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "the client stopped reading: %v", err)
}

// TestConnAfterHandlerReturned: the server's Conn, used by a goroutine the
// handler left behind, fails with net.ErrClosed once the handler has
// returned; a Read blocked then is interrupted.
func TestConnAfterHandlerReturned(t *testing.T) {
	left := make(chan error, 1)
	returned := make(chan struct{})
	us := new(upgrade.Server)
	us.HandleFunc("chat", func(c *upgrade.Conn) {
		go func() {
			_, err := c.Read(make([]byte, 1)) // blocked until Close
			<-returned
			_, werr := c.Write([]byte("late"))
			left <- errors.Join(err, werr, c.SetDeadline(time.Now()), c.CloseWrite())
		}()
		time.Sleep(50 * time.Millisecond)
		close(returned)
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	c, err := dial(t, tr, srv.url+"/", "chat")
	require.NoError(t, err)
	defer c.Close()
	err = <-left
	require.Error(t, err)
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		assert.ErrorIs(t, e, net.ErrClosed)
	}
}

// TestDeadlinesRenewable: a passed read deadline fails a Read with a
// timeout, and a later one lets the next Read get the data; the stream
// goes on.
func TestDeadlinesRenewable(t *testing.T) {
	release := make(chan struct{})
	us := new(upgrade.Server)
	us.HandleFunc("late", func(c *upgrade.Conn) {
		<-release
		_, _ = c.Write([]byte("now"))
		echo(c)
	})
	srv := serveH3(t, us, nil)
	tr := newTransport(t)
	for _, side := range []string{"client"} {
		c, err := dial(t, tr, srv.url+"/", "late")
		require.NoError(t, err, side)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, err = c.Read(make([]byte, 3))
		require.Error(t, err)
		assert.True(t, isTimeout(err), "%v", err)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		close(release)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		buf := make([]byte, 3)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		assert.Equal(t, "now", string(buf))
		roundTrip(t, c, "still open")
		require.NoError(t, c.Close())
	}
}

// TestResetEndsLikeATCPReset: a stream's Reset, on either side, resets
// both of its directions with H3_CONNECT_ERROR: the peer's Read and Write
// fail as on a reset TCP connection (ECONNRESET), and the conn is closed.
func TestResetEndsLikeATCPReset(t *testing.T) {
	for _, side := range []string{"server", "client"} {
		t.Run(side, func(t *testing.T) {
			peerErrs := make(chan error, 2)
			reset := make(chan struct{})
			us := new(upgrade.Server)
			us.HandleFunc("chat", func(c *upgrade.Conn) {
				if side == "server" {
					_, _ = c.Read(make([]byte, 1)) // the client has its 200
					c.NetConn().(interface{ Reset() }).Reset()
					_, err := c.Read(make([]byte, 1))
					peerErrs <- err // the server's own conn: closed
					return
				}
				<-reset
				_, err := c.Read(make([]byte, 1))
				peerErrs <- err
				_, err = writeUntilError(c)
				peerErrs <- err
			})
			srv := serveH3(t, us, nil)
			c, err := dial(t, newTransport(t), srv.url+"/", "chat")
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))

			if side == "server" {
				_, err = c.Write([]byte("x"))
				require.NoError(t, err)
				assert.ErrorIs(t, <-peerErrs, net.ErrClosed, "Reset closes the conn")
				_, err := io.ReadAll(c)
				assert.ErrorIs(t, err, syscall.ECONNRESET)
				assert.Contains(t, err.Error(), "H3_CONNECT_ERROR")
				_, err = writeUntilError(c)
				assert.ErrorIs(t, err, syscall.ECONNRESET)
				return
			}
			c.NetConn().(interface{ Reset() }).Reset()
			close(reset)
			assert.ErrorIs(t, c.Close(), net.ErrClosed, "Reset closed the conn")
			err = <-peerErrs
			assert.ErrorIs(t, err, syscall.ECONNRESET)
			assert.Contains(t, err.Error(), "H3_CONNECT_ERROR")
			assert.ErrorIs(t, <-peerErrs, syscall.ECONNRESET)
		})
	}
}

// writeUntilError writes to c until a Write fails, for up to 10 seconds,
// and returns the bytes written and the error.
func writeUntilError(c net.Conn) (int, error) {
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := c.Write([]byte("more"))
		n += m
		if err != nil {
			return n, err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n, errors.New("every Write succeeded")
}

// TestPeerClosingTheConnectionIsAReset: a stream whose QUIC connection the
// peer closes fails as a reset TCP connection does, on either side, and
// never with net.ErrClosed, which a net.Conn keeps for a conn closed on
// its own side.
func TestPeerClosingTheConnectionIsAReset(t *testing.T) {
	for _, closer := range []string{"client", "server"} {
		t.Run(closer, func(t *testing.T) {
			serverErr := make(chan error, 1)
			us := new(upgrade.Server)
			us.HandleFunc("chat", func(c *upgrade.Conn) {
				_, _ = c.Write([]byte("x"))
				_, err := io.Copy(io.Discard, c)
				serverErr <- err
			})
			srv := serveH3(t, us, nil)
			tr := newTransport(t)
			c, err := dial(t, tr, srv.url+"/", "chat")
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = io.ReadFull(c, make([]byte, 1))
			require.NoError(t, err)

			if closer == "client" {
				require.NoError(t, tr.Close())
				err = <-serverErr
			} else {
				srv.stop()
				_, err = io.ReadAll(c)
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, syscall.ECONNRESET)
			assert.NotErrorIs(t, err, net.ErrClosed)
		})
	}
}
