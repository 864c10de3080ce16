package reverseproxy_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/go-upgrade/upgrade/reverseproxy"
)

// A reverse proxy for a whole site: upgrade requests (WebSocket, echo/1,
// anything but h2c) go through the Proxy, which relays the switched
// connections without losing a byte; every other request, and an upgrade
// offering nothing allowed (with its upgrade removed), through
// httputil.ReverseProxy, whose Transport keeps a backend's 426 list and
// whose forwarding fields are set as the Proxy sets them.
//
// On SIGINT, the http.Server and the Proxy shut down within one grace
// period: the Proxy's Shutdown starts with the server's (which waits for
// the handlers relaying HTTP/2 streams), and, called again after it, waits
// for the remaining pairs.
func ExampleProxy_Middleware() {
	backend, _ := url.Parse("http://127.0.0.1:8080")

	up := reverseproxy.New(backend)
	up.Allow = []string{"websocket", "echo/*"} // nil: everything but h2c
	up.IdleTimeout = time.Hour

	plain := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.Out.Host = pr.In.Host
			reverseproxy.SetForwarded(pr.Out.Header, pr.In)
		},
		Transport: up.Transport(nil),
	}

	srv := &http.Server{Addr: "127.0.0.1:9090", Handler: up.Middleware(plain), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	<-ctx.Done()

	grace, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.RegisterOnShutdown(func() { _ = up.Shutdown(grace) })
	_ = srv.Shutdown(grace)
	if err := up.Shutdown(grace); err != nil {
		log.Print("relayed pairs still open after the grace period were closed")
	}
}

// Routing per request: Rewrite picks the backend and edits the header
// sent to it.
func ExampleProxy_rewrite() {
	chat, _ := url.Parse("http://10.0.0.2:8080")
	game, _ := url.Parse("http://10.0.0.3:8080")
	p := &reverseproxy.Proxy{
		Rewrite: func(pr *reverseproxy.Request) {
			if pr.In.URL.Path == "/game" {
				pr.SetURL(game)
			} else {
				pr.SetURL(chat)
			}
			pr.Out.Header.Set("X-Tenant", pr.In.Header.Get("X-Tenant"))
		},
		MaxConns: 10000,
	}
	http.Handle("/game", p)
	http.Handle("/chat", p)
}
