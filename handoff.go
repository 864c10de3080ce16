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

// switches hands switched connections over to the goroutines that serve
// them, and keeps those whose 101 may still be held for the timer that
// writes late ones. A go statement with arguments allocates their closure;
// serveNext takes none and pops a Conn instead: each start pushes exactly
// one before starting one goroutine, so there is always one to pop.
var switches struct {
	mu      sync.Mutex
	ready   []*Conn     // pushed by start, popped by serveNext
	recent  []*Conn     // started since the last tick
	older   []*Conn     // started before the last tick: due at the next
	timer   *time.Timer // runs tick while recent or older is not empty
	ticking bool
}

// start serves c with its route's handler in a goroutine of its own.
func (s *Server) start(c *Conn) {
	switches.mu.Lock()
	switches.ready = append(switches.ready, c)
	if c.sw.Load() != nil {
		switches.recent = append(switches.recent, c)
		if !switches.ticking {
			switches.ticking = true
			if switches.timer == nil {
				switches.timer = time.AfterFunc(lateSwitch, tick)
			} else {
				switches.timer.Reset(lateSwitch)
			}
		}
	}
	switches.mu.Unlock()
	go serveNext()
}

// serveNext serves the Conn last pushed by start: Server.run, inlined for
// a frame less under the handler.
func serveNext() {
	c := popReady()
	defer c.route.srv.served(c)
	c.route.Handler.ServeUpgrade(c)
}

func popReady() *Conn {
	switches.mu.Lock()
	n := len(switches.ready) - 1
	c := switches.ready[n]
	switches.ready[n] = nil
	switches.ready = switches.ready[:n]
	switches.mu.Unlock()
	return c
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
