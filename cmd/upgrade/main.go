// Command upgrade is a demo server for HTTP/1.1 protocol upgrades and a
// netcat for upgraded connections.
//
// Usage:
//
//	upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v]
//	upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] [-http2] [-http3] [-insecure] URL PROTOCOL[,PROTOCOL...]
//	upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls [-http3]] [-insecure] [-grace D] [-v]
//	upgrade version
//	upgrade help [serve|dial|proxy|version]
//
// "upgrade -h" and "upgrade help" print an overview, "upgrade serve -h"
// (or -help, --help) and "upgrade help serve" the usage of serve, on
// stdout, and exit 0. A bad flag or argument prints one line naming what
// is wrong and one line with the command's synopsis on stderr, and exits
// 2:
//
//	upgrade serve: flag provided but not defined: -x
//	usage: upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v] (see upgrade serve -h)
//
// Every error the command reports is one line, "upgrade SUBCOMMAND:
// what went wrong", on stderr.
//
// # upgrade serve
//
// Serve listens on -addr (default 127.0.0.1:8080; port 0 picks a free
// port) and, once ready, prints exactly one line on stdout:
//
//	listening on http://HOST:PORT
//
// With -tls it serves HTTPS instead, with ALPN h2 and http/1.1 and an
// ephemeral self-signed certificate for 127.0.0.1, ::1 and localhost, and
// prints "listening on https://HOST:PORT". It speaks HTTP/2 too (by ALPN
// over TLS, with prior knowledge over cleartext) and, with no environment
// to set, serves echo/1 and websocket on HTTP/2 streams as RFC 8441
// extended CONNECT: browsers that load the page over HTTP/2 open its
// WebSocket that way.
//
// With -tls -http3 it also serves HTTP/3 (RFC 9114) on UDP, at the same
// address and port and with the same certificate, and its TCP responses
// carry "Alt-Svc: h3=":PORT"". Extended CONNECT over HTTP/3 (RFC 9220)
// switches websocket streams the same way; echo/1 cannot be reached over
// HTTP/3, whose :protocol is a token (quic-go resets such a stream with
// H3_MESSAGE_ERROR). -http3 without -tls is a usage error.
//
// Logs go to stderr. If it cannot listen, it prints one error line, such
// as "upgrade serve: cannot listen on 127.0.0.1:8080: address already in
// use", and exits 1. The server offers, in its order of preference:
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
// Having refused a request that asked for an upgrade, it closes the
// connection. Every other path serves a request it cannot switch
// normally: / is a
// demo page whose script opens a WebSocket to the server and echoes what
// the visitor types (with ?auto=MESSAGE it sends MESSAGE by itself and
// writes "echo: MESSAGE" into <div id="result">, holding the page's load
// event open until then, for headless browsers), POST / answers with the
// request body, and /protocols lists the protocols as JSON. OPTIONS * can
// be switched to echo/1 or h2c like any request (RFC 9110 §7.8; the
// server sets http.Server.DisableGeneralOptionsHandler, without which
// net/http answers OPTIONS * itself); when it is not, it is answered 200
// with the Upgrade list.
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
// proto is the HTTP version of the request that was switched: HTTP/1.1
// for an Upgrade, HTTP/2.0 or HTTP/3.0 for an extended CONNECT stream.
// On SIGINT or SIGTERM, HTTP/3 streams get the same grace as the others.
// The demo page
// asks for the WebSocket subprotocol "demo", whose first message ("via
// HTTP/2.0") says the same to the page. Without -v
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
// With -http3 it switches an HTTP/3 stream instead, over QUIC, and says
// "switched to PROTOCOL over HTTP/3"; the URL must be https or wss, the
// protocols without a version, and -d and -http2 are not allowed (usage
// errors, exit 2). There is no fallback: a server without HTTP/3, or
// whose SETTINGS do not enable extended CONNECT, fails the dial (exit 1,
// saying so).
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
// Proxy listens on -addr (default 127.0.0.1:9090) and forwards everything
// to the backend -to (an http or https URL; its path is joined with each
// request's), keeping the client's Host: upgrade requests through
// reverseproxy.Proxy, which relays the switched connections without losing
// a byte, every other request through httputil.ReverseProxy. -allow lists
// the protocols that may be forwarded (patterns: name, name/version,
// name/*); the default is every protocol but h2c, and an upgrade offering
// nothing allowed is proxied as a plain request without its upgrade. With
// -tls it serves HTTPS with an ephemeral self-signed certificate for
// 127.0.0.1, ::1 and localhost. Once ready it prints exactly one line on
// stdout:
//
//	listening on http://HOST:PORT    (https:// with -tls)
//
// HTTP/2 clients may ask for a protocol with an extended CONNECT stream
// (RFC 8441). With -tls -http3 the proxy also accepts HTTP/3 (RFC 9114) on
// UDP, at the same address and port and with the same certificate, and
// its TCP responses carry "Alt-Svc: h3=":PORT"" (the backend's own
// Alt-Svc is dropped); an HTTP/3 client's extended CONNECT (RFC 9220) is
// forwarded as an HTTP/2 one is: an HTTP/1.1 upgrade to the backend, a
// WebSocket with a fresh Sec-WebSocket-Key whose Sec-WebSocket-Accept is
// checked and not relayed. -http3 without -tls is a usage error.
//
// On SIGINT or SIGTERM it stops accepting, lets proxied connections and
// streams relay until they end or -grace (default 5s) passes, closes the
// rest and exits 0. With -v it logs one line per proxied connection or
// stream when it ends, with the client's HTTP version (proto=HTTP/1.1,
// HTTP/2.0 or HTTP/3.0).
//
// # upgrade version
//
// Version prints the module version the command was built from and the Go
// version it was built with, from the build information in the binary:
//
//	upgrade v1.0.0 go1.26.8
//
// A binary installed with "go install
// github.com/go-upgrade/upgrade/cmd/upgrade@v1.0.0" names that version; one
// built from a clone says what the go command recorded, "(devel)" or a
// pseudo-version naming the commit.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	// serve and proxy switch HTTP/2 streams too (RFC 8441): net/http's
	// HTTP/2 server must advertise extended CONNECT, whatever the
	// environment says.
	_ "github.com/go-upgrade/upgrade/extconnect"
)

// Exit codes.
const (
	exitOK      = 0 // success
	exitFailure = 1 // the server refused, the exchange failed, the server could not start
	exitUsage   = 2 // bad command line; nothing was sent
)

// overview is the text of "upgrade -h" and "upgrade help".
const overview = `upgrade is a demo server for HTTP/1.1 protocol upgrades (Upgrade,
101 Switching Protocols, 426 Upgrade Required) and a netcat for upgraded
connections.

Usage:

  upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v]
  upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] [-http2] [-http3] [-insecure] URL PROTOCOL[,PROTOCOL...]
  upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls [-http3]] [-insecure] [-grace D] [-v]
  upgrade version
  upgrade help [serve|dial|proxy|version]

Commands:

  serve     run the demo server: echo/1, websocket and h2c on every path,
            a WebSocket demo page on /, 426 Upgrade Required on /required
  dial      ask a server to switch protocols, then copy stdin to the
            connection and the connection to stdout, like netcat
  proxy     forward requests to a backend, switched connections included
  version   print the command's version and the Go version it was built with

Run "upgrade COMMAND -h" (or "upgrade help COMMAND") for a command's flags
and examples.

Examples:

  upgrade serve                                        # then open http://127.0.0.1:8080/
  echo hello | upgrade dial http://127.0.0.1:8080/ echo/1
  upgrade proxy -to http://127.0.0.1:8080              # in front of serve, on 127.0.0.1:9090
`

// versionCommand is "upgrade version".
var versionCommand = &subcommand{
	name:     "version",
	synopsis: "upgrade version",
	help: `usage: upgrade version

Version prints the module version the command was built from and the Go
version it was built with, such as "upgrade v1.0.0 go1.26.8". A command
built from a clone says "(devel)" or a pseudo-version naming the commit.
`,
}

// commands are the subcommands that take flags, by name.
var commands = map[string]*subcommand{
	"serve":   serveCommand,
	"dial":    dialCommand,
	"proxy":   proxyCommand,
	"version": versionCommand,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, overview)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "dial":
		return runDial(args[1:], stdin, stdout, stderr)
	case "version":
		return runVersion(args[1:], stdout, stderr)
	case "proxy":
		return runProxy(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		return runHelp(args[1:], stdout, stderr)
	}
	if strings.HasPrefix(args[0], "-") {
		return topUsageError(stderr, fmt.Sprintf("flag provided but not defined: %s (flags go after the command)", args[0]))
	}
	return topUsageError(stderr, fmt.Sprintf("unknown command %q", args[0]))
}

// topUsageError reports a bad command line that names no command.
func topUsageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "upgrade: %s\n", msg)
	fmt.Fprintln(stderr, "usage: upgrade serve|dial|proxy|version|help [flags] [arguments] (see upgrade -h)")
	return exitUsage
}

// runHelp runs "upgrade help [COMMAND]".
func runHelp(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, overview)
		return exitOK
	case len(args) > 1:
		return topUsageError(stderr, fmt.Sprintf("help takes at most one command, got %d arguments", len(args)))
	}
	c, ok := commands[args[0]]
	if !ok {
		return topUsageError(stderr, fmt.Sprintf("no help for unknown command %q", args[0]))
	}
	fmt.Fprint(stdout, c.help)
	return exitOK
}

// runVersion runs "upgrade version".
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := versionCommand.flagSet()
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		return versionCommand.parseFailed(stdout, stderr, err)
	}
	fmt.Fprintln(stdout, version())
	return exitOK
}

// version returns "upgrade MODULE-VERSION GO-VERSION" from the build
// information embedded in the binary: the version "go install ...@v1.0.0"
// fetched, or "(devel)" or a pseudo-version for a build from a clone.
func version() string {
	v, goVersion := "(devel)", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
	}
	return "upgrade " + v + " " + goVersion
}
