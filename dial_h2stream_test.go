package upgrade

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
	s := &h2Stream{c: &h2Conn{local: local, remote: remote}}
	err := s.opError("read", os.ErrDeadlineExceeded)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "tcp", oe.Net)
	assert.Equal(t, local, oe.Source)
	assert.Equal(t, remote, oe.Addr)
	assert.True(t, oe.Timeout())
}
