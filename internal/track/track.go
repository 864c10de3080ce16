// Package track accounts for switched connections, for caps and graceful
// shutdown: the slots reserved by switches in progress and by the
// connections being served, counted per key (a registered pattern, a
// protocol), the signal that shutdown has started, and the lifetime
// context cancelled when the connections are closed. The upgrade.Server
// and the reverse proxy share it.
package track

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// A Tracker accounts for connections. Its zero value is ready to use.
type Tracker struct {
	mu    sync.Mutex
	conns map[io.Closer]struct{} // connections being served
	byKey map[string]int         // slots in use, per key
	inuse int                    // slots in use, in all
	idle  chan struct{}          // closed when inuse drops to 0 during shutdown

	once    sync.Once
	life    context.Context    // cancelled when the connections are closed
	cancel  context.CancelFunc // cancels life
	drain   chan struct{}      // closed when shutdown starts
	closing atomic.Bool        // set when shutdown starts
}

// Lifetime returns the context cancelled when the tracked connections are
// closed by CloseAll, and the channel closed when shutdown starts.
func (t *Tracker) Lifetime() (context.Context, <-chan struct{}) {
	t.once.Do(func() {
		t.life, t.cancel = context.WithCancel(context.Background())
		t.drain = make(chan struct{})
	})
	return t.life, t.drain
}

// Closing reports whether shutdown has started.
func (t *Tracker) Closing() bool { return t.closing.Load() }

// StartDraining refuses new connections from now on and closes the drain
// channel, once.
func (t *Tracker) StartDraining() {
	t.Lifetime()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closing.Load() {
		t.closing.Store(true)
		close(t.drain)
	}
}

// Reserve claims a slot for key before a switch; false if maxAll slots in
// all, or maxKey for key, are in use (zero means no cap).
func (t *Tracker) Reserve(key string, maxKey, maxAll int) bool {
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

// Release gives back a slot claimed by Reserve. It reports false if no
// slot was in use: a bug in the caller.
func (t *Tracker) Release(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.releaseLocked(key)
}

func (t *Tracker) releaseLocked(key string) bool {
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

// Rekey moves a slot claimed by Reserve from one key to another.
func (t *Tracker) Rekey(from, to string) {
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

// Track records c, whose slot is reserved, as served: CloseAll closes it.
// It reports false if shutdown has started.
func (t *Tracker) Track(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing.Load() {
		return false
	}
	t.addLocked(c)
	return true
}

// Adopt records c, whose slot is reserved, as served, even if shutdown has
// started: for a switch the peer already knows of. Shutdown waits for it
// as for any other; if its grace period is over already, c is closed now.
func (t *Tracker) Adopt(c io.Closer) {
	life, _ := t.Lifetime()
	t.mu.Lock()
	t.addLocked(c)
	t.mu.Unlock()
	if life.Err() != nil {
		c.Close()
	}
}

func (t *Tracker) addLocked(c io.Closer) {
	if t.conns == nil {
		t.conns = make(map[io.Closer]struct{})
	}
	t.conns[c] = struct{}{}
}

// Untrack forgets c and releases its slot under key, which ends a
// shutdown waiting for the last one. It reports false if no slot was in
// use.
func (t *Tracker) Untrack(c io.Closer, key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	return t.releaseLocked(key)
}

// Active returns the slots in use, per key.
func (t *Tracker) Active() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int, len(t.byKey))
	for k, v := range t.byKey {
		m[k] = v
	}
	return m
}

// Shutdown starts draining and waits until no slot is in use, or until
// ctx ends: then it closes the connections and returns ctx.Err().
func (t *Tracker) Shutdown(ctx context.Context) error {
	t.StartDraining()
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
		t.CloseAll()
		return ctx.Err()
	}
}

// CloseAll cancels the lifetime context and closes the tracked
// connections, outside the lock (closing one may untrack it), all at
// once: closing one may wait (an HTTP/2 stream lets Writes in progress
// finish), and a peer must not be able to make the waits add up.
func (t *Tracker) CloseAll() {
	t.Lifetime()
	t.cancel()
	t.mu.Lock()
	conns := make([]io.Closer, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}
