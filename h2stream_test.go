package upgrade

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBodyPipeWriteDeadline: a Write cut short by its deadline reports
// exactly the bytes the reader took, and the rest are never read.
func TestBodyPipeWriteDeadline(t *testing.T) {
	p := newBodyPipe()
	var d deadline
	read := make(chan string, 1)
	go func() {
		b := make([]byte, 4)
		n, _ := p.Read(b)
		read <- string(b[:n])
	}()
	d.set(time.Now().Add(50 * time.Millisecond))
	n, err := p.write([]byte("0123456789"), &d)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Equal(t, 4, n)
	assert.Equal(t, "0123", <-read)

	// The deadline cleared, the next Write goes through.
	d.set(time.Time{})
	go func() {
		b := make([]byte, 16)
		n, _ := p.Read(b)
		read <- string(b[:n])
	}()
	n, err = p.write([]byte("456789"), &d)
	require.NoError(t, err)
	assert.Equal(t, 6, n)
	assert.Equal(t, "456789", <-read)

	p.closeWith(io.EOF, errWriteClosed)
	_, err = p.Read(make([]byte, 1))
	assert.Equal(t, io.EOF, err)
	_, err = p.write([]byte("x"), &d)
	assert.Equal(t, errWriteClosed, err)
}

// TestDeadlinePendingWait: expired, cleared, extended and then moved to
// the past while a wait is pending, renewed.
func TestDeadlinePendingWait(t *testing.T) {
	var d deadline
	expired := func() bool {
		select {
		case <-d.done():
			return true
		default:
			return false
		}
	}
	assert.False(t, expired())
	d.set(time.Now().Add(-time.Second))
	assert.True(t, expired())
	d.set(time.Time{})
	assert.False(t, expired(), "cleared after expiring")

	d.set(time.Now().Add(time.Hour))
	pending := d.done()
	d.set(time.Now().Add(2 * time.Hour)) // extended: the same wait goes on
	assert.False(t, expired())
	d.set(time.Now().Add(-time.Second)) // moved to the past: the pending wait ends
	select {
	case <-pending:
	case <-time.After(2 * time.Second):
		t.Fatal("a past deadline did not end the pending wait")
	}
	d.set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.done():
	case <-time.After(2 * time.Second):
		t.Fatal("a renewed deadline never expired")
	}
}

// TestStreamOpError: the stream's errors are *net.OpError naming the
// shared connection's addresses.
func TestStreamOpError(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
	s := newH2Stream(io.NopCloser(nil), newBodyPipe(), func() {}, local, remote)
	err := s.opError("read", os.ErrDeadlineExceeded)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "tcp", oe.Net)
	assert.Equal(t, local, oe.Source)
	assert.Equal(t, remote, oe.Addr)
	assert.True(t, oe.Timeout())
}
