package upgrade

import (
	"context"
	"net/http"
)

// ActiveConns returns the number of switched connections being served (or
// being switched), by registered pattern.
func (s *Server) ActiveConns() map[string]int { return s.conns.Active() }

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
// http.Server's Shutdown does not know about switched connections: call
// this Shutdown as well, at the same time (from a function registered
// with its RegisterOnShutdown, say), not after it: a switched HTTP/2
// stream keeps its connection active, and http.Server's Shutdown waits
// until this one has ended the stream.
func (s *Server) Shutdown(ctx context.Context) error { return s.conns.Shutdown(ctx) }

// Close immediately closes every switched connection, cancelling their
// Contexts, and refuses new upgrades, without waiting for handlers to
// return.
func (s *Server) Close() error {
	s.conns.StartDraining()
	s.conns.CloseAll()
	return nil
}

// run serves c with its route's handler.
func (s *Server) run(c *Conn) {
	defer s.served(c)
	c.route.Handler.ServeUpgrade(c)
}

// served ends serving c, deferred: a panic is contained and logged, c
// closed and forgotten. After a panic with http.ErrAbortHandler, not
// logged, c is reset rather than closed, as net/http aborts a response.
func (s *Server) served(c *Conn) {
	switch p := recover(); {
	case p == http.ErrAbortHandler:
		c.reset()
	case p != nil:
		s.logPanic(c.Protocol, c.RemoteAddr().String(), p)
	}
	c.Close()
	c.finish()
	s.untrack(c)
}

// reserve claims a connection slot for rt before its switch; false if
// MaxConns or rt's MaxConns is reached.
func (s *Server) reserve(rt *route) bool {
	return s.conns.Reserve(rt.spelled, rt.MaxConns, s.MaxConns)
}

// release gives back a slot claimed by reserve.
func (s *Server) release(rt *route) {
	if !s.conns.Release(rt.spelled) {
		s.logger().Error("upgrade: internal error: connection slot released twice", "protocol", rt.spelled)
	}
}

// track records c, whose slot is reserved, as served, and gives it the
// Server's lifetime context and drain signal; false if Shutdown has
// begun.
func (s *Server) track(c *Conn) bool {
	c.trk = &s.conns
	return s.conns.Track(c)
}

// untrack forgets c and releases its slot.
func (s *Server) untrack(c *Conn) {
	if !s.conns.Untrack(c, c.route.spelled) {
		s.logger().Error("upgrade: internal error: connection slot released twice", "protocol", c.route.spelled)
	}
}
