package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-upgrade/upgrade"
	_ "github.com/go-upgrade/upgrade/extconnect" // RFC 8441 in the child's HTTP/2 server
)

// H2Env, set in a child's environment, makes its server speak HTTP/2 with
// prior knowledge as well as HTTP/1.1, so that the same implementation can
// be switched by an extended CONNECT (RFC 8441) stream.
const H2Env = "UPGRADE_BENCH_H2"

// StartH2Child starts a server process for implementation name that
// speaks HTTP/2 with prior knowledge too.
func StartH2Child(name string) (*Child, error) { return startChildEnv(name, []string{H2Env + "=1"}) }

// h2Transport returns an HTTP/2 client with prior knowledge over
// cleartext, whose connections carry up to the server's
// MAX_CONCURRENT_STREAMS streams each.
func h2Transport() *upgrade.HTTP2Transport {
	return &upgrade.HTTP2Transport{UnencryptedHTTP2: true}
}

// h2Stream is one WebSocket switched by an extended CONNECT.
type h2Stream struct {
	c *upgrade.Conn
}

// openStream opens a WebSocket to url as an extended CONNECT stream with
// d, which must switch it over HTTP/major, and reads the server's frame,
// checking its exact bytes.
func openStream(d upgrade.Dialer, url string, major int) (*h2Stream, error) {
	d.Proxy = noProxy
	d.Header = http.Header{"Sec-Websocket-Version": {"13"}}
	c, err := d.Dial(context.Background(), url, upgrade.Protocol{Name: "websocket"})
	if err != nil {
		return nil, err
	}
	st := &h2Stream{c: c}
	if c.Request.ProtoMajor != major {
		st.close()
		return nil, fmt.Errorf("switched over HTTP/%d, not with an HTTP/%d extended CONNECT", c.Request.ProtoMajor, major)
	}
	var f [3]byte
	if _, err := io.ReadFull(c, f[:]); err != nil {
		st.close()
		return nil, fmt.Errorf("reading the frame: %w", err)
	}
	if string(f[:]) != string(Frame) {
		st.close()
		return nil, fmt.Errorf("frame %x, want %x", f, Frame)
	}
	return st, nil
}

// streamOpener returns the function that opens a WebSocket to addr as an
// extended CONNECT stream over tp ("HTTP/2" or "HTTP/3"), every stream on
// one client, and the function that closes that client's connections.
func streamOpener(tp, addr string) (open func() (*h2Stream, error), closeClient func()) {
	if tp == "HTTP/2" {
		tr := h2Transport()
		d := upgrade.Dialer{HTTP2: tr}
		return func() (*h2Stream, error) { return openStream(d, "http://"+addr+"/chat", 2) }, tr.CloseIdleConnections
	}
	tr := h3Transport()
	d := upgrade.Dialer{HTTP3: tr}
	return func() (*h2Stream, error) { return openStream(d, "https://"+addr+"/chat", 3) }, func() { tr.Close() }
}

// end half-closes the stream (END_STREAM), which ends the server's read
// loop, and waits for the server to end its side.
func (st *h2Stream) end() error {
	defer st.c.Close()
	if err := st.c.CloseWrite(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, st.c)
	return err
}

// close resets the stream.
func (st *h2Stream) close() {
	st.c.Close()
}

// RunH2Handshakes performs n WebSocket switches as extended CONNECT
// streams at concurrency conc, on the few connections one HTTP/2 client
// needs for them: open, read the frame, END_STREAM, read to the end.
func RunH2Handshakes(addr string, n, conc int) error {
	open, closeClient := streamOpener("HTTP/2", addr)
	defer closeClient()
	return parallel(n, conc, func(int) error {
		st, err := open()
		if err == nil {
			err = st.end()
		}
		return err
	})
}

// H2Handshakes is Handshakes with extended CONNECT streams (the child must
// have been started with StartH2Child).
func (c *Child) H2Handshakes(n, conc int) (Round, error) {
	return c.measure(n, func() error {
		if err := RunH2Handshakes(c.Addr, n, conc); err != nil {
			return fmt.Errorf("%s over HTTP/2: %w", c.Name, err)
		}
		return nil
	})
}

// HoldH2Streams is HoldConns with idle WebSockets held as extended
// CONNECT streams, many on each connection (up to the server's
// MAX_CONCURRENT_STREAMS, 250 by default), in a fresh server process.
func HoldH2Streams(name string, k, conc int) (Held, error) {
	c, err := StartH2Child(name)
	if err != nil {
		return Held{}, err
	}
	defer c.Close()
	base, err := c.baseline(RunH2Handshakes)
	if err != nil {
		return Held{}, err
	}
	open, closeClient := streamOpener("HTTP/2", c.Addr)
	defer closeClient()
	streams := make([]*h2Stream, k)
	defer func() {
		for _, st := range streams {
			if st != nil {
				st.close()
			}
		}
	}()
	err = parallel(k, conc, func(i int) error {
		st, err := open()
		streams[i] = st
		return err
	})
	if err != nil {
		return Held{}, fmt.Errorf("%s: opening %d streams: %w", name, k, err)
	}
	return c.held(base, k)
}

// errNoH2 is returned by a child asked to speak HTTP/2 for an
// implementation that cannot switch HTTP/2 streams.
var errNoH2 = errors.New("implementation has no HTTP/2 extended CONNECT support")
