# Shared by build-image.sh and build-debs.sh (sourced; set SCRIPT_NAME first).
# Env: MAILSTACK_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#      MAILSTACK_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
# shellcheck shell=bash disable=SC2016  # the single-quoted $names are for the inner shells

SUITE=bookworm
MIRROR=${MAILSTACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${MAILSTACK_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# The name the package scripts see while installing (postfix, ssl-cert's snakeoil certificate).
BUILD_HOSTNAME=mail.example.test

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Debian's sources for a chroot that downloads from the mirror.
debian_sources() {
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE-updates"
    printf 'deb %s %s main\n' "$SECURITY_MIRROR" "$SUITE-security"
}

# Run a command in a private mount + UTS namespace: mounts vanish with it, and package scripts
# see BUILD_HOSTNAME instead of this machine's name.
in_ns() {
    unshare --mount --uts --propagation private --fork -- \
        /bin/bash -c 'hostname "$0" && exec "$@"' "$BUILD_HOSTNAME" "$@"
}

# Run SCRIPT (a path inside ROOT) in the chroot ROOT with /proc, /sys and /dev/pts mounted.
in_chroot() {  # in_chroot ROOT SCRIPT
    in_ns /bin/bash -euo pipefail -c '
        mount -t proc proc "$0/proc"
        mount -t sysfs sysfs "$0/sys"
        mount --bind /dev/pts "$0/dev/pts"
        exec chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            /bin/bash "$1"
    ' "$1" "$2"
}

# Remove a scratch folder unless a mount is still under it (all mounts live in private
# namespaces, so none should be).
remove_scratch() {  # remove_scratch DIR
    if findmnt -rno TARGET | grep -q "^$1"; then
        printf '%s: WARNING: mounts left under %s; not deleting it\n' "$SCRIPT_NAME" "$1" >&2
        return
    fi
    rm -rf --one-file-system "$1"
}

# Same apt acquire settings as this host (snapshot mirrors with an old Valid-Until, proxies).
APT_OPTS=()
while IFS= read -r line; do
    APT_OPTS+=(-o "$line")
done < <(apt-config dump 2>/dev/null \
    | sed -nE 's/^(Acquire::(Check-Valid-Until|Check-Date|https?::Proxy)) "([^"]*)";$/\1=\3/p')
