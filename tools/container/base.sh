#!/usr/bin/env bash
# Makes the local base image the Dockerfile builds on, from Debian packages only (no registry serves images here):
#
#   debootstrap --variant=minbase bookworm  + python3 python3-venv ca-certificates libgomp1
#   a virtualenv at /opt/venv, first on PATH, so `python` and `pip` behave as in the official python images
#   `docker import` as chatmood-base:bookworm-<recipe>, where <recipe> is a hash of this script's code: the image is made
#   once per machine and recipe (about 2-4 minutes) and reused after that.
#
#   tools/container/base.sh            prints the image name; builds it first when missing
#
# The Debian mirror is the one this machine's apt uses (read from /etc/apt/sources.list*), or $DEBIAN_MIRROR.
# ca-certificates is Debian's bundle only: a machine's own trust store is passed to builds as a build secret
# (tools/container/check.sh does), never put into this image. Needs root, debootstrap and a running dockerd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
docker="${DOCKER:-docker}"
suite=bookworm
recipe="$(grep -v '^[[:space:]]*#' "$here/base.sh" | sha256sum | cut -c1-12)"  # comments do not count
image="chatmood-base:$suite-$recipe"

if "$docker" image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi

mirror() {  # the first URI this machine's apt uses for the main archive of $suite (not -security)
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local f uri suites
    for f in /etc/apt/sources.list.d/*.sources; do  # deb822: a URIs: line and a Suites: line per stanza
        [[ -f "$f" ]] || continue
        uri="" suites=""
        while IFS= read -r line || [[ -n "$line" ]]; do
            case "$line" in
                URIs:*) uri="${line#URIs:}"; uri="${uri# }"; uri="${uri%% *}" ;;
                Suites:*) suites=" ${line#Suites:} " ;;
                "") if [[ -n "$uri" && "$suites" == *" $suite "* ]]; then echo "$uri"; return; fi; uri="" suites="" ;;
            esac
        done <"$f"
        if [[ -n "$uri" && "$suites" == *" $suite "* ]]; then echo "$uri"; return; fi
    done
    # one-line format: deb [options] URI SUITE COMPONENTS...
    local lists=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f "$f" ]] && lists+=("$f"); done
    ((${#lists[@]})) || return 0
    awk -v s="$suite" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break;
                                     if ($(i + 1) == s) { print $i; exit } }' "${lists[@]}"
}

url="$(mirror)"
if [[ -z "$url" ]]; then
    echo "base.sh: no Debian mirror for $suite in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "base.sh: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }

root="$(mktemp -d /var/tmp/chatmood-base.XXXXXX)"
trap 'rm -rf --one-file-system "$root"' EXIT
echo "base.sh: debootstrap $suite from $url (minutes, once) ..." >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,passwd \
    "$suite" "$root" "$url" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
chroot "$root" /usr/bin/python3 -m venv /opt/venv
# Keep the image lean and free of the build's traces, as the official slim images are.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/usr/share/info/* "$root"/tmp/* "$root"/root/.cache
# As the official Debian images do: apt removes the downloaded packages after each install.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

tar -C "$root" --numeric-owner -c . | "$docker" import \
    --change 'ENV VIRTUAL_ENV=/opt/venv' \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python"]' \
    --message "debootstrap --variant=minbase $suite + python3 python3-venv ca-certificates libgomp1; venv /opt/venv" \
    - "$image" >/dev/null
# Bases of older recipes: nothing here uses them any more (images built on them go when rebuilt).
"$docker" image ls --format '{{.Repository}}:{{.Tag}}' chatmood-base | grep -vxF "$image" \
    | xargs -r "$docker" image rm >/dev/null 2>&1 || true
echo "$image"
