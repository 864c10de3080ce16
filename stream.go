package upgrade

import (
	"errors"
	"time"

	dl "github.com/go-upgrade/upgrade/internal/deadline"
)

// What the connections over HTTP/2 streams in this package share: the
// client's stream (dial_h2stream.go) and the bridge of a delegated route
// (delegate_stream.go).

// deadline is a renewable deadline, internal/deadline's, under the names
// the client's stream uses.
type deadline struct{ d dl.Deadline }

// set sets the deadline to t; the zero t means none.
func (d *deadline) set(t time.Time) { d.d.Set(t) }

// done returns a channel closed once the current deadline has passed.
func (d *deadline) done() <-chan struct{} { return d.d.Done() }

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// errWriteClosed is the error of a Write after CloseWrite.
var errWriteClosed = errors.New("write after CloseWrite")
