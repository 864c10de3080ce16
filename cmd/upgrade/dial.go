package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	"github.com/go-upgrade/upgrade/internal/wsframe"
	"github.com/go-upgrade/upgrade/websocket"
)

// dialConfig is the parsed command line of upgrade dial.
type dialConfig struct {
	url          string
	offers       []upgrade.Protocol
	header       http.Header // extra fields, without the handshake's own
	subprotocols []string    // from -H 'Sec-WebSocket-Protocol: ...'
	method       string
	body         []byte
	timeout      time.Duration
	http2        bool // try an HTTP/2 extended CONNECT stream first
	http3        bool // switch an HTTP/3 stream (RFC 9220)
	insecure     bool // do not verify the server's TLS certificate
}

// offersProtocol reports whether the configuration offers protocol name
// (without a version), compared ASCII case-insensitively.
func (cfg *dialConfig) offersProtocol(name string) bool {
	for _, p := range cfg.offers {
		if isProtocol(p, name) {
			return true
		}
	}
	return false
}

// isProtocol reports whether p is name without a version, ASCII
// case-insensitively (strings.EqualFold would also fold Unicode
// look-alikes onto ASCII).
func isProtocol(p upgrade.Protocol, name string) bool {
	return p.Version == "" && ascii.EqualFold(p.Name, name)
}

// headerFlags collects repeated -H flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, "; ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// dialCommand is "upgrade dial".
var dialCommand = &subcommand{
	name:     "dial",
	synopsis: "upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] [-http2] [-http3] [-insecure] URL PROTOCOL[,PROTOCOL...]",
	help: `usage: upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] [-http2] [-http3] [-insecure] URL PROTOCOL[,PROTOCOL...]

Dial asks the server at URL (http, https, ws or wss; proxies from the
environment) to switch to one of the protocols, in that order of
preference, and prints "switched to PROTOCOL" on stderr. Then it works like
netcat: what you type (or pipe in) goes to the server, what the server
sends comes out on stdout. Ctrl-D (the end of stdin) half-closes the
connection; dial exits when the server closes.

  websocket   one text message per stdin line (binary if not UTF-8), one
              line per message received, close handshake at the end of
              stdin
  h2c         prints the HTTP/2 response to the request (stream 1) and
              exits
  others      bytes both ways, the bytes that came with the 101 first

Exit status: 0 switched and done, 1 refused or failed (one line on stderr
naming the status and the protocols the server advertises), 2 usage error
(nothing sent). Control characters in what the server says are printed
escaped (\x1b); the data itself is copied as it is.

Flags:

  -H 'Name: value'  extra request header field (repeatable)
  -X METHOD         request method (default GET)
  -d BODY           request body, sent and read before the switch
  -timeout D        bound on the handshake (and the h2c exchange)
                    (default 10s; 0: none)
  -http2            switch an HTTP/2 stream with an extended CONNECT
                    (RFC 8441) instead: by ALPN h2 for https and wss,
                    with prior knowledge for http and ws; falls back to
                    an HTTP/1.1 Upgrade when the server has no HTTP/2 or
                    no extended CONNECT. It then prints "switched to
                    PROTOCOL over HTTP/2" (or "over HTTP/1.1")
  -http3            switch an HTTP/3 stream with an extended CONNECT (RFC
                    9220), over QUIC: https and wss URLs only, no -d, and
                    protocols without a version (a :protocol is a token).
                    No fallback: a server without HTTP/3 or without
                    extended CONNECT fails the dial. It prints "switched
                    to PROTOCOL over HTTP/3"
  -insecure         do not verify the server's TLS certificate (for a
                    server with a self-signed one, such as serve -tls)

Examples, with "upgrade serve" running in another terminal:

  upgrade dial http://127.0.0.1:8080/ echo/1           # type lines; Ctrl-D ends
  echo hello | upgrade dial http://127.0.0.1:8080/ echo/1
  upgrade dial http://127.0.0.1:8080/ echo/1 </etc/hosts >copy
  echo hello | upgrade dial ws://127.0.0.1:8080/ websocket
  upgrade dial -H 'Sec-WebSocket-Protocol: echo' ws://127.0.0.1:8080/ websocket
  upgrade dial -X POST -d 'hi there' http://127.0.0.1:8080/ h2c
  upgrade dial http://127.0.0.1:8080/required nosuch/1   # exit 1: 426
  echo hello | upgrade dial -http2 ws://127.0.0.1:8080/ websocket
  upgrade serve -tls -addr 127.0.0.1:8443 &          # HTTPS, self-signed
  echo hello | upgrade dial -http2 -insecure https://127.0.0.1:8443/ echo/1
  upgrade serve -tls -http3 -addr 127.0.0.1:8444 &   # HTTPS and HTTP/3
  echo hello | upgrade dial -http3 -insecure wss://127.0.0.1:8444/ websocket
`,
}

// parseDial parses the command line of upgrade dial. Every error is a
// usage error; flag.ErrHelp is returned for -h.
func parseDial(args []string) (*dialConfig, error) {
	cfg := &dialConfig{header: make(http.Header)}
	var headers headerFlags
	var body string
	fs := dialFlags(cfg, &headers, &body)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if n := fs.NArg(); n != 2 {
		for _, a := range fs.Args() {
			if len(a) > 1 && a[0] == '-' {
				return nil, fmt.Errorf("flag %s after the arguments: flags go before URL", a)
			}
		}
		noun := "arguments"
		if n == 1 {
			noun = "argument"
		}
		return nil, fmt.Errorf("want URL and PROTOCOL[,PROTOCOL...], got %d %s", n, noun)
	}
	cfg.body = []byte(body)
	switch {
	case !httplist.IsToken(cfg.method):
		return nil, fmt.Errorf("invalid method %q: not an HTTP token", cfg.method)
	case cfg.method == http.MethodConnect:
		return nil, errors.New("invalid method CONNECT: a CONNECT request cannot ask for an upgrade")
	}
	if err := checkURL(fs.Arg(0)); err != nil {
		return nil, err
	}
	cfg.url = fs.Arg(0)
	for _, s := range strings.Split(fs.Arg(1), ",") {
		p, err := parseProtocol(strings.TrimSpace(s))
		if err != nil {
			var he *upgrade.HeaderError
			if errors.As(err, &he) {
				return nil, fmt.Errorf("invalid protocol %q: %s; want NAME or NAME/VERSION", s, he.Reason)
			}
			return nil, fmt.Errorf("invalid protocol %q: %v", s, err)
		}
		cfg.offers = append(cfg.offers, p)
	}
	for _, h := range headers {
		if err := cfg.addHeader(h); err != nil {
			return nil, err
		}
	}
	if cfg.http3 {
		if err := cfg.checkHTTP3(); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// checkHTTP3 checks that what -http3 is combined with can be sent as an
// HTTP/3 extended CONNECT.
func (cfg *dialConfig) checkHTTP3() error {
	u, _ := url.Parse(cfg.url)
	switch {
	case cfg.http2:
		return errors.New("-http2 and -http3 exclude each other")
	case !strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "wss"):
		return fmt.Errorf("-http3 needs an https or wss URL, not %q: HTTP/3 runs over QUIC, which is always encrypted", cfg.url)
	case len(cfg.body) > 0:
		return errors.New("-d cannot be used with -http3: an extended CONNECT has no request body")
	}
	for _, p := range cfg.offers {
		if p.Version != "" {
			return fmt.Errorf("protocol %q cannot be asked for over HTTP/3: a :protocol is a single token, without a version (RFC 9220)", p.String())
		}
	}
	return nil
}

// dialFlags returns the flag set of upgrade dial, which fills cfg,
// headers (-H) and body (-d).
func dialFlags(cfg *dialConfig, headers *headerFlags, body *string) *flag.FlagSet {
	fs := dialCommand.flagSet()
	fs.Var(headers, "H", "extra request header field 'Name: value' (repeatable)")
	fs.StringVar(&cfg.method, "X", http.MethodGet, "request method")
	fs.StringVar(body, "d", "", "request body")
	durationVar(fs, &cfg.timeout, "timeout", 10*time.Second, "bound on the handshake (0: none)")
	fs.BoolVar(&cfg.http2, "http2", false, "switch an HTTP/2 stream (RFC 8441) if the server can")
	fs.BoolVar(&cfg.http3, "http3", false, "switch an HTTP/3 stream (RFC 9220)")
	fs.BoolVar(&cfg.insecure, "insecure", false, "do not verify the server's TLS certificate")
	return fs
}

// checkURL checks that raw is an absolute http, https, ws or wss URL
// with a non-empty host.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// A *url.Error repeats the URL after "parse"; say it once.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("invalid URL %q: %v", raw, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "ws", "wss":
	case "":
		return fmt.Errorf("invalid URL %q: want an absolute URL such as http://127.0.0.1:8080/", raw)
	default:
		return fmt.Errorf("invalid URL %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Hostname() == "" {
		// "http://:8080/" would reach the local host with "Host: :8080";
		// an http URI must name a host (RFC 9110 §4.2.1).
		return fmt.Errorf("invalid URL %q: empty host", raw)
	}
	return nil
}

// addHeader adds one -H 'Name: value' field. Fields dial sets itself are
// refused, except Sec-WebSocket-Protocol when websocket is offered: its
// subprotocols are offered in the handshake and checked in the 101.
func (cfg *dialConfig) addHeader(field string) error {
	name, value, ok := strings.Cut(field, ":")
	if !ok || !httplist.IsToken(name) {
		return fmt.Errorf("invalid header %q: want 'Name: value'", field)
	}
	value = strings.Trim(value, " \t")
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("invalid header %q: control byte in value", field)
		}
	}
	key := http.CanonicalHeaderKey(name)
	switch key {
	case "Upgrade", "Content-Length", "Transfer-Encoding", "Expect":
		return fmt.Errorf("invalid header %q: %s is set by dial or not allowed", field, name)
	}
	if cfg.offersProtocol("websocket") {
		switch key {
		case "Sec-Websocket-Protocol":
			for p := range httplist.Elements([]string{value}) {
				if !httplist.IsToken(p) {
					return fmt.Errorf("invalid header %q: subprotocol %q is not a token", field, p)
				}
				cfg.subprotocols = append(cfg.subprotocols, p)
			}
			return nil
		case "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return fmt.Errorf("invalid header %q: %s is part of the WebSocket handshake dial performs", field, name)
		}
	}
	if cfg.offersProtocol("h2c") && key == "Http2-Settings" {
		return fmt.Errorf("invalid header %q: %s is set by dial for h2c", field, name)
	}
	cfg.header.Add(key, value)
	return nil
}

// runDial runs upgrade dial.
func runDial(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseDial(args)
	if err != nil {
		return dialCommand.parseFailed(stdout, stderr, err)
	}
	fail := func(err error) int {
		// The library's errors start with "upgrade: "; say it once. They
		// may quote the server's bytes.
		fmt.Fprintf(stderr, "upgrade dial: %s\n", printable(strings.TrimPrefix(err.Error(), "upgrade: ")))
		return exitFailure
	}

	wsOpts := &websocket.DialOptions{Subprotocols: cfg.subprotocols}
	d, wsKey, err := cfg.newDialer(wsOpts)
	if err != nil {
		return dialCommand.parseFailed(stdout, stderr, err)
	}
	if d.HTTP2 != nil {
		defer d.HTTP2.CloseIdleConnections()
	}
	if tr, ok := d.HTTP3.(*http3.Transport); ok {
		defer tr.Close()
	}
	start := time.Now()
	c, err := d.Dial(context.Background(), cfg.url, cfg.offers...)
	if err != nil {
		return fail(err)
	}
	defer c.Close()

	switched := "switched to " + c.Protocol.String()
	if cfg.http2 || cfg.http3 {
		switched += " over " + map[int]string{1: "HTTP/1.1", 2: "HTTP/2", 3: "HTTP/3"}[c.Request.ProtoMajor]
	}
	switch {
	case isProtocol(c.Protocol, "websocket"):
		if err := websocket.CheckResponse(c.Response, wsKey, wsOpts); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stderr, switched)
		return dialWebSocket(c, stdin, stdout, stderr)
	case isProtocol(c.Protocol, "h2c"):
		fmt.Fprintln(stderr, switched)
		var deadline time.Time
		if cfg.timeout > 0 {
			deadline = start.Add(cfg.timeout)
		}
		if err := h2cExchange(c, stdout, deadline); err != nil {
			return fail(err)
		}
		return exitOK
	}
	fmt.Fprintln(stderr, switched)
	if err := copyBoth(c, stdin, stdout); err != nil {
		return fail(err)
	}
	return exitOK
}

// newDialer returns the Dialer for cfg and, when one of the offers is
// websocket, the key its opening handshake sends over HTTP/1.1.
func (cfg *dialConfig) newDialer(wsOpts *websocket.DialOptions) (*upgrade.Dialer, string, error) {
	d := &upgrade.Dialer{
		Method:           cfg.method,
		Header:           cfg.header.Clone(),
		Body:             cfg.body,
		HandshakeTimeout: cfg.timeout,
	}
	if cfg.timeout == 0 {
		d.HandshakeTimeout = -1 // no bound
	}
	if cfg.insecure {
		d.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if cfg.http2 {
		d.HTTP2 = &upgrade.HTTP2Transport{UnencryptedHTTP2: true}
	}
	if cfg.http3 {
		d.HTTP3 = &http3.Transport{TLSClientConfig: d.TLSClientConfig}
	}
	var wsKey string
	if cfg.offersProtocol("websocket") {
		// One of the offers is websocket: the request must be a valid
		// opening handshake in case the server picks it. Over HTTP/2
		// (RFC 8441 §5) it has no key.
		wsKey = websocket.NewKey()
		h, err := websocket.ClientHeader(wsKey, wsOpts)
		if err != nil {
			return nil, "", err
		}
		delete(h, "Sec-Websocket-Key")
		for k, vs := range h {
			d.Header[k] = vs
		}
		d.Prepare = func(req *http.Request) error {
			if req.ProtoMajor == 1 {
				req.Header["Sec-Websocket-Key"] = []string{wsKey}
			}
			return nil
		}
	}
	if cfg.offersProtocol("h2c") {
		d.Header.Set("HTTP2-Settings", h2cSettingsHeader())
		d.Header.Add("Connection", "HTTP2-Settings")
	}
	return d, wsKey, nil
}

// copyBoth copies stdin to c, half-closing c's write side at stdin's EOF,
// and c to stdout until the server closes. Bytes that arrived with the 101
// come first: c.Read returns them before reading the network.
func copyBoth(c *upgrade.Conn, stdin io.Reader, stdout io.Writer) error {
	go func() {
		// Write errors mean the server has gone; the read side below
		// reports how.
		if _, err := io.Copy(c, stdin); err == nil {
			_ = c.CloseWrite()
		}
	}()
	// stdout may be an *os.File, whose ReadFrom would bypass c.Read.
	if _, err := io.Copy(writerOnly{stdout}, c); err != nil {
		return fmt.Errorf("reading from the connection: %w", err)
	}
	return nil
}

// writerOnly hides every method of an io.Writer but Write, so io.Copy
// reads through the source's Read method.
type writerOnly struct{ io.Writer }

// dialWebSocket speaks WebSocket on c: each stdin line becomes a text
// message (binary if not valid UTF-8) and each message received is printed
// as a line. At stdin's EOF it sends a close frame and keeps printing
// messages until the server's close frame. A clean close by either side is
// a success.
//
// The close frame is sent with WriteClose, which does not wait, so the
// reading goroutine goes on printing the echoes still in flight until the
// server's close frame.
func dialWebSocket(c *upgrade.Conn, stdin io.Reader, stdout, stderr io.Writer) int {
	ws := wsframe.NewConn(readWriter{c, c}, true)

	readErr := make(chan error, 1)
	go func() {
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			line := append(p, '\n') // p is ours until the next ReadMessage
			if _, err := stdout.Write(line); err != nil {
				readErr <- fmt.Errorf("writing to stdout: %w", err)
				return
			}
		}
	}()
	stdinDone := make(chan error, 1)
	go func() { stdinDone <- sendLines(ws, stdin) }()

	var err error
	select {
	case werr := <-stdinDone:
		// stdin ended (or a send failed): send our close frame, then
		// print what still arrives until the server's close frame, for
		// at most closeWait.
		_ = ws.WriteClose(wsframe.CloseNormalClosure, "")
		_ = c.SetReadDeadline(time.Now().Add(closeWait))
		err = <-readErr
		if werr != nil && !isCloseError(err) {
			err = werr
		}
	case err = <-readErr:
		// The server closed first (ReadMessage answered its close
		// frame), or the connection failed.
	}
	var ce *wsframe.CloseError
	if errors.As(err, &ce) {
		if ce.Code != wsframe.CloseNormalClosure && ce.Code != wsframe.CloseNoStatusReceived {
			fmt.Fprintf(stderr, "upgrade dial: server closed the WebSocket with %d %s\n", ce.Code, printable(ce.Reason))
		}
		return exitOK
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		err = errors.New("connection closed without a WebSocket close frame")
	}
	fmt.Fprintf(stderr, "upgrade dial: websocket: %s\n", printable(err.Error()))
	return exitFailure
}

// closeWait bounds the wait for the server's close frame after ours.
const closeWait = 5 * time.Second

// readWriter joins a Reader and a Writer, hiding any Close or SetDeadline
// method, so that a wsframe.Conn never closes the connection or changes
// its deadlines.
type readWriter struct {
	io.Reader
	io.Writer
}

func isCloseError(err error) bool {
	var ce *wsframe.CloseError
	return errors.As(err, &ce)
}

// sendLines sends each line of r (without its "\n" or "\r\n") as a
// message until r's EOF, which is not an error.
func sendLines(ws *wsframe.Conn, r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = trimEOL(line)
			op := wsframe.OpText
			if !utf8.Valid(line) {
				op = wsframe.OpBinary
			}
			if werr := ws.WriteMessage(op, line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// parseProtocol parses one protocol, NAME or NAME/VERSION, as a command
// line gives it.
func parseProtocol(s string) (upgrade.Protocol, error) {
	ps, err := upgrade.ParseProtocols([]string{s})
	switch {
	case err != nil:
		return upgrade.Protocol{}, err
	case len(ps) != 1 || ps[0].String() != s:
		return upgrade.Protocol{}, &upgrade.HeaderError{Element: s, Reason: "not a single protocol"}
	}
	return ps[0], nil
}
