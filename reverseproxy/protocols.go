package reverseproxy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// The protocols a Proxy reads, lets through and writes, in Upgrade fields
// and :protocol pseudo-headers. Every one is parsed by
// upgrade.ParseProtocols.

// defaultDisallowed is the protocol a nil Allow keeps out.
const defaultDisallowed = "h2c"

// maxAdvertised bounds the protocols kept from a backend's Upgrade list.
const maxAdvertised = 64

// A pattern is a parsed Allow entry: "name", "name/version" or "name/*".
type pattern struct {
	name, version string
	anyVersion    bool // "name/*"
}

// matches reports whether p allows the offer o: the name compared ASCII
// case-insensitively, the version exactly (none only matching none),
// unless p accepts any version.
func (p *pattern) matches(o upgrade.Protocol) bool {
	return ascii.EqualFold(p.name, o.Name) && (p.anyVersion || p.version == o.Version)
}

// allowed returns the parsed Allow patterns; nil means all but h2c.
func (p *Proxy) allowed() ([]pattern, error) {
	p.allowOnce.Do(func() {
		for _, s := range p.Allow {
			pr, err := parseProtocol(s)
			if err != nil {
				p.allowErr = fmt.Errorf("upgrade: Proxy.Allow: %w", err)
				return
			}
			pat := pattern{name: pr.Name, version: pr.Version}
			if pr.Version == "*" {
				pat.version, pat.anyVersion = "", true
			}
			p.allow = append(p.allow, pat)
		}
	})
	return p.allow, p.allowErr
}

// parseProtocol parses s as exactly one `name["/"version]` element: no
// list, no whitespace around it.
func parseProtocol(s string) (upgrade.Protocol, error) {
	ps, err := upgrade.ParseProtocols([]string{s})
	if err != nil {
		return upgrade.Protocol{}, err
	}
	if len(ps) != 1 || ps[0].String() != s {
		return upgrade.Protocol{}, fmt.Errorf("upgrade: invalid protocol %q: not one name[/version]", s)
	}
	return ps[0], nil
}

// filterOffers keeps, in order, the offers allow matches (with allow nil:
// all but h2c), in place.
func filterOffers(offers []upgrade.Protocol, allow []pattern) []upgrade.Protocol {
	out := offers[:0]
	for _, o := range offers {
		ok := false
		if allow == nil {
			ok = !ascii.EqualFold(o.Name, defaultDisallowed)
		}
		for i := range allow {
			if allow[i].matches(o) {
				ok = true
				break
			}
		}
		if ok {
			out = append(out, o)
		}
	}
	return out
}

// formatProtocols formats ps as an Upgrade field value.
func formatProtocols(ps []upgrade.Protocol) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// parseAdvertised parses the Upgrade field of a backend's refusal
// leniently: well-formed elements are kept, others skipped, and at most
// maxAdvertised.
func parseAdvertised(values []string) []upgrade.Protocol {
	var out []upgrade.Protocol
	for e := range httplist.Elements(values) {
		if len(out) == maxAdvertised {
			break
		}
		if p, err := parseProtocol(e); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// hasConnectionOption reports whether the Connection lines in h carry
// option as a whole list element, ASCII case-insensitively (RFC 9110
// §7.6.1).
func hasConnectionOption(h http.Header, option string) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], option)
}
