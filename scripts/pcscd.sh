#!/bin/sh
# Start or stop a private pcscd for the card tests.
#
#   scripts/pcscd.sh start <dir> <port>   start pcscd with the vpcd driver on <port>
#   scripts/pcscd.sh stop <dir>           stop it again
#   scripts/pcscd.sh env <dir> <port>     print the environment lines only
#
# The daemon gets its own reader.conf.d in <dir> (vpcd listening on 127.0.0.1-
# reachable TCP <port> and <port>+1, one virtual reader slot each) and its own
# socket <dir>/pcscd.comm, so it never depends on or disturbs a system pcscd.
#
# pcscd 1.9.9 ignores PCSCLITE_CSOCK_NAME (only the client library reads it) and
# always creates /run/pcscd/pcscd.comm and /run/pcscd/pcscd.pid. We therefore run
# it in a private mount namespace (unshare -m) in which <dir> is bind-mounted on
# /run/pcscd: inside, the daemon sees its usual paths; outside, its files are in
# <dir>. Clients find it through PCSCLITE_CSOCK_NAME=<dir>/pcscd.comm.
#
# Both commands are idempotent. Works as root in a container without systemd
# (needs CAP_SYS_ADMIN for unshare -m, which a root shell in a container usually has).
# On success `start` prints, one per line:
#   PCSCLITE_CSOCK_NAME=<dir>/pcscd.comm
#   KIBAN_TEST_VPCD_PORT=<port>
set -eu

# How long to wait for the daemon's socket to appear, in tenths of a second.
socket_wait_tenths_max=100
# How long to wait for the daemon to exit after SIGTERM, in tenths of a second.
stop_wait_tenths_max=50

usage() {
    echo "usage: $0 start <dir> <port> | stop <dir> | env <dir> <port>" >&2
    exit 2
}

is_running() {
    [ -f "$1/pcscd.script-pid" ] || return 1
    pid=$(cat "$1/pcscd.script-pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

print_env() {
    echo "PCSCLITE_CSOCK_NAME=$1/pcscd.comm"
    echo "KIBAN_TEST_VPCD_PORT=$2"
}

start() {
    dir=$1
    port=$2
    case $port in
        '' | *[!0-9]*) echo "port must be a number: $port" >&2; exit 2 ;;
    esac
    mkdir -p "$dir/reader.conf.d"
    dir=$(cd "$dir" && pwd)
    if is_running "$dir"; then
        if [ "$(cat "$dir/pcscd.port" 2>/dev/null)" != "$port" ]; then
            echo "pcscd already running in $dir on another port" >&2
            exit 1
        fi
        print_env "$dir" "$port"
        return 0
    fi
    command -v pcscd >/dev/null || { echo "pcscd is not installed" >&2; exit 1; }
    driver=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
    [ -f "$driver" ] || { echo "vpcd driver missing: $driver (install vsmartcard-vpcd)" >&2; exit 1; }
    cat > "$dir/reader.conf.d/vpcd" <<CONF
FRIENDLYNAME "Virtual PCD"
DEVICENAME   /dev/null:$port
LIBPATH      $driver
CHANNELID    $port
CONF
    echo "$port" > "$dir/pcscd.port"
    rm -f "$dir/pcscd.comm" "$dir/pcscd.pid"
    mkdir -p /run/pcscd
    # unshare and sh both exec, so $! is the pid of pcscd itself.
    setsid unshare --mount --propagation private \
        sh -c 'mount --bind "$1" /run/pcscd && exec pcscd --foreground --error -c "$1/reader.conf.d"' \
        sh "$dir" > "$dir/pcscd.log" 2>&1 < /dev/null &
    echo $! > "$dir/pcscd.script-pid"
    tenths=0
    while [ ! -S "$dir/pcscd.comm" ]; do
        if ! is_running "$dir"; then
            echo "pcscd exited during start; its log ($dir/pcscd.log):" >&2
            cat "$dir/pcscd.log" >&2
            exit 1
        fi
        tenths=$((tenths + 1))
        if [ "$tenths" -gt "$socket_wait_tenths_max" ]; then
            echo "pcscd socket did not appear in $dir" >&2
            stop "$dir"
            exit 1
        fi
        sleep 0.1
    done
    print_env "$dir" "$port"
}

stop() {
    dir=$1
    [ -d "$dir" ] || return 0
    if is_running "$dir"; then
        pid=$(cat "$dir/pcscd.script-pid")
        kill -TERM "$pid" 2>/dev/null || true
        tenths=0
        while kill -0 "$pid" 2>/dev/null; do
            tenths=$((tenths + 1))
            if [ "$tenths" -gt "$stop_wait_tenths_max" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$dir/pcscd.script-pid" "$dir/pcscd.comm" "$dir/pcscd.pid"
}

[ $# -ge 2 ] || usage
case $1 in
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    env) [ $# -eq 3 ] || usage; print_env "$(cd "$2" && pwd)" "$3" ;;
    *) usage ;;
esac
