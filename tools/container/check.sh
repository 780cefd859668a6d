#!/usr/bin/env bash
# `make container-check`: build the container images and run them as a streamer would, then look at them from the
# host. Needs a Docker engine with BuildKit (`tools/container/dockerd.sh start` provides one on Debian) and the
# FerretDB binary that `make setup` builds (.tools/bin/ferretdb).
#
#   tools/container/check.sh images   build the images only: chatmood:latest (the Dockerfile, both stages, on the
#                                     local base from tools/container/base.sh) and chatmood-devdb:latest
#   tools/container/check.sh          build them, then:
#     1. on a private Docker network: the dev database (chatmood-devdb, FerretDB) and the bot container
#        (`chatmood demo` on the example bots.toml: the bundled sample chat through storage, classifier and overlay),
#        with a tokens folder bind-mounted as the README says and a named volume for /data (the spool);
#     2. inside the bot container: `chatmood check-config` and `chatmood replay` of the bundled sample chat;
#     3. from the host: /healthz is healthy, /overlay/<channel> serves, the dashboard refuses a request without the
#        token (and serves one with it), the bot's process runs as uid 10001, the spool and tokens volumes are
#        writable by it;
#     4. compose: `config` of docker-compose.yml as shipped (mongo:7, never pulled) and with the override
#        docker-compose.devdb.yml, then that stack once: the database service up and healthy, and
#        `compose run chatmood chatmood replay ...` storing the sample chat through it.
#   Everything it starts (containers, network, volumes, compose project) is removed on exit, failed or not.
#   Images and build caches stay, so the next run is warm.
#
# Environment: DOCKER (a docker client that can build with BuildKit; default: `docker` when it has buildx, else
# Debian's /usr/bin/docker), CHATMOOD_BUILD_CA (CA bundle handed to the build as the secret `ca_bundle`; default:
# the machine's /etc/ssl/certs/ca-certificates.crt), DEBIAN_MIRROR (see base.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode="${1:-check}"
start_s=$SECONDS
step() { printf '== [%4ds] %s\n' "$((SECONDS - start_s))" "$*"; }
fail() { echo "container-check: FAILED: $*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------------------------------
if [[ -z "${DOCKER:-}" ]]; then
    if docker buildx version >/dev/null 2>&1; then DOCKER=docker
    elif [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker  # Debian's docker.io: BuildKit without buildx
    else DOCKER=docker
    fi
fi
export DOCKER
docker="$DOCKER"
"$docker" info >/dev/null 2>&1 || fail "no Docker engine answers (tools/container/dockerd.sh start starts one)"
if "$docker" compose version >/dev/null 2>&1; then compose_cmd=("$docker" compose)
elif command -v docker-compose >/dev/null 2>&1; then compose_cmd=(docker-compose)
else fail "neither \`docker compose\` nor docker-compose is installed (apt-get install docker-compose)"
fi
ferretdb="$root/.tools/bin/ferretdb"
[[ -x "$ferretdb" ]] || fail "$ferretdb is missing: run \`make setup\` first"

# --- images -------------------------------------------------------------------------------------------------------
logdir="$root/.tools/container-check"
mkdir -p "$logdir"
build() {  # build LOG TAG ARGS...: BuildKit, output to LOG (its tail on failure); drops the image TAG replaced
    local log="$logdir/$1" tag="$2"; shift 2
    local before
    before="$("$docker" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
    if ! DOCKER_BUILDKIT=1 "$docker" build --progress=plain -t "$tag" "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        fail "docker build -t $tag $* (full log: $log)"
    fi
    # The build cache keeps the layers; the superseded image would only hold disk.
    if [[ -n "$before" && "$before" != "$("$docker" image inspect -f '{{.Id}}' "$tag")" ]]; then
        "$docker" image rm "$before" >/dev/null 2>&1 || true
    fi
}
step "base image (debootstrap, once per machine and recipe)"
base="$(bash "$here/base.sh")"
echo "   $base"
ca="${CHATMOOD_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[[ -s "$ca" ]] && secret=(--secret "id=ca_bundle,src=$ca")
step "chatmood:latest (Dockerfile: builder and runtime stages on $base)"
build chatmood.log chatmood:latest --build-arg "PYTHON_IMAGE=$base" "${secret[@]}" "$root"
ctx="$(mktemp -d)"
cp "$ferretdb" "$ctx/ferretdb"
step "chatmood-devdb:latest (tools/container/devdb.Dockerfile, FerretDB from .tools/bin)"
build devdb.log chatmood-devdb:latest --build-arg "BASE_IMAGE=$base" -f "$here/devdb.Dockerfile" "$ctx"
rm -rf "$ctx"
if [[ "$mode" == images ]]; then
    step "images built"
    exit 0
fi
[[ "$mode" == check ]] || fail "usage: $0 [images]"

# --- what this run starts, and its removal ------------------------------------------------------------------------
name="chatmood-check-$$"
work="$(mktemp -d)"
token="check-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
compose_project="$name-compose"
compose() {
    CHATMOOD_OVERLAY_TOKEN="$token" CHATMOOD_PORT="$compose_port" COMPOSE_PROJECT_NAME="$compose_project" \
        "${compose_cmd[@]}" --project-directory "$work/compose" \
        -f "$root/docker-compose.yml" -f "$root/docker-compose.devdb.yml" "$@"
}
compose_port=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0)); then
        for c in "$name-bot" "$name-db"; do
            if "$docker" container inspect "$c" >/dev/null 2>&1; then
                echo "--- docker logs $c (last 60 lines)" >&2
                "$docker" logs --tail 60 "$c" 2>&1 | sed 's/^/   /' >&2 || true
            fi
        done
    fi
    step "removing what this run started"
    "$docker" rm -f "$name-bot" "$name-db" >/dev/null 2>&1 || true
    if [[ -d "$work/compose" ]]; then
        compose down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    "$docker" network rm "$name" >/dev/null 2>&1 || true
    "$docker" volume rm "$name-data" "$name-db" >/dev/null 2>&1 || true
    rm -rf "$work" 2>/dev/null || "$docker" run --rm -v "$work:/w" "$base" rm -rf /w/tokens /w/compose || true
    rm -rf "$work" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The example config, as the README has a streamer set it up: the overlay token from the environment, a tokens
# folder owned by the container's user (10001).
sed 's|^# access_token = "env:CHATMOOD_OVERLAY_TOKEN"|access_token = "env:CHATMOOD_OVERLAY_TOKEN"|' \
    "$root/bots.toml.example" >"$work/bots.toml"
grep -q '^access_token = "env:CHATMOOD_OVERLAY_TOKEN"' "$work/bots.toml" \
    || fail "bots.toml.example no longer has the commented access_token line this check enables"
owned_by_10001() {  # mkdir -p DIR owned by 10001:10001 (without root: through a container)
    mkdir -p "$1"
    chown 10001:10001 "$1" 2>/dev/null || "$docker" run --rm -v "$1:/d" "$base" chown 10001:10001 /d >/dev/null
}
owned_by_10001 "$work/tokens"

# --- 1. the database and the bot on a private network ---------------------------------------------------------------
step "network $name; the dev database; the bot container (chatmood demo)"
"$docker" network create "$name" >/dev/null
"$docker" run -d --name "$name-db" --network "$name" --network-alias mongo -v "$name-db:/data/db" \
    chatmood-devdb:latest >/dev/null
"$docker" run -d --name "$name-bot" --network "$name" \
    -e CHATMOOD_MONGODB_URL=mongodb://mongo:27017 -e CHATMOOD_OVERLAY_TOKEN="$token" \
    -v "$work/bots.toml:/config/bots.toml:ro" -v "$work/tokens:/config/tokens" -v "$name-data:/data" \
    -p 127.0.0.1::8080 \
    chatmood:latest chatmood demo --config /config/bots.toml --host 0.0.0.0 --port 8080 --speed 5 >/dev/null
port="$("$docker" port "$name-bot" 8080/tcp | sed -n '1s/.*://p')"
[[ "$port" =~ ^[0-9]+$ ]] || fail "the bot container published no port for 8080"
base_url="http://127.0.0.1:$port"

stored_counts() {  # the replay summary's "stored: N new, M already stored" -> "N M"
    local line
    line="$(grep -Eo '^stored: [0-9,]+ new, [0-9,]+ already stored' <<<"$1")" || fail "the replay printed no storage summary"
    tr -d , <<<"$line" | awk '{print $2, $4}'
}

# --- 2. inside the bot container ----------------------------------------------------------------------------------
step "in the bot container: chatmood check-config /config/bots.toml"
"$docker" exec "$name-bot" chatmood check-config /config/bots.toml | sed 's/^/   /'
step "in the bot container: chatmood replay of the bundled sample chat"
sample=/app/bot/data/sample_chat.jsonl
# Its lines, and those that are chat commands (prefix "!"): commands are answered, not classified.
read -r lines commands <<<"$("$docker" exec "$name-bot" python -c "import json, sys
texts = [json.loads(l)['text'] for l in open(sys.argv[1]) if l.strip()]
print(len(texts), sum(t.startswith('!') for t in texts))" "$sample")"
out="$("$docker" exec "$name-bot" chatmood replay "$sample" --channel replaycheck --max-rate 2000 \
    --config /config/bots.toml 2>&1)" || { echo "$out" >&2; fail "chatmood replay exited non-zero"; }
echo "$out" | grep -v '^{' | sed 's/^/   /'
# The demo stores the same sample (same message ids) at the same time, so a line is either new or already stored;
# every line but the commands is classified for the replay's channel.
grep -Eq "^replayed $lines messages " <<<"$out" || fail "the replay did not replay all $lines lines"
read -r new old <<<"$(stored_counts "$out")"
((new + old == lines)) || fail "the replay stored $new new + $old already stored, not the $lines lines"
grep -Eq "^mood #replaycheck: .*\($((lines - commands)) classified" <<<"$out" \
    || fail "the replay did not classify the $((lines - commands)) lines that are not commands"

# --- 3. from the host ---------------------------------------------------------------------------------------------
http() {  # http PATH -> "STATUS BODYFILE"
    local body="$work/body.$RANDOM"
    local status
    status="$(curl -s -o "$body" -w '%{http_code}' --max-time 10 "$base_url$1" || true)"
    echo "$status $body"
}
step "host: GET $base_url/healthz until healthy (the demo trains its cold-start head first)"
healthy=""
deadline=$((SECONDS + 600))
while ((SECONDS < deadline)); do
    read -r status body <<<"$(http /healthz)"
    if [[ "$status" == 200 ]] && grep -q '"ok": *true' "$body"; then healthy=1; break; fi
    [[ "$("$docker" container inspect -f '{{.State.Running}}' "$name-bot")" == true ]] || fail "the bot container exited"
    sleep 1
done
[[ -n "$healthy" ]] || fail "/healthz never answered 200 with ok=true (last: $status $(head -c 300 "$body"))"
echo "   $(head -c 300 "$body")"
step "host: GET /overlay/demo serves the overlay page"
read -r status body <<<"$(http /overlay/demo)"
[[ "$status" == 200 ]] && grep -qi '<html' "$body" || fail "/overlay/demo answered $status"
step "host: the dashboard refuses a request without the token and serves one with it"
read -r status body <<<"$(http /dashboard/demo)"
[[ "$status" == 401 || "$status" == 403 ]] || fail "/dashboard/demo without a token answered $status"
echo "   without: $status"
# With the token: swapped for a cookie (a redirect), then the page.
jar="$work/cookies"
status="$(curl -s -o "$work/dashboard.html" -w '%{http_code} %{num_redirects}' --max-time 10 -L -c "$jar" -b "$jar" \
    "$base_url/dashboard/demo?token=$token" || true)"
[[ "$status" == "200 1" ]] && grep -qi '<html' "$work/dashboard.html" \
    || fail "/dashboard/demo with the token answered $status (expected a redirect, then 200)"
echo "   with the token: a redirect setting the cookie, then 200"
step "host: the bot's process runs as uid 10001"
pid="$("$docker" inspect -f '{{.State.Pid}}' "$name-bot")"
if [[ -r "/proc/$pid/status" ]]; then
    uids="$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
else  # an engine in a VM: ask it
    uids="$("$docker" top "$name-bot" -o uid | awk 'NR == 2 {print $1, $1, $1, $1}')"
    cmdline="$("$docker" top "$name-bot" -o args | awk 'NR == 2')"
fi
echo "   pid $pid: uid $uids: $cmdline"
[[ "$uids" == "10001 10001 10001 10001" ]] || fail "the bot runs as uid $uids, not 10001"
[[ "$cmdline" == *chatmood* ]] || fail "pid $pid is not chatmood: $cmdline"
step "host: the spool and tokens volumes are writable by the bot"
probe=".write-check-$$"
"$docker" exec "$name-bot" sh -c "set -e; for d in /config/spool /config/tokens; do echo ok >\"\$d/$probe\"; done"
owner="$(stat -c %u "$work/tokens/$probe")" || fail "the file written to /config/tokens is not in the tokens folder"
[[ "$owner" == 10001 ]] || fail "the bot's file in tokens/ is owned by uid $owner on the host"
"$docker" exec "$name-bot" sh -c "test \"\$(readlink -f /config/spool)\" = /data/spool && test -f /data/spool/$probe \
    && rm /config/spool/$probe /config/tokens/$probe"
echo "   /config/spool (-> /data/spool, volume $name-data) and /config/tokens (bind mount, uid 10001 on the host)"

# --- 4. compose ---------------------------------------------------------------------------------------------------
step "compose: config of docker-compose.yml as shipped, and with docker-compose.devdb.yml"
mkdir -p "$work/compose"
cp "$work/bots.toml" "$work/compose/bots.toml"
owned_by_10001 "$work/compose/tokens"
compose_port="$port"  # never published: `compose run` does not publish, and `up` starts only the database
CHATMOOD_PORT=8080 "${compose_cmd[@]}" -f "$root/docker-compose.yml" config -q
compose config -q
merged="$(compose config)"
grep -q 'image: chatmood-devdb:latest' <<<"$merged" || fail "the override does not swap in chatmood-devdb"
step "compose: the devdb stack once: up the database, wait for healthy"
compose up -d mongo >/dev/null 2>&1 || { compose up -d mongo; fail "compose up -d mongo"; }
db="$(compose ps -q mongo)"
for _ in $(seq 1 60); do
    [[ "$("$docker" inspect -f '{{.State.Health.Status}}' "$db")" == healthy ]] && break
    sleep 1
done
[[ "$("$docker" inspect -f '{{.State.Health.Status}}' "$db")" == healthy ]] || fail "the compose database never got healthy"
step "compose: run chatmood replay through the compose service"
out="$(compose run --rm -T chatmood chatmood replay "$sample" --channel composecheck --max-rate 2000 --config /config/bots.toml 2>&1)" \
    || { echo "$out" >&2; fail "compose run chatmood replay exited non-zero"; }
echo "$out" | grep -v '^{' | sed 's/^/   /'
read -r new old <<<"$(stored_counts "$out")"
((new == lines && old == 0)) || fail "the compose replay stored $new new + $old already stored, not $lines new lines"

step "container-check passed"
