package upgrade

// Negotiation and refusals, served in process (inProcess): what the Server
// answers depends on the request alone, so no socket is needed. Where the
// bytes on the wire or the connection's fate matter, the tests are in
// upgrade_test.go.

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNegotiation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		register    []string
		serverOrder bool
		offer       string
		want        string // Upgrade of the 101, or "" for no switch
	}{
		{"name matches name", []string{"websocket"}, false, "websocket", "websocket"},
		{"name case-insensitive, registered spelling", []string{"WebSocket"}, false, "WEBSOCKET", "WebSocket"},
		{"name does not match versioned offer", []string{"echo"}, false, "echo/1", ""},
		{"version exact", []string{"echo/1"}, false, "echo/1", "echo/1"},
		{"version differs", []string{"echo/1"}, false, "echo/2", ""},
		{"version case-sensitive", []string{"echo/v1"}, false, "echo/V1", ""},
		{"versioned does not match bare offer", []string{"echo/1"}, false, "echo", ""},
		{"wildcard takes any version", []string{"echo/*"}, false, "echo/7", "echo/7"},
		{"wildcard takes no version", []string{"echo/*"}, false, "echo", "echo"},
		{"client order", []string{"a", "b"}, false, "b, a", "b"},
		{"server order", []string{"a", "b"}, true, "b, a", "a"},
		{"client order skips unknown", []string{"a", "b"}, false, "x, y/2, b, a", "b"},
		{"server order skips unregistered", []string{"x", "b", "a"}, true, "a, b", "b"},
		{"exact before wildcard in server order", []string{"echo/2", "echo/*"}, true, "echo/1, echo/2", "echo/2"},
		{"nothing offered matches", []string{"a"}, false, "b, c", ""},
		{"empty list", []string{"a"}, false, " , ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{ServerOrder: tt.serverOrder}
			for _, p := range tt.register {
				s.HandleFunc(p, echo)
			}
			res := inProcess(t, s, s, upgradeReq("GET", tt.offer))
			if tt.want == "" {
				assert.Equal(t, http.StatusUpgradeRequired, res.Status)
				assert.False(t, res.Hijacked)
				return
			}
			require.Equal(t, http.StatusSwitchingProtocols, res.Status)
			assert.Equal(t, []string{tt.want}, res.Header["Upgrade"])
		})
	}
}

func TestDeclineMovesToNextOffer(t *testing.T) {
	t.Parallel()
	var calls []string
	var mu sync.Mutex
	decliner := func(name string, err error) Handler {
		return accepterFunc{accept: func(r *http.Request, h http.Header) error {
			mu.Lock()
			calls = append(calls, name)
			mu.Unlock()
			return err
		}}
	}
	s := &Server{}
	s.Handle("a", decliner("a", ErrDecline))
	s.Handle("b", decliner("b", nil))
	s.Handle("c", decliner("c", nil))

	res := inProcess(t, s, s, upgradeReq("GET", "a, a, b, c"))
	require.Equal(t, http.StatusSwitchingProtocols, res.Status)
	assert.Equal(t, "b", res.Header.Get("Upgrade"))
	mu.Lock()
	assert.Equal(t, []string{"a", "b"}, calls, "each protocol asked at most once, in offer order")
	mu.Unlock()
}

func TestConnectionHeaderForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		connection []string
		switched   bool
	}{
		{"Firefox keep-alive, Upgrade", []string{"keep-alive, Upgrade"}, true},
		{"split over two lines", []string{"keep-alive", "upgrade"}, true},
		{"upper case", []string{"UPGRADE"}, true},
		{"substring upgrades", []string{"upgrades"}, false},
		{"missing", nil, false},
		{"close only", []string{"close"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{}
			s.HandleFunc("echo/1", echo)
			req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo/1\r\n"
			for _, l := range tt.connection {
				req += "Connection: " + l + "\r\n"
			}
			res := inProcess(t, s, s.Middleware(plainHandler), req+"\r\n")
			if tt.switched {
				assert.Equal(t, http.StatusSwitchingProtocols, res.Status)
			} else {
				assert.Equal(t, http.StatusOK, res.Status)
				assert.Equal(t, "1", res.Header.Get("X-Plain"))
			}
		})
	}
}

func TestMethodRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method, offer string
		want          int
		allow         string // the 405's Allow, if checked exactly
	}{
		{"GET", "getonly", 101, ""},
		{"OPTIONS", "getonly", 101, ""},
		{"POST", "getonly", 405, ""},
		{"POST", "getonly, post", 101, ""},
		{"PUT", "any", 101, ""},
		{"GET", "post", 405, ""},
		{"DELETE", "getonly, post", 405, "GET, OPTIONS, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.offer, func(t *testing.T) {
			t.Parallel()
			s := &Server{}
			s.HandleFunc("getonly", echo)
			s.HandleRoute("post", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}})
			s.HandleRoute("any", Route{Handler: HandlerFunc(echo), Methods: []string{"*"}})
			res := inProcess(t, s, s, upgradeReq(tt.method, tt.offer, "Content-Length: 0"))
			assert.Equal(t, tt.want, res.Status, "%s %s", tt.method, tt.offer)
			if tt.want == http.StatusMethodNotAllowed {
				assert.NotEmpty(t, res.Header.Get("Allow"), "405 lists the allowed methods")
			}
			if tt.allow != "" {
				assert.Equal(t, tt.allow, res.Header.Get("Allow"))
			}
		})
	}
}

// TestRefusals: requests the Server refuses to switch, and what it answers
// them with. No refusal sends an interim response or takes the connection
// over.
func TestRefusals(t *testing.T) {
	t.Parallel()
	reject := func(err error) Handler {
		return accepterFunc{accept: func(*http.Request, http.Header) error { return err }}
	}
	extra := func(k, v string) Handler {
		return accepterFunc{accept: func(r *http.Request, h http.Header) error {
			h.Set(k, v)
			return nil
		}}
	}
	echo1Only := func(s *Server) { s.HandleFunc("echo/1", echo) }
	middleware := func(s *Server) http.Handler { return s.Middleware(plainHandler) }
	http2 := func(r *http.Request) {
		r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
		r.TLS = &tls.ConnectionState{}
	}
	const http10 = "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n"
	absent := []string(nil)

	tests := []struct {
		name    string
		setup   func(s *Server)              // registrations
		handler func(s *Server) http.Handler // nil: s, the endpoint
		raw     string
		edit    func(r *http.Request)
		status  int
		header  map[string][]string // fields as set; absent ones nil
		body    string              // in the body
		exact   bool                // body is the whole body
		log     string              // in the Server's log
	}{
		// The Upgrade header.
		{name: "malformed Upgrade: 400", setup: echo1Only, handler: middleware,
			raw: upgradeReq("GET", "echo/1, web socket"), status: http.StatusBadRequest, body: `element "web socket"`},
		{name: "oversized Upgrade: 431", setup: echo1Only, handler: middleware,
			raw: upgradeReq("GET", strings.Repeat("x, ", 5000)+"echo/1"), status: http.StatusRequestHeaderFieldsTooLarge},
		{name: "more than 16 protocols: 431", setup: echo1Only, handler: middleware,
			raw: upgradeReq("GET", strings.Repeat("p,", 17)+"echo/1"), status: http.StatusRequestHeaderFieldsTooLarge, body: "more than 16 protocols"},

		// HTTP/1.0 ignores Upgrade: no 1xx, ever.
		{name: "HTTP/1.0, middleware: plain", setup: echo1Only, handler: middleware,
			raw: http10, status: http.StatusOK, body: "plain GET /"},
		{name: "HTTP/1.0, endpoint: 426", setup: echo1Only,
			raw: http10, status: http.StatusUpgradeRequired},

		// HTTP/2 has no 101 (a broken or hostile peer sends Upgrade
		// anyway): no Upgrade or Connection on the response.
		{name: "HTTP/2, endpoint: 505", setup: echo1Only, raw: upgradeReq("GET", "echo/1"), edit: http2,
			status: http.StatusHTTPVersionNotSupported, header: map[string][]string{"Upgrade": absent, "Connection": absent}},
		{name: "HTTP/2, middleware: plain", setup: echo1Only, handler: middleware, raw: upgradeReq("GET", "echo/1"), edit: http2,
			status: http.StatusOK, header: map[string][]string{"Upgrade": absent, "Connection": absent}, body: "plain GET /"},

		// An Accepter's rejection.
		{name: "Accepter rejects: its status ends negotiation",
			setup: func(s *Server) {
				s.Handle("forbidden", reject(&RejectError{Status: http.StatusForbidden, Message: "no entry"}))
				s.HandleFunc("ok", echo)
			},
			raw: upgradeReq("GET", "forbidden, ok"), status: http.StatusForbidden,
			header: map[string][]string{"Upgrade": absent}, body: "no entry\n", exact: true},
		{name: "Accepter rejects with 426: every 426 lists what would be accepted",
			setup: func(s *Server) {
				s.Handle("forbidden", reject(&RejectError{Status: http.StatusForbidden}))
				s.Handle("old", reject(&RejectError{Status: http.StatusUpgradeRequired, Message: "version", Header: http.Header{"X-Version": {"13"}}}))
				s.HandleFunc("ok", echo)
			},
			raw: upgradeReq("GET", "old"), status: http.StatusUpgradeRequired,
			header: map[string][]string{"Upgrade": {"forbidden, old, ok"}, "Connection": {"close", "Upgrade"}, "X-Version": {"13"}}},
		{name: "Accepter fails: the server's fault, 500",
			setup: func(s *Server) { s.Handle("broken", reject(errors.New("database down"))) },
			raw:   upgradeReq("GET", "broken"), status: http.StatusInternalServerError, log: "database down"},
		{name: "RejectError.Status 101: 500",
			setup: func(s *Server) { s.Handle("p", reject(&RejectError{Status: 101})) },
			raw:   upgradeReq("GET", "p"), status: http.StatusInternalServerError, log: "RejectError.Status 101 is not a 4xx or 5xx status"},
		{name: "RejectError.Status 103: 500",
			setup: func(s *Server) { s.Handle("p", reject(&RejectError{Status: 103})) },
			raw:   upgradeReq("GET", "p"), status: http.StatusInternalServerError, log: "RejectError.Status 103 is not a 4xx or 5xx status"},
		{name: "RejectError.Status 200: 500",
			setup: func(s *Server) { s.Handle("p", reject(&RejectError{Status: 200})) },
			raw:   upgradeReq("GET", "p"), status: http.StatusInternalServerError, log: "RejectError.Status 200 is not a 4xx or 5xx status"},

		// The extra 101 fields an Accepter adds are checked.
		{name: "101 field value with CR LF: 500",
			setup: func(s *Server) { s.Handle("evil", extra("X-Evil", "a\r\nInjected: yes")) },
			raw:   upgradeReq("GET", "evil"), status: http.StatusInternalServerError,
			header: map[string][]string{"Injected": absent, "Upgrade": absent}, log: "invalid value for 101 header field X-Evil"},
		{name: "101 field the server owns: 500",
			setup: func(s *Server) { s.Handle("owned", extra("Content-Length", "0")) },
			raw:   upgradeReq("GET", "owned"), status: http.StatusInternalServerError,
			header: map[string][]string{"Injected": absent, "Upgrade": absent}, log: "Content-Length is set by the server or not allowed"},
		{name: "101 field the server owns, not canonical: 500",
			setup: func(s *Server) {
				s.Handle("owned", accepterFunc{accept: func(r *http.Request, h http.Header) error {
					h["transfer-ENCODING"] = []string{"chunked"}
					return nil
				}})
			},
			raw: upgradeReq("GET", "owned"), status: http.StatusInternalServerError,
			header: map[string][]string{"Transfer-Encoding": absent, "Upgrade": absent}, log: "transfer-ENCODING is set by the server or not allowed"},

		// The request body.
		{name: "body over the route's bound: 413, and close",
			setup: func(s *Server) {
				s.HandleRoute("up", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}, MaxBody: 16})
			},
			raw: upgradeReq("POST", "up", "Content-Length: 17") + strings.Repeat("x", 17), status: http.StatusRequestEntityTooLarge,
			header: map[string][]string{"Connection": {"close"}}},
		{name: "protocol takes no body: 400",
			setup: func(s *Server) {
				s.HandleRoute("nobody", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}, MaxBody: -1})
			},
			raw: upgradeReq("POST", "nobody", "Content-Length: 2") + "hi", status: http.StatusBadRequest, body: "does not accept a request body"},

		// A ResponseWriter that cannot hijack.
		{name: "ResponseWriter hiding its Hijacker: 500", setup: echo1Only,
			handler: func(s *Server) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.ServeHTTP(opaqueWriter{w}, r) })
			},
			raw: upgradeReq("GET", "echo/1"), status: http.StatusInternalServerError, log: "does not support hijacking"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lg, logs := testLogger()
			s := &Server{ErrorLog: lg}
			tt.setup(s)
			var h http.Handler = s
			if tt.handler != nil {
				h = tt.handler(s)
			}
			var edit []func(*http.Request)
			if tt.edit != nil {
				edit = append(edit, tt.edit)
			}
			res := inProcess(t, s, h, tt.raw, edit...)
			assert.Equal(t, tt.status, res.Status, "body: %s", res.Body)
			assert.False(t, res.Hijacked, "not switched")
			assert.Empty(t, res.Interim, "no interim response")
			for k, v := range tt.header {
				assert.Equal(t, v, res.Header[k], "field %s", k)
			}
			if tt.exact {
				assert.Equal(t, tt.body, res.Body)
			} else {
				assert.Contains(t, res.Body, tt.body)
			}
			assert.Contains(t, logs.String(), tt.log)
		})
	}
}

func TestShouldUpgrade(t *testing.T) {
	t.Parallel()
	newServer := func() *Server {
		s := &Server{ShouldUpgrade: func(r *http.Request) bool { return r.Header.Get("X-Allow") == "yes" }}
		s.HandleFunc("echo/1", echo)
		return s
	}
	s := newServer()
	assert.Equal(t, http.StatusOK, inProcess(t, s, s.Middleware(plainHandler), upgradeReq("GET", "echo/1")).Status)
	s = newServer()
	assert.Equal(t, http.StatusForbidden, inProcess(t, s, s, upgradeReq("GET", "echo/1")).Status)
	s = newServer()
	assert.Equal(t, http.StatusSwitchingProtocols, inProcess(t, s, s, upgradeReq("GET", "echo/1", "X-Allow: yes")).Status)
}

func TestBodyRefusalIsPartOfNegotiation(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	newServer := func() *Server {
		s := &Server{}
		s.HandleRoute("nobody", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}, MaxBody: -1})
		s.HandleRoute("body", Route{Handler: bodyRecorder(got), Methods: []string{"POST"}})
		return s
	}

	s := newServer()
	res := inProcess(t, s, s, upgradeReq("POST", "nobody, body", "Content-Length: 2")+"hi")
	assert.Equal(t, []string{"body"}, res.Header["Upgrade"], "the next offer that takes a body")
	assert.Equal(t, "hi", <-got)

	s = newServer()
	assert.Equal(t, http.StatusBadRequest, inProcess(t, s, s, upgradeReq("POST", "nobody", "Content-Length: 2")+"hi").Status)

	s = newServer()
	res = inProcess(t, s, s.Middleware(plainHandler), upgradeReq("POST", "nobody", "Content-Length: 2")+"hi")
	assert.Equal(t, "plain POST /", res.Body, "as if no upgrade was asked")
}

// TestMiddlewareWithoutHijackerServesPlain: behind a ResponseWriter that
// cannot hijack (httptest.ResponseRecorder), Middleware serves upgrade
// requests as plain ones, and the endpoint refuses them.
func TestMiddlewareWithoutHijackerServesPlain(t *testing.T) {
	t.Parallel()
	lg, logs := testLogger()
	s := Server{ErrorLog: lg}
	s.HandleFunc("echo/1", echo)
	mw := s.Middleware(plainHandler)
	for _, offer := range []string{"h2c", "echo/1"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", offer)
		rec := httptest.NewRecorder() // cannot hijack
		mw.ServeHTTP(rec, r)
		assert.Equal(t, http.StatusOK, rec.Code, offer)
		assert.Equal(t, "plain GET /", rec.Body.String())
	}
	assert.Empty(t, logs.String(), "an upgrade that cannot happen is not an error")

	// The endpoint must switch, so it is: 500, logged.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "echo/1")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.Contains(t, logs.String(), "does not support hijacking")
	// An unregistered offer at the endpoint is a 426, not a 500.
	r.Header.Set("Upgrade", "h2c")
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusUpgradeRequired, rec.Code)
}
