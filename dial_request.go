package upgrade

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// dialTarget is where a request goes.
type dialTarget struct {
	addr       string   // host:port to connect to, with any IPv6 zone
	authority  string   // host:port without zone, for CONNECT
	serverName string   // host without port, brackets or zone, for TLS
	secure     bool     // https or wss
	target     string   // request-target, origin-form
	host       string   // the URL's host[:port] to send as Host, without zone
	proxy      *url.URL // the proxy to tunnel through; nil for none
	dial       string   // the address to dial: the proxy's, or addr
}

// newRequest parses rawURL and builds the request to send, calling
// Prepare. Nothing is validated against the wire format yet.
func (d *Dialer) newRequest(ctx context.Context, rawURL string, offers []Protocol) (*http.Request, dialTarget, error) {
	u, t, err := parseTarget(rawURL)
	if err != nil {
		return nil, t, err
	}
	if len(offers) == 0 {
		return nil, t, errors.New("no protocol offered")
	}
	method := d.Method
	if method == "" {
		method = http.MethodGet
	}
	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        d.header(u),
		Host:          t.host,
		ContentLength: int64(len(d.Body)),
	}
	if len(d.Body) > 0 {
		body := d.Body
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	req = req.WithContext(ctx)
	if d.Prepare != nil {
		if err := d.Prepare(req); err != nil {
			return nil, t, fmt.Errorf("preparing the request: %w", err)
		}
	}
	return req, t, nil
}

// header returns a copy of Header, with Authorization from u's user
// information unless Header has one.
func (d *Dialer) header(u *url.URL) http.Header {
	h := d.Header.Clone()
	if h == nil {
		h = make(http.Header)
	}
	if u.User != nil && len(h["Authorization"]) == 0 {
		pw, _ := u.User.Password()
		h["Authorization"] = []string{basicAuth(u.User.Username(), pw)}
	}
	return h
}

// parseTarget parses rawURL (http, https, ws or wss; ws and wss become
// http and https) into the URL to request and where it goes.
func parseTarget(rawURL string) (*url.URL, dialTarget, error) {
	var t dialTarget
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return nil, t, fmt.Errorf("invalid URL: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "http"
	case "https", "wss":
		u.Scheme, t.secure = "https", true
	default:
		return nil, t, fmt.Errorf("unsupported URL scheme %q (want http, https, ws or wss)", u.Scheme)
	}
	if u.Hostname() == "" {
		// RFC 9110 §4.2.1 forbids an http URI with an empty host.
		return nil, t, errors.New("URL has an empty host")
	}
	u.Fragment, u.RawFragment = "", ""
	host, err := httpguts.PunycodeHostPort(u.Host)
	if err != nil {
		return nil, t, fmt.Errorf("invalid host %q: %w", u.Host, err)
	}
	// The zone of a scoped IPv6 address ("[fe80::1%25eth0]") is used to
	// dial and never sent: not in Host, CONNECT or SNI (RFC 6874 §4).
	hostname := strings.TrimSuffix(strings.TrimPrefix(hostOnly(host), "["), "]")
	t.serverName = hostname
	if zone := strings.IndexByte(hostname, '%'); zone >= 0 && strings.HasPrefix(host, "[") {
		t.serverName = hostname[:zone]
		host = "[" + t.serverName + host[strings.IndexByte(host, ']'):]
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if t.secure {
			port = "443"
		}
	}
	t.addr = net.JoinHostPort(hostname, port)
	t.authority = net.JoinHostPort(t.serverName, port)
	t.target = u.RequestURI()
	t.host = host
	return u, t, nil
}

// checkAuthority returns "" if hostport can be sent as Host, or what is
// wrong with it: it must be uri-host [ ":" port ] (RFC 9110 §7.2,
// RFC 3986 §3.2.2), the host a non-empty reg-name or IPv4 address, or a
// bracketed IPv6 address without a zone (RFC 6874 §4); the port, if any,
// a decimal number up to 65535, or empty.
func checkAuthority(hostport string) string {
	host, port, hasPort := hostport, "", false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "missing ] after IPv6 address"
		}
		host = hostport[1:end]
		switch rest := hostport[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return "unexpected " + httplist.Quote(rest) + " after IPv6 address"
		}
		if strings.IndexByte(host, '%') >= 0 {
			return "IPv6 zone identifier (it is meaningful only on this host and never sent, RFC 6874 §4)"
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return httplist.Quote(host) + " is not an IPv6 address"
		}
	} else {
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port, hasPort = hostport[:i], hostport[i+1:], true
		}
		if host == "" {
			return "empty host"
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
			case c == '%' && i+2 < len(host) && isHex(host[i+1]) && isHex(host[i+2]):
				i += 2
			default:
				return "invalid byte " + httplist.Quote(host[i:i+1]) + " in host"
			}
		}
	}
	if hasPort && port != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "invalid port " + httplist.Quote(port)
		}
	}
	return ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hostOnly strips the port from a host[:port] string, keeping IPv6
// brackets.
func hostOnly(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") {
		return hostport[:i]
	}
	return hostport
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// redactURL returns rawURL with any password replaced, for errors.
func redactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Redacted()
	}
	return "(invalid URL)"
}

// wireRequest validates req and offers and returns the request as sent:
// request line, Host, Connection, Upgrade, the other header fields
// sorted, Content-Length, the empty line and the body. It records the
// Connection and Upgrade fields sent in req.Header.
func (d *Dialer) wireRequest(req *http.Request, target string, offers []Protocol) ([]byte, error) {
	if !httplist.IsToken(req.Method) {
		return nil, fmt.Errorf("invalid method %s", httplist.Quote(req.Method))
	}
	if req.Method == http.MethodConnect {
		return nil, errors.New("method CONNECT cannot carry an upgrade")
	}
	if strings.ContainsFunc(target, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return nil, fmt.Errorf("invalid request target %s", httplist.Quote(target))
	}
	for _, p := range offers {
		if r := checkOffer(p); r != "" {
			return nil, fmt.Errorf("invalid offer %s: %s", httplist.Quote(p.String()), r)
		}
	}
	options, err := checkFields(req)
	if err != nil {
		return nil, err
	}
	conn := "Upgrade"
	if len(options) > 0 {
		conn += ", " + strings.Join(options, ", ")
	}
	up := formatProtocols(offers)
	b := []byte(req.Method + " " + target + " HTTP/1.1\r\n" +
		"Host: " + req.Host + "\r\n" +
		"Connection: " + conn + "\r\n" +
		"Upgrade: " + up + "\r\n")
	b = httplist.AppendFields(b, req.Header)
	n := len(d.Body)
	if n > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		// RFC 9110 §8.6: a user agent SHOULD send Content-Length when the
		// method defines a meaning for content, even when it is zero.
		b = append(b, "Content-Length: "+strconv.Itoa(n)+"\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, d.Body...)
	req.Header["Connection"] = []string{conn}
	req.Header["Upgrade"] = []string{up}
	return b, nil
}

// checkFields validates req's header fields and takes out of req.Header
// those the Dialer writes itself: Host, which replaces req.Host, and
// Connection, whose options other than "upgrade" it returns. Fields the
// Dialer sets or never sends are refused.
func checkFields(req *http.Request) (options []string, err error) {
	host, hostField := req.Host, false
	for k, vs := range req.Header {
		if err := checkField(k, vs); err != nil {
			return nil, err
		}
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Upgrade", "Content-Length", "Transfer-Encoding", "Expect":
			return nil, fmt.Errorf("header field %s is set by the Dialer or not allowed", k)
		case "Host":
			if hostField || len(vs) != 1 {
				return nil, errors.New("more than one Host header field")
			}
			host, hostField = vs[0], true
			delete(req.Header, k)
		case "Connection":
			for o := range httplist.Elements(vs) {
				if ascii.EqualFold(o, "upgrade") {
					continue
				}
				if !httplist.IsToken(o) {
					return nil, fmt.Errorf("invalid Connection option %s", httplist.Quote(o))
				}
				options = append(options, o)
			}
			delete(req.Header, k)
		}
	}
	req.Host, err = checkHost(host)
	return options, err
}

// checkField checks a header field's name and values.
func checkField(k string, vs []string) error {
	if !httpguts.ValidHeaderFieldName(k) {
		return fmt.Errorf("invalid header field name %s", httplist.Quote(k))
	}
	for _, v := range vs {
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("invalid value for header field %s: %s", k, httplist.Quote(v))
		}
	}
	return nil
}

// checkHost converts host to ASCII (IDNA), as the URL's was, and checks it.
func checkHost(host string) (string, error) {
	if h, err := httpguts.PunycodeHostPort(host); err == nil {
		host = h
	}
	if r := checkAuthority(host); r != "" {
		return host, fmt.Errorf("invalid Host %s: %s", httplist.Quote(host), r)
	}
	return host, nil
}

// checkOffer returns "" if p can be sent in an Upgrade field, or what is
// wrong with it.
func checkOffer(p Protocol) string {
	if p.Name == "" {
		return "empty protocol name"
	}
	if r := httplist.CheckToken(p.Name); r != "" {
		return r + " in protocol name"
	}
	if r := httplist.CheckToken(p.Version); r != "" {
		return r + " in protocol version"
	}
	return ""
}
