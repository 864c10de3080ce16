package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/h2c"
	"github.com/go-upgrade/upgrade/internal/selfsigned"
	"github.com/go-upgrade/upgrade/websocket"
)

// serveConfig is the parsed command line of upgrade serve.
type serveConfig struct {
	addr        string
	serverOrder bool // -policy server
	grace       time.Duration
	readTimeout time.Duration // http.Server.ReadTimeout; 0: none
	verbose     bool          // one log line per switched connection
	tls         bool          // HTTPS with an ephemeral self-signed certificate
	http3       bool          // HTTP/3 too, on UDP (needs tls)
}

// defaultReadTimeout bounds reading a plain request, body included: a
// client cannot dribble a request body forever. Hijacking clears the
// deadline it sets, so switched connections are not affected.
const defaultReadTimeout = 30 * time.Second

// readHeaderTimeout bounds reading a request's header block.
const readHeaderTimeout = 10 * time.Second

// serveCommand is "upgrade serve".
var serveCommand = &subcommand{
	name:     "serve",
	synopsis: "upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v]",
	help: `usage: upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v]

Serve runs a demo server. It offers echo/1, websocket and h2c, in that
order of preference, on every path: /required answers 426 Upgrade Required
when it cannot switch, every other path serves the request normally (/ is
a WebSocket echo page for a browser, /protocols lists the protocols). It
speaks HTTP/1.1 and HTTP/2 (with prior knowledge over cleartext; by ALPN
with -tls), and serves echo/1 and websocket over HTTP/2 too, as RFC 8441
extended CONNECT streams (and, with -http3, websocket over HTTP/3, RFC
9220). When ready it prints "listening on
http://HOST:PORT" (https with -tls) on stdout; logs go to stderr. SIGINT
(Ctrl-C) or SIGTERM: graceful shutdown within -grace, exit 0.

Flags:

  -addr HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0:
                    any free port)
  -policy P         whose preference picks among acceptable offers: client
                    or server (default client)
  -grace D          how long upgraded connections get to finish on
                    shutdown (default 5s)
  -read-timeout D   bound on reading a plain request, body included; not
                    on switched connections (default 30s; 0: none)
  -tls              serve HTTPS, with ALPN h2 and http/1.1, with an
                    ephemeral self-signed certificate for 127.0.0.1, ::1
                    and localhost
  -http3            with -tls: serve HTTP/3 too, on UDP at the same address
                    and port, with the same certificate; TCP responses
                    carry Alt-Svc: h3=":PORT". A :protocol is a token, so
                    echo/1 cannot be reached over HTTP/3; websocket can
  -v                log one line per switched connection, when it ends,
                    with the HTTP version it came over (proto=HTTP/2.0,
                    proto=HTTP/3.0);
                    otherwise only the start, the shutdown and errors

Examples:

  upgrade serve                        # then open http://127.0.0.1:8080/
  upgrade serve -addr 127.0.0.1:0 -v   # any free port; log every connection
  curl -v --http2 http://127.0.0.1:8080/
  curl -v http://127.0.0.1:8080/required
`,
}

// parseServe parses the command line of upgrade serve. It returns
// flag.ErrHelp for -h.
func parseServe(args []string) (serveConfig, error) {
	var cfg serveConfig
	fs := serveFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: serve takes flags only", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(cfg.addr); err != nil {
		return cfg, fmt.Errorf("invalid -addr %q: want HOST:PORT, such as 127.0.0.1:8080 or :8080", cfg.addr)
	}
	if cfg.http3 && !cfg.tls {
		return cfg, errors.New("-http3 needs -tls: HTTP/3 runs over QUIC, which is always encrypted")
	}
	return cfg, nil
}

// serveFlags returns the flag set of upgrade serve, which fills cfg.
func serveFlags(cfg *serveConfig) *flag.FlagSet {
	fs := serveCommand.flagSet()
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.Var((*policyValue)(&cfg.serverOrder), "policy", "client or server: whose preference picks among offers")
	durationVar(fs, &cfg.grace, "grace", 5*time.Second, "how long upgraded connections get to finish on shutdown")
	durationVar(fs, &cfg.readTimeout, "read-timeout", defaultReadTimeout, "bound on reading a plain request, body included (0: none)")
	fs.BoolVar(&cfg.tls, "tls", false, "serve HTTPS with an ephemeral self-signed certificate")
	fs.BoolVar(&cfg.http3, "http3", false, "with -tls, serve HTTP/3 too, on UDP at the same address")
	fs.BoolVar(&cfg.verbose, "v", false, "log one line per switched connection, when it ends")
	return fs
}

// policyValue is the flag.Value of -policy: whether the server's order
// of preference decides.
type policyValue bool

func (p *policyValue) String() string { return policyName(bool(*p)) }

func (p *policyValue) Set(s string) error {
	switch s {
	case "client", "server":
		*p = s == "server"
	default:
		return errors.New("want client or server")
	}
	return nil
}

// policyName names a negotiation policy: "server" if the server's order
// of preference decides, "client" otherwise.
func policyName(serverOrder bool) string {
	if serverOrder {
		return "server"
	}
	return "client"
}

// runServe runs upgrade serve until SIGINT or SIGTERM.
func runServe(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseServe(args)
	if err != nil {
		return serveCommand.parseFailed(stdout, stderr, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, scheme, tlsConf, err := listen(cfg.addr, cfg.tls)
	if err != nil {
		fmt.Fprintf(stderr, "upgrade serve: %v\n", err)
		return exitFailure
	}
	s := newDemoServer(cfg, log)
	serveErr := make(chan error, 2)
	if cfg.http3 {
		if s.h3, err = listenHTTP3(ln.Addr(), tlsConf, s.http.Handler, log); err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "upgrade serve: %v\n", err)
			return exitFailure
		}
		s.http.Handler = s.h3.altSvc(s.http.Handler)
		go func() { serveErr <- s.h3.serve() }()
	}
	go func() { serveErr <- s.http.Serve(ln) }()

	log.Info("serving", "addr", ln.Addr().String(), "protocols", protocolList(s.upgrade.Protocols()), "policy", policyName(cfg.serverOrder),
		"grace", cfg.grace, "read_timeout", cfg.readTimeout, "tls", cfg.tls, "http3", cfg.http3, "verbose", cfg.verbose,
		"extended_connect", upgrade.ExtendedConnect())
	if tlsConf != nil {
		// For Chromium over HTTP/3: --ignore-certificate-errors-spki-list.
		log.Info("self-signed certificate", "spki_sha256", selfsigned.SPKIHash(tlsConf.Certificates[0]))
	}
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())

	return untilSignal(ctx, stop, serveErr, "upgrade serve", stderr, log, cfg.grace, s.shutdown)
}

// untilSignal waits until ctx ends (SIGINT or SIGTERM) or the server fails
// (serveErr). On a signal it stops catching signals, so that a second one
// ends the process the default way, and shuts down with the given grace
// period. It returns the exit status.
func untilSignal(ctx context.Context, stop func(), serveErr <-chan error, cmd string, stderr io.Writer,
	log *slog.Logger, grace time.Duration, shutdown func(time.Duration)) int {
	select {
	case err := <-serveErr:
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return exitFailure
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down", "grace", grace)
	shutdown(grace)
	log.Info("stopped")
	return exitOK
}

// listen listens on addr, with TLS (ALPN h2 and http/1.1, an ephemeral
// self-signed certificate) if secure, and returns the listener, the URL
// scheme it serves and its TLS configuration (nil without TLS).
func listen(addr string, secure bool) (net.Listener, string, *tls.Config, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, fmt.Errorf("cannot listen on %s: %w", addr, listenReason(err))
	}
	if !secure {
		return ln, "http", nil, nil
	}
	cert, err := selfsigned.Cert("upgrade (self-signed)")
	if err != nil {
		ln.Close()
		return nil, "", nil, fmt.Errorf("making a TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	return tls.NewListener(ln, cfg), "https", cfg, nil
}

// listenReason returns what is wrong in err, an error from net.Listen,
// without the "listen tcp ADDR:" and "bind:" prefixes that say again what
// was being done: "address already in use", "permission denied",
// "lookup nosuch.example: no such host".
func listenReason(err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) && sysErr.Err != nil {
		err = sysErr.Err
	}
	return err
}

// demoServer is the HTTP server of upgrade serve with its upgrade.Server.
type demoServer struct {
	http    *http.Server
	upgrade *upgrade.Server
	demo    *demoHandler
	h3      *http3Endpoint // with -http3
	log     *slog.Logger
	verbose bool
}

// newDemoServer builds the server: echo/1, websocket and h2c registered in
// that order, /required as an upgrade-required endpoint and the demo
// handler, upgrade-optional, on every other path.
func newDemoServer(cfg serveConfig, log *slog.Logger) *demoServer {
	us := &upgrade.Server{ServerOrder: cfg.serverOrder, ErrorLog: log}
	hs := &http.Server{
		ReadHeaderTimeout: readHeaderTimeout,
		// Bounds a plain request's body too (POST /); Hijack clears the
		// deadline, so a switched connection may idle longer. h2c
		// streams take it as their own read timeout.
		ReadTimeout: cfg.readTimeout,
		IdleTimeout: 2 * time.Minute,
		// OPTIONS * is the server's to answer, and can be switched
		// (RFC 9110 §7.8): net/http must not answer it by itself.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// HTTP/1.1 and HTTP/2, the latter by ALPN over TLS and with prior
	// knowledge over cleartext: an HTTP/2 client can then open WebSockets
	// and echo/1 as extended CONNECT streams.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(!cfg.tls)
	hs.Protocols = &protocols
	if cfg.readTimeout > 0 && cfg.readTimeout < hs.ReadHeaderTimeout {
		hs.ReadHeaderTimeout = cfg.readTimeout
	}
	s := &demoServer{http: hs, upgrade: us, log: log, verbose: cfg.verbose}

	// Any method may switch to echo/1: curl, for one, sends its data as
	// a POST without Content-Length, so the bytes after the request are
	// the first bytes of the echo/1 stream.
	us.HandleRoute("echo/1", upgrade.Route{Handler: upgrade.HandlerFunc(s.logged(s.serveEcho)), Methods: []string{"*"}})
	// GET and OPTIONS only (the default): a POST offering websocket and
	// h2c goes on to h2c instead of being refused by the WebSocket
	// handshake.
	us.Handle("websocket", &websocket.Handler{
		Serve: func(c *upgrade.Conn, sub string) {
			s.serveLogged(c, func() connEnd { return s.serveWebSocket(c, sub) })
		},
		Subprotocols: []string{demoSubprotocol, "echo"},
	})
	h2 := &h2c.Handler{Server: hs}
	h2Route := h2.Route()
	h2Route.Handler = accepter{Accepter: h2, serve: s.logged(func(c *upgrade.Conn) connEnd {
		h2.ServeUpgrade(c)
		return connEnd{}
	})}
	us.HandleRoute(h2c.Protocol, h2Route)

	s.demo = newDemoHandler(us, cfg.serverOrder)
	mux := http.NewServeMux()
	mux.Handle("/required", us)
	mux.Handle("/", us.Middleware(s.demo))
	hs.Handler = asterisk(us.Middleware(http.HandlerFunc(s.serveOptions)), mux)
	// Requests arriving over h2c have already upgraded: they go to the
	// demo handler directly, /required included (through the endpoint
	// they would get 505, which is for HTTP/2 requests that never
	// upgraded).
	h2mux := http.NewServeMux()
	h2mux.Handle("/", s.demo)
	h2mux.HandleFunc("/required", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upgraded: this request arrived over %s\n", r.Proto)
	})
	h2.Handler = asterisk(http.HandlerFunc(s.serveOptions), h2mux)
	hs.RegisterOnShutdown(s.demo.shutdown)
	return s
}

// asterisk returns a handler that sends requests whose target is "*"
// (asterisk-form, RFC 9112 §3.2.4) to options if their method is OPTIONS
// and answers others with 400 Bad Request, and every other request to
// next. http.ServeMux answers every "*" request with 400 by itself.
func asterisk(options, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.RequestURI != "*":
			next.ServeHTTP(w, r)
		case r.Method == http.MethodOptions:
			options.ServeHTTP(w, r)
		default:
			w.Header().Set("Connection", "close")
			http.Error(w, "the * request target is for OPTIONS only", http.StatusBadRequest)
		}
	})
}

// serveOptions answers an OPTIONS * request that was not switched: 200
// with no content, like net/http's own answer, advertising the protocols
// the server can switch to (RFC 9110 §7.8 allows Upgrade in any
// response) when the request is HTTP/1.1.
func (s *demoServer) serveOptions(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.ProtoMajor == 1 && r.ProtoMinor >= 1 {
		h.Set("Upgrade", protocolList(s.upgrade.Protocols()))
		h.Set("Connection", "Upgrade")
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// connEnd is how a switched connection ended, for the -v log line.
type connEnd struct {
	how   string // e.g. "client half-closed"; "" for nothing to say
	err   error  // the error that ended it, if any
	warn  bool   // the client broke the protocol: log at WARN
	attrs []any  // protocol-specific key-value pairs
}

// logged returns serve as a protocol handler that, with -v, logs exactly
// one line when the connection ends: the protocol, the remote address,
// the HTTP version of the request that was switched (proto=HTTP/1.1),
// how long the connection lasted and how it ended. Without -v it logs
// nothing: a log write per connection is a cost every upgrade pays.
func (s *demoServer) logged(serve func(c *upgrade.Conn) connEnd) func(c *upgrade.Conn) {
	return func(c *upgrade.Conn) {
		s.serveLogged(c, func() connEnd { return serve(c) })
	}
}

// serveLogged runs serve, which serves c, and with -v logs how it ended.
func (s *demoServer) serveLogged(c *upgrade.Conn, serve func() connEnd) {
	if !s.verbose {
		serve()
		return
	}
	start := time.Now()
	end := serve()
	args := make([]any, 0, 12+len(end.attrs))
	args = append(args, "protocol", c.Protocol.String(), "remote", c.RemoteAddr().String(),
		"proto", c.Request.Proto, "duration", time.Since(start).Round(time.Millisecond))
	if end.how != "" {
		args = append(args, "how", end.how)
	}
	args = append(args, end.attrs...)
	if end.err != nil {
		args = append(args, "err", end.err)
	}
	level := slog.LevelInfo
	if end.warn {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "connection closed", args...)
}

// accepter is a protocol handler made of an Accepter and a serve
// function: it keeps the pre-101 step of the handler it wraps.
type accepter struct {
	upgrade.Accepter
	serve func(c *upgrade.Conn)
}

// ServeUpgrade serves c with a's serve function.
func (a accepter) ServeUpgrade(c *upgrade.Conn) { a.serve(c) }

// shutdown stops the server: no new connections or upgrades, upgraded
// connections asked to finish and closed after grace.
func (s *demoServer) shutdown(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.upgrade.Shutdown(ctx); err != nil {
			s.log.Warn("upgraded connections still open after the grace period were closed", "active", s.upgrade.ActiveConns())
		}
	})
	if s.h3 != nil {
		// GOAWAY, then the connections close as their streams end, or
		// at the end of the grace period.
		wg.Go(func() { _ = s.h3.srv.Shutdown(ctx) })
	}
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("HTTP connections still open after the grace period are being closed", "err", err)
		_ = s.http.Close()
	}
	wg.Wait()
	if s.h3 != nil {
		s.h3.pc.Close()
	}
}

// protocolList formats registered protocols as an Upgrade field value,
// "name/*" as "name".
func protocolList(ps []upgrade.Protocol) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		if p.Version == "*" {
			p.Version = ""
		}
		b.WriteString(p.String())
	}
	return b.String()
}
