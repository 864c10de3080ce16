package upgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// h2Stream is the net.Conn of a protocol switched on an HTTP/2 stream
// with extended CONNECT (RFC 8441): Read returns the DATA the server sends
// (the response body), Write hands bytes to the transport as DATA of the
// request (through a bodyPipe), CloseWrite ends the request with
// END_STREAM, and Close resets the stream (RST_STREAM CANCEL). The TCP
// connection under it is shared with other streams and never exposed.
//
// golang.org/x/net/http2 has no deadlines for a stream, so they are kept
// here, with the semantics of net.Conn: they apply to pending and future
// calls, can be extended or cleared after they expired, and a call they
// interrupt fails with an error wrapping os.ErrDeadlineExceeded whose
// Timeout method reports true. A Read they interrupt loses nothing: a
// pump goroutine reads the response body on the Read's behalf, and what
// it gets after the Read gave up is returned by the next Read.
type h2Stream struct {
	body   io.ReadCloser      // the response body: the server's side of the stream
	pipe   *bodyPipe          // the request body: ours
	cancel context.CancelFunc // cancels the stream's context
	local  net.Addr
	remote net.Addr

	rd, wd    deadline
	closed    chan struct{} // closed by Close
	closeOnce sync.Once

	// The read side. Read holds rmu; a Read asks the pump for at most n
	// bytes by sending n on demand, and the pump answers on ready once
	// chunk and chunkErr are set. Only one demand is outstanding at a
	// time (waiting), so a Read that gave up leaves the answer to the
	// next one.
	rmu      sync.Mutex
	pending  []byte // bytes read from the body, not yet returned
	rerr     error  // the body's error, returned once pending is empty
	waiting  bool   // a demand has not been answered yet
	pumping  bool   // the pump goroutine was started
	demand   chan int
	ready    chan struct{}
	pumpDone chan struct{}
	buf      []byte // the pump's buffer; chunk is a prefix of it
	chunk    []byte
	chunkErr error
}

// maxStreamChunk bounds what the pump reads from the body for one Read,
// and so the buffer it keeps.
const maxStreamChunk = 32 << 10

// closeStreamWait bounds how long Close waits for the transport to finish
// with the stream (normally at once); past it, the stream's context is
// cancelled, which ends the wait.
const closeStreamWait = time.Second

func newH2Stream(body io.ReadCloser, pipe *bodyPipe, cancel context.CancelFunc, local, remote net.Addr) *h2Stream {
	return &h2Stream{
		body:     body,
		pipe:     pipe,
		cancel:   cancel,
		local:    local,
		remote:   remote,
		closed:   make(chan struct{}),
		demand:   make(chan int, 1),
		ready:    make(chan struct{}),
		pumpDone: make(chan struct{}),
	}
}

// Read reads the data the server sent on the stream. It returns io.EOF
// once the server has ended its side of the stream (END_STREAM).
func (s *h2Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for {
		if len(s.pending) > 0 {
			n := copy(p, s.pending)
			s.pending = s.pending[n:]
			return n, nil
		}
		if s.rerr != nil {
			return 0, s.rerr
		}
		select {
		case <-s.closed:
			return 0, s.opError("read", net.ErrClosed)
		case <-s.rd.done():
			return 0, s.opError("read", os.ErrDeadlineExceeded)
		default:
		}
		if len(p) == 0 {
			return 0, nil
		}
		if !s.waiting {
			if !s.pumping {
				s.pumping = true
				go s.pump()
			}
			s.demand <- len(p) // never blocks: the buffer is free when nothing is waiting
			s.waiting = true
		}
		select {
		case <-s.ready:
		case <-s.closed:
			return 0, s.opError("read", net.ErrClosed)
		case <-s.rd.done():
			return 0, s.opError("read", os.ErrDeadlineExceeded)
		}
		s.waiting = false
		s.pending = s.chunk
		switch err := s.chunkErr; {
		case err == io.EOF:
			s.rerr = io.EOF
		case err != nil:
			s.rerr = s.opError("read", err)
		}
	}
}

// pump reads the response body for Read, one demand at a time, until the
// body fails or ends, or the stream is closed. Between a demand and its
// answer it owns buf, chunk and chunkErr; the channel operations hand
// them over.
func (s *h2Stream) pump() {
	defer close(s.pumpDone)
	for {
		var n int
		select {
		case n = <-s.demand:
		case <-s.closed:
			return
		}
		n = min(n, maxStreamChunk)
		if len(s.buf) < n {
			s.buf = make([]byte, n)
		}
		m, err := s.body.Read(s.buf[:n])
		s.chunk, s.chunkErr = s.buf[:m], err
		select {
		case s.ready <- struct{}{}:
		case <-s.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

// Write sends p on the stream. It returns once the transport has taken
// every byte (it may still be waiting for flow-control credit to send the
// last of them), or fails with the bytes taken so far.
func (s *h2Stream) Write(p []byte) (int, error) {
	n, err := s.pipe.write(p, &s.wd)
	if err != nil {
		err = s.opError("write", err)
	}
	return n, err
}

// CloseWrite ends the stream in the client-to-server direction
// (END_STREAM): the server reads EOF, and Read still returns what it
// sends. Later Writes fail.
func (s *h2Stream) CloseWrite() error {
	select {
	case <-s.closed:
		return s.opError("close", net.ErrClosed)
	default:
	}
	s.pipe.closeWith(io.EOF, errWriteClosed)
	return nil
}

// Close resets the stream (RST_STREAM CANCEL) unless both sides have ended
// it, and waits, bounded, for the transport to forget it. Pending Reads
// and Writes fail with net.ErrClosed.
func (s *h2Stream) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		close(s.closed)
		// A body read error other than io.EOF makes the transport reset
		// the stream at once; the response body's Close resets it too,
		// and waits until the transport has forgotten it. Cancelling the
		// context alone would not do: the transport notices it only when
		// its Read of an idle request body returns.
		s.pipe.closeWith(net.ErrClosed, net.ErrClosed)
		t := time.AfterFunc(closeStreamWait, s.cancel)
		_ = s.body.Close()
		t.Stop()
		s.cancel()
		s.rmu.Lock() // a Read holding it returns at once: s.closed is closed
		pumping := s.pumping
		s.rmu.Unlock()
		if pumping {
			<-s.pumpDone
		}
	})
	if !first {
		return s.opError("close", net.ErrClosed)
	}
	return nil
}

// LocalAddr returns the local address of the shared connection.
func (s *h2Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr returns the remote address of the shared connection.
func (s *h2Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline sets the read and write deadlines of the stream.
func (s *h2Stream) SetDeadline(t time.Time) error {
	s.rd.set(t)
	s.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline of the stream.
func (s *h2Stream) SetReadDeadline(t time.Time) error {
	s.rd.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline of the stream.
func (s *h2Stream) SetWriteDeadline(t time.Time) error {
	s.wd.set(t)
	return nil
}

func (s *h2Stream) opError(op string, err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return err
	}
	return &net.OpError{Op: op, Net: s.local.Network(), Source: s.local, Addr: s.remote, Err: err}
}

// errStreamEnded is the error of a Write after the transport stopped
// reading the request body: the stream was reset or the connection lost.
var errStreamEnded = errors.New("HTTP/2 stream ended")

// bodyPipe is the request body of an extended CONNECT: the transport
// reads it and sends what it reads as DATA frames. It is io.Pipe with a
// write deadline: a Write hands its bytes over directly, so a Write the
// deadline interrupts has given away exactly the bytes it reports, and
// none of p is touched after it returns.
type bodyPipe struct {
	wmu  sync.Mutex // serializes writes
	wrCh chan []byte
	rdCh chan int

	once sync.Once
	done chan struct{} // closed by closeWith
	rerr error         // for Read, once done is closed
	werr error         // for write, once done is closed
}

func newBodyPipe() *bodyPipe {
	return &bodyPipe{wrCh: make(chan []byte), rdCh: make(chan int), done: make(chan struct{})}
}

// Read is the transport's: it takes bytes from a pending write.
func (p *bodyPipe) Read(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, p.rerr
	default:
	}
	select {
	case bw := <-p.wrCh:
		n := copy(b, bw)
		p.rdCh <- n
		return n, nil
	case <-p.done:
		return 0, p.rerr
	}
}

// Close is the transport's: it is done with the body, because the stream
// ended or failed. Writes fail from now on.
func (p *bodyPipe) Close() error {
	p.closeWith(io.ErrClosedPipe, errStreamEnded)
	return nil
}

// closeWith makes Read return rerr and write werr, unless the pipe was
// closed already.
func (p *bodyPipe) closeWith(rerr, werr error) {
	p.once.Do(func() {
		p.rerr, p.werr = rerr, werr
		close(p.done)
	})
}

// write hands b to the transport's Reads, until all of it was taken, the
// pipe is closed or the deadline d expires.
func (p *bodyPipe) write(b []byte, d *deadline) (n int, err error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	select {
	case <-p.done:
		return 0, p.werr
	case <-d.done():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	for len(b) > 0 {
		select {
		case p.wrCh <- b:
			nw := <-p.rdCh
			b = b[nw:]
			n += nw
		case <-p.done:
			return n, p.werr
		case <-d.done():
			return n, os.ErrDeadlineExceeded
		}
	}
	return n, nil
}
