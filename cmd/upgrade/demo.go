package main

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade"
)

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

// Bounds of the load-event hold used by the demo page's ?auto mode.
const (
	// holdTimeout bounds how long /hold keeps a request open. The page
	// gives up after 10 s and then writes its error into #result and
	// releases the hold; the extra second lets that happen first.
	holdTimeout = 11 * time.Second
	// holdExpiry is how long a hold released before its /hold request
	// arrived is remembered.
	holdExpiry = 30 * time.Second
	// maxHolds bounds the holds remembered at once; past it, /hold
	// answers at once.
	maxHolds = 1024
	// maxPostBody bounds the body POST / echoes.
	maxPostBody = 1 << 20
)

// transparentGIF is a 1×1 transparent GIF, the answer to /hold.
var transparentGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

// demoHandler serves the plain HTTP side of upgrade serve:
//
//	GET /            the demo page (HTML with a WebSocket echo client)
//	POST /           answers with the request body (text/plain)
//	GET /protocols   {"protocols": [...], "policy": "client"|"server"}
//	GET /hold        ?token=T: held open until POST /release?token=T
//	POST /release    ?token=T: ends the matching /hold
//
// /hold and /release let the page, loaded with ?auto=MESSAGE, hold its
// load event open until the WebSocket echo has arrived: the page embeds
// <img src="/hold?token=T">, whose loading delays the load event, and
// releases it after writing the result. Headless browsers that dump the
// DOM at the load event (chromium --dump-dom) then see the result.
type demoHandler struct {
	protocols []string
	policy    string
	mux       *http.ServeMux

	mu    sync.Mutex
	holds map[string]*hold
	done  chan struct{} // closed on shutdown: every /hold ends
	once  sync.Once
}

// hold is one load-event hold, released once.
type hold struct {
	released chan struct{}
	once     sync.Once
	created  time.Time
}

func (h *hold) release() { h.once.Do(func() { close(h.released) }) }

func newDemoHandler(us *upgrade.Server, serverOrder bool) *demoHandler {
	d := &demoHandler{
		policy: policyName(serverOrder),
		holds:  make(map[string]*hold),
		done:   make(chan struct{}),
	}
	d.protocols = strings.Split(protocolList(us.Protocols()), ", ")
	d.mux = http.NewServeMux()
	d.mux.HandleFunc("GET /{$}", d.servePage)
	d.mux.HandleFunc("POST /{$}", d.serveEchoBody)
	d.mux.HandleFunc("GET /protocols", d.serveProtocols)
	d.mux.HandleFunc("GET /hold", d.serveHold)
	d.mux.HandleFunc("POST /release", d.serveRelease)
	return d
}

// ServeHTTP routes the request.
func (d *demoHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mux.ServeHTTP(w, r)
}

// shutdown ends every pending /hold, so that http.Server.Shutdown need not
// wait for them.
func (d *demoHandler) shutdown() {
	d.once.Do(func() { close(d.done) })
}

// pageData is what the page template renders.
type pageData struct {
	Protocols []string
	Policy    string
	Auto      bool   // ?auto was given
	Message   string // its value
	Token     string // the hold token, in auto mode
}

func (d *demoHandler) servePage(w http.ResponseWriter, r *http.Request) {
	data := pageData{Protocols: d.protocols, Policy: d.policy}
	if q := r.URL.Query(); q.Has("auto") {
		data.Auto, data.Message, data.Token = true, q.Get("auto"), newToken()
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_ = pageTemplate.Execute(w, data)
}

// serveEchoBody answers with the request body. The body is bounded in
// size (maxPostBody: 413) and in time (the server's ReadTimeout: 408).
func (d *demoHandler) serveEchoBody(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPostBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, "request body larger than "+strconv.Itoa(maxPostBody)+" bytes", http.StatusRequestEntityTooLarge)
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		http.Error(w, "request body not received in time", http.StatusRequestTimeout)
		return
	case err != nil:
		w.Header().Set("Connection", "close")
		http.Error(w, "could not read the request body", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

func (d *demoHandler) serveProtocols(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Protocols []string `json:"protocols"`
		Policy    string   `json:"policy"`
	}{d.protocols, d.policy})
}

func (d *demoHandler) serveHold(w http.ResponseWriter, r *http.Request) {
	if h := d.hold(r.URL.Query().Get("token")); h != nil {
		t := time.NewTimer(holdTimeout)
		select {
		case <-h.released:
		case <-t.C:
		case <-d.done:
		case <-r.Context().Done():
		}
		t.Stop()
		d.forget(r.URL.Query().Get("token"))
	}
	w.Header().Set("Content-Type", "image/gif")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(transparentGIF)
}

func (d *demoHandler) serveRelease(w http.ResponseWriter, r *http.Request) {
	if h := d.hold(r.URL.Query().Get("token")); h != nil {
		h.release()
	}
	w.WriteHeader(http.StatusNoContent)
}

// hold returns the hold for token, creating it if needed; nil if the token
// is malformed or too many holds are pending. The release may arrive
// before the /hold request it ends (they use different connections), so
// both sides create it.
func (d *demoHandler) hold(token string) *hold {
	if !validToken(token) {
		return nil
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.holds[token]; ok {
		return h
	}
	for k, h := range d.holds {
		if now.Sub(h.created) > holdExpiry {
			delete(d.holds, k)
		}
	}
	if len(d.holds) >= maxHolds {
		return nil
	}
	h := &hold{released: make(chan struct{}), created: now}
	d.holds[token] = h
	return h
}

func (d *demoHandler) forget(token string) {
	d.mu.Lock()
	delete(d.holds, token)
	d.mu.Unlock()
}

// newToken returns a random hold token: 32 hex digits.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

func validToken(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
