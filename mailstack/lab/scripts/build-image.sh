#!/usr/bin/env bash
# Build the lab's images without any image registry: debootstrap a Debian 12 tree, prepare it
# in a chroot (services kept from starting), and `podman import` it with systemd as PID 1.
#
#   build-image.sh          localhost/mailstack-lab:bookworm: the mail daemons and the lab's
#                           tools preinstalled (the stand-ins, the client, the checkers, and
#                           site hosts "prepared" for mailstack: /etc/mailstack-host says so)
#   build-image.sh bare     localhost/mailstack-bare:bookworm: what a real server from a hosting
#                           provider is: minbase + systemd + sshd + python3 + sudo, nothing of
#                           the mail stack, no ca-certificates, and apt pointed only at
#                           `deb [trusted=yes] file:/debs ./` (the lab bind-mounts a repository
#                           there that build-debs.sh makes from Debian's packages)
#
# Each image is also tagged REPO:recipe-<12 hex of sha256(this script + flavour + package
# list)>. When that tag exists, the build is skipped: the final tag is pointed at it and the
# script exits within a second or two.
#
# Env: MAILSTACK_DEBIAN_MIRROR, MAILSTACK_SECURITY_MIRROR (lib.sh),
#      MAILSTACK_REBUILD=1 to build even if the recipe tag exists.
# Needs: root, podman (mailstack lab setup), debootstrap, unshare (util-linux).
# shellcheck disable=SC2016  # single-quoted $names below are meant for postconf and inner shells
set -euo pipefail

FLAVOUR=${1:-lab}
case $FLAVOUR in
    lab) REPO=localhost/mailstack-lab ;;
    bare) REPO=localhost/mailstack-bare ;;
    *) printf 'build-image: ERROR: unknown flavour %s (lab or bare)\n' "$FLAVOUR" >&2; exit 2 ;;
esac
TAG=bookworm

BASE_PACKAGES=(python3 systemd systemd-sysv dbus iproute2 procps)
BARE_EXTRA=(openssh-server sudo)
LAB_PACKAGES=(
    slapd ldap-utils
    postfix postfix-ldap libsasl2-modules
    dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-ldap dovecot-sieve dovecot-managesieved
    fetchmail getmail6 swaks libnet-ssleay-perl
    openssh-server python3-ldap3 python3-apt
    ca-certificates openssl tar
    fail2ban python3-systemd nftables
    nginx-light certbot pebble testssl.sh
)
# libnet-ssleay-perl: only a Recommends of swaks, but swaks needs it for STARTTLS/TLS.
# getmail6: collects remote mailboxes (plan/fetch.py says why not fetchmail).
# fail2ban with the journal reader and nftables it needs here (plan/fail2ban.py): both are
# only Recommends.
# nginx-light serves the client settings (plan/web.py); certbot takes certificates from an ACME
# server, pebble stands in for one in the lab; testssl.sh scans every TLS port (make tlsscan).
# The lab image holds every package a site host's manifest lists (plan/hosts.py), python3-apt
# for Ansible's apt module among them: inside the lab no apt source answers.
if [[ $FLAVOUR == bare ]]; then
    BASE_PACKAGES+=("${BARE_EXTRA[@]}")
    PACKAGES=()
else
    PACKAGES=("${LAB_PACKAGES[@]}")
fi

# Units that have no business in a mail-daemon container.
MASK_UNITS=(
    getty.target console-getty.service
    systemd-networkd-wait-online.service
    apt-daily.timer apt-daily-upgrade.timer
)

SCRIPT_NAME=build-image
# shellcheck source=mailstack/lab/scripts/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

[[ $(id -u) -eq 0 ]] || die "run as root"
for tool in podman debootstrap unshare sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (run mailstack lab setup)"
done

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
RECIPE_HASH=$({
    cat "$SCRIPT_PATH" "$(dirname "$SCRIPT_PATH")/lib.sh"
    printf '%s\n' "$FLAVOUR" "${BASE_PACKAGES[@]}" "${PACKAGES[@]}"
} | sha256sum | cut -c1-12)
RECIPE_REF=$REPO:recipe-$RECIPE_HASH
FINAL_REF=$REPO:$TAG

image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

point_final_at_recipe() {
    local want have
    want=$(image_id "$RECIPE_REF")
    have=$(image_id "$FINAL_REF" || true)
    if [[ $want != "$have" ]]; then
        podman tag "$RECIPE_REF" "$FINAL_REF"
        log "tagged $FINAL_REF -> $RECIPE_REF"
    fi
}

# Serialize concurrent builds on this machine (CI and a developer, two test sessions).
LOCK=/run/lock/mailstack-build-image-$FLAVOUR.lock
[[ -d /run/lock ]] || LOCK=/tmp/mailstack-build-image-$FLAVOUR.lock
exec 9>"$LOCK"
flock 9

if [[ ${MAILSTACK_REBUILD:-0} != 1 ]] && podman image exists "$RECIPE_REF"; then
    point_final_at_recipe
    log "up to date: $FINAL_REF = $RECIPE_REF ($(image_id "$RECIPE_REF" | cut -c1-12))"
    exit 0
fi

log "building $RECIPE_REF"
START=$SECONDS
BUILD_DIR=$(mktemp -d /var/tmp/mailstack-build.XXXXXX)
ROOT=$BUILD_DIR/root

trap 'remove_scratch "$BUILD_DIR"' EXIT

log "debootstrap --variant=minbase $SUITE"
t=$SECONDS
in_ns debootstrap --variant=minbase --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
    "$SUITE" "$ROOT" "$MIRROR" >"$BUILD_DIR/debootstrap.log" 2>&1 || {
    tail -n 20 "$BUILD_DIR/debootstrap.log" >&2
    die "debootstrap failed"
}
log "debootstrap done in $((SECONDS - t)) s"

debian_sources >"$ROOT/etc/apt/sources.list"

# Keep docs, man pages and translations out of the image (here and for later installs).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-mailstack-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
# Build-time only: no fsync per file, no service starts.
echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/02-mailstack-unsafe-io"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

if ((${#PACKAGES[@]})); then
    log "installing ${#PACKAGES[@]} packages in the chroot"
    t=$SECONDS
    # The install step runs as a script inside the chroot (removed with /tmp/* below).
    cat >"$ROOT/tmp/mailstack-install.sh" <<EOF
#!/bin/bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
debconf-set-selections <<'SEL'
slapd slapd/no_configuration boolean true
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string $BUILD_HOSTNAME
SEL
apt-get ${APT_OPTS[*]@Q} -qq update
apt-get ${APT_OPTS[*]@Q} -y -qq --no-install-recommends install ${PACKAGES[*]@Q} >/dev/null
EOF
    in_chroot "$ROOT" /tmp/mailstack-install.sh >"$BUILD_DIR/install.log" 2>&1 || {
        tail -n 30 "$BUILD_DIR/install.log" >&2
        die "package install failed"
    }
    grep -E '^(W|E): ' "$BUILD_DIR/install.log" >&2 || true
    log "packages installed in $((SECONDS - t)) s"
fi

log "configuring for a container ($FLAVOUR)"
if [[ $FLAVOUR == lab ]]; then
    # Postfix: take the host name at run time (the container's --hostname), not the build name.
    chroot "$ROOT" postconf -X myhostname
    chroot "$ROOT" postconf -e 'myorigin = $myhostname' \
        'mydestination = $myhostname, localhost.$mydomain, localhost'
    rm -f "$ROOT/etc/mailname"
    # A host of this image is prepared for mailstack by the image's recipe (its stock Postfix and
    # Dovecot are the packages' defaults, not a hand-made stack): apply's survey of a host it has
    # not applied before accepts it as mailstack's (roles/mailstack_base/library/mailstack_survey.py).
    mkdir -p "$ROOT/etc/mailstack"
    printf '{"prepared_by": "mailstack lab image %s"}\n' "$RECIPE_HASH" >"$ROOT/etc/mailstack/host.json"
else
    # A real server's apt knows only its mirror; here it is the lab's local repository, which
    # every bare host gets bind-mounted read-only at /debs (no network inside the lab).
    echo 'deb [trusted=yes] file:/debs ./' >"$ROOT/etc/apt/sources.list"
fi
# sshd: one host key set per container, made at its first start, not shared through the image.
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
cat >"$ROOT/etc/systemd/system/ssh.service.d/mailstack-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
if [[ $FLAVOUR == lab ]]; then
    # slapd: with slapd/no_configuration there is no config until the lab writes one. Skip the unit
    # (condition not met, not a failure) instead of failing it, so a fresh container is "running",
    # not "degraded". Once /etc/ldap/slapd.d or slapd.conf exists it starts as usual.
    mkdir -p "$ROOT/etc/systemd/system/slapd.service.d"
    printf '%s\n' '[Unit]' 'ConditionPathExists=|/etc/ldap/slapd.d' \
        'ConditionPathExists=|/etc/ldap/slapd.conf' \
        >"$ROOT/etc/systemd/system/slapd.service.d/mailstack-needs-config.conf"
fi
for unit in "${MASK_UNITS[@]}"; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
units=(ssh.service)
[[ $FLAVOUR == lab ]] && units+=(slapd.service postfix.service dovecot.service)
for unit in "${units[@]}"; do
    chroot "$ROOT" systemctl --quiet is-enabled "$unit" 2>/dev/null \
        || chroot "$ROOT" systemctl --quiet enable "$unit" 2>/dev/null \
        || log "note: could not enable $unit"
done
if [[ $FLAVOUR == lab ]]; then
    # fail2ban's stock configuration cannot start here (sshd's jail wants /var/log/auth.log):
    # a site host's apply places its jails and starts it; other lab containers never run it.
    chroot "$ROOT" systemctl --quiet disable fail2ban.service 2>/dev/null \
        || log "note: could not disable fail2ban.service"
fi

# Strip what is build-specific or only needed to build.
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/dpkg/dpkg.cfg.d/02-mailstack-unsafe-io"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/cache/apt/archives/partial/* "$ROOT"/var/cache/debconf/*-old \
    "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/log/apt/* "$ROOT"/var/log/*.log \
    "$ROOT"/var/log/bootstrap.log "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT"/root/.cache
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$ROOT" -xdev -name '__pycache__' -type d -prune -exec rm -rf {} +
# podman provides these per container; the copies came from this build host.
rm -f "$ROOT/etc/hostname" "$ROOT/etc/resolv.conf"
# Empty machine-id: systemd makes a transient one per container (not "first boot").
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

log "importing into podman"
t=$SECONDS
image=$(tar --numeric-owner --xattrs -C "$ROOT" -c . \
    | podman import --quiet --change 'CMD ["/sbin/init"]' \
        --message "mailstack-lab recipe $RECIPE_HASH" - "$RECIPE_REF") \
    || die "podman import failed"
image=${image#sha256:}
log "imported ${image:0:12} in $((SECONDS - t)) s"
point_final_at_recipe

# Drop the tags of older recipes (their layers stay while any snapshot still uses them).
{ podman images --format '{{.Repository}}:{{.Tag}}' "$REPO" \
    | grep -E "^$REPO:recipe-[0-9a-f]{12}\$" | grep -vxF "$RECIPE_REF" || true; } | while read -r old; do
        if podman rmi "$old" >/dev/null 2>&1; then log "removed old tag $old"; fi
    done

size=$(podman image inspect --format '{{.Size}}' "$RECIPE_REF")
log "done in $((SECONDS - START)) s: $FINAL_REF = $RECIPE_REF, $((size / 1000000)) MB"
