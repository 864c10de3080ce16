#!/usr/bin/env bash
# Interop harness for the `upgrade` command (cmd/upgrade) against real peers:
# curl, nghttp, nginx, haproxy, tinyproxy, Node ws/wscat, Python websockets,
# Autobahn and headless Chromium. See interop/README.md.
#
#   bash interop/run.sh [PATH-TO-upgrade-BINARY]
#   bash interop/run.sh --h2-client PATH-TO-CLIENT-BINARY [PATH-TO-upgrade-BINARY]
#
# Without a binary argument the binary is built from the repo root with
# `go build -o "$tmp/upgrade" ./cmd/upgrade`. With --h2-client, only the
# checks where `upgrade dial -http2` is the client run (each bounded by
# `timeout`), with the client binary given (one built by another Go
# release, say) against upgrade serve from the other binary and the peers'
# HTTP/2 servers.
# Prints one line per check (PASS name / FAIL name: reason / SKIP name: reason),
# diagnostics indented under a FAIL, and the closing line "N passed, M failed".
# Under CI=true a missing peer is a FAIL, never a SKIP.
# KEEP_TMP=1 keeps the temp dir (configs, logs) for inspection.
# All traffic goes to 127.0.0.1.
set -u

h2client_only=false
if [ "${1:-}" = --h2-client ]; then
	[ $# -ge 2 ] || { echo "usage: bash interop/run.sh --h2-client CLIENT-BINARY [BINARY]" >&2; exit 2; }
	h2client_only=true
	client=$2
	shift 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
peers=$here/peers
ci=false
[ "${CI:-}" = true ] && ci=true

tmp=$(mktemp -d "${TMPDIR:-/tmp}/upgrade-interop.XXXXXX")
chmod 755 "$tmp"
declare -a started_pids=()
passed=0 failed=0 skipped=0
declare -a missing_peers=()

cleanup() {
	local pid i
	for pid in "${started_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${started_pids[@]}"; do
		for i in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		echo "temp dir kept: $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD... : run CMD in the background, remember its pid.
# stdout -> $tmp/NAME.out, stderr -> $tmp/NAME.err
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null &
	started_pids+=("$!")
	eval "pid_$name=$!"
}

forget_pid() {
	local p=$1 out=() x
	for x in "${started_pids[@]}"; do [ "$x" = "$p" ] || out+=("$x"); done
	started_pids=("${out[@]}")
}

# wait_port PORT [SECONDS]: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
	local port=$1 secs=${2:-10} i
	for i in $(seq $((secs * 10))); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# wait_line FILE [SECONDS]: wait until FILE has a first complete line.
wait_line() {
	local f=$1 secs=${2:-10} i
	for i in $(seq $((secs * 10))); do
		[ -s "$f" ] && [ "$(wc -l <"$f")" -ge 1 ] && return 0
		sleep 0.1
	done
	return 1
}

# ---- result reporting ------------------------------------------------------

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() {
	local name=$1 reason=$2 diag=${3:-}
	echo "FAIL $name: $reason"
	failed=$((failed + 1))
	if [ -n "$diag" ] && [ -s "$diag" ]; then
		tail -n 25 "$diag" | sed 's/^/    | /'
	fi
}
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }

# Peers. have_peer NAME: is the peer NAME present?
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || echo /usr/bin/python3)
have_peer() {
	case $1 in
	curl | nghttp | nginx | haproxy | tinyproxy | chromium | node) command -v "$1" >/dev/null 2>&1 ;;
	ws) command -v node >/dev/null 2>&1 && [ -f "$here/node_modules/ws/package.json" ] ;;
	wscat) command -v node >/dev/null 2>&1 && [ -f "$here/node_modules/wscat/bin/wscat" ] ;;
	websockets) "$py" -c 'import websockets' >/dev/null 2>&1 ;;
	h2) "$py" -c 'import h2' >/dev/null 2>&1 ;;
	autobahn) (cd / && "$py" -c 'import autobahn.asyncio.websocket') >/dev/null 2>&1 ;;
	python3) [ -x "$py" ] ;;
	*) return 1 ;;
	esac
}

# run_check NAME "PEER..." FUNCTION [ARGS...]
# FUNCTION writes its log to $log and, on failure, a one-line reason to $why
# and returns non-zero. It may point $diag at another file to show on failure.
run_check() {
	local name=$1 needs=$2 fn=$3 p miss=()
	shift 3
	for p in $needs; do
		have_peer "$p" || miss+=("$p")
	done
	if [ "${#miss[@]}" -gt 0 ]; then
		missing_peers+=("${miss[@]}")
		if $ci; then
			fail "$name" "missing peer: ${miss[*]} (CI=true; run: bash interop/install.sh)"
		else
			skip "$name" "missing peer: ${miss[*]}"
		fi
		return
	fi
	log=$tmp/check-$name.log
	why=$tmp/check-$name.why
	diag=$log
	: >"$log"
	: >"$why"
	if "$fn" "$@" >>"$log" 2>&1; then
		pass "$name"
	else
		local reason
		reason=$(head -n 1 "$why")
		[ -n "$reason" ] || reason="failed (see log)"
		fail "$name" "$reason" "$diag"
	fi
}
# because: set the failure reason and return 1
because() { echo "$*" >"$why"; return 1; }

token() { echo "tok$RANDOM$RANDOM"; }

# ---- the binary ------------------------------------------------------------

if [ $# -ge 1 ] && [ -n "$1" ]; then
	bin=$1
	case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
	if [ ! -x "$bin" ]; then
		fail build "not an executable: $1"
		echo "$passed passed, $failed failed"
		exit 1
	fi
else
	bin=$tmp/upgrade
	if ! (cd "$root" && go build -o "$bin" ./cmd/upgrade) >"$tmp/build.log" 2>&1; then
		fail build "go build ./cmd/upgrade failed" "$tmp/build.log"
		echo "$passed passed, $failed failed"
		exit 1
	fi
fi
# client is the binary of the `upgrade dial -http2` checks.
if $h2client_only; then
	case $client in /*) ;; *) client=$PWD/$client ;; esac
	if [ ! -x "$client" ]; then
		fail build "not an executable: $client"
		echo "$passed passed, $failed failed"
		exit 1
	fi
	echo "HTTP/2 client checks only, client: $("$client" version 2>&1 | head -n 1)"
else
	client=$bin
fi

have_peer python3 || { echo "FAIL setup: python3 not found (needed to pick free ports)"; echo "0 passed, 1 failed"; exit 1; }
read -r p_nginx p_nginx_naive p_haproxy p_tinyproxy p_nginx_proxy < <("$py" "$peers/freeport.py" 5 | tr '\n' ' ')

# ---- upgrade serve ---------------------------------------------------------

start serve "$bin" serve -addr 127.0.0.1:0
serve_pid=$pid_serve
if ! wait_line "$tmp/serve.out" 10; then
	fail serve "no 'listening on' line within 10s" "$tmp/serve.err"
	echo "$passed passed, $failed failed"
	exit 1
fi
addr=$(sed -n '1s#^listening on http://\([^/ ]*\)/\{0,1\}$#\1#p' "$tmp/serve.out")
if [ -z "$addr" ]; then
	fail serve "first stdout line is not 'listening on http://HOST:PORT': $(head -n 1 "$tmp/serve.out")" "$tmp/serve.err"
	echo "$passed passed, $failed failed"
	exit 1
fi
port=${addr##*:}
pass serve

# ---- upgrade serve -tls: HTTP/2 by ALPN, for browsers -------------------------

start serve_tls "$bin" serve -addr 127.0.0.1:0 -tls -v
serve_tls_ok=false
if wait_line "$tmp/serve_tls.out" 10; then
	taddr=$(sed -n '1s#^listening on https://\([^/ ]*\)/\{0,1\}$#\1#p' "$tmp/serve_tls.out")
	[ -n "$taddr" ] && serve_tls_ok=true
fi
if $serve_tls_ok; then
	pass serve-tls
else
	fail serve-tls "no 'listening on https://HOST:PORT' line within 10s" "$tmp/serve_tls.err"
	taddr=127.0.0.1:1
fi

# ---- upgrade proxy in front of upgrade serve --------------------------------

# start_proxy NAME TARGET-URL [ARGS...]: start `upgrade proxy` to TARGET-URL,
# wait for its address line; sets proxy_addr (empty on failure).
start_proxy() {
	local name=$1 to=$2
	shift 2
	proxy_addr=
	start "$name" "$bin" proxy -addr 127.0.0.1:0 -to "$to" -v "$@"
	wait_line "$tmp/$name.out" 10 || return 1
	proxy_addr=$(sed -n '1s#^listening on http://\([^/ ]*\)$#\1#p' "$tmp/$name.out")
	[ -n "$proxy_addr" ]
}
proxy_ok=false
if $h2client_only; then
	paddr=127.0.0.1:1
elif start_proxy proxy "http://$addr"; then
	proxy_ok=true
	paddr=$proxy_addr
	proxy_pid=$pid_proxy
	pass proxy
else
	fail proxy "no 'listening on http://HOST:PORT' line within 10s" "$tmp/proxy.err"
	paddr=127.0.0.1:1
fi

# ---- proxies (each started only when installed) -----------------------------

nginx_ok=false haproxy_ok=false tinyproxy_ok=false
if ! $h2client_only && have_peer nginx; then
	mkdir -p "$tmp/nginx/logs"
	cat >"$tmp/nginx/nginx.conf" <<EOF
# generated by interop/run.sh
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log info;
events { worker_connections 128; }
http {
    access_log $tmp/nginx/logs/access.log;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;

    # Connection: upgrade when the client asked for an upgrade, close otherwise.
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }

    upstream upgrade_app {
        server $addr;
    }

    # Correct: forwards the Upgrade/Connection hop-by-hop headers.
    server {
        listen 127.0.0.1:$p_nginx;
        location / {
            proxy_pass http://upgrade_app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            # \$http_host keeps the port (\$host drops it): a WebSocket
            # server that compares Origin with Host needs the port.
            proxy_set_header Host \$http_host;
            proxy_read_timeout 60s;
        }
    }

    # In front of upgrade proxy (which forwards to upgrade serve).
    server {
        listen 127.0.0.1:$p_nginx_proxy;
        location / {
            proxy_pass http://$paddr;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_read_timeout 60s;
        }
    }

    # Naive: plain proxy_pass. nginx drops Upgrade/Connection (hop-by-hop),
    # so the backend never sees an upgrade request.
    server {
        listen 127.0.0.1:$p_nginx_naive;
        location / {
            proxy_pass http://upgrade_app;
            proxy_set_header Host \$http_host;
        }
    }
}
EOF
	start nginx nginx -p "$tmp/nginx" -e "$tmp/nginx/logs/error.log" -c "$tmp/nginx/nginx.conf" -g 'daemon off;'
	if wait_port "$p_nginx" 10 && wait_port "$p_nginx_naive" 5; then
		nginx_ok=true
	else
		cat "$tmp/nginx.err" "$tmp/nginx/logs/error.log" >"$tmp/nginx.diag" 2>/dev/null
		fail nginx-start "nginx did not listen on 127.0.0.1:$p_nginx" "$tmp/nginx.diag"
	fi
fi

if ! $h2client_only && have_peer haproxy; then
	mkdir -p "$tmp/haproxy"
	cat >"$tmp/haproxy/haproxy.cfg" <<EOF
# generated by interop/run.sh
global
    maxconn 256

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    # idle timeout for upgraded (tunnel) connections: WebSocket, echo/1
    timeout tunnel 60s

frontend fe_upgrade
    bind 127.0.0.1:$p_haproxy
    default_backend be_upgrade

backend be_upgrade
    server app $addr
EOF
	start haproxy haproxy -db -f "$tmp/haproxy/haproxy.cfg"
	if wait_port "$p_haproxy" 10; then
		haproxy_ok=true
	else
		fail haproxy-start "haproxy did not listen on 127.0.0.1:$p_haproxy" "$tmp/haproxy.err"
	fi
fi

if ! $h2client_only && have_peer tinyproxy; then
	mkdir -p "$tmp/tinyproxy"
	# tinyproxy drops privileges to User (nobody); let it write its log here.
	chmod 777 "$tmp/tinyproxy"
	tp_user=""
	if [ "$(id -u)" = 0 ]; then
		tp_user="User nobody
Group $(id -gn nobody 2>/dev/null || echo nogroup)"
	fi
	cat >"$tmp/tinyproxy/tinyproxy.conf" <<EOF
# generated by interop/run.sh
$tp_user
Port $p_tinyproxy
Listen 127.0.0.1
Timeout 60
MaxClients 20
LogFile "$tmp/tinyproxy/tinyproxy.log"
LogLevel Connect
Allow 127.0.0.1
DisableViaHeader Yes
# Without any ConnectPort line tinyproxy allows CONNECT to every port; with
# one or more, only to those. Allow just the upgrade server's port.
ConnectPort $port
EOF
	start tinyproxy tinyproxy -d -c "$tmp/tinyproxy/tinyproxy.conf"
	if wait_port "$p_tinyproxy" 10; then
		tinyproxy_ok=true
	else
		cat "$tmp/tinyproxy.err" "$tmp/tinyproxy/tinyproxy.log" >"$tmp/tinyproxy.diag" 2>/dev/null
		fail tinyproxy-start "tinyproxy did not listen on 127.0.0.1:$p_tinyproxy" "$tmp/tinyproxy.diag"
	fi
fi

ngx=127.0.0.1:$p_nginx
ngx_proxy=127.0.0.1:$p_nginx_proxy
ngx_naive=127.0.0.1:$p_nginx_naive
hap=127.0.0.1:$p_haproxy

# run_proxied_check NAME PROXY-OK-VAR "PEERS" FN ARGS: like run_check, but a
# proxy that failed to start already has a FAIL line; its checks fail too.
run_via() {
	local name=$1 ok=$2 needs=$3
	shift 3
	if have_peer "${needs%% *}" && [ "$ok" != true ]; then
		fail "$name" "${needs%% *} is not running (see its start failure above)"
		return
	fi
	run_check "$name" "$needs" "$@"
}

# ---- checks ----------------------------------------------------------------

# curl --http2 over cleartext: curl sends Upgrade: h2c, server must answer 101
# and then HTTP/2 on stream 1.
c_curl_h2c() {
	local target=$1 out
	out=$(timeout 15 curl -sS -v --http2 --max-time 10 -o "$tmp/h2c.body" -w 'http_version=%{http_version}\n' "http://$target/" 2>&1)
	echo "$out"
	grep -q '^< HTTP/1.1 101' <<<"$out" || because "no '101 Switching Protocols' to curl's h2c upgrade: $(grep -m1 '^< HTTP' <<<"$out")" || return 1
	grep -q '^< HTTP/2 200' <<<"$out" || because "no 'HTTP/2 200' after the 101: $(grep '^< HTTP' <<<"$out" | tr '\n' ' ')" || return 1
	grep -q 'http_version=2' <<<"$out" || because "curl reports http_version $(grep -o 'http_version=.*' <<<"$out")" || return 1
}

# curl with a non-h2c protocol. curl (7.88 tested) sends the request, prints
# whatever follows a 101 as body and reads until the server closes; it cannot
# send anything after the 101. So: send the data *without* Content-Length
# (-H 'Content-Length:'). The request then has no HTTP body and the bytes are
# the first bytes of the echo/1 stream; the server echoes them. The server
# keeps echoing until the client half-closes, which curl never does, so curl
# ends with --max-time (exit 28) and what it printed is the echo.
c_curl_echo1() {
	local tok rc
	tok=$(token)
	timeout 15 curl -sS -N --http1.1 --max-time 3 -D "$tmp/curl-echo1.hdr" \
		-H 'Connection: Upgrade' -H 'Upgrade: echo/1' -H 'Content-Length:' \
		--data-binary "$tok" "http://$addr/" >"$tmp/curl-echo1.out"
	rc=$?
	echo "curl exit $rc"
	cat "$tmp/curl-echo1.hdr"
	echo "output: $(head -c 300 "$tmp/curl-echo1.out")"
	head -n 1 "$tmp/curl-echo1.hdr" | grep -q ' 101' || because "status line: $(head -n 1 "$tmp/curl-echo1.hdr" | tr -d '\r')" || return 1
	grep -qi '^upgrade: *echo/1' "$tmp/curl-echo1.hdr" || because "101 without 'Upgrade: echo/1'" || return 1
	[ "$rc" = 0 ] || [ "$rc" = 28 ] || because "curl exit $rc" || return 1
	[ "$(cat "$tmp/curl-echo1.out")" = "$tok" ] || because "101 ok but curl did not get the echo of '$tok' (got $(head -c 80 "$tmp/curl-echo1.out" | od -An -c | head -n 2 | tr -s ' '))" || return 1
}

c_required() {
	local code
	code=$(timeout 10 curl -sS --http1.1 --max-time 5 -D "$tmp/required.hdr" -o /dev/null -w '%{http_code}' "http://$addr/required")
	cat "$tmp/required.hdr"
	[ "$code" = 426 ] || because "GET /required without Upgrade: status $code, want 426" || return 1
	local up
	up=$(grep -i '^upgrade:' "$tmp/required.hdr" | tr -d '\r' | sed 's/^[^:]*: *//' | tr -d ' ')
	for p in echo/1 websocket h2c; do
		grep -qi "\(^\|,\)$p\(,\|$\)" <<<"$up" || because "426 Upgrade header '$up' lacks $p" || return 1
	done
}

c_nghttp() {
	local out
	out=$(timeout 15 nghttp -uv -t 10 "http://$addr/" 2>&1)
	echo "$out" | head -n 60
	grep -q 'HTTP Upgrade success' <<<"$out" || because "nghttp -u: no 'HTTP Upgrade success' ($(grep -m1 -iE 'upgrade|error|fail' <<<"$out"))" || return 1
	grep -q ':status: 200' <<<"$out" || because "no ':status: 200' on stream 1" || return 1
}

c_node_ws() {
	local url=$1
	timeout 20 node "$peers/ws-client.js" "$url" --protocol echo --timeout 15000 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
	cat "$tmp/err"
}

c_node_http_upgrade() {
	local url=$1
	timeout 20 node "$peers/http-upgrade.js" "$url" --protocol echo/1 --timeout 15000 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
}

c_wscat() {
	local url=$1 tok out
	tok=$(token)
	# wscat drops stdin lines that arrive before the connection is open, and
	# exits at once on a closed stdin; -x sends the message on open instead,
	# and -w keeps the connection up for the echo. Off a TTY, wscat prints
	# each received message as a bare line.
	out=$( (sleep 5) | timeout 15 node "$here/node_modules/wscat/bin/wscat" -c "$url" -s echo -x "$tok" -w 3 2>&1)
	echo "$out"
	grep -qx "$tok" <<<"$out" || because "no echo of '$tok' from wscat: $(tr '\n' ' ' <<<"$out" | head -c 200)" || return 1
}

c_py_ws() {
	local url=$1
	timeout 20 "$py" "$peers/py_ws_client.py" "$url" --protocol echo --timeout 15 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
}

c_autobahn() {
	local url=$1
	(cd "$tmp" && timeout 20 "$py" "$peers/autobahn_client.py" "$url" --protocol echo --timeout 15) 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
}

# upgrade dial as a WebSocket client against a peer's server.
# $1 = name of the server script kind: node | python
c_dial_ws_server() {
	local kind=$1 sp sport rc srv_rc
	rm -f "$tmp/wssrv.out" "$tmp/wssrv.err"
	if [ "$kind" = node ]; then
		start wssrv timeout 25 node "$peers/ws-server.js" --count 1 --timeout 20000
	else
		start wssrv timeout 25 "$py" "$peers/py_ws_server.py" --count 1 --timeout 20
	fi
	sp=$pid_wssrv
	wait_line "$tmp/wssrv.out" 10 || { cat "$tmp/wssrv.err"; because "$kind ws server printed no port"; return 1; }
	sport=$(head -n 1 "$tmp/wssrv.out")
	# Keep stdin open for a moment after the last line so the echoes arrive
	# before dial sends its close at stdin EOF.
	(printf 'first line\nsecond line\n'; sleep 1) |
		timeout 15 "$bin" dial -timeout 10s "ws://127.0.0.1:$sport/" websocket >"$tmp/dial.out" 2>"$tmp/dial.err"
	rc=$?
	wait "$sp"
	srv_rc=$?
	forget_pid "$sp"
	echo "--- dial stdout"; cat "$tmp/dial.out"
	echo "--- dial stderr"; cat "$tmp/dial.err"
	echo "--- server stderr"; cat "$tmp/wssrv.err"
	[ "$rc" = 0 ] || because "upgrade dial exit $rc: $(tail -n 1 "$tmp/dial.err")" || return 1
	grep -q 'switched to websocket' "$tmp/dial.err" || because "no 'switched to websocket' on dial's stderr" || return 1
	[ "$(cat "$tmp/dial.out")" = "$(printf 'first line\nsecond line')" ] || because "dial stdout is not the two echoed lines: $(head -c 100 "$tmp/dial.out" | tr '\n' '|')" || return 1
	[ "$srv_rc" = 0 ] || because "$kind ws server exit $srv_rc: $(tail -n 1 "$tmp/wssrv.err")" || return 1
}

c_dial_echo1() {
	local tok rc
	tok=$(token)
	printf '%s' "$tok" | timeout 15 "$bin" dial -timeout 10s "http://$addr/" echo/1 >"$tmp/dial.out" 2>"$tmp/dial.err"
	rc=$?
	cat "$tmp/dial.err"
	[ "$rc" = 0 ] || because "upgrade dial exit $rc: $(tail -n 1 "$tmp/dial.err")" || return 1
	grep -q 'switched to echo/1' "$tmp/dial.err" || because "no 'switched to echo/1' on stderr" || return 1
	[ "$(cat "$tmp/dial.out")" = "$tok" ] || because "stdout '$(head -c 80 "$tmp/dial.out")', want '$tok'" || return 1
}

c_dial_refused() {
	local rc
	timeout 15 "$bin" dial -timeout 10s "http://$addr/" nosuch/9 </dev/null >"$tmp/dial.out" 2>"$tmp/dial.err"
	rc=$?
	cat "$tmp/dial.err"
	[ "$rc" = 1 ] || because "exit $rc for a refused upgrade, want 1" || return 1
	[ "$(wc -l <"$tmp/dial.err")" = 1 ] || because "want exactly one stderr line, got $(wc -l <"$tmp/dial.err")" || return 1
	[ ! -s "$tmp/dial.out" ] || because "stdout not empty" || return 1
}

# upgrade dial through tinyproxy with HTTP_PROXY. The target host is written
# 127.1 (= 127.0.0.1 to tinyproxy's resolver): Go's proxy-from-environment
# rules (net/http, x/net/http/httpproxy) never proxy "localhost" or loopback
# IP literals, and Go's own resolver cannot resolve "127.1", so the echo only
# comes back if the CLI really went through the proxy with CONNECT.
c_dial_proxy() {
	local tok rc
	tok=$(token)
	# tinyproxy (LogLevel Connect) logs "Request (file descriptor N): CONNECT host:port HTTP/1.1"
	local pat='Request ([^)]*): CONNECT ' before
	before=$(grep -c "$pat" "$tmp/tinyproxy/tinyproxy.log" 2>/dev/null)
	# stdin stays open 1s after the token: tinyproxy closes both directions
	# when the client half-closes, so an immediate EOF could cut off the echo.
	(printf '%s' "$tok"; sleep 1) | env -u NO_PROXY -u no_proxy -u ALL_PROXY -u all_proxy \
		HTTP_PROXY="http://127.0.0.1:$p_tinyproxy" http_proxy="http://127.0.0.1:$p_tinyproxy" \
		timeout 15 "$bin" dial -timeout 10s "http://127.1:$port/" echo/1 >"$tmp/dial.out" 2>"$tmp/dial.err"
	rc=$?
	sleep 0.2
	echo "--- dial stderr"; cat "$tmp/dial.err"
	echo "--- tinyproxy log"; tail -n 15 "$tmp/tinyproxy/tinyproxy.log" 2>/dev/null
	[ "$rc" = 0 ] || because "upgrade dial exit $rc: $(tail -n 1 "$tmp/dial.err")" || return 1
	[ "$(cat "$tmp/dial.out")" = "$tok" ] || because "stdout '$(head -c 80 "$tmp/dial.out")', want '$tok'" || return 1
	local after
	after=$(grep -c "$pat" "$tmp/tinyproxy/tinyproxy.log" 2>/dev/null)
	[ "${after:-0}" -gt "${before:-0}" ] || because "echo ok but tinyproxy logged no CONNECT" || return 1
	grep "$pat" "$tmp/tinyproxy/tinyproxy.log" | tail -n 1 | grep -q "CONNECT 127.1:$port " || because "last CONNECT in tinyproxy log is not to 127.1:$port" || return 1
}

# chromium_echo URL LOG [FLAG...]: headless Chromium, with the FLAGs,
# loads the demo page at URL with auto=TOKEN added to its query, which makes
# the page echo TOKEN over its WebSocket; the dumped DOM must show the echo.
# Sets dom to the file of the dumped DOM, and diag to one with Chromium's
# exit status, the DOM and the tail of LOG (of Chromium's stderr if LOG is
# empty).
chromium_n=0
chromium_echo() {
	local url=$1 log=$2 tok ud err rc
	shift 2
	tok=hello$RANDOM
	case $url in
	*\?*) url="$url&auto=$tok" ;;
	*) url="$url?auto=$tok" ;;
	esac
	chromium_n=$((chromium_n + 1))
	ud=$tmp/chromium-profile-$chromium_n dom=$tmp/dom-$chromium_n.html err=$tmp/chromium-$chromium_n.err
	mkdir -p "$ud"
	# --timeout: give up waiting for the load event after 15s and dump anyway.
	# The demo page holds its load event open until the echo has arrived.
	timeout 40 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
		--no-first-run --disable-component-update --disable-sync --disable-dev-shm-usage \
		"$@" --user-data-dir="$ud" --timeout=15000 --dump-dom "$url" >"$dom" 2>"$err"
	rc=$?
	diag=$tmp/chromium-$chromium_n.diag
	{
		echo "chromium exit $rc"
		echo "--- dumped DOM"
		head -c 3000 "$dom"
		echo
		if [ -n "$log" ]; then
			echo "--- $(basename "$log") (tail)"
			tail -n 8 "$log"
		else
			echo "--- chromium stderr (tail)"
			grep -v -e 'dbus' -e 'Failed to connect to the bus' "$err" | tail -n 12
		fi
	} >"$diag"
	[ "$rc" = 0 ] || because "chromium exit $rc" || return 1
	grep -q "id=\"result\"[^>]*>echo: $tok<" "$dom" || because "no '<div id=\"result\">echo: $tok</div>' in the dumped DOM (result: $(grep -o 'id="result"[^>]*>[^<]*' "$dom" | head -n 1))" || return 1
}

# Chromium loads the demo page from upgrade serve, or a proxy in front of
# it, at TARGET over HTTP/1.1.
c_chromium() {
	local target=$1 dom
	chromium_echo "http://$target/" "" --disable-quic
}

# Chromium loads the demo page from upgrade serve -tls over HTTP/2 (ALPN)
# and, the server advertising extended CONNECT, opens the page's WebSocket
# as an RFC 8441 stream on that connection: the page's "Carried by" says
# HTTP/2.0, and so does the server's -v line for the WebSocket.
c_chromium_h2() {
	local target=$1 dom i
	chromium_echo "https://$target/" "$tmp/serve_tls.err" --disable-quic --ignore-certificate-errors || return 1
	grep -q 'id="via"[^>]*>HTTP/2.0<' "$dom" || because "the page says its WebSocket is carried by '$(grep -o 'id="via"[^>]*>[^<]*' "$dom" | sed 's/.*>//')', want HTTP/2.0" || return 1
	for i in $(seq 50); do
		grep -q 'protocol=websocket .*proto=HTTP/2.0' "$tmp/serve_tls.err" && return 0
		sleep 0.1
	done
	because "no -v line 'protocol=websocket ... proto=HTTP/2.0' in the server's log"
}

# The bring-your-own example (examples/bring-your-own, its own module),
# built and started here with -tls -v: Chromium loads its /demo page over
# HTTP/2 (ALPN) and opens the page's WebSocket to the gorilla/websocket
# route as an RFC 8441 stream. gorilla's handler, written for HTTP/1.1 and
# registered unchanged as a delegated route, echoes through the Server's
# bridge, and the example's -v line for the request says proto=HTTP/2.0.
c_chromium_byo() {
	local byo_addr dom
	diag=$tmp/byo-build.log
	(cd "$root/examples/bring-your-own" && go build -o "$tmp/bring-your-own" .) >"$diag" 2>&1 ||
		because "go build in examples/bring-your-own failed" || return 1
	start byo "$tmp/bring-your-own" -addr 127.0.0.1:0 -tls -v
	diag=$tmp/byo.err
	wait_line "$tmp/byo.out" 10 || because "the example printed no 'listening on' line within 10s" || return 1
	byo_addr=$(sed -n '1s#^listening on https://\([^/ ]*\)$#\1#p' "$tmp/byo.out")
	[ -n "$byo_addr" ] || because "first stdout line is not 'listening on https://HOST:PORT': $(head -n 1 "$tmp/byo.out")" || return 1
	chromium_echo "https://$byo_addr/demo?lib=gorilla" "$tmp/byo.err" --disable-quic --ignore-certificate-errors || return 1
	grep -q 'id="status"[^>]*>connected, subprotocol echo<' "$dom" || because "the page's status is not 'connected, subprotocol echo'" || return 1
	grep -q 'upgrade request: method=CONNECT path=/gorilla proto=HTTP/2.0 protocol="websocket"' "$tmp/byo.err" ||
		because "no -v line 'method=CONNECT path=/gorilla proto=HTTP/2.0' in the example's log" || return 1
}

# Node's http2 client opens an extended CONNECT stream (RFC 8441) with
# :protocol websocket (frames by hand) or echo/1, over HTTP/2 with prior
# knowledge.
c_node_h2() {
	local url=$1 protocol=$2
	timeout 20 node "$peers/h2-ws-client.js" "$url" --protocol "$protocol" --timeout 15000 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
}

# upgrade dial -http2 against a peer's HTTP/2 server with extended CONNECT
# enabled: an echo/1 stream, with prior knowledge.
# $1 = the server: node (Node's http2 server with enableConnectProtocol) |
# python (python3-h2's, interop/peers/py_h2_server.py, with
# ENABLE_CONNECT_PROTOCOL)
c_dial_h2_server() {
	local kind=$1 srv sp sport rc srv_rc tok out
	rm -f "$tmp/h2srv.out" "$tmp/h2srv.err"
	if [ "$kind" = node ]; then
		srv="node http2 server"
		start h2srv timeout 25 node "$peers/h2-echo-server.js" --count 1 --timeout 20000
	else
		srv="python3-h2 server"
		start h2srv timeout 25 "$py" "$peers/py_h2_server.py" --count 1 --timeout 20
	fi
	sp=$pid_h2srv
	wait_line "$tmp/h2srv.out" 10 || { cat "$tmp/h2srv.err"; because "$srv printed no port"; return 1; }
	sport=$(head -n 1 "$tmp/h2srv.out")
	tok=$(token)
	out=$(echo "$tok" | timeout 15 "$client" dial -http2 "http://127.0.0.1:$sport/echo" echo/1 2>"$tmp/dialh2.err")
	rc=$?
	wait "$sp"
	srv_rc=$?
	forget_pid "$sp"
	echo "--- dial stderr"; cat "$tmp/dialh2.err"
	echo "--- dial stdout"; echo "$out"
	echo "--- server stderr"; cat "$tmp/h2srv.err"
	[ "$rc" = 0 ] || because "dial exit $rc: $(tail -n 1 "$tmp/dialh2.err")" || return 1
	grep -qx "switched to echo/1 over HTTP/2" "$tmp/dialh2.err" || because "dial did not switch over HTTP/2: $(head -n 1 "$tmp/dialh2.err")" || return 1
	[ "$out" = "$tok" ] || because "echo '$out', want '$tok'" || return 1
	[ "$srv_rc" = 0 ] || because "$srv exit $srv_rc: $(tail -n 1 "$tmp/h2srv.err")" || return 1
}

# upgrade dial -http2 against upgrade serve: URL is http (prior knowledge)
# or https (serve -tls, ALPN h2, -insecure for its self-signed
# certificate); echo/1, then nosuch/1,websocket (refused, then switched),
# each on an HTTP/2 stream.
c_dial_h2_serve() {
	local url=$1 tok rc out
	tok=$(token)
	out=$(echo "$tok" | timeout 15 "$client" dial -http2 -insecure -timeout 10s "$url" echo/1 2>"$tmp/dialh2.err")
	rc=$?
	echo "--- dial stderr"; cat "$tmp/dialh2.err"
	echo "--- dial stdout"; echo "$out"
	[ "$rc" = 0 ] || because "dial echo/1 exit $rc: $(tail -n 1 "$tmp/dialh2.err")" || return 1
	grep -qx "switched to echo/1 over HTTP/2" "$tmp/dialh2.err" || because "dial did not switch echo/1 over HTTP/2: $(head -n 1 "$tmp/dialh2.err")" || return 1
	[ "$out" = "$tok" ] || because "echo/1 echo '$out', want '$tok'" || return 1
	out=$( (echo "$tok"; sleep 0.5) | timeout 15 "$client" dial -http2 -insecure -timeout 10s "$url" nosuch/1,websocket 2>"$tmp/dialh2.err")
	rc=$?
	echo "--- dial stderr"; cat "$tmp/dialh2.err"
	echo "--- dial stdout"; echo "$out"
	[ "$rc" = 0 ] || because "dial nosuch/1,websocket exit $rc: $(tail -n 1 "$tmp/dialh2.err")" || return 1
	grep -qx "switched to websocket over HTTP/2" "$tmp/dialh2.err" || because "dial did not switch websocket over HTTP/2: $(head -n 1 "$tmp/dialh2.err")" || return 1
	[ "$out" = "$tok" ] || because "websocket echo '$out', want '$tok'" || return 1
}

# The checks where upgrade dial -http2 ($client) is the client.
h2_client_checks() {
	run_check dial-h2-serve "" c_dial_h2_serve "http://$addr/"
	run_via dial-h2-serve-tls "$serve_tls_ok" "" c_dial_h2_serve "https://$taddr/"
	run_check dial-h2-node-server "node" c_dial_h2_server node
	run_check dial-h2-python-server "h2" c_dial_h2_server python
}

# summary prints the closing line and exits with the checks' status.
summary() {
	echo "checks took $(($(date +%s) - t0))s" >&2
	if [ "${#missing_peers[@]}" -gt 0 ]; then
		{
			echo
			echo "missing peers: $(printf '%s\n' "${missing_peers[@]}" | sort -u | tr '\n' ' ')"
			echo "install them (Debian/Ubuntu, as root): bash $here/install.sh"
			echo "  = apt-get install curl nghttp2-client nginx haproxy tinyproxy python3-websockets python3-autobahn python3-h2 chromium"
			echo "  + (cd $here && npm ci)   # ws, wscat from package-lock.json"
		} >&2
	fi
	if [ "$skipped" -gt 0 ]; then
		echo "$passed passed, $failed failed, $skipped skipped"
	else
		echo "$passed passed, $failed failed"
	fi
	[ "$failed" = 0 ]
	exit
}

# python3-h2 (Debian) opens an echo/1 stream with an extended CONNECT.
c_py_h2() {
	local target=$1
	timeout 20 "$py" "$peers/py_h2_client.py" "$target" --timeout 15 2>"$tmp/err" || because "$(tail -n 1 "$tmp/err")" || return 1
}

# nginx without the Upgrade/Connection proxy headers: the backend never sees
# an upgrade request and answers the plain GET, so the WebSocket client fails
# with "Unexpected server response: 200" and the echo/1 client gets a 200.
# The check PASSes when this documented failure is what happens.
c_nginx_naive_ws() {
	if timeout 20 node "$peers/ws-client.js" "ws://$ngx_naive/" --protocol echo --timeout 10000 2>"$tmp/err"; then
		because "WebSocket upgrade unexpectedly worked without the proxy headers"
		return 1
	fi
	cat "$tmp/err"
	grep -q 'Unexpected server response: 200' "$tmp/err" || because "expected 'Unexpected server response: 200', got: $(tail -n 1 "$tmp/err")" || return 1
}
c_nginx_naive_echo1() {
	if timeout 20 node "$peers/http-upgrade.js" "http://$ngx_naive/" --protocol echo/1 --timeout 10000 2>"$tmp/err"; then
		because "echo/1 upgrade unexpectedly worked without the proxy headers"
		return 1
	fi
	cat "$tmp/err"
	grep -q 'no upgrade: HTTP 200' "$tmp/err" || because "expected a plain 'HTTP 200', got: $(tail -n 1 "$tmp/err")" || return 1
}
c_nginx_naive_required() {
	local code
	code=$(timeout 10 curl -sS --http1.1 --max-time 5 -D "$tmp/naive-required.hdr" -o /dev/null \
		-H 'Connection: Upgrade' -H 'Upgrade: echo/1' -w '%{http_code}' "http://$ngx_naive/required")
	cat "$tmp/naive-required.hdr"
	[ "$code" = 426 ] || because "/required through naive nginx: status $code, want 426 (backend saw no Upgrade)" || return 1
}

# A Node ws client through upgrade proxy to a Node ws server: the proxy
# forwards the key, the subprotocol offer and every frame untouched.
c_proxy_ws_node_server() {
	local sp sport rc srv_rc
	rm -f "$tmp/wssrv.out" "$tmp/wssrv.err"
	start wssrv timeout 25 node "$peers/ws-server.js" --count 1 --timeout 20000
	sp=$pid_wssrv
	wait_line "$tmp/wssrv.out" 10 || { cat "$tmp/wssrv.err"; because "node ws server printed no port"; return 1; }
	sport=$(head -n 1 "$tmp/wssrv.out")
	start_proxy proxyws "http://127.0.0.1:$sport" || { cat "$tmp/proxyws.err"; because "upgrade proxy to the ws server did not start"; return 1; }
	timeout 20 node "$peers/ws-client.js" "ws://$proxy_addr/" --protocol echo --timeout 15000 2>"$tmp/err"
	rc=$?
	wait "$sp"
	srv_rc=$?
	forget_pid "$sp"
	kill -TERM "$pid_proxyws" 2>/dev/null
	echo "--- client stderr"; cat "$tmp/err"
	echo "--- server stderr"; cat "$tmp/wssrv.err"
	echo "--- proxy stderr"; cat "$tmp/proxyws.err"
	[ "$rc" = 0 ] || because "$(tail -n 1 "$tmp/err")" || return 1
	[ "$srv_rc" = 0 ] || because "node ws server exit $srv_rc: $(tail -n 1 "$tmp/wssrv.err")" || return 1
	grep -q 'level=INFO msg="upgrade: proxied connection closed" protocol=websocket .*proto=HTTP/1.1 .*how="closed by ' "$tmp/proxyws.err" || because "no -v INFO line for the proxied pair" || return 1
}

# h2c is not forwarded by default: curl's speculative Upgrade: h2c through
# the proxy gets a plain HTTP/1.1 200 from upgrade serve, never a 101.
c_proxy_h2c_refused() {
	local out
	out=$(timeout 15 curl -sS -v --http2 --max-time 10 -o /dev/null -w 'http_version=%{http_version}\n' "http://$paddr/" 2>&1)
	echo "$out"
	! grep -q '^< HTTP/1.1 101' <<<"$out" || because "the proxy forwarded an h2c upgrade" || return 1
	grep -q '^< HTTP/1.1 200' <<<"$out" || because "no plain 200: $(grep -m1 '^< HTTP' <<<"$out")" || return 1
}

# stop_by_sigterm NAME PID ERRLOG: SIGTERM ends the process within 15 s
# with exit status 0.
stop_by_sigterm() {
	local name=$1 pid=$2 errlog=$3 i rc
	kill -TERM "$pid" 2>/dev/null || because "$name process already gone" || return 1
	for i in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		because "still running 15s after SIGTERM"
		return 1
	fi
	wait "$pid"
	rc=$?
	forget_pid "$pid"
	tail -n 5 "$errlog"
	[ "$rc" = 0 ] || because "exit status $rc after SIGTERM, want 0" || return 1
}

c_proxy_sigterm() { stop_by_sigterm proxy "$proxy_pid" "$tmp/proxy.err"; }

c_sigterm() { stop_by_sigterm serve "$serve_pid" "$tmp/serve.err"; }

# ---- HTTP/3 (RFC 9220): Chromium's WebSocket over QUIC -------------------------

# start_h3 NAME CMD...: start an `upgrade` command that prints its https
# address and logs its certificate's spki_sha256; sets h3_addr and h3_spki
# (empty on failure).
start_h3() {
	local name=$1
	shift
	h3_addr= h3_spki=
	start "$name" "$@"
	wait_line "$tmp/$name.out" 10 || return 1
	h3_addr=$(sed -n '1s#^listening on https://\([^/ ]*\)/\{0,1\}$#\1#p' "$tmp/$name.out")
	local i
	for i in $(seq 50); do
		h3_spki=$(grep -o 'spki_sha256="[^"]*"' "$tmp/$name.err" | head -n 1 | cut -d'"' -f2)
		[ -n "$h3_spki" ] && break
		sleep 0.1
	done
	[ -n "$h3_addr" ] && [ -n "$h3_spki" ]
}

# Chromium loads the demo page over HTTP/3 (QUIC forced on for the origin,
# the self-signed certificate accepted by its SPKI hash, since
# --ignore-certificate-errors does not cover QUIC) and opens its WebSocket
# as an RFC 9220 stream: LOG's -v line for the WebSocket matches PATTERN
# (proto=HTTP/3.0), and the page says the demo server got the WebSocket
# over VIA (HTTP/3.0 by default; HTTP/1.1 behind upgrade proxy).
c_chromium_h3() {
	local target=$1 spki=$2 log=$3 pattern=$4 via=${5:-HTTP/3.0} dom i
	chromium_echo "https://$target/" "$log" --enable-quic --origin-to-force-quic-on="$target" \
		--enable-features=EnableWebsocketsOverHttp3 --ignore-certificate-errors-spki-list="$spki" || return 1
	grep -q "id=\"via\"[^>]*>$via<" "$dom" || because "the page says its WebSocket is carried by '$(grep -o 'id="via"[^>]*>[^<]*' "$dom" | sed 's/.*>//')', want $via" || return 1
	for i in $(seq 50); do
		grep -q "$pattern" "$log" && return 0
		sleep 0.1
	done
	because "no -v line matching '$pattern' in $(basename "$log")"
}

# upgrade dial -http3 against upgrade serve -tls -http3: a WebSocket echo.
c_dial_h3_serve() {
	local target=$1 tok out rc
	tok=$(token)
	out=$( (echo "$tok"; sleep 0.5) | timeout 15 "$bin" dial -http3 -insecure -timeout 10s "wss://$target/" websocket 2>"$tmp/dialh3.err")
	rc=$?
	echo "--- dial stderr"; cat "$tmp/dialh3.err"
	echo "--- dial stdout"; echo "$out"
	[ "$rc" = 0 ] || because "dial exit $rc: $(tail -n 1 "$tmp/dialh3.err")" || return 1
	grep -qx "switched to websocket over HTTP/3" "$tmp/dialh3.err" || because "dial did not switch over HTTP/3: $(head -n 1 "$tmp/dialh3.err")" || return 1
	[ "$out" = "$tok" ] || because "echo '$out', want '$tok'" || return 1
}

http3_checks() {
	if start_h3 serve_h3 "$bin" serve -addr 127.0.0.1:0 -tls -http3 -v; then
		pass serve-http3
		run_check chromium-h3 "chromium" c_chromium_h3 "$h3_addr" "$h3_spki" "$tmp/serve_h3.err" 'protocol=websocket .*proto=HTTP/3.0'
		run_check dial-h3-serve "" c_dial_h3_serve "$h3_addr"
	else
		fail serve-http3 "no 'listening on https://HOST:PORT' and spki_sha256 lines within 10s" "$tmp/serve_h3.err"
	fi
	# upgrade proxy -tls -http3 in front of the plain upgrade serve (ADDR):
	# HTTP/3 in front, HTTP/1.1 behind.
	if start_h3 proxy_h3 "$bin" proxy -addr 127.0.0.1:0 -to "http://$addr" -tls -http3 -v; then
		pass proxy-http3
		run_check chromium-h3-proxy "chromium" c_chromium_h3 "$h3_addr" "$h3_spki" "$tmp/proxy_h3.err" \
			'level=INFO msg="upgrade: proxied connection closed" protocol=websocket .*proto=HTTP/3.0 backend='"$addr " HTTP/1.1
		run_check dial-h3-proxy "" c_dial_h3_serve "$h3_addr"
	else
		fail proxy-http3 "no 'listening on https://HOST:PORT' and spki_sha256 lines within 10s" "$tmp/proxy_h3.err"
	fi
}

t0=$(date +%s)

if $h2client_only; then
	h2_client_checks
	summary
fi

run_check curl-h2c "curl" c_curl_h2c "$addr"
run_check curl-echo1 "curl" c_curl_echo1
run_check curl-required-426 "curl" c_required
run_check nghttp-upgrade "nghttp" c_nghttp
run_check node-ws "ws" c_node_ws "ws://$addr/"
run_via node-ws-nginx "$nginx_ok" "nginx ws" c_node_ws "ws://$ngx/"
run_via node-ws-haproxy "$haproxy_ok" "haproxy ws" c_node_ws "ws://$hap/"
run_check node-http-echo1 "node" c_node_http_upgrade "http://$addr/"
run_via node-http-echo1-nginx "$nginx_ok" "nginx node" c_node_http_upgrade "http://$ngx/"
run_via node-http-echo1-haproxy "$haproxy_ok" "haproxy node" c_node_http_upgrade "http://$hap/"
run_check wscat "wscat" c_wscat "ws://$addr/"
run_check dial-ws-node-server "ws" c_dial_ws_server node
run_check python-websockets "websockets" c_py_ws "ws://$addr/"
run_via python-websockets-haproxy "$haproxy_ok" "haproxy websockets" c_py_ws "ws://$hap/"
run_check dial-ws-python-server "websockets" c_dial_ws_server python
run_check autobahn "autobahn" c_autobahn "ws://$addr/"
run_check chromium "chromium" c_chromium "$addr"
run_via chromium-h2 "$serve_tls_ok" "chromium" c_chromium_h2 "$taddr"
run_check chromium-h2-gorilla "chromium" c_chromium_byo
run_check node-h2-websocket "node" c_node_h2 "http://$addr/" websocket
run_check node-h2-echo1 "node" c_node_h2 "http://$addr/" echo/1
run_via node-h2-websocket-tls "$serve_tls_ok" "node" c_node_h2 "https://$taddr/" websocket
run_check python-h2-echo1 "h2" c_py_h2 "$addr"
h2_client_checks
run_via proxy-node-h2-websocket "$proxy_ok" "node" c_node_h2 "http://$paddr/" websocket
run_via chromium-nginx "$nginx_ok" "nginx chromium" c_chromium "$ngx"
run_via nginx-no-upgrade-headers-ws "$nginx_ok" "nginx ws" c_nginx_naive_ws
run_via nginx-no-upgrade-headers-echo1 "$nginx_ok" "nginx node" c_nginx_naive_echo1
run_via nginx-no-upgrade-headers-426 "$nginx_ok" "nginx curl" c_nginx_naive_required
run_via haproxy-h2c "$haproxy_ok" "haproxy curl" c_curl_h2c "$hap"
run_check dial-echo1 "" c_dial_echo1
run_check dial-refused "" c_dial_refused
run_via dial-via-tinyproxy "$tinyproxy_ok" "tinyproxy" c_dial_proxy
run_via proxy-node-ws "$proxy_ok" "ws" c_node_ws "ws://$paddr/"
run_via proxy-node-http-echo1 "$proxy_ok" "node" c_node_http_upgrade "http://$paddr/"
run_via proxy-python-websockets "$proxy_ok" "websockets" c_py_ws "ws://$paddr/"
run_via proxy-chromium "$proxy_ok" "chromium" c_chromium "$paddr"
run_via proxy-h2c-refused "$proxy_ok" "curl" c_proxy_h2c_refused
run_check proxy-ws-node-server "ws" c_proxy_ws_node_server
run_via nginx-proxy-node-ws "$nginx_ok" "nginx ws" c_node_ws "ws://$ngx_proxy/"
run_via nginx-proxy-chromium "$nginx_ok" "nginx chromium" c_chromium "$ngx_proxy"
run_via proxy-sigterm "$proxy_ok" "" c_proxy_sigterm
http3_checks
run_check serve-sigterm "" c_sigterm

summary
