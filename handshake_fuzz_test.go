package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"golang.org/x/net/http/httpguts"
)

// panicWatch records log lines that report a recovered panic, from the
// upgrade.Server's ErrorLog and from the http.Server's.
type panicWatch struct {
	mu    sync.Mutex
	lines []string
}

func (p *panicWatch) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic serving")) {
		p.mu.Lock()
		p.lines = append(p.lines, string(b))
		p.mu.Unlock()
	}
	return len(b), nil
}

func (p *panicWatch) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lines
	p.lines = nil
	return l
}

// fuzzWS is a WebSocket-like protocol: GET or OPTIONS (the default
// methods), version 13 or a 426 naming it, a key or 400, and an accept
// field derived from the key.
type fuzzWS struct{}

func (fuzzWS) AcceptUpgrade(r *http.Request, h http.Header) error {
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return &RejectError{Status: http.StatusUpgradeRequired, Header: http.Header{"Sec-Websocket-Version": {"13"}}}
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		return &RejectError{Status: http.StatusBadRequest, Message: "no key"}
	}
	h.Set("Sec-WebSocket-Accept", acceptFor(key))
	return nil
}

func (fuzzWS) ServeUpgrade(c *Conn) { bodyThenEcho(c) }

// bodyThenEcho writes back the request body read before the switch, then
// echoes the stream until EOF.
func bodyThenEcho(c *Conn) {
	if _, err := io.Copy(c, c.Request.Body); err != nil {
		return
	}
	echo(c)
}

// fuzzXMaxBody is the body bound of the "x/*" registration.
const fuzzXMaxBody = 4096

// newFuzzHandshakeServer serves, on 127.0.0.1, an upgrade.Server with
// "echo/1", a WebSocket-like Accepter, and "x/*" (GET, POST, OPTIONS; a
// body of at most fuzzXMaxBody): as an endpoint for every path but /mw…,
// which goes through Middleware to a plain handler.
func newFuzzHandshakeServer() (addr string, watch *panicWatch, stop func()) {
	watch = &panicWatch{}
	s := &Server{ErrorLog: slog.New(slog.NewTextHandler(watch, nil)), HandshakeTimeout: time.Second}
	s.HandleFunc("echo/1", bodyThenEcho)
	s.Handle("websocket", fuzzWS{})
	s.HandleRoute("x/*", Route{Handler: HandlerFunc(bodyThenEcho), Methods: []string{"GET", "POST", "OPTIONS"}, MaxBody: fuzzXMaxBody})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "plain")
	})
	mw := s.Middleware(next)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/mw") {
			mw.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	}))
	ts.Config.ErrorLog = log.New(watch, "", 0)
	ts.Config.ReadHeaderTimeout = time.Second
	ts.Start()
	return ts.Listener.Addr().String(), watch, func() {
		ts.Close()
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}
}

// FuzzServerHandshake sends arbitrary bytes, as a client, to a real server
// (one per fuzzing process, reused across executions) and half-closes.
// Whatever the bytes:
//   - no handler panics (panics are recovered, so the logs are watched);
//   - the server finishes within a second or two (the client's EOF ends
//     every exchange);
//   - a 101 answers only a request that net/http's parser accepts, in
//     HTTP/1.1 (or a later 1.x), whose Connection carries "upgrade" as a
//     whole token and whose Upgrade fields parse (checked by an
//     independent parser, within the default limits); the 101 names one
//     offered protocol, in its registered spelling, that is registered
//     for the request's method, carries Connection: upgrade and no body
//     framing, and the protocol then receives exactly the request body
//     (on c.Request.Body) and the bytes that follow the request.
func FuzzServerHandshake(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nhello",
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		"GET /mw HTTP/1.1\r\nHost: a\r\nUpgrade: echo/1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c, ECHO/1\r\n\r\nxyz",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrades\r\nUpgrade: echo/1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo/1/2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x/7, \"q\"\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: upgrade\r\nUpgrade: \r\nUpgrade: x/v9\r\n\r\nafter",
		"GET /mw HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/2\r\n\r\npipelined",
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nContent-Length: 4\r\n\r\nbodystream",
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbod\r\n1;e=1\r\ny\r\n0\r\nT: 1\r\n\r\nstream",
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhistream",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k\r\n\r\nws",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nContent-Length: 1\r\n\r\nz",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websoc\u212Aet\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	addr, watch, stop := newFuzzHandshakeServer()
	f.Cleanup(stop)

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		watch.take()
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := nc.Write(in); err == nil {
			_ = nc.(*net.TCPConn).CloseWrite()
		}
		out, err := io.ReadAll(nc)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server did not finish within the deadline; got %q", out)
		}
		if p := watch.take(); len(p) > 0 {
			t.Fatalf("a handler panicked: %s", p)
		}
		checkExchange(t, in, out)
	})
}

// TestFuzzServerHandshakeOracle checks that FuzzServerHandshake's oracle
// is not vacuous: the server of the fuzz target switches valid requests
// (and checkExchange sees and accepts those 101s) and refuses the others.
func TestFuzzServerHandshakeOracle(t *testing.T) {
	addr, watch, stop := newFuzzHandshakeServer()
	defer stop()
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nhello", []int{101}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c, ECHO/1\r\n\r\nxyz", []int{101}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: \r\nUpgrade: x/v9\r\n\r\nafter", []int{101}},
		{"GET /mw HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/2\r\n\r\npipelined", []int{200, 101}},
		{"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nContent-Length: 4\r\n\r\nbodystream", []int{101}},
		{"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbod\r\n1;e=1\r\ny\r\n0\r\nT: 1\r\n\r\nstream", []int{400}},
		{"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbod\r\n0\r\n\r\nGET /mw HTTP/1.1\r\nHost: a\r\n\r\n", []int{400}},
		{"POST /mw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbod\r\n0\r\n\r\nGET /mw HTTP/1.1\r\nHost: a\r\n\r\n", []int{200}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: nosuch/1\r\n\r\nGET /mw HTTP/1.1\r\nHost: a\r\n\r\n", []int{426}},
		{"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhistream", []int{101}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k\r\n\r\nws", []int{101}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n", []int{426}},
		{"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n", []int{426}},
		{"GET /mw HTTP/1.1\r\nHost: a\r\nUpgrade: echo/1\r\n\r\n", []int{200}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrades\r\nUpgrade: echo/1\r\n\r\n", []int{426}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo/1/2\r\n\r\n", []int{400}},
		{"PUT / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nContent-Length: 1\r\n\r\nz", []int{405}},
		{"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x/1\r\nContent-Length: 4097\r\n\r\n" + strings.Repeat("b", 4097), []int{413}},
	} {
		c := wiretest.Dial(t, addr)
		c.Send(tc.in)
		c.CloseWrite()
		out := []byte(c.Rest())
		c.Close()
		if got := checkExchange(t, []byte(tc.in), out); !slices.Equal(got, tc.want) {
			t.Errorf("%q: statuses %v, want %v; server sent %q", tc.in, got, tc.want, out)
		}
	}
	if p := watch.take(); len(p) > 0 {
		t.Fatalf("a handler panicked: %s", p)
	}
}

// checkExchange pairs the requests in in with the responses in out and
// checks every 101 against the rules. It returns the final responses'
// status codes, in order.
func checkExchange(t *testing.T, in, out []byte) (statuses []int) {
	rbr := bufio.NewReader(bytes.NewReader(in))
	obr := bufio.NewReader(bytes.NewReader(out))
	for range 64 {
		req, reqErr := http.ReadRequest(rbr)
		var body []byte
		var bodyErr error
		method := http.MethodGet
		if reqErr == nil {
			method = req.Method
			body, bodyErr = io.ReadAll(req.Body)
		}
		resp, err := readFinal(obr, method)
		if err != nil {
			return statuses // no more (complete) responses
		}
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			_, _ = io.Copy(io.Discard, resp.Body)
			if len(resp.Header["Upgrade"]) > 0 && !httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade") {
				t.Fatalf("%d with Upgrade %q but Connection %q", resp.StatusCode, resp.Header["Upgrade"], resp.Header["Connection"])
			}
			if reqErr == nil && len(req.Header["Upgrade"]) > 0 && resp.StatusCode >= 400 {
				// A refused upgrade request ends the connection:
				// what follows it is never read as a request.
				if !resp.Close {
					t.Fatalf("%d refusing an upgrade request without Connection: close", resp.StatusCode)
				}
				if more, _ := io.ReadAll(obr); len(more) > 0 {
					t.Fatalf("the server answered again after refusing an upgrade request: %q", more)
				}
				return statuses
			}
			if reqErr != nil || bodyErr != nil || resp.Close || req.Close {
				return statuses
			}
			continue
		}
		if reqErr != nil {
			t.Fatalf("101 for a request net/http cannot parse (%v)", reqErr)
		}
		if bodyErr != nil {
			t.Fatalf("101 for a request whose body cannot be read (%v)", bodyErr)
		}
		checkSwitch(t, req, resp, body)
		rest, _ := io.ReadAll(rbr)
		got, _ := io.ReadAll(obr)
		want := append(body, rest...)
		if !bytes.Equal(want, got) {
			t.Fatalf("the protocol got body+stream %q, want %q", got, want)
		}
		return statuses
	}
	return statuses
}

// readFinal reads a response, skipping interim ones other than 101. Its
// Header keeps the Connection field as sent.
func readFinal(br *bufio.Reader, method string) (*http.Response, error) {
	for range 8 {
		resp, err := wiretest.ReadResponse(br, method)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 1 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
	return nil, errors.New("too many interim responses")
}

// checkSwitch checks that req could be switched, and to what the 101
// names.
func checkSwitch(t *testing.T, req *http.Request, resp *http.Response, body []byte) {
	if req.ProtoMajor != 1 || req.ProtoMinor < 1 {
		t.Fatalf("101 for a %s request", req.Proto)
	}
	if !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade") {
		t.Fatalf("101 for a request whose Connection is %q", req.Header["Connection"])
	}
	if len(req.TransferEncoding) > 0 {
		t.Fatalf("101 for a request framed by Transfer-Encoding %q", req.TransferEncoding)
	}
	offers, err := refParseUpgrade(req.Header["Upgrade"])
	if err != nil {
		t.Fatalf("101 for a request whose Upgrade %q is malformed: %v", req.Header["Upgrade"], err)
	}
	if len(resp.Header["Upgrade"]) != 1 {
		t.Fatalf("101 with Upgrade %q", resp.Header["Upgrade"])
	}
	chosen, err := refParseUpgrade(resp.Header["Upgrade"])
	if err != nil || len(chosen) != 1 {
		t.Fatalf("101 with Upgrade %q: %v", resp.Header["Upgrade"], err)
	}
	p := chosen[0]
	offered := false
	for _, o := range offers {
		if ascii.EqualFold(o.Name, p.Name) && o.Version == p.Version {
			offered = true
		}
	}
	if !offered {
		t.Fatalf("101 switches to %v, not among the offers %v", p, offers)
	}
	var methods []string
	switch {
	case p.Name == "echo" && p.Version == "1", p.Name == "websocket" && p.Version == "":
		methods = []string{"GET", "OPTIONS"}
	case p.Name == "x":
		methods = []string{"GET", "POST", "OPTIONS"}
		if len(body) > fuzzXMaxBody {
			t.Fatalf("101 to x after a body of %d bytes", len(body))
		}
	default:
		t.Fatalf("101 switches to %v, which is not registered (in that spelling)", p)
	}
	if !slices.Contains(methods, req.Method) {
		t.Fatalf("101 to %v for a %s request", p, req.Method)
	}
	if p.Name == "websocket" {
		key := req.Header.Get("Sec-WebSocket-Key")
		if key == "" || req.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Fatalf("101 to websocket without a key and version 13: %q", req.Header)
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != acceptFor(key) {
			t.Fatalf("101 to websocket with accept %q", got)
		}
	}
	if !httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade") {
		t.Fatalf("101 whose Connection is %q", resp.Header["Connection"])
	}
	if _, ok := resp.Header["Content-Length"]; ok {
		t.Fatal("101 with Content-Length")
	}
	if _, ok := resp.Header["Transfer-Encoding"]; ok {
		t.Fatal("101 with Transfer-Encoding")
	}
}

// refParseUpgrade is an independent reference parser for Upgrade fields
// (RFC 9110 §5.6.1, §7.8), within the default limits: elements
// `token ["/" token]` separated by commas, OWS trimmed, empty elements
// skipped.
func refParseUpgrade(lines []string) ([]Protocol, error) {
	const tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	isToken := func(s string) bool {
		if s == "" {
			return false
		}
		for i := 0; i < len(s); i++ {
			if strings.IndexByte(tchar, s[i]) < 0 {
				return false
			}
		}
		return true
	}
	var ps []Protocol
	total := 0
	for _, l := range lines {
		total += len(l)
		for _, e := range strings.Split(l, ",") {
			e = strings.Trim(e, " \t")
			if e == "" {
				continue
			}
			name, version, hasSlash := strings.Cut(e, "/")
			if !isToken(name) || (hasSlash && !isToken(version)) {
				return nil, errors.New("malformed element " + e)
			}
			ps = append(ps, Protocol{Name: name, Version: version})
		}
	}
	if total > defaultMaxUpgradeBytes || len(ps) > defaultMaxProtocols {
		return nil, errors.New("over the default limits")
	}
	return ps, nil
}
