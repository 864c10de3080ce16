package upgrade

import (
	"sync"
	"time"
)

// lateSwitch is how long a 101 waits for its handler's first Write, Read
// or other call before the Server writes it anyway: between one and two
// times this. It matters only to handlers that wait for something else
// first, such as one that only pushes messages as they come. Tests change
// it, under switches.mu.
var lateSwitch = 5 * time.Millisecond

// switches keeps the connections whose 101 may still be held, for the
// timer that writes late ones.
var switches struct {
	mu      sync.Mutex
	recent  []*Conn     // started since the last tick
	older   []*Conn     // started before the last tick: due at the next
	timer   *time.Timer // runs tick while recent or older is not empty
	ticking bool
}

// start serves c with its route's handler in a goroutine of its own.
func (s *Server) start(c *Conn) {
	if c.sw.Load() != nil {
		switches.mu.Lock()
		switches.recent = append(switches.recent, c)
		if !switches.ticking {
			switches.ticking = true
			if switches.timer == nil {
				switches.timer = time.AfterFunc(lateSwitch, tick)
			} else {
				switches.timer.Reset(lateSwitch)
			}
		}
		switches.mu.Unlock()
	}
	go s.run(c)
}

// tick writes the 101 of the connections started before the last tick
// whose handlers have not written, read or returned since.
func tick() {
	switches.mu.Lock()
	defer switches.mu.Unlock()
	due := switches.older
	for i, c := range due {
		if c.sw.Load() != nil {
			go c.flushLate()
		}
		due[i] = nil
	}
	switches.older, switches.recent = switches.recent, due[:0]
	switches.ticking = len(switches.older) > 0
	if switches.ticking {
		switches.timer.Reset(lateSwitch)
	}
}

func (c *Conn) flushLate() { _ = c.flushSwitch() }
