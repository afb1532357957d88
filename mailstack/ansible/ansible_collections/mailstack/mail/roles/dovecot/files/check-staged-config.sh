#!/bin/sh
# mailstack: check a staged Dovecot configuration directory as a whole before it goes live.
#
#   check-staged-config.sh STAGE LIVE        e.g. /etc/dovecot.mailstack-stage /etc/dovecot
#
# dovecot.conf names its files (LDAP args files, includes) by absolute path below LIVE, so the
# check runs on a scratch copy of STAGE in which those paths point into the copy. doveconf -n
# must pass without a warning. doveconf does not read the LDAP args files (the auth process does
# when it starts): the role checks those after the swap by asking the reloaded Dovecot for a
# user, and puts the previous configuration back when that fails.
# The Sieve scripts below STAGE/sieve are compiled with sievec in the scratch copy: a compile
# error fails the check. (Only checked here: a binary records its script's path, and one
# compiled elsewhere is stale where Dovecot reads it; the role compiles the live scripts after
# the swap with compile-sieve.sh.)
# Exit 0 when it passes; otherwise exit 1 with the problems on stdout (Ansible's script module
# merges stderr into it over SSH anyway), paths named as in LIVE.
set -u
stage=${1:?usage: check-staged-config.sh STAGE LIVE}
live=${2:?usage: check-staged-config.sh STAGE LIVE}
check="$stage-check"
trap 'rm -rf "$check"' EXIT

rm -rf "$check"
cp -a "$stage" "$check" || exit 1
find "$check" -type f \( -name '*.conf' -o -name '*.ext' \) -exec sed -i "s#$live/#$check/#g" {} +

problems=$(doveconf -c "$check/dovecot.conf" -n 2>&1 >/dev/null)
status=$?
if [ "$status" -ne 0 ] || [ -n "$problems" ]; then
    printf '%s\n' "${problems:-doveconf exited with $status}" | sed -e "s#$check#$live#g" | awk '!seen[$0]++'
    exit 1
fi
if [ -d "$check/sieve" ]; then
    problems=$(find "$check/sieve" -name '*.sieve' | sort | while read -r script; do
        out=$(sievec -c "$check/dovecot.conf" "$script" 2>&1) || printf '%s\n' "${out:-sievec failed: $script}"
    done)
    if [ -n "$problems" ]; then
        printf '%s\n' "$problems" | sed -e "s#$check#$live#g"
        exit 1
    fi
fi
exit 0
