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
	"net/http/httputil"
	"net/url"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/selfsigned"
	"github.com/go-upgrade/upgrade/reverseproxy"
)

// proxyConfig is the parsed command line of upgrade proxy.
type proxyConfig struct {
	addr     string
	to       *url.URL
	allow    []string // nil: every protocol but h2c
	tls      bool
	http3    bool // HTTP/3 too, on UDP (needs tls)
	insecure bool // do not verify the backend's TLS certificate
	grace    time.Duration
	verbose  bool
}

// defaultProxyAddr is the proxy's default address: not serve's
// (127.0.0.1:8080), so that the two run side by side with their defaults.
const defaultProxyAddr = "127.0.0.1:9090"

// proxyCommand is "upgrade proxy".
var proxyCommand = &subcommand{
	name:     "proxy",
	synopsis: "upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls [-http3]] [-insecure] [-grace D] [-v]",
	help: `usage: upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls [-http3]] [-insecure] [-grace D] [-v]

Proxy forwards every request to the backend URL, keeping the client's
Host: upgrade requests through reverseproxy.Proxy, which relays the
switched connection both ways without changing or losing a byte, plain
requests through httputil.ReverseProxy. HTTP/2 clients (with prior knowledge over
cleartext; by ALPN with -tls) may open WebSockets and other protocols as
RFC 8441 extended CONNECT streams, and, with -tls -http3, HTTP/3 clients
as RFC 9220 ones: each is forwarded as an HTTP/1.1 upgrade, a WebSocket
with the key and accept check RFC 6455 needs. When ready it prints
"listening on http://HOST:PORT" (https with -tls) on stdout; logs go to
stderr. SIGINT (Ctrl-C) or SIGTERM: proxied connections and streams relay
until they end or -grace passes, then exit 0.

What passes:

  - An upgrade offering nothing -allow allows, an HTTP/1.0 one, and one
    whose Connection field lacks "upgrade" are proxied as plain requests,
    without Upgrade, the Connection options naming it and HTTP2-Settings.
  - The backend is always asked over HTTP/1.1. An answer other than 101 is
    relayed whole (status, fields, body), and the connection closed after
    it. A 426 lists only the protocols -allow lets through, with
    "Connection: Upgrade" (a 403 if none is left); to an HTTP/2 client it
    is a 400.
  - X-Forwarded-For and Forwarded keep the client's elements and end with
    the proxy's own, on upgrades and plain requests alike: trust only the
    elements your own proxies added, from the end.
  - A stream from an HTTP/2 client ends when the backend closes
    (END_STREAM) and is reset when the backend resets (INTERNAL_ERROR: the
    one code net/http's HTTP/2 server can reset a stream with from a
    handler). A stream from an HTTP/3 client is half-closed as a TCP
    connection is: the backend's FIN ends its sending side, the client's
    FIN reaches the backend as a half-close, and a reset on either side
    is passed on (to the client as H3_CONNECT_ERROR).

Flags:

  -to URL           the backend, an http:// or https:// URL (required);
                    its path is joined with each request's
  -addr HOST:PORT   address to listen on (default 127.0.0.1:9090; port 0:
                    any free port)
  -allow P,...      protocols that may be forwarded: name, name/version or
                    name/* (default: every protocol but h2c, which would
                    let requests past the proxy on one HTTP/2 connection)
  -tls              serve HTTPS with an ephemeral self-signed certificate
                    for 127.0.0.1, ::1 and localhost (its SPKI hash is
                    logged, as spki_sha256)
  -http3            with -tls: accept HTTP/3 too, on UDP at the same
                    address and port, with the same certificate; TCP
                    responses carry Alt-Svc: h3=":PORT" instead of the
                    backend's. A :protocol is a token: a protocol with a
                    version (echo/1) cannot be asked for over HTTP/3
  -insecure         do not verify the backend's TLS certificate (for a
                    backend with a self-signed one, such as serve -tls)
  -grace D          how long proxied connections get to finish on
                    shutdown (default 5s)
  -v                log one INFO line per proxied connection or stream,
                    when it ends: the protocol, the client's HTTP version
                    (proto=HTTP/1.1, HTTP/2.0 or HTTP/3.0), the backend, and
                    how it ended (how="closed by client", "closed by
                    backend", "reset by client", "refused by backend with
                    426", "backend unreachable", "backend TLS verification
                    failed", "idle timeout"...). Failures to reach the
                    backend are logged as WARN lines, with or without -v

Examples:

  upgrade serve &                               # the demo server, on 127.0.0.1:8080
  upgrade proxy -to http://127.0.0.1:8080 &     # in front of it, on 127.0.0.1:9090
  echo hi | upgrade dial http://127.0.0.1:9090/ echo/1
  upgrade serve -tls -addr 127.0.0.1:8443 &     # the demo over HTTPS, self-signed
  upgrade proxy -addr 127.0.0.1:9091 -to https://127.0.0.1:8443 -insecure -allow websocket,echo/1 -v
  upgrade proxy -addr 127.0.0.1:9443 -to http://127.0.0.1:8080 -tls -http3 -v   # HTTP/3 clients too
`,
}

// parseProxy parses the command line of upgrade proxy. It returns
// flag.ErrHelp for -h.
func parseProxy(args []string) (proxyConfig, error) {
	cfg := proxyConfig{}
	to, allow := new(string), new(string)
	fs := proxyFlags(&cfg, to, allow)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: proxy takes flags only", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(cfg.addr); err != nil {
		return cfg, fmt.Errorf("invalid -addr %q: want HOST:PORT, such as 127.0.0.1:8080 or :8080", cfg.addr)
	}
	if *to == "" {
		return cfg, errors.New("-to URL is required")
	}
	u, err := url.Parse(*to)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, fmt.Errorf("invalid -to %q: want an http or https URL with a host", *to)
	}
	cfg.to = u
	if cfg.http3 && !cfg.tls {
		return cfg, errors.New("-http3 needs -tls: HTTP/3 runs over QUIC, which is always encrypted")
	}
	if *allow != "" {
		for _, p := range strings.Split(*allow, ",") {
			p = strings.TrimSpace(p)
			if _, err := parseProtocol(p); err != nil {
				return cfg, fmt.Errorf("invalid -allow element %q: want name, name/version or name/*", p)
			}
			cfg.allow = append(cfg.allow, p)
		}
	}
	return cfg, nil
}

// proxyFlags returns the flag set of upgrade proxy, which fills cfg, to
// and allow.
func proxyFlags(cfg *proxyConfig, to, allow *string) *flag.FlagSet {
	fs := proxyCommand.flagSet()
	fs.StringVar(&cfg.addr, "addr", defaultProxyAddr, "address to listen on")
	fs.StringVar(to, "to", "", "the backend's URL (http or https)")
	fs.StringVar(allow, "allow", "", "protocols that may be forwarded, comma-separated patterns (default: all but h2c)")
	fs.BoolVar(&cfg.tls, "tls", false, "serve HTTPS with an ephemeral self-signed certificate")
	fs.BoolVar(&cfg.http3, "http3", false, "with -tls, accept HTTP/3 too, on UDP at the same address")
	fs.BoolVar(&cfg.insecure, "insecure", false, "do not verify the backend's TLS certificate")
	durationVar(fs, &cfg.grace, "grace", 5*time.Second, "how long proxied connections get to finish on shutdown")
	fs.BoolVar(&cfg.verbose, "v", false, "log one line per proxied connection or stream, when it ends")
	return fs
}

// runProxy runs upgrade proxy until SIGINT or SIGTERM.
func runProxy(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseProxy(args)
	if err != nil {
		return proxyCommand.parseFailed(stdout, stderr, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, scheme, tlsConf, err := listen(cfg.addr, cfg.tls)
	if err != nil {
		fmt.Fprintf(stderr, "upgrade proxy: %v\n", err)
		return exitFailure
	}
	up, hs := newProxyServer(cfg, log)
	serveErr := make(chan error, 2)
	var h3 *http3Endpoint
	if cfg.http3 {
		// The same handler: http3.Handler presents extended CONNECTs as
		// the Proxy expects, and plain requests go to the plain proxy.
		if h3, err = listenHTTP3(ln.Addr(), tlsConf, hs.Handler, log); err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "upgrade proxy: %v\n", err)
			return exitFailure
		}
		hs.Handler = h3.altSvc(hs.Handler)
		go func() { serveErr <- h3.serve() }()
	}
	go func() { serveErr <- hs.Serve(ln) }()

	allow := "all but h2c"
	if cfg.allow != nil {
		allow = strings.Join(cfg.allow, ",")
	}
	log.Info("proxying", "addr", ln.Addr().String(), "to", cfg.to.Redacted(), "allow", allow, "tls", cfg.tls,
		"http3", cfg.http3, "insecure", cfg.insecure, "grace", cfg.grace, "verbose", cfg.verbose)
	if tlsConf != nil {
		// For Chromium over HTTP/3: --ignore-certificate-errors-spki-list.
		log.Info("self-signed certificate", "spki_sha256", selfsigned.SPKIHash(tlsConf.Certificates[0]))
	}
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())

	return untilSignal(ctx, stop, serveErr, "upgrade proxy", stderr, log, cfg.grace, func(grace time.Duration) {
		shutdownProxy(hs, h3, up, grace, log)
	})
}

// newProxyServer builds the proxy: upgrades through reverseproxy.Proxy, every
// other request through httputil.ReverseProxy, both to cfg.to, both
// keeping the client's Host and setting the forwarding fields alike.
func newProxyServer(cfg proxyConfig, log *slog.Logger) (*reverseproxy.Proxy, *http.Server) {
	up := reverseproxy.New(cfg.to)
	up.Allow = cfg.allow
	up.ErrorLog = log
	if cfg.verbose {
		up.ErrorLog = slog.New(debugAsInfo{log.Handler()})
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.insecure {
		up.Dialer = &upgrade.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	plain := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(cfg.to)
			pr.Out.Host = pr.In.Host
			reverseproxy.SetForwarded(pr.Out.Header, pr.In)
		},
		ModifyResponse: func(resp *http.Response) error {
			if cfg.http3 {
				// The backend's alternative services are its own: with
				// -http3 the proxy advertises its HTTP/3 endpoint.
				delete(resp.Header, "Alt-Svc")
			}
			return nil
		},
		// Keeps the Upgrade list of a backend's 426 for up to pass on.
		Transport: up.Transport(transport),
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// HTTP/1.1 and HTTP/2 (prior knowledge over cleartext, ALPN with
	// -tls): an HTTP/2 client's extended CONNECT streams (RFC 8441) are
	// bridged to the backend as HTTP/1.1 upgrades.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(!cfg.tls)
	hs := &http.Server{
		Handler:           up.Middleware(plain),
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return up, hs
}

// debugAsInfo is a slog.Handler that logs records below slog.LevelInfo
// as INFO records: with -v, the record reverseproxy.Proxy logs at DEBUG for
// each proxied connection is the INFO line serve -v writes for each of
// its own.
type debugAsInfo struct{ slog.Handler }

func (h debugAsInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, max(l, slog.LevelInfo))
}

func (h debugAsInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = max(r.Level, slog.LevelInfo)
	return h.Handler.Handle(ctx, r)
}

func (h debugAsInfo) WithAttrs(attrs []slog.Attr) slog.Handler {
	return debugAsInfo{h.Handler.WithAttrs(attrs)}
}

func (h debugAsInfo) WithGroup(name string) slog.Handler {
	return debugAsInfo{h.Handler.WithGroup(name)}
}

// shutdownProxy stops the proxy: no new connections or upgrades, proxied
// pairs, HTTP/3 streams among them, relaying until they end or grace
// passes, then closed. h3 is nil without -http3.
func shutdownProxy(hs *http.Server, h3 *http3Endpoint, up *reverseproxy.Proxy, grace time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := up.Shutdown(ctx); err != nil {
			log.Warn("proxied connections still open after the grace period were closed", "active", up.ActiveConns())
		}
	})
	if h3 != nil {
		// GOAWAY, then the connections close as their streams end, or
		// at the end of the grace period.
		wg.Go(func() { _ = h3.srv.Shutdown(ctx) })
	}
	if err := hs.Shutdown(ctx); err != nil {
		log.Warn("HTTP connections still open after the grace period are being closed", "err", err)
		_ = hs.Close()
	}
	wg.Wait()
	if h3 != nil {
		h3.pc.Close()
	}
}
