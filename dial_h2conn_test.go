package upgrade

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// buffered returns the bytes s holds that its reader has not taken.
func (s *h2Stream) buffered() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return len(s.buf) - s.off
}

type dialResult struct {
	c   *Conn
	err error
}

// dialAsync runs d.Dial in a goroutine, for a scripted server to answer.
func dialAsync(t *testing.T, d Dialer, url string, offers ...Protocol) <-chan dialResult {
	ch := make(chan dialResult, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	go func() {
		c, err := d.Dial(ctx, url, offers...)
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		ch <- dialResult{c, err}
	}()
	return ch
}

func (r dialResult) wait(t *testing.T, ch <-chan dialResult) dialResult {
	t.Helper()
	select {
	case r = <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Dial did not return")
		return r
	}
}

// awaitDial waits for the Dial of ch and requires it to succeed.
func awaitDial(t *testing.T, ch <-chan dialResult) *Conn {
	t.Helper()
	r := dialResult{}.wait(t, ch)
	require.NoError(t, r.err)
	return r.c
}

// openPeerStream dials p, answers the extended CONNECT with 200 on the
// connection pc (the next one if nil), and returns the Conn and the
// stream's identifier.
func openPeerStream(t *testing.T, p *h2Peer, d Dialer, pc *h2PeerConn) (*Conn, *h2PeerConn, uint32) {
	t.Helper()
	ch := dialAsync(t, d, p.url, echo1)
	if pc == nil {
		pc = p.conn(t)
	}
	h := pc.next(http2.FrameHeaders)
	pc.respond(h.stream, "200", false, 0)
	return awaitDial(t, ch), pc, h.stream
}

// stream returns the client stream under c.
func stream(c *Conn) *h2Stream { return c.NetConn().(*h2Stream) }

// TestDialHTTP2ClientFrames: the client's preface SETTINGS, its ACK of
// the server's, the connection window it opens, and PING answered.
func TestDialHTTP2ClientFrames(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	d.MaxHeaderBytes = 8 << 10
	c, pc, _ := openPeerStream(t, p, d, nil)
	assert.Equal(t, map[http2.SettingID]uint32{
		http2.SettingEnablePush:        0,
		http2.SettingInitialWindowSize: h2StreamWindow,
		http2.SettingMaxHeaderListSize: 8 << 10,
	}, pc.clientSettings())

	pc.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}) })
	ping := pc.next(http2.FramePing)
	assert.True(t, ping.ack)
	assert.Equal(t, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, ping.ping)
	_, conn := pc.windows(0)
	assert.Equal(t, int64(h2ConnWindow), conn, "the connection window the client opened")
	roundTripPeer(t, c, pc, 1, "after PING")
}

// roundTripPeer sends msg from the client on stream id and back.
func roundTripPeer(t *testing.T, c *Conn, pc *h2PeerConn, id uint32, msg string) {
	t.Helper()
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	f := pc.next(http2.FrameData)
	assert.Equal(t, id, f.stream)
	assert.Equal(t, msg, string(f.data))
	pc.send(id, []byte(msg), false)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	b := make([]byte, len(msg))
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	assert.Equal(t, msg, string(b))
}

// TestDialHTTP2StalledReader: a stream whose reader stalls holds at most
// its window, unread, while another stream of the same connection moves
// more than the connection's window; reading it credits the server again.
func TestDialHTTP2StalledReader(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	stalled, pc, id1 := openPeerStream(t, p, d, nil)
	busy, _, id2 := openPeerStream(t, p, d, pc)

	pc.send(id1, bytes.Repeat([]byte("s"), h2StreamWindow), false)
	require.Eventually(t, func() bool { return stream(stalled).buffered() == h2StreamWindow }, 5*time.Second, time.Millisecond)
	w1, _ := pc.windows(id1)
	assert.Zero(t, w1, "no credit for what the reader has not read")

	const n = 3 * h2ConnWindow
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		pc.send(id2, want, true)
	}()
	require.NoError(t, busy.SetReadDeadline(time.Now().Add(10*time.Second)))
	got, err := io.ReadAll(busy)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	<-sent
	assert.Equal(t, h2StreamWindow, stream(stalled).buffered(), "the stalled stream's buffer is bounded by its window")

	b := make([]byte, h2StreamWindow)
	_, err = io.ReadFull(stalled, b)
	require.NoError(t, err)
	require.Eventually(t, func() bool { w, _ := pc.windows(id1); return w == h2StreamWindow }, 5*time.Second, time.Millisecond,
		"reading credits the stream")
	roundTripPeer(t, stalled, pc, id1, "still there")
}

// TestDialHTTP2StalledReaderServer: the same with net/http's server: a
// stream flooded by the server and never read does not stop another
// stream's echo, and holds at most its window.
func TestDialHTTP2StalledReaderServer(t *testing.T) {
	s := newH2Server(t, false)
	d := s.dialer(newTransport(t))
	flood, err := d.Dial(ctxTimeout(t), s.url, Protocol{Name: "flood"})
	require.NoError(t, err)
	defer flood.Close()
	require.Eventually(t, func() bool { return stream(flood).buffered() == h2StreamWindow }, 5*time.Second, time.Millisecond)

	c, err := d.Dial(ctxTimeout(t), s.url, echo1)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	requireEcho(t, c, c, 2<<20)
	assert.Equal(t, h2StreamWindow, stream(flood).buffered())
	assert.Equal(t, int32(1), s.accepts.Load())
}

// TestDialHTTP2ServerWindowSettings: the client sends within the server's
// SETTINGS_INITIAL_WINDOW_SIZE, applies a later change of it to the open
// stream, and sends DATA frames up to the server's SETTINGS_MAX_FRAME_SIZE.
func TestDialHTTP2ServerWindowSettings(t *testing.T) {
	p := newH2Peer(t, enableConnect,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 20000})
	c, pc, _ := openPeerStream(t, p, p.dialer(t), nil)

	msg := bytes.Repeat([]byte("0123456789"), 5000) // 50000 bytes
	written := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		written <- err
	}()
	f := pc.next(http2.FrameData)
	assert.Equal(t, msg[:10], f.data, "the first 10 bytes, as the stream's window allows")
	select {
	case <-written:
		t.Fatal("Write returned beyond the window")
	case <-time.After(50 * time.Millisecond):
	}
	pc.write(func(fr *http2.Framer) error {
		if err := fr.WriteWindowUpdate(0, 1<<20); err != nil {
			return err
		}
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	})
	got := f.data
	biggest := 0
	for len(got) < len(msg) {
		f := pc.next(http2.FrameData)
		got = append(got, f.data...)
		biggest = max(biggest, len(f.data))
	}
	require.NoError(t, <-written)
	assert.Equal(t, msg, got)
	assert.Equal(t, 20000, biggest, "DATA frames as large as SETTINGS_MAX_FRAME_SIZE, no larger")
}

// TestDialHTTP2MaxConcurrentStreams: with SETTINGS_MAX_CONCURRENT_STREAMS
// 1, a second Dial opens a second connection; once a stream has ended,
// its connection takes the next one.
func TestDialHTTP2MaxConcurrentStreams(t *testing.T) {
	p := newH2Peer(t, enableConnect, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	d := p.dialer(t)
	c1, pc1, _ := openPeerStream(t, p, d, nil)
	c2, pc2, _ := openPeerStream(t, p, d, nil)
	assert.NotSame(t, pc1, pc2)
	assert.Equal(t, int32(2), p.accepts.Load())

	require.NoError(t, c1.Close())
	assert.Equal(t, http2.ErrCodeCancel, pc1.next(http2.FrameRSTStream).code)
	c3, _, id := openPeerStream(t, p, d, pc1)
	assert.Equal(t, uint32(3), id)
	assert.Equal(t, int32(2), p.accepts.Load())
	c2.Close()
	c3.Close()
}

// TestDialHTTP2GoAway: after a GOAWAY, a stream the server did not
// process is sent again on a new connection, the streams it did process
// go on, and the connection is closed once the last has ended.
func TestDialHTTP2GoAway(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	c1, pc1, id1 := openPeerStream(t, p, d, nil)

	ch := dialAsync(t, d, p.url, echo1)
	h := pc1.next(http2.FrameHeaders)
	assert.Equal(t, uint32(3), h.stream)
	pc1.write(func(fr *http2.Framer) error { return fr.WriteGoAway(id1, http2.ErrCodeNo, nil) })
	pc2 := p.conn(t)
	h2 := pc2.next(http2.FrameHeaders)
	pc2.respond(h2.stream, "200", false, 0)
	c2 := awaitDial(t, ch)
	roundTripPeer(t, c2, pc2, h2.stream, "on the new connection")

	roundTripPeer(t, c1, pc1, id1, "the processed stream goes on")
	c3, _, _ := openPeerStream(t, p, d, pc2)
	c3.Close()
	require.NoError(t, c1.Close())
	resets := pc1.waitEnd(http2.FrameRSTStream)
	require.Len(t, resets, 1, "the client closed the connection after its last stream")
	assert.Equal(t, id1, resets[0].stream)
	c2.Close()
}

// TestDialHTTP2PeerResetRead: a RST_STREAM from the server fails Read,
// once the data before it has been read, with an error wrapping
// syscall.ECONNRESET; Write fails the same way.
func TestDialHTTP2PeerResetRead(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	c, pc, id := openPeerStream(t, p, d, nil)
	pc.send(id, []byte("abc"), false)
	pc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	b, err := io.ReadAll(c)
	assert.Equal(t, "abc", string(b))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	assert.Contains(t, err.Error(), "CANCEL")
	_, err = c.Write([]byte("x"))
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	require.NoError(t, c.Close(), "a reset stream closes without a RST_STREAM of its own")
	c2, _, _ := openPeerStream(t, p, d, pc)
	require.NoError(t, c2.Close())
	d.HTTP2.CloseIdleConnections()
	for _, f := range pc.waitEnd(http2.FrameRSTStream) {
		assert.NotEqual(t, id, f.stream)
	}
}

// TestDialHTTP2PeerResetWrite: a Write waiting for flow-control credit
// fails when the server resets the stream.
func TestDialHTTP2PeerResetWrite(t *testing.T) {
	p := newH2Peer(t, enableConnect, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c, pc, id := openPeerStream(t, p, p.dialer(t), nil)
	written := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("blocked"))
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("Write returned without a window: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	pc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeInternal) })
	select {
	case err := <-written:
		assert.ErrorIs(t, err, syscall.ECONNRESET)
	case <-time.After(5 * time.Second):
		t.Fatal("the reset did not end the Write")
	}
}

// TestDialHTTP2StreamDeadlines: a Write blocked by flow control and a
// Read with nothing to read time out as net.Conn's do, and work again
// once the deadlines are cleared.
func TestDialHTTP2StreamDeadlines(t *testing.T) {
	p := newH2Peer(t, enableConnect, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c, pc, id := openPeerStream(t, p, p.dialer(t), nil)
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Millisecond)))
	n, err := c.Write([]byte("later"))
	assert.Zero(t, n)
	assert.True(t, isTimeout(err), "%v", err)
	_, err = c.Read(make([]byte, 1))
	assert.True(t, isTimeout(err), "%v", err)

	require.NoError(t, c.SetDeadline(time.Time{}))
	pc.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 100) })
	roundTripPeer(t, c, pc, id, "later")
}

// TestDialHTTP2ResponseHeaderTooLarge: a response header list over
// MaxHeaderBytes fails the Dial and resets the stream; the connection
// carries the next.
func TestDialHTTP2ResponseHeaderTooLarge(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	d.MaxHeaderBytes = 1024
	ch := dialAsync(t, d, p.url, echo1)
	pc := p.conn(t)
	h := pc.next(http2.FrameHeaders)
	pc.respond(h.stream, "200", false, 0, hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 1500)})
	r := dialResult{}.wait(t, ch)
	require.Error(t, r.err)
	assert.Contains(t, r.err.Error(), "response header fields over 1024 bytes")
	rst := pc.next(http2.FrameRSTStream)
	assert.Equal(t, h.stream, rst.stream)

	c, _, _ := openPeerStream(t, p, d, pc)
	c.Close()
	assert.Equal(t, int32(1), p.accepts.Load())
}

// TestDialHTTP2Continuation: header blocks larger than a frame go in
// CONTINUATION frames both ways.
func TestDialHTTP2Continuation(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	big := strings.Repeat("v", 40<<10)
	d.Header = map[string][]string{"X-Big": {big}}
	d.MaxHeaderBytes = 1 << 20
	ch := dialAsync(t, d, p.url, echo1)
	pc := p.conn(t)
	h := pc.next(http2.FrameHeaders)
	assert.GreaterOrEqual(t, h.continuations, 2, "40 KiB in frames of 16 KiB")
	var got string
	for _, f := range h.fields {
		if f.Name == "x-big" {
			got = f.Value
		}
	}
	assert.Equal(t, big, got)
	pc.respond(h.stream, "200", false, 100, hpack.HeaderField{Name: "x-reply", Value: strings.Repeat("r", 1000)})
	c := awaitDial(t, ch)
	assert.Equal(t, strings.Repeat("r", 1000), c.Response.Header.Get("X-Reply"))
}

// TestDialHTTP2ContinuationFlood: a header block that goes on in
// CONTINUATION frames past MaxHeaderBytes ends the connection with a
// GOAWAY, and the Dial fails, without reading it all.
func TestDialHTTP2ContinuationFlood(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	d.MaxHeaderBytes = 4096
	ch := dialAsync(t, d, p.url, echo1)
	pc := p.conn(t)
	h := pc.next(http2.FrameHeaders)
	pc.write(func(fr *http2.Framer) error {
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		for range 1000 {
			_ = enc.WriteField(hpack.HeaderField{Name: "x-pad", Value: strings.Repeat("p", 1000), Sensitive: true})
		}
		b := block.Bytes()
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.stream, BlockFragment: b[:1000]}); err != nil {
			return err
		}
		for b = b[1000:]; len(b) > 1000; b = b[1000:] {
			if err := fr.WriteContinuation(h.stream, false, b[:1000]); err != nil {
				return nil // the client has closed the connection
			}
		}
		return nil
	})
	r := dialResult{}.wait(t, ch)
	require.Error(t, r.err)
	assert.Contains(t, r.err.Error(), "PROTOCOL_ERROR")
	pc.waitEnd(http2.FrameGoAway) // the connection is closed
}

// TestDialHTTP2IdleTimeout: a connection left without streams is closed
// after IdleConnTimeout.
func TestDialHTTP2IdleTimeout(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	d.HTTP2.IdleConnTimeout = 50 * time.Millisecond
	c, pc, _ := openPeerStream(t, p, d, nil)
	require.NoError(t, c.Close())
	start := time.Now()
	pc.waitEnd(http2.FrameData)
	assert.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond)
}

// gatedConn is a client connection whose Writes, while gate is set, wait
// after sending their bytes until gate is closed.
type gatedConn struct {
	net.Conn
	gate atomic.Pointer[chan struct{}]
}

func (g *gatedConn) Write(p []byte) (int, error) {
	n, err := g.Conn.Write(p)
	if ch := g.gate.Load(); ch != nil {
		select {
		case <-*ch:
		case <-time.After(5 * time.Second):
		}
	}
	return n, err
}

// TestDialHTTP2WriteSentThenReset: a Write whose last DATA frame was sent
// succeeds even if the server resets the stream before the Write returns
// (as a server does when its handler ends on the close frame that Write
// carried); the next Write fails.
func TestDialHTTP2WriteSentThenReset(t *testing.T) {
	p := newH2Peer(t, enableConnect)
	d := p.dialer(t)
	var gc *gatedConn
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := new(net.Dialer).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		gc = &gatedConn{Conn: nc}
		return gc, nil
	}
	c, pc, id := openPeerStream(t, p, d, nil)
	gate := make(chan struct{})
	gc.gate.Store(&gate)
	written := make(chan error, 1)
	go func() {
		n, err := c.Write([]byte("goodbye"))
		if err == nil && n != len("goodbye") {
			err = fmt.Errorf("wrote %d bytes", n)
		}
		written <- err
	}()
	assert.Equal(t, "goodbye", string(pc.next(http2.FrameData).data))
	pc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeNo) })
	s := stream(c)
	require.Eventually(t, func() bool {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		return s.err != nil
	}, 5*time.Second, time.Millisecond, "the client took the reset")
	gc.gate.Store(nil)
	close(gate)
	assert.NoError(t, <-written, "the bytes were sent")
	_, err := c.Write([]byte("x"))
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}
