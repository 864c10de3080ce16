//go:build go1.27 && !http2legacy

package h2c

import "net/http"

// serveConnBase returns the BaseConfig given to http2.Server.ServeConn for
// hs, the private server given to http2.ConfigureServer. From Go 1.27 on,
// golang.org/x/net/http2 hands connections to net/http: ServeConn serves
// them with a copy of a BaseConfig, which the Shutdown of hs cannot reach
// (no GOAWAY), and without one, with hs itself, whose settings are the
// same.
func serveConnBase(*http.Server) *http.Server { return nil }
