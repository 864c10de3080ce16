package bench

import (
	"net/http"
	"slices"
)

// The same handlers mounted the two other ways a program mounts them: under
// an http.ServeMux at the request's path, as the project's README does
// ("-mux"), and behind a middleware that wraps the ResponseWriter ("-wrapped"),
// as logging and metrics middleware do. net/http's connection goroutine runs
// everything before the 101, so each layer deepens its stack; the floor is
// mounted the same ways so that each mount has its own floor.
var mounts = map[string]func() http.Handler{
	"floor-mux":       func() http.Handler { return mount("mux", http.HandlerFunc(floorHandler)) },
	"floor-wrapped":   func() http.Handler { return mount("wrapped", http.HandlerFunc(floorHandler)) },
	"upgrade-mux":     func() http.Handler { return mount("mux", newUpgradeServer()) },
	"upgrade-wrapped": func() http.Handler { return mount("wrapped", newUpgradeServer()) },
	// The library with a handler that keeps Conn.Request, for the held
	// memory that costs; not in Impls.
	"upgrade-keep": func() http.Handler { return newUpgradeServerFor(serveFrame) },
}

// mount mounts h the named way: "mux", "wrapped", or "" for directly.
func mount(how string, h http.Handler) http.Handler {
	switch how {
	case "mux":
		return underMux(h)
	case "wrapped":
		return withStatus(h)
	}
	return h
}

// mountImpls lists the mounted variants in table order: each floor
// variant is the reference for the library mounted the same way.
var mountImpls = []string{"floor-mux", "upgrade-mux", "floor-wrapped", "upgrade-wrapped"}

func init() {
	if i := slices.Index(Impls, "upgrade"); i >= 0 {
		Impls = slices.Insert(Impls, i+1, mountImpls...)
	}
}

// mounted returns the handler of a mounted variant, or nil.
func mounted(name string) http.Handler {
	if f := mounts[name]; f != nil {
		return f()
	}
	return nil
}

// underMux mounts h at the path the load client requests, next to the
// other routes a site has.
func underMux(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/chat", h)
	mux.HandleFunc("/", http.NotFound)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	return mux
}

// statusWriter records the status of a response, as a logging middleware
// does; Unwrap lets http.ResponseController reach the Hijacker beneath.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withStatus is a typical wrapping middleware: it wraps the ResponseWriter
// and keeps the status for a log line (not written here).
func withStatus(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			panic("unreachable")
		}
	})
}
