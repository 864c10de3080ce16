package reverseproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// A proxyLog is the record of one upgrade request a Proxy handles,
// logged at slog.LevelDebug when it ends, forwarded or not.
type proxyLog struct {
	p        *Proxy
	remote   string // the client's address
	proto    string // the client's HTTP version
	start    time.Time
	protocol string // what the client offered, then the protocol switched to
	backend  string // the backend's host, once Rewrite has chosen it
}

func newProxyLog(p *Proxy, r *http.Request, protocol string) proxyLog {
	// Not r itself: the log lives as long as a relayed pair.
	return proxyLog{p: p, remote: r.RemoteAddr, proto: r.Proto, start: time.Now(), protocol: protocol}
}

// end logs how the request ended, with attrs (key-value pairs) after it.
func (l *proxyLog) end(how string, attrs ...any) {
	log := l.p.logger()
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	args := make([]any, 0, 12+len(attrs))
	args = append(args, "protocol", l.protocol, "remote", l.remote, "proto", l.proto)
	if l.backend != "" {
		args = append(args, "backend", l.backend)
	}
	args = append(args, "duration", time.Since(l.start).Round(time.Millisecond), "how", how)
	args = append(args, attrs...)
	log.Debug("upgrade: proxied connection closed", args...)
}

// how names how a relayed pair ended, from the first of its sides to end
// (side is "client" or "backend"; err is nil for a clean EOF), and
// returns the error worth logging with it, if any.
func (pr *pair) how() (string, error) {
	if pr.why == errIdle {
		return "idle timeout", nil
	}
	side, err := pr.endSide, pr.endErr
	switch {
	case side == "":
		return "closed", nil
	case err == nil:
		return "closed by " + side, nil
	case errors.Is(err, net.ErrClosed):
		// Only Shutdown and Close close a pair's connections from the
		// outside.
		return "closed by proxy shutdown", nil
	case isReset(err):
		if side == "client" && pr.stream {
			// An HTTP/2 client ends a stream it no longer needs with
			// RST_STREAM: CANCEL (or NO_ERROR) is its way to close.
			if code := streamResetCode(err); code == "CANCEL" || code == "NO_ERROR" {
				return "closed by client (stream cancelled)", nil
			}
		}
		return "reset by " + side, nil
	}
	return side + " error", err
}

// streamResetCode returns the error code of the RST_STREAM that ended an
// HTTP/2 stream's body, as net/http's error names it ("stream error:
// stream ID 3; CANCEL"), or "".
func streamResetCode(err error) string {
	const marker = "stream error: stream ID "
	s := err.Error()
	i := strings.LastIndex(s, marker)
	if i < 0 {
		return ""
	}
	_, rest, ok := strings.Cut(s[i+len(marker):], "; ")
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(rest, ";")
	return code
}
