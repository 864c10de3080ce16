// Package deadline implements the renewable read and write deadlines of
// connections that keep net.Conn's deadlines themselves (HTTP/2 streams):
// the server's stream Conn and the client's share it.
package deadline

import (
	"sync"
	"time"
)

// A Deadline is a renewable deadline: Done returns a channel that is
// closed once the deadline has passed, and a new deadline (or none)
// replaces it with an open one. Its zero value has no deadline.
type Deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{} // closed when the deadline passes; nil until first needed
	gen     uint64        // counts Set calls, so a stale timer does nothing
}

// Set sets the deadline to t; the zero t means none.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.expired == nil || isClosed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.expired)
		return
	}
	gen, ch := d.gen, d.expired
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

// Done returns a channel closed once the current deadline has passed; it
// is never closed while there is no deadline.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expired == nil {
		d.expired = make(chan struct{})
	}
	return d.expired
}

// Passed reports whether the current deadline has passed, without making
// the channel Done returns.
func (d *Deadline) Passed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired != nil && isClosed(d.expired)
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
