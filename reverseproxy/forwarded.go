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
// as with nginx's $proxy_add_x_forwarded_for. A Forwarded field that does
// not follow RFC 7239's grammar is not passed on.
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
	// A malformed field is dropped: an unbalanced quote in it would
	// swallow the proxy's own element.
	if prior := in.Header["Forwarded"]; len(prior) > 0 && validForwarded(prior) {
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

// validForwarded reports whether the lines of a Forwarded field follow
// RFC 7239 §4: comma-separated elements of ";"-separated pairs
// token "=" (token / quoted-string), empty elements and pairs allowed.
func validForwarded(lines []string) bool {
	for _, v := range lines {
		for i := 0; i < len(v); {
			switch c := v[i]; {
			case c == ' ' || c == '\t' || c == ',' || c == ';':
				i++
				continue
			case !isTokenByte(c):
				return false
			}
			j := i
			for j < len(v) && isTokenByte(v[j]) {
				j++
			}
			if j == len(v) || v[j] != '=' {
				return false
			}
			j++
			switch {
			case j < len(v) && v[j] == '"':
				j++
				for j < len(v) && v[j] != '"' {
					if v[j] == '\\' {
						j++
					}
					j++
				}
				if j >= len(v) {
					return false // an unbalanced quote
				}
				j++
			case j < len(v) && isTokenByte(v[j]):
				for j < len(v) && isTokenByte(v[j]) {
					j++
				}
			default:
				return false
			}
			if j < len(v) && v[j] != ';' && v[j] != ',' && v[j] != ' ' && v[j] != '\t' {
				return false
			}
			i = j
		}
	}
	return true
}

func isTokenByte(c byte) bool { return httplist.IsToken(string(c)) }
