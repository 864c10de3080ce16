package main

import (
	"bytes"
	"flag"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCmd runs `upgrade args...` with no stdin and returns what it printed
// and its exit code.
func runCmd(t *testing.T, args ...string) result {
	t.Helper()
	cmd := command(t, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	require.NotNil(t, cmd.ProcessState, "running upgrade %q", args)
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// TestHelp: every way of asking for help prints the text asked for on
// stdout, nothing on stderr, and exits 0.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, overview},
		{[]string{"-help"}, overview},
		{[]string{"--help"}, overview},
		{[]string{"help"}, overview},
		{[]string{"serve", "-h"}, serveCommand.help},
		{[]string{"serve", "-help"}, serveCommand.help},
		{[]string{"serve", "--help"}, serveCommand.help},
		{[]string{"serve", "-v", "-h"}, serveCommand.help},
		{[]string{"help", "serve"}, serveCommand.help},
		{[]string{"dial", "-h"}, dialCommand.help},
		{[]string{"dial", "-help"}, dialCommand.help},
		{[]string{"dial", "--help"}, dialCommand.help},
		{[]string{"help", "dial"}, dialCommand.help},
		{[]string{"proxy", "-h"}, proxyCommand.help},
		{[]string{"help", "proxy"}, proxyCommand.help},
		{[]string{"version", "-h"}, versionCommand.help},
		{[]string{"help", "version"}, versionCommand.help},
	} {
		r := runCmd(t, tc.args...)
		assert.Equal(t, 0, r.code, "%q: %s", tc.args, r.stderr)
		assert.Equal(t, tc.want, r.stdout, "%q", tc.args)
		assert.Empty(t, r.stderr, "%q", tc.args)
	}
}

// TestHelpTexts: the overview names every command's synopsis, and each
// command's help starts with its synopsis and describes every flag the
// command defines.
func TestHelpTexts(t *testing.T) {
	for _, c := range []*subcommand{serveCommand, dialCommand, proxyCommand, versionCommand} {
		assert.Contains(t, overview, "  "+c.synopsis+"\n", c.name)
		assert.True(t, strings.HasPrefix(c.help, "usage: "+c.synopsis+"\n"), "%s help starts with its synopsis", c.name)
	}
	flagSets := map[*subcommand]*flag.FlagSet{
		serveCommand: serveFlags(new(serveConfig)),
		dialCommand:  dialFlags(&dialConfig{}, new(headerFlags), new(string)),
		proxyCommand: proxyFlags(new(proxyConfig), new(string), new(string)),
	}
	for c, fs := range flagSets {
		fs.VisitAll(func(f *flag.Flag) {
			assert.Regexp(t, `(?m)^  -`+regexp.QuoteMeta(f.Name)+` `, c.help, "%s help describes -%s", c.name, f.Name)
			assert.Regexp(t, `(^| )\[?-`+regexp.QuoteMeta(f.Name)+`\b`, c.synopsis, "%s synopsis names -%s", c.name, f.Name)
		})
	}
}

// TestUsageErrors: a bad command line prints one line saying what is
// wrong, prefixed with the command, and one line with the synopsis, on
// stderr; nothing on stdout; exit 2.
func TestUsageErrors(t *testing.T) {
	const (
		serveUsage = "usage: upgrade serve [-addr HOST:PORT] [-policy client|server] [-grace D] [-read-timeout D] [-tls [-http3]] [-v] (see upgrade serve -h)"
		dialUsage  = "usage: upgrade dial [-H 'Name: value']... [-X METHOD] [-d BODY] [-timeout D] [-http2] [-http3] [-insecure] URL PROTOCOL[,PROTOCOL...] (see upgrade dial -h)"
		topUsage   = "usage: upgrade serve|dial|proxy|version|help [flags] [arguments] (see upgrade -h)"
	)
	for _, tc := range []struct {
		args       []string
		msg, usage string
	}{
		{[]string{"serve", "-x"}, "upgrade serve: flag provided but not defined: -x", serveUsage},
		{[]string{"serve", "-addr"}, "upgrade serve: flag needs an argument: -addr", serveUsage},
		{[]string{"serve", "extra"}, `upgrade serve: unexpected argument "extra": serve takes flags only`, serveUsage},
		{[]string{"serve", "-policy", "random"}, `upgrade serve: invalid value "random" for flag -policy: want client or server`, serveUsage},
		{[]string{"serve", "-grace", "5"}, `upgrade serve: invalid value "5" for flag -grace: want a duration such as 500ms, 10s or 1m30s`, serveUsage},
		{[]string{"serve", "-grace", "-1s"}, `upgrade serve: invalid value "-1s" for flag -grace: must not be negative`, serveUsage},
		{[]string{"serve", "-read-timeout", "-1s"}, `upgrade serve: invalid value "-1s" for flag -read-timeout: must not be negative`, serveUsage},
		{[]string{"serve", "-addr", "8080"}, `upgrade serve: invalid -addr "8080": want HOST:PORT, such as 127.0.0.1:8080 or :8080`, serveUsage},
		{[]string{"dial", "-x", "http://127.0.0.1:1/", "echo/1"}, "upgrade dial: flag provided but not defined: -x", dialUsage},
		{[]string{"dial"}, "upgrade dial: want URL and PROTOCOL[,PROTOCOL...], got 0 arguments", dialUsage},
		{[]string{"dial", "http://127.0.0.1:1/"}, "upgrade dial: want URL and PROTOCOL[,PROTOCOL...], got 1 argument", dialUsage},
		{[]string{"dial", "http://127.0.0.1:1/", "a", "b"}, "upgrade dial: want URL and PROTOCOL[,PROTOCOL...], got 3 arguments", dialUsage},
		{[]string{"dial", "http://127.0.0.1:1/", "echo/1", "-H", "X: y"}, "upgrade dial: flag -H after the arguments: flags go before URL", dialUsage},
		{[]string{"dial", "http://[::1", "echo/1"}, `upgrade dial: invalid URL "http://[::1": missing ']' in host`, dialUsage},
		{[]string{"dial", "http://127.0.0.1:bad/", "echo/1"}, `upgrade dial: invalid URL "http://127.0.0.1:bad/": invalid port ":bad" after host`, dialUsage},
		{[]string{"dial", "/path", "echo/1"}, `upgrade dial: invalid URL "/path": want an absolute URL such as http://127.0.0.1:8080/`, dialUsage},
		{[]string{"dial", "ftp://127.0.0.1/", "echo/1"}, `upgrade dial: invalid URL "ftp://127.0.0.1/": scheme must be http, https, ws or wss`, dialUsage},
		{[]string{"dial", "http://:1/", "echo/1"}, `upgrade dial: invalid URL "http://:1/": empty host`, dialUsage},
		{[]string{"dial", "http://127.0.0.1:1/", "echo/"}, `upgrade dial: invalid protocol "echo/": empty protocol version after "/"; want NAME or NAME/VERSION`, dialUsage},
		{[]string{"dial", "-X", "CONNECT", "http://127.0.0.1:1/", "echo/1"}, "upgrade dial: invalid method CONNECT: a CONNECT request cannot ask for an upgrade", dialUsage},
		{[]string{"dial", "-X", "A B", "http://127.0.0.1:1/", "echo/1"}, `upgrade dial: invalid method "A B": not an HTTP token`, dialUsage},
		{[]string{"dial", "-timeout", "1", "http://127.0.0.1:1/", "echo/1"}, `upgrade dial: invalid value "1" for flag -timeout: want a duration such as 500ms, 10s or 1m30s`, dialUsage},
		{[]string{"serve", "-http3"}, "upgrade serve: -http3 needs -tls: HTTP/3 runs over QUIC, which is always encrypted", serveUsage},
		{[]string{"dial", "-http3", "http://127.0.0.1:1/", "websocket"}, `upgrade dial: -http3 needs an https or wss URL, not "http://127.0.0.1:1/": HTTP/3 runs over QUIC, which is always encrypted`, dialUsage},
		{[]string{"dial", "-http3", "ws://127.0.0.1:1/", "websocket"}, `upgrade dial: -http3 needs an https or wss URL, not "ws://127.0.0.1:1/": HTTP/3 runs over QUIC, which is always encrypted`, dialUsage},
		{[]string{"dial", "-http3", "https://127.0.0.1:1/", "echo/1"}, `upgrade dial: protocol "echo/1" cannot be asked for over HTTP/3: a :protocol is a single token, without a version (RFC 9220)`, dialUsage},
		{[]string{"dial", "-http3", "-d", "x", "https://127.0.0.1:1/", "echo"}, "upgrade dial: -d cannot be used with -http3: an extended CONNECT has no request body", dialUsage},
		{[]string{"dial", "-http3", "-http2", "https://127.0.0.1:1/", "echo"}, "upgrade dial: -http2 and -http3 exclude each other", dialUsage},
		{[]string{"version", "extra"}, `upgrade version: unexpected argument "extra"`, "usage: upgrade version (see upgrade version -h)"},
		{[]string{"nosuchcommand"}, `upgrade: unknown command "nosuchcommand"`, topUsage},
		{[]string{"-x"}, "upgrade: flag provided but not defined: -x (flags go after the command)", topUsage},
		{[]string{"help", "nosuch"}, `upgrade: no help for unknown command "nosuch"`, topUsage},
		{[]string{"help", "serve", "dial"}, "upgrade: help takes at most one command, got 2 arguments", topUsage},
	} {
		r := runCmd(t, tc.args...)
		assert.Equal(t, 2, r.code, "%q", tc.args)
		assert.Empty(t, r.stdout, "%q", tc.args)
		assert.Equal(t, tc.msg+"\n"+tc.usage+"\n", r.stderr, "%q", tc.args)
	}
}

// TestNoArguments: the overview on stderr, exit 2.
func TestNoArguments(t *testing.T) {
	r := runCmd(t)
	assert.Equal(t, 2, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, overview, r.stderr)
}

// TestVersion: the module version from the build information (a build
// from a clone has none of its own) and the Go version that built the
// binary, which is the one running the test.
func TestVersion(t *testing.T) {
	r := runCmd(t, "version")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	m := regexp.MustCompile(`^upgrade (\(devel\)|v\d+\.\d+\.\d+\S*) (go\S+)\n$`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, "%q", r.stdout)
	assert.Equal(t, runtime.Version(), m[2])
}

// TestListenError: an address in use is one error line, not a log
// record, and exit 1.
func TestListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	r := runCmd(t, "serve", "-addr", ln.Addr().String())
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "upgrade serve: cannot listen on "+ln.Addr().String()+": address already in use\n", r.stderr)
}
