package reverseproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-upgrade/upgrade/internal/h2stream"
)

// A pair is a client connection and a backend connection a Proxy relays
// between once both have switched.
type pair struct {
	p       *Proxy
	client  *side // tracked: Close and Shutdown's end close it
	backend *side
	key     string // the tracker key of the pair's slot: its protocol
	rec     proxyLog
	start   time.Time

	// stream is set when the client is a stream of net/http's HTTP/2
	// server, which ends it only when the handler returns: the pair ends
	// as soon as either side does.
	stream bool

	// last is when a byte last moved, as time since start: written by
	// each direction after every burst, read by the idle timer.
	last atomic.Int64

	mu      sync.Mutex
	timer   *time.Timer // the idle timer; nil without IdleTimeout
	ended   bool        // the relay is over: the timer must not rearm
	endSide string      // the side that ended first: "client" or "backend"
	endErr  error       // how it ended: nil for EOF

	closeOnce sync.Once
	why       error // what closed the pair early, set in closeOnce
}

func newPair(p *Proxy, client, backend *side, key string, rec proxyLog) *pair {
	_, stream := client.nc.(*h2stream.Conn)
	return &pair{p: p, client: client, backend: backend, key: key, rec: rec, stream: stream, start: time.Now()}
}

// errIdle ends a pair that moved no byte for the proxy's IdleTimeout.
var errIdle = errors.New("idle timeout")

// relay copies bytes both ways until both directions are done, then
// closes both connections, releases the pair's slot and logs how the pair
// ended. It starts one goroutine for the client-to-backend direction.
//
// A half-close is passed on (CloseWrite) and the other direction goes on,
// except toward a client on net/http's HTTP/2 server: it ends the stream
// only when the handler returns, so the backend's EOF ends the pair
// (END_STREAM).
func (p *Proxy) relay(pr *pair) {
	defer p.conns.Untrack(pr.client, pr.key)
	if p.IdleTimeout > 0 {
		pr.mu.Lock()
		pr.timer = time.AfterFunc(p.IdleTimeout, pr.checkIdle)
		pr.mu.Unlock()
	}
	var up, down int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		up = pr.copy(pr.backend, pr.client, "client", "backend")
	}()
	down = pr.copy(pr.client, pr.backend, "backend", "client")
	if pr.stream {
		pr.close(nil, false)
	}
	<-done

	pr.mu.Lock()
	pr.ended = true
	if pr.timer != nil {
		pr.timer.Stop()
	}
	pr.mu.Unlock()
	pr.close(nil, false)

	how, err := pr.how()
	if err != nil {
		pr.rec.end(how, "sent", up, "received", down, "err", err)
		return
	}
	pr.rec.end(how, "sent", up, "received", down)
}

// copy relays src to dst, the sides named srcSide and dstSide: first the
// bytes src read ahead during the handshake, then the connection. At EOF
// it half-closes dst; on an error it closes both connections. It records
// which side ended and how, and returns the bytes copied.
func (pr *pair) copy(dst, src *side, srcSide, dstSide string) int64 {
	var n int64
	if len(src.ahead) > 0 {
		m, err := dst.nc.Write(src.ahead)
		n += int64(m)
		src.ahead = nil
		pr.touch()
		if err != nil {
			pr.fail(dstSide, err)
			return n
		}
	}
	m, err := copyConn(dst.nc, src.nc, pr.touch)
	n += m
	if err != nil {
		side := dstSide
		if isReadError(err) {
			side = srcSide
		}
		pr.fail(side, err)
		return n
	}
	pr.note(srcSide, nil)
	if err := closeWrite(dst.nc); err != nil {
		// A side that cannot half-close cannot be told the other is
		// done sending: end the pair.
		pr.note(dstSide, err)
		pr.close(err, false)
	}
	return n
}

// fail ends the pair on an error of side, passing a reset on as a reset.
func (pr *pair) fail(side string, err error) {
	pr.note(side, err)
	pr.close(err, isReset(err))
}

// note records that side ended, with err (nil: EOF), unless a side ended
// before it.
func (pr *pair) note(side string, err error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.endSide == "" {
		pr.endSide, pr.endErr = side, err
	}
}

// isReadError reports whether err, which ended a copy, came from reading
// (rather than writing).
func isReadError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read"
}

// touch records that bytes moved now.
func (pr *pair) touch() {
	pr.last.Store(int64(time.Since(pr.start)))
}

// checkIdle runs on the idle timer: it closes the pair if no byte moved
// for IdleTimeout, and rearms the timer for the rest of the period
// otherwise. Moving bytes costs only a clock read and a store: the timer
// fires once per period whatever the traffic.
func (pr *pair) checkIdle() {
	idle := pr.p.IdleTimeout
	quiet := time.Since(pr.start) - time.Duration(pr.last.Load())
	if quiet >= idle {
		pr.close(errIdle, false)
		return
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if !pr.ended {
		pr.timer.Reset(idle - quiet)
	}
}

// close closes both connections once, recording why when the pair ends
// early. With reset, each side is reset (SO_LINGER 0) rather than closed
// gracefully: a reset on one side is passed on to the other.
func (pr *pair) close(why error, reset bool) {
	pr.closeOnce.Do(func() {
		pr.why = why
		if reset {
			abort(pr.client.nc)
			abort(pr.backend.nc)
			return
		}
		pr.client.nc.Close()
		pr.backend.nc.Close()
	})
}

// abort closes c with a reset rather than gracefully: a TCP connection
// sends RST, and so does one under TLS, closed without the close_notify
// that would tell the peer the data ended cleanly; a stream that can be
// reset (an HTTP/2 stream, an HTTP/3 one of http3.Handler) is reset.
func abort(c net.Conn) {
	switch c := c.(type) {
	case *net.TCPConn:
		_ = c.SetLinger(0)
	case *tls.Conn:
		abort(c.NetConn())
		return
	case interface{ Reset() }:
		c.Reset()
	}
	c.Close()
}

// closeWrite shuts down the writing side of c, if it can: a TCP
// half-close, a TLS close_notify, or the end of a stream.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.ErrUnsupported}
}

// isReset reports whether err is a connection reset by the peer (or a
// write to a peer that has reset it).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// copyBufferSize is the buffer of a relay that cannot splice (TLS on
// either side, or not Linux).
const copyBufferSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyBuffered copies src to dst through a buffer until src's EOF (a nil
// error) or an error, calling moved after every write.
func copyBuffered(dst, src net.Conn, moved func()) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			moved()
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}
