package reverseproxy

import (
	"net"
	"net/http"
	"strings"

	"github.com/go-upgrade/upgrade/internal/httplist"
)

// SetForwarded sets the forwarding fields of out, the header of a request
// a proxy forwards, for in, the request it received: X-Forwarded-For and
// Forwarded (RFC 7239) hold in's elements followed by in's hop (the
// client's address; for Forwarded also the Host and scheme it used), and
// X-Forwarded-Host and X-Forwarded-Proto in's Host and scheme. The
// proxy's own element is always present and last; earlier ones come from
// the client or the proxies before it, so a backend must trust only the
// elements its own proxies added, counting from the end (RFC 7239 §8.1),
// as with nginx's $proxy_add_x_forwarded_for.
//
// A Proxy sets them so for every upgrade it forwards. Call SetForwarded in
// the Rewrite of the httputil.ReverseProxy beside it (with pr.Out.Header
// and pr.In) so that plain requests carry the same fields.
func SetForwarded(out http.Header, in *http.Request) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	ip, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		ip = ""
	}
	xff := in.Header["X-Forwarded-For"]
	switch {
	case ip != "" && len(xff) > 0:
		out["X-Forwarded-For"] = []string{strings.Join(xff, ", ") + ", " + ip}
	case ip != "":
		out["X-Forwarded-For"] = []string{ip}
	case len(xff) > 0:
		out["X-Forwarded-For"] = []string{strings.Join(xff, ", ")}
	default:
		delete(out, "X-Forwarded-For")
	}
	if in.Host != "" {
		out["X-Forwarded-Host"] = []string{in.Host}
	} else {
		delete(out, "X-Forwarded-Host")
	}
	out["X-Forwarded-Proto"] = []string{proto}

	var b strings.Builder
	if prior := in.Header["Forwarded"]; len(prior) > 0 {
		b.WriteString(strings.Join(prior, ", "))
		b.WriteString(", ")
	}
	if ip != "" {
		b.WriteString("for=")
		if strings.Contains(ip, ":") {
			// An IPv6 address is bracketed and quoted (RFC 7239 §6).
			b.WriteString(`"[` + ip + `]"`)
		} else {
			b.WriteString(ip)
		}
		b.WriteByte(';')
	}
	if in.Host != "" && validForwardedHost(in.Host) {
		b.WriteString("host=")
		b.WriteString(forwardedValue(in.Host))
		b.WriteByte(';')
	}
	b.WriteString("proto=")
	b.WriteString(proto)
	out["Forwarded"] = []string{b.String()}
}

// validForwardedHost reports whether host can be put in a Forwarded
// host parameter: printable ASCII without quotes or backslashes.
func validForwardedHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// forwardedValue returns v as a Forwarded parameter value: a token as it
// is, anything else quoted.
func forwardedValue(v string) string {
	if httplist.IsToken(v) {
		return v
	}
	return `"` + v + `"`
}
