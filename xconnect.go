package upgrade

import (
	"os"
	"strings"
)

// extendedConnect records, when this package is initialized (after
// net/http), whether GODEBUG then held the setting net/http's HTTP/2
// server reads in its own init; net/http tests it the same way.
var extendedConnect = strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1")

// ExtendedConnect reports whether net/http's HTTP/2 server in this process
// serves RFC 8441 extended CONNECT: whether it advertises
// SETTINGS_ENABLE_CONNECT_PROTOCOL and passes requests carrying :protocol
// to handlers, so that a Server can switch HTTP/2 streams too. It is off
// unless the program imports github.com/go-upgrade/upgrade/extconnect or
// was started with GODEBUG=http2xconnect=1.
//
// It reads the environment as net/http read it when the program started;
// changing GODEBUG later changes neither.
func ExtendedConnect() bool { return extendedConnect }
