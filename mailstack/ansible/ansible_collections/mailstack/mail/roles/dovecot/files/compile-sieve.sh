#!/bin/sh
# mailstack: compile the site's Sieve scripts where Dovecot reads them.
#
#   compile-sieve.sh DIR        e.g. /etc/dovecot/sieve
#
# LMTP runs as vmail and cannot write a compiled binary (.svbin) beside a script in root's
# /etc/dovecot; without one Pigeonhole compiles at every delivery and logs "global Sieve scripts
# ... need to be pre-compiled using the sievec tool". A binary records its script's path (one
# compiled in the staging directory is stale here), so this runs on the live directory after
# the swap. A binary whose script is gone is removed. Prints what it compiled; exit 1 with
# sievec's answer when a script does not compile (the staged check compiled them already).
set -u
dir=${1:?usage: compile-sieve.sh DIR}
[ -d "$dir" ] || exit 0
find "$dir" -name '*.svbin' | while read -r binary; do
    [ -e "${binary%.svbin}.sieve" ] || rm -f "$binary"
done
status=0
for script in $(find "$dir" -name '*.sieve' | sort); do
    if out=$(sievec "$script" 2>&1); then
        echo "compiled $script"
    else
        printf '%s\n' "${out:-sievec failed: $script}"
        status=1
    fi
done
exit $status
