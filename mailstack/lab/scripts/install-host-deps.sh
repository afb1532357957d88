#!/usr/bin/env bash
# Install what mailstack needs on the host to run its checkers and lab in containers:
# podman with runc (crun fails here: "cgroups in hybrid mode not supported"), netavark +
# aardvark-dns (+ iptables, which netavark uses for bridge networks), debootstrap (the
# base images are built without a registry), dpkg-dev (dpkg-scanpackages indexes the bare
# hosts' local apt repository) and shellcheck (make lint). Writes /etc/containers/containers.conf
# with the settings measured to work here (below). Run as root on Debian 12. Idempotent: a rerun with
# everything in place does no apt call and returns in well under a second.
set -euo pipefail

PACKAGES=(podman runc conmon netavark aardvark-dns iptables debootstrap debian-archive-keyring dpkg-dev
          shellcheck)
CONF=/etc/containers/containers.conf
STAMP=/var/lib/apt/periodic/mailstack-update-stamp
MAX_LIST_AGE_MIN=60

CONF_CONTENT='# Written by mailstack (lab/scripts/install-host-deps.sh).
# runc, not crun: crun fails with cgroups in hybrid mode. Without both ulimits runc fails
# ("error setting rlimit type 7: operation not permitted"); the hard limits here are
# nofile 20000 / nproc 32768.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]

[engine]
runtime = "runc"
'

log() { printf 'install-host-deps: %s\n' "$*"; }
die() { printf 'install-host-deps: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root"
[[ -r /etc/debian_version ]] || die "not a Debian system"

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ $status == ii* ]] || printf '%s\n' "$p"
    done
}

lists_fresh() {
    # apt keeps the server's timestamps on the list files, so keep our own stamp.
    [[ -e $STAMP ]] && [[ -n $(find "$STAMP" -mmin -"$MAX_LIST_AGE_MIN" 2>/dev/null) ]] \
        && compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

apt_update() {
    log "apt-get update"
    apt-get update -qq
    mkdir -p "$(dirname "$STAMP")"
    touch "$STAMP"
}

apt_install() {
    # runc named explicitly so podman's "crun | runc" is satisfied by runc, not crun.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    updated=0
    if ! lists_fresh; then
        apt_update
        updated=1
    fi
    if ! apt_install "${missing[@]}"; then
        ((updated)) && die "apt-get install failed"
        log "install failed with cached lists; updating and retrying"
        apt_update
        apt_install "${missing[@]}" || die "apt-get install failed"
    fi
    mapfile -t still < <(missing_packages)
    ((${#still[@]} == 0)) || die "still missing after install: ${still[*]}"
else
    log "packages already installed"
fi

if dpkg-query -W -f='${db:Status-Abbrev}' crun 2>/dev/null | grep -q '^ii'; then
    log "note: crun is installed; containers.conf selects runc anyway"
fi

mkdir -p "$(dirname "$CONF")"
if [[ -f $CONF && $(<"$CONF") == "$(printf '%s' "$CONF_CONTENT")" ]]; then
    log "$CONF already in place"
else
    if [[ -f $CONF && ! -e $CONF.mailstack-orig ]]; then
        cp -p "$CONF" "$CONF.mailstack-orig"
        log "kept the previous $CONF as $CONF.mailstack-orig"
    fi
    tmp=$(mktemp "$CONF.XXXXXX")
    printf '%s' "$CONF_CONTENT" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONF"
    log "wrote $CONF"
fi

runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null) || die "podman info failed: $(podman info 2>&1 >/dev/null | tail -n 3)"
[[ $runtime == runc ]] || die "podman uses OCI runtime '$runtime', expected runc (check $CONF)"
log "ready: $(podman --version), runtime $runtime"
