// Package extconnect turns on RFC 8441 extended CONNECT in the HTTP/2
// servers of net/http and golang.org/x/net/http2, so that an
// upgrade.Server serves its protocols (WebSockets among them) over
// HTTP/2 as well as over HTTP/1.1 Upgrade. Import it for its side effect,
// from package main:
//
//	import _ "github.com/go-upgrade/upgrade/extconnect"
//
// # Why a package
//
// Go 1.26's HTTP/2 servers advertise SETTINGS_ENABLE_CONNECT_PROTOCOL and
// accept the :protocol pseudo-header only if the GODEBUG environment
// variable contains "http2xconnect=1" when net/http is initialized (Go
// issue 71128); there is no API for it, and neither a //go:debug
// directive nor a godebug line in go.mod knows the setting. This package
// adds the setting to GODEBUG from its init function. Go initializes, in
// each step, the first package in import-path order whose imports are all
// initialized; this package imports nothing that net/http does not, and
// its path sorts before "net/http" (and "golang.org/x/net/http2"), so it
// always runs first. upgrade.ExtendedConnect reports whether the setting
// took effect.
//
// The other way is to set GODEBUG=http2xconnect=1 in the environment of
// the process (a systemd unit, a container spec). If GODEBUG already
// names http2xconnect, with any value, this package leaves it alone: the
// environment decides.
//
// # What it changes
//
// The setting is process-wide, and child processes inherit it through the
// environment. Once a server advertises it, browsers open every WebSocket
// to that server as an HTTP/2 stream when they have an HTTP/2 connection
// to it, and do not fall back to HTTP/1.1 if the stream is refused: every
// WebSocket endpoint of the process must then serve RFC 8441. Those of an
// upgrade.Server do; a handler that only hijacks HTTP/1.1 connections does
// not.
package extconnect

import (
	"os"
	"strings"
)

// setting is the GODEBUG key net/http and golang.org/x/net/http2 read.
const setting = "http2xconnect"

func init() {
	v := os.Getenv("GODEBUG")
	for _, kv := range strings.Split(v, ",") {
		if k, _, _ := strings.Cut(strings.TrimSpace(kv), "="); k == setting {
			return // the environment decides
		}
	}
	if v != "" {
		v += ","
	}
	_ = os.Setenv("GODEBUG", v+setting+"=1")
}
