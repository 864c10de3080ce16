#!/usr/bin/env bash
# Installs the interop peers used by interop/run.sh on a Debian (bookworm)
# machine. Run as root, needs no stdin, safe to run again.
#
#   bash interop/install.sh
#
# Debian packages: curl nghttp2-client nginx haproxy tinyproxy
#                  python3-websockets python3-autobahn python3-h2 chromium
# npm (interop/package-lock.json): ws, wscat
#
# The harness starts its own nginx/haproxy/tinyproxy in the foreground with
# configs in a temp dir; the system services are stopped and never used.
set -u

here=$(cd "$(dirname "$0")" && pwd)
pkgs=(curl nghttp2-client nginx haproxy tinyproxy python3-websockets python3-autobahn python3-h2 chromium)

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
	SUDO=sudo
	command -v sudo >/dev/null || die "run as root (or install sudo)"
else
	SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
# Do not let apt's postinst scripts start the daemons in the first place
# (invoke-rc.d honours policy-rc.d; exit 101 = action forbidden).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && added_policy=1
fi
cleanup() { [ "$added_policy" = 1 ] && $SUDO rm -f "$policy"; }
trap cleanup EXIT

# Node.js and npm from Debian when the machine has none of its own.
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	log "apt-get update"
	$SUDO apt-get update </dev/null || die "apt-get update failed"
	log "installing: ${missing[*]}"
	$SUDO apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" </dev/null || die "apt-get install failed"
else
	log "Debian packages already installed"
fi

# If an earlier install (without policy-rc.d) started the services, stop them:
# the harness runs its own instances and must not collide with them.
for s in nginx haproxy tinyproxy; do
	if command -v service >/dev/null; then
		$SUDO service "$s" stop >/dev/null 2>&1 || true
	fi
	# Belt and braces for machines without a working init: stop by pid file.
	for pf in "/run/$s.pid" "/run/$s/$s.pid" "/var/run/$s.pid"; do
		if [ -s "$pf" ]; then
			pid=$(cat "$pf" 2>/dev/null)
			case "$pid" in ''|*[!0-9]*) ;; *) $SUDO kill "$pid" 2>/dev/null || true ;; esac
		fi
	done
done

command -v node >/dev/null || die "node not found (need Node.js >= 18)"
command -v npm >/dev/null || die "npm not found"
log "npm ci in $here"
(cd "$here" && npm ci --no-audit --no-fund </dev/null) || die "npm ci failed"

log "done"
for c in "curl --version" "nghttp --version" "nginx -v" "haproxy -v" "tinyproxy -v"; do
	$c 2>&1 | head -1 | sed 's/^/  /' >&2
done
# (Debian's chromium wrapper script prints a harmless shell warning on stderr)
chromium --version 2>/dev/null | head -1 | sed 's/^/  /' >&2
/usr/bin/python3 -c 'import websockets, autobahn, h2; print("  python3-websockets", websockets.__version__); print("  python3-autobahn", autobahn.__version__); print("  python3-h2", h2.__version__)' >&2
(cd "$here" && node -e 'for (const m of ["ws","wscat"]) console.log("  npm " + m, require("./node_modules/" + m + "/package.json").version)') >&2
