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
# always binds /run/pcscd/pcscd.comm. Two ways round that, chosen at start:
#
# - namespace (root with CAP_SYS_ADMIN, e.g. a root shell on a VM): pcscd runs in
#   a private mount namespace (unshare -m) in which <dir> is bind-mounted on
#   /run/pcscd: inside, the daemon sees its usual paths; outside, its files are
#   in <dir>. Nothing outside <dir> is touched.
# - socket (no CAP_SYS_ADMIN: a user with or without sudo, a root shell in a
#   default container): the script binds <dir>/pcscd.comm itself and hands it to
#   pcscd the way systemd socket activation does (LISTEN_FDS=1, the socket as fd
#   3), which pcscd built with libsystemd (Debian's) accepts instead of binding
#   its own. pcscd still insists that /run/pcscd exists (created with sudo -n
#   when needed) and writes /run/pcscd/pcscd.pid there when it may.
#
# Both commands are idempotent. No systemd needed. The mode used is the first
# line of <dir>/pcscd.log. `start` fails (exit 1, with the reason) when neither
# way works: it never reports a pcscd that is not there.
# On success `start` prints, one per line:
#   PCSCLITE_CSOCK_NAME=<dir>/pcscd.comm
#   KIBAN_TEST_VPCD_PORT=<port>
set -eu

# pcscd is in /usr/sbin, which a non-root user's PATH may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# How long to wait for the daemon to answer a client, in tenths of a second.
ready_wait_tenths_max=100
# How long to wait for the daemon to exit after SIGTERM, in tenths of a second.
stop_wait_tenths_max=50

usage() {
    echo "usage: $0 start <dir> <port> | stop <dir> | env <dir> <port>" >&2
    exit 2
}

# Whether process $1 exists and is not a zombie (a pcscd whose parent was
# killed may stay one until a reaper collects it).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ "$state" != Z ]
}

is_running() {
    [ -f "$1/pcscd.script-pid" ] || return 1
    pid=$(cat "$1/pcscd.script-pid")
    [ -n "$pid" ] && alive "$pid"
}

print_env() {
    echo "PCSCLITE_CSOCK_NAME=$1/pcscd.comm"
    echo "KIBAN_TEST_VPCD_PORT=$2"
}

# Whether a client can open a PC/SC context on <dir>/pcscd.comm: the daemon is
# up and has read its readers, not merely that its socket exists.
answers() {
    [ -S "$1/pcscd.comm" ] || return 1
    PCSCLITE_CSOCK_NAME="$1/pcscd.comm" python3 -c '
import ctypes, sys
pcsc = ctypes.CDLL("libpcsclite.so.1")
context = ctypes.c_long()
SCARD_SCOPE_SYSTEM = 2
if pcsc.SCardEstablishContext(SCARD_SCOPE_SYSTEM, None, None, ctypes.byref(context)) != 0:
    sys.exit(1)
pcsc.SCardReleaseContext(context)
' 2>/dev/null
}

launch_in_namespace() {
    mkdir -p /run/pcscd
    echo "mode: namespace (unshare --mount, $1 on /run/pcscd)" > "$1/pcscd.log"
    # unshare and sh both exec, so $! is the pid of pcscd itself.
    setsid unshare --mount --propagation private \
        sh -c 'mount --bind "$1" /run/pcscd && exec pcscd --foreground --error -c "$1/reader.conf.d"' \
        sh "$1" >> "$1/pcscd.log" 2>&1 < /dev/null &
    echo $! > "$1/pcscd.script-pid"
}

launch_on_socket() {
    # pcscd exits at once when it can neither find nor create /run/pcscd.
    if [ ! -d /run/pcscd ] && ! mkdir -p /run/pcscd 2>/dev/null; then
        sudo -n mkdir -p /run/pcscd 2>/dev/null || {
            echo "cannot create /run/pcscd (pcscd needs it even with its own socket): run as root or with passwordless sudo" >&2
            exit 1
        }
    fi
    echo "mode: socket ($1/pcscd.comm handed over as by systemd socket activation)" > "$1/pcscd.log"
    # python3 binds the socket, puts it on fd 3 and execs pcscd, so $! is the
    # pid of pcscd itself and LISTEN_PID (which pcscd checks) matches it.
    setsid python3 -c '
import os, socket, sys
directory = sys.argv[1]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(directory + "/pcscd.comm")
os.chmod(directory + "/pcscd.comm", 0o666)
listener.listen(128)
SD_LISTEN_FDS_START = 3
if listener.fileno() != SD_LISTEN_FDS_START:
    os.dup2(listener.fileno(), SD_LISTEN_FDS_START)
os.set_inheritable(SD_LISTEN_FDS_START, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execvp("pcscd", ["pcscd", "--foreground", "--error", "-c", directory + "/reader.conf.d"])
' "$1" >> "$1/pcscd.log" 2>&1 < /dev/null &
    echo $! > "$1/pcscd.script-pid"
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
    if unshare --mount --propagation private true 2>/dev/null; then
        launch_in_namespace "$dir"
    else
        launch_on_socket "$dir"
    fi
    tenths=0
    until answers "$dir"; do
        if ! is_running "$dir"; then
            echo "pcscd exited during start; its log ($dir/pcscd.log):" >&2
            cat "$dir/pcscd.log" >&2
            exit 1
        fi
        tenths=$((tenths + 1))
        if [ "$tenths" -gt "$ready_wait_tenths_max" ]; then
            echo "pcscd in $dir did not answer; its log ($dir/pcscd.log):" >&2
            cat "$dir/pcscd.log" >&2
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
        while alive "$pid"; do
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
