package main

import (
	"crypto/rand"
	_ "embed"
	"html/template"
	"net/http"
	"sync"
	"time"
)

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

// Bounds of the holds of the page's ?auto mode.
const (
	// holdTimeout bounds how long /hold keeps a request open; the page
	// gives up on the echo after 10 s.
	holdTimeout = 12 * time.Second
	// holdExpiry is how long a hold whose /hold request never came is
	// kept.
	holdExpiry = 30 * time.Second
	// maxHolds bounds the holds kept at once; past it, pages have none.
	maxHolds = 64
)

// transparentGIF is a 1×1 transparent GIF, the answer to /hold.
var transparentGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

// A demoPage serves a page whose script opens a WebSocket to one of the
// libraries' echoes (?lib=gorilla, the default, coder or gobwas) over
// the page's own connection, HTTP/2 when the browser has one, sends
// what is typed and shows what comes back:
//
//	GET /demo       the page; ?auto=MESSAGE sends MESSAGE once and writes
//	                "echo: MESSAGE" (or "error: ...") into #result
//	GET /hold       ?token=T: held open until POST /release?token=T
//	POST /release   ?token=T: ends the matching /hold
//
// In auto mode the page embeds <img src="/hold?token=T">, which keeps its
// load event pending until the script, having written #result, releases
// it: a headless browser that dumps the DOM at the load event (chromium
// --dump-dom) then sees the result.
type demoPage struct {
	mu    sync.Mutex
	holds map[string]*hold
	done  chan struct{} // closed by stop: every /hold ends
	once  sync.Once
}

// hold is the load-event hold of one page.
type hold struct {
	released chan struct{}
	once     sync.Once
	created  time.Time
}

func newDemoPage() *demoPage {
	return &demoPage{holds: make(map[string]*hold), done: make(chan struct{})}
}

// register adds the page's routes to mux.
func (d *demoPage) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /demo", d.servePage)
	mux.HandleFunc("GET /hold", d.serveHold)
	mux.HandleFunc("POST /release", d.serveRelease)
}

// stop ends every /hold, so that http.Server's Shutdown need not wait
// for them.
func (d *demoPage) stop() { d.once.Do(func() { close(d.done) }) }

// pageData is what the page template renders.
type pageData struct {
	Library string // the path of the library's echo
	Auto    bool   // ?auto was given
	Message string // its value
	Token   string // the hold's token; "" for none
}

func (d *demoPage) servePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	data := pageData{Library: "/gorilla"}
	switch lib := q.Get("lib"); lib {
	case "coder", "gobwas":
		data.Library = "/" + lib
	}
	if q.Has("auto") {
		data.Auto, data.Message, data.Token = true, q.Get("auto"), d.newHold()
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_ = pageTemplate.Execute(w, data)
}

// newHold returns the token of a new hold, or "" if maxHolds are kept.
func (d *demoPage) newHold() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for k, h := range d.holds {
		if now.Sub(h.created) > holdExpiry {
			delete(d.holds, k)
		}
	}
	if len(d.holds) >= maxHolds {
		return ""
	}
	token := rand.Text()
	d.holds[token] = &hold{released: make(chan struct{}), created: now}
	return token
}

// lookup returns the hold of token, or nil.
func (d *demoPage) lookup(token string) *hold {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.holds[token]
}

func (d *demoPage) serveHold(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	if h := d.lookup(token); h != nil {
		t := time.NewTimer(holdTimeout)
		select {
		case <-h.released:
		case <-t.C:
		case <-d.done:
		case <-r.Context().Done():
		}
		t.Stop()
		d.mu.Lock()
		delete(d.holds, token)
		d.mu.Unlock()
	}
	w.Header().Set("Content-Type", "image/gif")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(transparentGIF)
}

func (d *demoPage) serveRelease(w http.ResponseWriter, r *http.Request) {
	if h := d.lookup(r.URL.Query().Get("token")); h != nil {
		h.once.Do(func() { close(h.released) })
	}
	w.WriteHeader(http.StatusNoContent)
}
