// Command upgrade is a demo server for HTTP/1.1 protocol upgrades and a
// netcat for upgraded connections.
//
// Usage:
//
//	upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-v]
//	upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] URL PROTOCOL[,PROTOCOL...]
//	upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls] [-grace D] [-v]
//	upgrade help
//
// # upgrade serve
//
// Serve listens on -addr (default 127.0.0.1:8080; port 0 picks a free
// port) and, once ready, prints exactly one line on stdout:
//
//	listening on http://HOST:PORT
//
// Logs go to stderr. The server offers, in its order of preference:
//
//   - echo/1: after the 101, every byte received is sent back, until the
//     client half-closes (the server then finishes writing and closes) or
//     closes. Any method may ask for it; a request body is read before the
//     switch and not echoed: it belongs to the request, not to echo/1.
//   - websocket: the RFC 6455 handshake (subprotocol "echo" when the client
//     offers it, same-origin or Origin-less clients only), then every text
//     and binary message is echoed, pings are answered and the close
//     handshake is completed.
//   - h2c: the connection becomes HTTP/2 (RFC 7540 §3.2): the upgrade
//     request is answered on stream 1 by the same handler as plain
//     requests. Any method may ask for it, with a body.
//
// The path /required requires an upgrade: a request it cannot switch is
// answered 426 Upgrade Required with "Upgrade: echo/1, websocket, h2c".
// Every other path serves a request it cannot switch normally: / is a
// demo page whose script opens a WebSocket to the server and echoes what
// the visitor types (with ?auto=MESSAGE it sends MESSAGE by itself and
// writes "echo: MESSAGE" into <div id="result">, holding the page's load
// event open until then, for headless browsers), POST / answers with the
// request body, and /protocols lists the protocols as JSON. OPTIONS * can
// be switched to echo/1 or h2c like any request (RFC 9110 §7.8); when it
// is not, it is answered 200 with the Upgrade list.
//
// -read-timeout (default 30s; 0: none) bounds reading a plain request,
// body included: a POST / whose body dribbles in is answered 408 and its
// connection closed. Switched connections are not bound by it: they may
// stay idle as long as their protocol allows.
//
// With -policy client (the default) the client's order of preference
// decides between several acceptable offers; with -policy server, the
// server's.
//
// On SIGINT or SIGTERM the server stops accepting connections and
// upgrades, asks the upgraded connections that can say goodbye to finish
// (websocket sends a 1001 close frame and completes the close handshake,
// h2c sends GOAWAY and finishes its streams), lets them all keep working
// meanwhile (echo/1, which has no goodbye, goes on echoing), closes those
// still open after -grace (default 5s), and exits 0. A second signal ends
// the process at once.
//
// The log records the start, the shutdown and errors. With -v it also
// records exactly one line per switched connection, when it ends:
//
//	level=INFO msg="connection closed" protocol=echo/1 remote=127.0.0.1:50312 proto=HTTP/1.1 duration=2.5s how="client half-closed" echoed=42
//
// proto is the HTTP version of the request that was switched. Without -v
// nothing is written per connection (what a client does wrong on its own
// connection, such as a WebSocket protocol error, is part of that line).
//
// # upgrade dial
//
// Dial connects to URL (http, https, ws or wss; proxies from the
// environment), offers the comma-separated protocols in its Upgrade field,
// in that order of preference, and expects 101 Switching Protocols naming
// one of them. It then prints "switched to PROTOCOL" on stderr and:
//
//   - websocket (when offered, the request carries the WebSocket handshake
//     fields and the 101 is checked as RFC 6455 requires): each stdin line
//     is sent as a text message (binary if it is not UTF-8) and each message
//     received is printed as a line; at stdin EOF the close handshake is
//     completed. Exit 0 after a clean close by either side.
//   - h2c: the request carried HTTP2-Settings; dial sends the HTTP/2
//     preface, reads the response to the upgrade request on stream 1, prints
//     it to stdout (":status: 200", the header fields, an empty line, the
//     body), sends GOAWAY and exits 0.
//   - anything else: stdin is copied to the connection (the write side is
//     half-closed at stdin EOF) and the connection, including bytes that
//     arrived with the 101, to stdout until the server closes. Exit 0.
//
// Any other outcome (another final status, an invalid 101, a timeout)
// prints one line on stderr, naming the status and the protocols the
// server advertises, and exits 1. Usage errors, a URL with an empty host
// among them, exit 2 before anything is sent.
//
// Text that comes from the server and is printed as a diagnostic (status
// lines, header fields, Upgrade lists, WebSocket close reasons, the h2c
// response head) has its control characters made visible, as \x1b,
// \u009b or \u202e: a server cannot send escape sequences to the
// terminal that way. The data itself (echo/1 bytes, WebSocket messages,
// the h2c body) is copied to stdout as it is, like any netcat does.
//
// # upgrade proxy
//
// Proxy listens on -addr (default 127.0.0.1:8080) and forwards everything
// to the backend -to (an http or https URL; its path is joined with each
// request's), keeping the client's Host: upgrade requests through
// upgrade.Proxy, which relays the switched connections without losing a
// byte, every other request through httputil.ReverseProxy. -allow lists
// the protocols that may be forwarded (patterns: name, name/version,
// name/*); the default is every protocol but h2c, and an upgrade offering
// nothing allowed is proxied as a plain request without its upgrade. With
// -tls it serves HTTPS with an ephemeral self-signed certificate for
// 127.0.0.1, ::1 and localhost. Once ready it prints exactly one line on
// stdout:
//
//	listening on http://HOST:PORT    (https:// with -tls)
//
// On SIGINT or SIGTERM it stops accepting, lets proxied connections relay
// until they end or -grace (default 5s) passes, closes the rest and exits
// 0. With -v it logs one line per proxied connection when it ends.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK      = 0 // success
	exitFailure = 1 // the server refused, the exchange failed
	exitUsage   = 2 // bad command line; nothing was sent
)

const usageText = `upgrade is a demo server for HTTP/1.1 protocol upgrades and a netcat for
upgraded connections.

Usage:

  upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-v]
  upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] URL PROTOCOL[,PROTOCOL...]
  upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls] [-grace D] [-v]
  upgrade help

serve offers echo/1, websocket and h2c (in that order of preference) on
every path; /required answers 426 Upgrade Required when it cannot switch,
other paths serve the request normally (/ is a WebSocket demo page). It
prints "listening on http://HOST:PORT" on stdout when ready; logs go to
stderr. SIGINT/SIGTERM: graceful shutdown within -grace, exit 0.

  -addr HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0: any)
  -policy P         whose preference picks among offers: client or server
                    (default client)
  -grace D          how long upgraded connections get to finish on shutdown
                    (default 5s)
  -read-timeout D   bound on reading a plain request, body included; not
                    on switched connections (default 30s; 0: none)
  -v                log one line per switched connection, when it ends

dial asks URL (http, https, ws, wss; proxies from the environment) to switch
to one of the protocols, prints "switched to PROTOCOL" on stderr, then copies
stdin to the connection and the connection to stdout. websocket: one text
message per stdin line, one line per message received, close handshake at
stdin EOF. h2c: prints the HTTP/2 response to the request (stream 1).
Exit status: 0 switched and done, 1 refused or failed (one line on stderr
naming the status and the server's Upgrade list), 2 usage error. Control
characters in what the server says are printed escaped (\x1b).

  -H 'Name: value'  extra request header field (repeatable)
  -X METHOD         request method (default GET)
  -d BODY           request body, sent and read before the switch
  -timeout D        bound on the handshake (and the h2c exchange)
                    (default 10s; 0: none)

proxy forwards every request to the backend URL, keeping the client's Host:
upgrades through upgrade.Proxy (bytes relayed both ways unchanged), plain
requests through httputil.ReverseProxy. It prints "listening on
http://HOST:PORT" (https with -tls) when ready. SIGINT/SIGTERM: proxied
connections relay until they end or -grace passes, exit 0.

  -to URL           the backend, http:// or https:// (required)
  -allow P,...      protocols that may be forwarded: name, name/version or
                    name/* (default: all but h2c)
  -tls              serve HTTPS with an ephemeral self-signed certificate
  -addr, -grace     as for serve
  -v                log one line per proxied connection, when it ends

Examples:

  upgrade serve -addr 127.0.0.1:0
  upgrade dial http://127.0.0.1:8080/ echo/1 <file >copy
  echo hello | upgrade dial ws://127.0.0.1:8080/ websocket
  upgrade dial -H 'Sec-WebSocket-Protocol: echo' ws://127.0.0.1:8080/ websocket
  upgrade dial -X POST -d 'hi there' http://127.0.0.1:8080/ h2c
  upgrade dial http://127.0.0.1:8080/required nosuch/1     # exit 1: 426
  curl --http2 http://127.0.0.1:8080/
  upgrade proxy -addr 127.0.0.1:9090 -to http://127.0.0.1:8080 -allow websocket,echo/1
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "dial":
		return runDial(args[1:], stdin, stdout, stderr)
	case "proxy":
		return runProxy(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	fmt.Fprintf(stderr, "upgrade: unknown command %q\n\n%s", args[0], usageText)
	return exitUsage
}
