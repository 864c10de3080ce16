package upgrade

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"time"
)

// The 101 response of an HTTP/1.1 switch is assembled on net/http's
// goroutine but written by the protocol's: the Conn holds it until the
// handler's first Write and writes the two together, in one write and so
// usually in one TCP segment (a hand-written hijack, which does not know
// what the protocol writes first, needs two). It is written alone before
// the handler's first Read, Close, CloseWrite, Set*Deadline or NetConn,
// when the handler returns, or, for a handler that does none of these
// promptly, by the Server after at most 2×lateSwitch (handoff.go). Nothing
// changes on the wire but the number of segments.
//
// HandshakeTimeout bounds writing the 101 as before. The write is first
// tried without waiting, which on a TCP connection needs no deadline: the
// socket takes a few hundred bytes at once unless the peer has stopped
// reading. Only what it does not take is written under a write deadline of
// HandshakeTimeout, cleared afterwards. A 101 that cannot be written
// closes the connection, and the handler's call returns the error.

// maxSwitchBuf bounds the capacity of the buffers a 101 is assembled in,
// and so the largest first Write that goes out with it.
const maxSwitchBuf = 1024

// build101 assembles, in a bufPool buffer, the 101 response switching to
// p with the Accepter's fields extra, preceded by a 100 Continue if the
// client expects one and net/http has not sent it. It fails if extra has
// a field that is invalid, or that a 101 cannot carry or the Server
// writes itself.
func build101(p Protocol, sendContinue bool, extra http.Header) (*[]byte, error) {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	if sendContinue {
		b = append(b, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "...)
	b = p.appendTo(b)
	b = append(b, "\r\nConnection: Upgrade\r\n"...)
	var err error
	if len(extra) == 1 {
		for k, vs := range extra {
			if err = checkSwitchField(k, vs); err == nil {
				b = appendField(b, k, vs)
			}
		}
	} else if len(extra) > 1 {
		b, err = appendSorted(b, extra)
	}
	b = append(b, "\r\n"...)
	*bp = b
	return bp, err
}

// recycle101 puts a 101's buffer back in bufPool, unless an Accepter's
// large fields made it grow.
func recycle101(bp *[]byte) {
	if cap(*bp) > maxSwitchBuf {
		return
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}

// appendField appends the lines of one header field in wire form.
func appendField(b []byte, k string, vs []string) []byte {
	for _, v := range vs {
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return b
}

// appendSorted checks the fields of h and appends them in wire form,
// sorted by name so that the output is deterministic.
//
//go:noinline
func appendSorted(b []byte, h http.Header) ([]byte, error) {
	if err := checkSwitchHeader(h); err != nil {
		return b, err
	}
	return appendSortedFields(b, h), nil
}

// appendSortedFields appends the fields of h, which must have been
// validated, in wire form, sorted by name.
func appendSortedFields(b []byte, h http.Header) []byte {
	var small [8]string
	keys := small[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return appendFields(b, h, keys)
}

// writeSwitch writes the held 101 and then p: in one write when p fits in
// the buffer the 101 is in. With p nil, it writes the 101 alone. It is on
// the protocol goroutine's first Write, where a deeper stack than a plain
// Write's would have to grow (2 KiB to start with): the rare paths are
// out of line.
func (c *Conn) writeSwitch(p []byte) (int, error) {
	c.swmu.Lock()
	bp := c.sw.Load()
	if bp == nil {
		c.swmu.Unlock()
		if p == nil {
			return 0, nil
		}
		return c.nc.Write(p)
	}
	b := *bp
	head := len(b)
	together := len(p) <= cap(b)-head
	if together {
		b = append(b, p...)
	}
	n, raw := writeNow(c.nc, b)
	var err error
	if n < len(b) {
		n, err = c.writeRest(b, n, head, raw)
	}
	c.sw.Store(nil)
	c.swmu.Unlock()
	*bp = b
	recycle101(bp)
	switch {
	case n < head:
		return 0, err
	case together:
		return n - head, err
	}
	return c.nc.Write(p)
}

// flushSwitch writes the held 101, if it has not been written yet.
func (c *Conn) flushSwitch() error {
	_, err := c.writeSwitch(nil)
	return err
}

// writeRest writes b[n:] when writeNow could not: its first head bytes
// are the 101 response, written under a deadline of HandshakeTimeout; the
// rest, the handler's, as any write. If the 101 cannot be written, the
// connection is closed.
//
//go:noinline
func (c *Conn) writeRest(b []byte, n, head int, raw bool) (int, error) {
	var err error
	if n < head {
		s := c.route.srv
		timeout := s.handshakeTimeout()
		if timeout > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
		}
		end := head
		if !raw {
			// A TLS connection, say: the whole buffer at once, the
			// handler's bytes included, to keep one record.
			end = len(b)
		}
		var m int
		m, err = c.nc.Write(b[n:end])
		n += m
		if n >= head && timeout > 0 {
			if e := c.nc.SetWriteDeadline(time.Time{}); err == nil {
				err = e
			}
		}
		if n < head {
			if !errors.Is(err, net.ErrClosed) {
				// Not logPeerError: the handler may have dropped
				// c.Request.
				s.logger().Warn("upgrade: writing the 101 response for "+c.route.spelled,
					"remote", c.RemoteAddr().String(), "err", err)
			}
			c.nc.Close()
			return n, err
		}
	}
	if err == nil && n < len(b) {
		var m int
		m, err = c.nc.Write(b[n:])
		n += m
	}
	return n, err
}
