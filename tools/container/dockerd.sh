#!/usr/bin/env bash
# Makes a Docker engine usable for `make container-check`, as CI needs it on a fresh machine:
#
#   tools/container/dockerd.sh start   install Debian's docker.io, docker-compose and debootstrap when missing
#                                      (apt-get, as root), and start dockerd when no engine answers
#   tools/container/dockerd.sh stop    stop the dockerd that `start` started (nothing else)
#
# Image layers and BuildKit's caches stay in dockerd's default data root (/var/lib/docker), so a later run on the
# same machine builds warm. An engine that already answers (a developer's own) is used as it is and never stopped.
set -euo pipefail
state="${CHATMOOD_DOCKERD_STATE:-/var/run/chatmood-dockerd}"
cmd="${1:-start}"

engine_answers() {
    local c
    for c in docker /usr/bin/docker; do
        command -v "$c" >/dev/null 2>&1 && timeout 10 "$c" info >/dev/null 2>&1 && return 0
    done
    return 1
}

if [[ "$cmd" == stop ]]; then
    if [[ -f "$state.pid" ]]; then
        pid="$(cat "$state.pid")"
        rm -f "$state.pid"
        # Only that dockerd: a pid file left by a machine restart may name another process by now.
        if kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]; then
            kill -TERM "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            echo "dockerd.sh: stopped the dockerd it had started (pid $pid)"
        else
            echo "dockerd.sh: the dockerd it had started (pid $pid) is gone already"
        fi
    fi
    exit 0
fi
[[ "$cmd" == start ]] || { echo "usage: $0 start|stop" >&2; exit 2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[[ -x /usr/bin/docker ]] || command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
if ((${#missing[@]})); then
    echo "dockerd.sh: installing ${missing[*]} (Debian packages) ..."
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if engine_answers; then
    echo "dockerd.sh: a Docker engine answers; using it"
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "dockerd.sh: no Docker engine answers and starting one needs root" >&2
    exit 1
fi
mkdir -p "$(dirname "$state")"
log="$state.log"
echo "dockerd.sh: starting dockerd (log: $log) ..."
# setsid: dockerd outlives this script (make runs it as a child) until `stop`.
setsid dockerd --host=unix:///var/run/docker.sock >"$log" 2>&1 </dev/null &
echo $! >"$state.pid"
for _ in $(seq 1 120); do
    if engine_answers; then
        echo "dockerd.sh: dockerd is up"
        exit 0
    fi
    if ! kill -0 "$(cat "$state.pid")" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
tail -n 30 "$log" >&2
echo "dockerd.sh: dockerd did not come up" >&2
exit 1
