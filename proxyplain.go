package upgrade

import (
	"net/http"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
)

// The requests a Proxy's Middleware passes on to the next handler: never
// as upgrades.

// passOn serves r with next as a plain request: without its upgrade (see
// withoutUpgrade), so that next cannot forward it.
func (p *Proxy) passOn(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if hasUpgradeFields(r.Header) {
		r = withoutUpgrade(r)
	}
	next.ServeHTTP(w, r)
}

// hasUpgradeFields reports whether h carries an upgrade: an Upgrade or
// HTTP2-Settings field, or a Connection option naming one.
func hasUpgradeFields(h http.Header) bool {
	if len(h["Upgrade"]) > 0 || len(h["Http2-Settings"]) > 0 {
		return true
	}
	for o := range httplist.Elements(h["Connection"]) {
		if ascii.EqualFold(o, "upgrade") || ascii.EqualFold(o, "http2-settings") {
			return true
		}
	}
	return false
}
