package upgrade

import (
	"context"
	"sync"
	"sync/atomic"
)

// tracker accounts for switched connections, for caps and graceful
// shutdown: the slots reserved by switches in progress and by the Conns
// being served (counted per key, such as a registered pattern), the
// signal that shutdown has started, and the lifetime context cancelled
// when the connections are closed. Its zero value is ready to use.
type tracker struct {
	mu    sync.Mutex
	conns map[*Conn]struct{} // Conns being served
	byKey map[string]int     // slots in use, per key
	inuse int                // slots in use, in all
	idle  chan struct{}      // closed when inuse drops to 0 during shutdown

	once    sync.Once
	life    context.Context    // cancelled when the connections are closed
	cancel  context.CancelFunc // cancels life
	drain   chan struct{}      // closed when shutdown starts
	closing atomic.Bool        // set when shutdown starts
}

// lifetime returns the context cancelled when the tracked connections are
// closed, and the channel closed when shutdown starts.
func (t *tracker) lifetime() (context.Context, chan struct{}) {
	t.once.Do(func() {
		t.life, t.cancel = context.WithCancel(context.Background())
		t.drain = make(chan struct{})
	})
	return t.life, t.drain
}

// startDraining refuses new connections from now on and closes the
// channel Conn.Draining returns, once.
func (t *tracker) startDraining() {
	_, drain := t.lifetime()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closing.Load() {
		t.closing.Store(true)
		close(drain)
	}
}

// reserve claims a slot for key before a switch; false if maxAll slots in
// all, or maxKey for key, are in use (zero means no cap).
func (t *tracker) reserve(key string, maxKey, maxAll int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if maxAll > 0 && t.inuse >= maxAll {
		return false
	}
	if maxKey > 0 && t.byKey[key] >= maxKey {
		return false
	}
	if t.byKey == nil {
		t.byKey = make(map[string]int)
	}
	t.byKey[key]++
	t.inuse++
	return true
}

// release gives back a slot claimed by reserve. It reports false if no
// slot was in use: a bug in the caller.
func (t *tracker) release(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.releaseLocked(key)
}

func (t *tracker) releaseLocked(key string) bool {
	if t.inuse <= 0 {
		return false
	}
	t.inuse--
	if n := t.byKey[key] - 1; n > 0 {
		t.byKey[key] = n
	} else {
		delete(t.byKey, key)
	}
	if t.inuse == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	return true
}

// track records c, whose slot for c.key is reserved, as served, and gives
// it the lifetime context and the drain signal (through c.trk); false if
// shutdown has started.
func (t *tracker) track(c *Conn) bool {
	c.trk = t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing.Load() {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[*Conn]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

// adopt records c, whose slot for c.key is reserved, as served, even if
// shutdown has started: for a switch the peer already knows of. Shutdown
// waits for it as for any other, and closes it when its grace ends.
func (t *tracker) adopt(c *Conn) {
	c.trk = t
	life, _ := t.lifetime()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = make(map[*Conn]struct{})
	}
	t.conns[c] = struct{}{}
	if life.Err() != nil {
		// The grace period is over already: close it now, as closeAll
		// would have.
		c.nc.Close()
	}
}

// untrack forgets c and releases its slot, which ends a shutdown waiting
// for the last one. It reports false if the slot was not in use.
func (t *tracker) untrack(c *Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	return t.releaseLocked(c.key)
}

// active returns the slots in use, per key.
func (t *tracker) active() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int, len(t.byKey))
	for k, v := range t.byKey {
		m[k] = v
	}
	return m
}

// shutdown starts draining and waits until no slot is in use, or until
// ctx ends: then it closes the connections and returns ctx.Err().
func (t *tracker) shutdown(ctx context.Context) error {
	t.startDraining()
	t.mu.Lock()
	if t.inuse == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		t.closeAll()
		return ctx.Err()
	}
}

// closeAll cancels the tracked connections' Contexts and closes them.
// It closes them outside the lock: closing a delegated switch's
// connection untracks it.
func (t *tracker) closeAll() {
	t.lifetime()
	t.cancel()
	t.mu.Lock()
	conns := make([]*Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
}

// rekey moves a slot claimed by reserve from one key to another.
func (t *tracker) rekey(from, to string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if from == to || t.byKey[from] == 0 {
		return
	}
	if t.byKey[from]--; t.byKey[from] == 0 {
		delete(t.byKey, from)
	}
	t.byKey[to]++
}
