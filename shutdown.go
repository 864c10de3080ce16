package upgrade

import (
	"context"
	"net/http"
	"runtime"
	"time"
)

// ActiveConns returns the number of switched connections being served (or
// being switched), by registered pattern.
func (s *Server) ActiveConns() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.byProto))
	for k, v := range s.byProto {
		m[k] = v
	}
	return m
}

// Shutdown shuts the server's switched connections down gracefully. New
// upgrades are refused from then on (Middleware serves them as plain
// requests, the endpoint answers 503 with Retry-After; a switch already
// past negotiation is answered 503 before its 101). Every Conn's Draining
// channel is closed, the signal for protocols that can say goodbye to do
// so (a WebSocket close frame, an HTTP/2 GOAWAY) and for handlers to
// finish; connections whose handlers ignore it keep working. Shutdown
// waits until every handler has returned and no switch is in progress,
// and returns nil. If ctx ends first, the grace period is over: the
// remaining connections are closed, their Contexts cancelled, and
// ctx.Err() is returned. Shutdown may be called more than once.
//
// net/http's Server.Shutdown does not know about hijacked connections; use
// RegisterOnShutdown to have it start this Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.startDraining()
	s.mu.Lock()
	if s.inuse == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		s.closeAll()
		return ctx.Err()
	}
}

// Close immediately closes every switched connection, cancelling their
// Contexts, and refuses new upgrades, without waiting for handlers to
// return.
func (s *Server) Close() error {
	s.startDraining()
	s.closeAll()
	return nil
}

// RegisterOnShutdown makes hs.Shutdown also start shutting down s's
// switched connections, bounded by timeout (zero means no bound other than
// the handlers returning). net/http runs such hooks in their own goroutine
// and hs.Shutdown does not wait for them: call s.Shutdown(ctx) after
// hs.Shutdown to wait until the switched connections are done. Call
// RegisterOnShutdown once, before hs serves.
func (s *Server) RegisterOnShutdown(hs *http.Server, timeout time.Duration) {
	hs.RegisterOnShutdown(func() {
		ctx := context.Background()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		_ = s.Shutdown(ctx)
	})
}

// lifetime returns the context cancelled when the switched connections
// are closed (Close, or the end of Shutdown's grace), and the channel
// closed when Shutdown starts.
func (s *Server) lifetime() (context.Context, chan struct{}) {
	s.lifeOnce.Do(func() {
		s.life, s.cancel = context.WithCancel(context.Background())
		s.drain = make(chan struct{})
	})
	return s.life, s.drain
}

// startDraining refuses new upgrades from now on and closes the channel
// Conn.Draining returns, once.
func (s *Server) startDraining() {
	_, drain := s.lifetime()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closing.Load() {
		s.closing.Store(true)
		close(drain)
	}
}

// reserve claims a connection slot for rt before its switch; false if
// MaxConns or rt's MaxConns is reached.
func (s *Server) reserve(rt *route) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.MaxConns > 0 && s.inuse >= s.MaxConns {
		return false
	}
	if rt.MaxConns > 0 && s.byProto[rt.spelled] >= rt.MaxConns {
		return false
	}
	if s.byProto == nil {
		s.byProto = make(map[string]int)
	}
	s.byProto[rt.spelled]++
	s.inuse++
	return true
}

// release gives back a slot claimed by reserve.
func (s *Server) release(rt *route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(rt)
}

func (s *Server) releaseLocked(rt *route) {
	if s.inuse <= 0 {
		s.logger().Error("upgrade: internal error: connection slot released twice", "protocol", rt.spelled)
		return
	}
	s.inuse--
	if n := s.byProto[rt.spelled] - 1; n > 0 {
		s.byProto[rt.spelled] = n
	} else {
		delete(s.byProto, rt.spelled)
	}
	if s.inuse == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// track records c, whose slot is reserved, as active; false if the server
// is closing.
func (s *Server) track(c *Conn) bool {
	c.life, c.draining = s.lifetime()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack forgets c and releases its slot, which signals Shutdown when the
// last one goes.
func (s *Server) untrack(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.releaseLocked(c.route)
}

// forget stops tracking c without releasing its slot.
func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// run serves c with its route's handler, in its own goroutine.
func (s *Server) run(c *Conn) {
	defer s.untrack(c)
	defer c.finish()
	defer c.nc.Close()
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			buf := make([]byte, 16<<10)
			buf = buf[:runtime.Stack(buf, false)]
			s.logger().Error("upgrade: panic serving protocol", "protocol", c.Protocol.String(),
				"remote", c.RemoteAddr().String(), "panic", p, "stack", string(buf))
		}
	}()
	c.route.Handler.ServeUpgrade(c)
}

// closeAll cancels the switched connections' Contexts and closes them.
func (s *Server) closeAll() {
	s.lifetime()
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}
