#!/usr/bin/env bash
# Build a local, file-based apt repository for the lab's bare hosts: every package that the
# given packages need on top of a bare host (localhost/mailstack-bare:bookworm, see
# build-image.sh bare), downloaded from Debian's mirror on this machine, with a Packages index.
#
#   build-debs.sh OUT PACKAGE...
#
# OUT gets the .deb files and `Packages`; a bare host mounts it read-only at /debs, where its
# only apt source `deb [trusted=yes] file:/debs ./` finds it. Nothing inside the lab reaches a
# network. How: the bare image's root is exported to a scratch folder, and in a chroot of it
# (this machine's network) `apt-get install --download-only --no-install-recommends` fetches the
# closure the bare root lacks, exactly what a bare host's apt will ask for; dpkg-scanpackages
# indexes it. OUT is replaced atomically; an unchanged request is the caller's business
# (mailstack.lab.debs keys OUT by a hash of the package list).
# Needs: root, podman, unshare, dpkg-scanpackages (dpkg-dev; mailstack lab setup).
set -euo pipefail
SCRIPT_NAME=build-debs
# shellcheck source=mailstack/lab/scripts/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
BARE_IMAGE=localhost/mailstack-bare:bookworm

(($# >= 2)) || die "usage: build-debs.sh OUT PACKAGE..."
out=$(readlink -m "$1")
shift
[[ $(id -u) -eq 0 ]] || die "run as root"
for tool in podman unshare dpkg-scanpackages; do
    command -v "$tool" >/dev/null || die "$tool not found (run mailstack lab setup)"
done
podman image exists "$BARE_IMAGE" || die "$BARE_IMAGE is missing (run mailstack lab setup)"

started=$SECONDS
scratch=$(mktemp -d /var/tmp/mailstack-debs.XXXXXX)
trap 'remove_scratch "$scratch"' EXIT
root=$scratch/root
mkdir -p "$root"
cid=$(podman create --pull never "$BARE_IMAGE" /bin/true)
podman export "$cid" | tar -x -C "$root" || { podman rm -f "$cid" >/dev/null; die "podman export failed"; }
podman rm -f "$cid" >/dev/null

debian_sources >"$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/debs-out/partial"
cat >"$root/tmp/mailstack-download.sh" <<SCRIPT
#!/bin/bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
apt-get ${APT_OPTS[*]@Q} -qq update
apt-get ${APT_OPTS[*]@Q} -y -qq --no-install-recommends --download-only \
    -o Dir::Cache::archives=/debs-out install ${*@Q}
SCRIPT
in_chroot "$root" /tmp/mailstack-download.sh >"$scratch/download.log" 2>&1 || {
    tail -n 20 "$scratch/download.log" >&2
    die "downloading the packages failed"
}
rm -rf "$root/debs-out/partial" "$root/debs-out/lock"
count=$(find "$root/debs-out" -maxdepth 1 -name '*.deb' | wc -l)
(cd "$root/debs-out" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)

mkdir -p "$(dirname "$out")"
rm -rf "$out.new" "$out.old"
mv "$root/debs-out" "$out.new"
chmod -R u=rwX,go=rX "$out.new"
[[ -e $out ]] && mv "$out" "$out.old"
mv "$out.new" "$out"
rm -rf "$out.old"
log "$out: $count packages, $(du -sm "$out" | cut -f1) MB, in $((SECONDS - started)) s"
