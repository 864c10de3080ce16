package upgrade_test

import (
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/go-upgrade/upgrade"
)

// A reverse proxy for a whole site: upgrade requests (WebSocket, echo/1,
// anything but h2c) go through upgrade.Proxy, which relays the switched
// connections without losing a byte; every other request, and an upgrade
// offering nothing allowed (with its upgrade removed), through
// httputil.ReverseProxy, whose Transport keeps a backend's 426 list and
// whose forwarding fields are set as the Proxy sets them.
func ExampleProxy_Middleware() {
	backend, _ := url.Parse("http://127.0.0.1:8080")

	up := upgrade.NewProxy(backend)
	up.Allow = []string{"websocket", "echo/*"} // nil: everything but h2c
	up.IdleTimeout = time.Hour

	plain := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.Out.Host = pr.In.Host
			upgrade.SetForwarded(pr.Out.Header, pr.In)
		},
		Transport: up.Transport(nil),
	}

	srv := &http.Server{Addr: ":9090", Handler: up.Middleware(plain), ReadHeaderTimeout: 10 * time.Second}
	up.RegisterOnShutdown(srv, 10*time.Second) // srv.Shutdown also drains the relayed pairs
	log.Fatal(srv.ListenAndServe())
}

// Routing per request: Rewrite picks the backend and edits the header
// sent to it.
func ExampleProxy_rewrite() {
	chat, _ := url.Parse("http://10.0.0.2:8080")
	game, _ := url.Parse("http://10.0.0.3:8080")
	p := &upgrade.Proxy{
		Rewrite: func(pr *upgrade.ProxyRequest) {
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
