package upgrade

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Peer is a scripted HTTP/2 server on 127.0.0.1 for frame-level tests
// of the client, with prior knowledge: each connection gets settings as
// the server's first SETTINGS frame, the client's SETTINGS are
// acknowledged, and everything else is up to the test, which reads what
// the client sent with next and writes frames with the h2PeerConn's
// methods. DATA is sent within the client's flow-control windows.
type h2Peer struct {
	rawServer
	url      string
	settings []http2.Setting
	conns    chan *h2PeerConn
}

// h2PeerConn is one connection of an h2Peer.
type h2PeerConn struct {
	t      *testing.T
	nc     net.Conn
	fr     *http2.Framer
	frames chan peerFrame // what the client sent, in order

	wmu  sync.Mutex // guards fr's writes, enc and hbuf
	enc  *hpack.Encoder
	hbuf bytes.Buffer

	mu         sync.Mutex
	cond       *sync.Cond
	window     map[uint32]int64 // the client's stream windows for our DATA
	connWindow int64
	initWindow int64
	settings   []http2.Setting // the client's first SETTINGS
	readErr    error
}

// peerFrame is a frame the client sent, decoded.
type peerFrame struct {
	typ           http2.FrameType
	stream        uint32
	fields        []hpack.HeaderField // HEADERS, with its CONTINUATION frames
	continuations int
	data          []byte
	end           bool // END_STREAM
	code          http2.ErrCode
	ack           bool
	ping          [8]byte
	inc           uint32
}

func newH2Peer(t *testing.T, settings ...http2.Setting) *h2Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &h2Peer{url: "http://" + ln.Addr().String(), settings: settings, conns: make(chan *h2PeerConn, 8)}
	p.start(ln, func(nc net.Conn) { p.serve(t, nc) })
	t.Cleanup(p.close)
	return p
}

// dialer returns a Dialer for p with a transport of its own.
func (p *h2Peer) dialer(t *testing.T) Dialer {
	return Dialer{Proxy: noProxy, HandshakeTimeout: 5 * time.Second, HTTP2: newTransport(t)}
}

// conn returns the next connection the client opened.
func (p *h2Peer) conn(t *testing.T) *h2PeerConn {
	t.Helper()
	select {
	case pc := <-p.conns:
		return pc
	case <-time.After(5 * time.Second):
		t.Fatal("the client opened no connection")
		return nil
	}
}

func (p *h2Peer) serve(t *testing.T, nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != http2.ClientPreface {
		nc.Close()
		return
	}
	pc := &h2PeerConn{
		t: t, nc: nc, fr: http2.NewFramer(nc, nc), frames: make(chan peerFrame, 4096),
		window: make(map[uint32]int64), connWindow: h2InitialWindow, initWindow: h2InitialWindow,
	}
	pc.cond = sync.NewCond(&pc.mu)
	pc.enc = hpack.NewEncoder(&pc.hbuf)
	pc.write(func(fr *http2.Framer) error { return fr.WriteSettings(p.settings...) })
	p.conns <- pc
	pc.readLoop()
}

func (pc *h2PeerConn) readLoop() {
	defer close(pc.frames)
	dec := hpack.NewDecoder(4096, nil)
	var block []byte
	var headers *peerFrame
	for {
		f, err := pc.fr.ReadFrame()
		if err != nil {
			pc.mu.Lock()
			pc.readErr = err
			pc.cond.Broadcast()
			pc.mu.Unlock()
			return
		}
		pf := peerFrame{typ: f.Header().Type, stream: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			pf.ack = f.IsAck()
			if !f.IsAck() {
				pc.mu.Lock()
				first := pc.settings == nil
				_ = f.ForeachSetting(func(s http2.Setting) error {
					if first {
						pc.settings = append(pc.settings, s)
					}
					if s.ID == http2.SettingInitialWindowSize {
						delta := int64(s.Val) - pc.initWindow
						pc.initWindow = int64(s.Val)
						for id := range pc.window {
							pc.window[id] += delta
						}
					}
					return nil
				})
				pc.cond.Broadcast()
				pc.mu.Unlock()
				pc.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.HeadersFrame:
			pf.end = f.StreamEnded()
			block = append(block[:0], f.HeaderBlockFragment()...)
			headers = &pf
			if !f.HeadersEnded() {
				continue
			}
		case *http2.ContinuationFrame:
			block = append(block, f.HeaderBlockFragment()...)
			headers.continuations++
			if !f.HeadersEnded() {
				continue
			}
			pf = *headers
		case *http2.DataFrame:
			pf.data = bytes.Clone(f.Data())
			pf.end = f.StreamEnded()
		case *http2.RSTStreamFrame:
			pf.code = f.ErrCode
		case *http2.GoAwayFrame:
			pf.code = f.ErrCode
		case *http2.PingFrame:
			pf.ack, pf.ping = f.IsAck(), f.Data
		case *http2.WindowUpdateFrame:
			pf.inc = f.Increment
			pc.mu.Lock()
			if f.StreamID == 0 {
				pc.connWindow += int64(f.Increment)
			} else {
				pc.window[f.StreamID] += int64(f.Increment)
			}
			pc.cond.Broadcast()
			pc.mu.Unlock()
		}
		if pf.typ == http2.FrameHeaders || pf.typ == http2.FrameContinuation {
			fields, err := dec.DecodeFull(block)
			if err != nil {
				pc.t.Errorf("decoding the client's header block: %v", err)
			}
			pf.typ, pf.fields = http2.FrameHeaders, fields
			pc.mu.Lock()
			if _, ok := pc.window[pf.stream]; !ok {
				pc.window[pf.stream] = pc.initWindow
			}
			pc.mu.Unlock()
		}
		pc.frames <- pf
	}
}

// next returns the next frame of type typ the client sent, skipping
// SETTINGS, WINDOW_UPDATE and frames of other types.
func (pc *h2PeerConn) next(typ http2.FrameType) peerFrame {
	pc.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-pc.frames:
			if !ok {
				pc.t.Fatalf("the connection ended before a %v frame", typ)
			}
			if f.typ == typ {
				return f
			}
		case <-timeout:
			pc.t.Fatalf("no %v frame from the client", typ)
		}
	}
}

// waitEnd waits until the client closes the connection, and returns the
// frames of type typ it sent before.
func (pc *h2PeerConn) waitEnd(typ http2.FrameType) []peerFrame {
	pc.t.Helper()
	var got []peerFrame
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-pc.frames:
			if !ok {
				return got
			}
			if f.typ == typ {
				got = append(got, f)
			}
		case <-timeout:
			pc.t.Fatal("the client did not close the connection")
		}
	}
}

func (pc *h2PeerConn) write(f func(fr *http2.Framer) error) {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	if err := f(pc.fr); err != nil && !errors.Is(err, net.ErrClosed) {
		pc.t.Logf("peer write: %v", err)
	}
}

// respond sends a response header block on stream, split into frames of
// at most split bytes (a HEADERS frame then CONTINUATION frames) if
// split > 0.
func (pc *h2PeerConn) respond(stream uint32, status string, end bool, split int, extra ...hpack.HeaderField) {
	pc.write(func(fr *http2.Framer) error {
		pc.hbuf.Reset()
		_ = pc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
		for _, f := range extra {
			_ = pc.enc.WriteField(f)
		}
		block := pc.hbuf.Bytes()
		if split <= 0 {
			split = len(block)
		}
		first := block[:min(split, len(block))]
		block = block[len(first):]
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
			return err
		}
		for len(block) > 0 {
			frag := block[:min(split, len(block))]
			block = block[len(frag):]
			if err := fr.WriteContinuation(stream, len(block) == 0, frag); err != nil {
				return err
			}
		}
		return nil
	})
}

// send sends b on stream as DATA, waiting for the client's windows.
func (pc *h2PeerConn) send(stream uint32, b []byte, end bool) {
	pc.t.Helper()
	for len(b) > 0 || end {
		var n int64
		pc.mu.Lock()
		deadline := time.Now().Add(10 * time.Second)
		for n = min(int64(len(b)), pc.window[stream], pc.connWindow, 16<<10); n <= 0 && len(b) > 0; n = min(int64(len(b)), pc.window[stream], pc.connWindow, 16<<10) {
			if pc.readErr != nil || time.Now().After(deadline) {
				pc.mu.Unlock()
				pc.t.Fatalf("stream %d: no window to send %d bytes", stream, len(b))
			}
			pc.waitLocked(deadline)
		}
		pc.window[stream] -= n
		pc.connWindow -= n
		pc.mu.Unlock()
		last := end && int(n) == len(b)
		pc.write(func(fr *http2.Framer) error { return fr.WriteData(stream, last, b[:n]) })
		b = b[n:]
		if last {
			return
		}
	}
}

// waitLocked waits on cond, at most until deadline.
func (pc *h2PeerConn) waitLocked(deadline time.Time) {
	t := time.AfterFunc(time.Until(deadline), func() {
		pc.mu.Lock()
		pc.cond.Broadcast()
		pc.mu.Unlock()
	})
	pc.cond.Wait()
	t.Stop()
}

// windows returns the client's window for stream and the connection's.
func (pc *h2PeerConn) windows(stream uint32) (int64, int64) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.window[stream], pc.connWindow
}

// clientSettings waits for the client's first SETTINGS and returns them.
func (pc *h2PeerConn) clientSettings() map[http2.SettingID]uint32 {
	pc.t.Helper()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for pc.settings == nil && pc.readErr == nil && time.Now().Before(deadline) {
		pc.waitLocked(deadline)
	}
	m := make(map[http2.SettingID]uint32)
	for _, s := range pc.settings {
		m[s.ID] = s.Val
	}
	return m
}
