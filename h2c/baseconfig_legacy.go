//go:build !go1.27 || http2legacy

package h2c

import "net/http"

// serveConnBase returns the BaseConfig given to http2.Server.ServeConn for
// hs, the private server given to http2.ConfigureServer: hs, whose
// settings golang.org/x/net/http2's own server reads from it; the
// Shutdown of hs reaches the connection through ConfigureServer.
func serveConnBase(hs *http.Server) *http.Server { return hs }
