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
)

// proxyConfig is the parsed command line of upgrade proxy.
type proxyConfig struct {
	addr    string
	to      *url.URL
	allow   []string // nil: every protocol but h2c
	tls     bool
	grace   time.Duration
	verbose bool
}

// parseProxy parses the flags of upgrade proxy. It returns flag.ErrHelp
// for -h.
func parseProxy(args []string, stderr io.Writer) (proxyConfig, error) {
	cfg := proxyConfig{}
	fs := flag.NewFlagSet("upgrade proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "address to listen on")
	to := fs.String("to", "", "the backend's URL (http or https)")
	allow := fs.String("allow", "", "protocols that may be forwarded, comma-separated patterns (default: all but h2c)")
	fs.BoolVar(&cfg.tls, "tls", false, "serve HTTPS with an ephemeral self-signed certificate")
	fs.DurationVar(&cfg.grace, "grace", 5*time.Second, "how long proxied connections get to finish on shutdown")
	fs.BoolVar(&cfg.verbose, "v", false, "log one line per proxied connection, when it ends")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *to == "" {
		return cfg, errors.New("-to URL is required")
	}
	u, err := url.Parse(*to)
	if err != nil {
		return cfg, fmt.Errorf("invalid -to: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return cfg, fmt.Errorf("invalid -to %q: want an http or https URL with a host", *to)
	}
	cfg.to = u
	if *allow != "" {
		for _, p := range strings.Split(*allow, ",") {
			p = strings.TrimSpace(p)
			if _, err := upgrade.ParseProtocol(p); err != nil {
				return cfg, fmt.Errorf("invalid -allow element %q: %w", p, err)
			}
			cfg.allow = append(cfg.allow, p)
		}
	}
	if cfg.grace < 0 {
		return cfg, fmt.Errorf("invalid -grace %v: must not be negative", cfg.grace)
	}
	return cfg, nil
}

// runProxy runs upgrade proxy until SIGINT or SIGTERM.
func runProxy(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseProxy(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "upgrade proxy: %v\n", err)
		return exitUsage
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		log.Error("listen", "addr", cfg.addr, "err", err)
		return exitFailure
	}
	scheme := "http"
	if cfg.tls {
		cert, err := selfSignedCert()
		if err != nil {
			ln.Close()
			log.Error("TLS certificate", "err", err)
			return exitFailure
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
		scheme = "https"
	}
	up, hs := newProxyServer(cfg, log)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	allow := "all but h2c"
	if cfg.allow != nil {
		allow = strings.Join(cfg.allow, ",")
	}
	log.Info("proxying", "addr", ln.Addr().String(), "to", cfg.to.Redacted(), "allow", allow, "tls", cfg.tls,
		"grace", cfg.grace, "verbose", cfg.verbose)
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())

	select {
	case err := <-serveErr:
		log.Error("serve", "err", err)
		return exitFailure
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down", "grace", cfg.grace)
	shutdownProxy(hs, up, cfg.grace, log)
	log.Info("stopped")
	return exitOK
}

// newProxyServer builds the proxy: upgrades through upgrade.Proxy, every
// other request through httputil.ReverseProxy, both to cfg.to, both
// keeping the client's Host and adding X-Forwarded-For.
func newProxyServer(cfg proxyConfig, log *slog.Logger) (*upgrade.Proxy, *http.Server) {
	up := upgrade.NewProxy(cfg.to)
	up.Allow = cfg.allow
	up.ErrorLog = log
	plain := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(cfg.to)
			pr.Out.Host = pr.In.Host
			// Append to the client's X-Forwarded-For, as upgrade.Proxy
			// does, so both kinds of request say the same.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs := &http.Server{
		Handler:           up.Middleware(plain),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return up, hs
}

// shutdownProxy stops the proxy: no new connections or upgrades, proxied
// pairs relaying until they end or grace passes, then closed.
func shutdownProxy(hs *http.Server, up *upgrade.Proxy, grace time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := up.Shutdown(ctx); err != nil {
			log.Warn("proxied connections still open after the grace period were closed", "active", up.ActiveConns())
		}
	})
	if err := hs.Shutdown(ctx); err != nil {
		log.Warn("HTTP connections still open after the grace period are being closed", "err", err)
		_ = hs.Close()
	}
	wg.Wait()
}
