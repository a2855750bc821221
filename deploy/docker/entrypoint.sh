#!/bin/sh
# StreamGale's container entrypoint: the first argument is the role, the rest are its options.
#
#   nimbus     [OPTIONS]   the master daemon (streamgale nimbus)
#   supervisor [OPTIONS]   the node daemon (streamgale supervisor)
#   ui         [OPTIONS]   the web UI and REST API (streamgale ui)
#   healthcheck            ask the daemon of this container whether it is ready (the image's HEALTHCHECK)
#   streamgale ARGS...     any other streamgale command (submit, list, keys ...)
#
# OPTIONS pass through to the daemon after the ones set here, so they win: `-c key=value` for
# nimbus and supervisor, --host/--port/--token-file for the ui. The environment:
#
#   STREAMGALE_CONF          the config file (default /etc/streamgale/config.yaml, read by streamgale itself)
#   STREAMGALE_HOST          the address others reach this daemon at: a supervisor's --host (default: the
#                            container's hostname); a nimbus's --host where set (default: nimbus.host)
#   STREAMGALE_NIMBUS        HOST:PORT[,HOST:PORT...] of every nimbus, for supervisors, the ui and commands
#                            (default: nimbus.host:nimbus.port from the config)
#   STREAMGALE_HEALTH_PORT   nimbus's and a supervisor's health port (default 8081; empty: no probes)
#   STREAMGALE_HEALTH_HOST   where healthcheck asks (default 127.0.0.1: the image's config binds 0.0.0.0)
#   STREAMGALE_UI_HOST, STREAMGALE_UI_PORT   where the ui listens (default 0.0.0.0 and 8080)
#   STREAMGALE_SHUTDOWN_WORKERS   a supervisor stops its workers when it stops (default true: a container's
#                            processes all end with it, so they had better end cleanly)
#   STREAMGALE_SECRETS_FROM  a directory of mounted secrets (keys, the UI token, ZooKeeper credentials),
#                            copied at start into STREAMGALE_SECRETS_DIR (default /run/streamgale/secrets),
#                            readable by this user only
#   STREAMGALE_RUN_DIR       where this script notes the health port for healthcheck (default /run/streamgale)
#   STREAMGALE_LOG_DIR       if set, the daemon's output goes to ROLE.log there instead of stdout/stderr
#
# The daemon replaces this shell (exec), so it is the process that SIGTERM reaches: nimbus and
# supervisors stop cleanly on it.
set -eu

prog=streamgale-entrypoint

usage() {
    echo "usage: $prog nimbus|supervisor|ui [OPTIONS...] | healthcheck | streamgale ARGS..." >&2
}

die() {
    echo "$prog: $1" >&2
    exit "${2:-2}"
}

# Secret files arrive readable by a group (Kubernetes secret volumes with fsGroup) or owned by another
# user (compose file secrets), and StreamGale refuses key, token and credential files that a group or
# others may read: copy them where only this user can read them.
copy_secrets() {
    src=$1
    dest=${STREAMGALE_SECRETS_DIR:-/run/streamgale/secrets}
    [ -d "$src" ] || die "STREAMGALE_SECRETS_FROM=$src is not a directory"
    (
        umask 077
        mkdir -p "$dest"
        for entry in "$src"/*; do  # not the dot entries: a Kubernetes volume's ..data links
            [ -e "$entry" ] || continue
            cp -R -L "$entry" "$dest/"
        done
    ) || die "cannot copy the secrets in $src to $dest" 1
}

# The HEALTHCHECK runs in a process of its own, which cannot see this one's arguments: note which
# port this container's daemon answers probes on.
note_health_port() {
    run_dir=${STREAMGALE_RUN_DIR:-/run/streamgale}
    if ! { mkdir -p "$run_dir" && printf '%s\n' "$1" >"$run_dir/health-port"; } 2>/dev/null; then
        echo "$prog: warning: cannot write $run_dir/health-port; healthcheck will ask port 8081" >&2
    fi
}

[ $# -gt 0 ] || { usage; die "no role given: the first argument must be nimbus, supervisor, ui, healthcheck or streamgale"; }
role=$1
shift

case "$role" in
    nimbus | supervisor | ui) ;;
    healthcheck)
        port=${STREAMGALE_HEALTH_PORT:-8081}
        run_dir=${STREAMGALE_RUN_DIR:-/run/streamgale}
        if [ -r "$run_dir/health-port" ]; then
            port=$(cat "$run_dir/health-port")
        fi
        exec streamgale health --host "${STREAMGALE_HEALTH_HOST:-127.0.0.1}" --port "$port" --ready
        ;;
    streamgale)
        if [ -n "${STREAMGALE_SECRETS_FROM:-}" ]; then copy_secrets "$STREAMGALE_SECRETS_FROM"; fi
        if [ -n "${STREAMGALE_NIMBUS:-}" ]; then set -- --nimbus "$STREAMGALE_NIMBUS" "$@"; fi
        exec streamgale "$@"
        ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        usage
        die "unknown role '$role': the first argument must be nimbus, supervisor, ui, healthcheck or streamgale"
        ;;
esac

conf=${STREAMGALE_CONF:-/etc/streamgale/config.yaml}
[ -f "$conf" ] || die "config file $conf not found: mount your config.yaml there, or set STREAMGALE_CONF" 1
export STREAMGALE_CONF="$conf"
if [ -n "${STREAMGALE_SECRETS_FROM:-}" ]; then copy_secrets "$STREAMGALE_SECRETS_FROM"; fi

health_port=${STREAMGALE_HEALTH_PORT-8081}
case "$role" in
    nimbus)
        if [ -n "${STREAMGALE_HOST:-}" ]; then set -- --host "$STREAMGALE_HOST" "$@"; fi
        if [ -n "$health_port" ]; then set -- --health-port "$health_port" "$@"; fi
        ;;
    supervisor)
        host=${STREAMGALE_HOST:-$(uname -n)}
        if [ "${STREAMGALE_SHUTDOWN_WORKERS:-true}" = true ]; then set -- --shutdown-workers "$@"; fi
        if [ -n "$health_port" ]; then set -- --health-port "$health_port" "$@"; fi
        set -- --host "$host" "$@"
        ;;
    ui)
        health_port=${STREAMGALE_UI_PORT:-8080}  # the UI answers its probes on its own port
        set -- --host "${STREAMGALE_UI_HOST:-0.0.0.0}" --port "$health_port" "$@"
        ;;
esac
if [ -n "$health_port" ]; then note_health_port "$health_port"; fi
set -- "$role" "$@"
if [ "$role" != nimbus ] && [ -n "${STREAMGALE_NIMBUS:-}" ]; then set -- --nimbus "$STREAMGALE_NIMBUS" "$@"; fi

if [ -n "${STREAMGALE_LOG_DIR:-}" ]; then
    mkdir -p "$STREAMGALE_LOG_DIR" || die "cannot create the log directory $STREAMGALE_LOG_DIR" 1
    exec >>"$STREAMGALE_LOG_DIR/$role.log" 2>&1
fi
exec streamgale "$@"
