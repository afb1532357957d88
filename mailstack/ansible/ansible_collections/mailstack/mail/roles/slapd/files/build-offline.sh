#!/bin/sh
# mailstack: build slapd's configuration and database offline, from the rendered LDIF. The one
# build: the slapd role runs it on a directory's first install, and `mailstack check
# --with-daemons` runs the same file, step by step, in its throwaway container.
#
#   build-offline.sh STEP CONFIG_LDIF DIT_LDIF SLAPD_D DB_DIR RUN_DIR USER
#
# STEP: config (slapadd -n0 of cn=config into an empty SLAPD_D; DB_DIR made, empty), tree (slapadd -n1 of the
# directory tree into an empty DB_DIR), empty (an empty database: a replica's tree comes from
# its provider by syncrepl), test (slaptest as USER), all (config, tree, test) or replica
# (config, empty, test).
# slapd must be stopped. Each step checks its exit status; a failure names the step and ends
# the script with its exit status. RUN_DIR is made 0755: Dovecot's auth and Postfix's proxymap
# reach the ldapi socket in it (slaptest opens the pid file there).
set -u
step=${1:?usage: build-offline.sh STEP CONFIG_LDIF DIT_LDIF SLAPD_D DB_DIR RUN_DIR USER}
config_ldif=$2 dit_ldif=$3 slapd_d=$4 db_dir=$5 run_dir=$6 user=$7

fail() {  # fail STEP STATUS
    echo "build-offline.sh: step $1 failed (exit $2)" >&2
    exit "$2"
}

empty_dir() {  # empty_dir DIR MODE: create DIR for USER; refuse one that holds anything
    if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then
        echo "build-offline.sh: $1 is not empty: move it aside first" >&2
        return 1
    fi
    install -d -o "$user" -g "$user" -m "$2" "$1"
}

config() {  # slapadd -n0 checks that the database's directory exists
    empty_dir "$slapd_d" 0750 && empty_dir "$db_dir" 0750 \
        && install -d -o "$user" -g "$user" -m 0755 "$run_dir" \
        && slapadd -n0 -F "$slapd_d" -l "$config_ldif" && chown -R "$user:$user" "$slapd_d"
}

tree() {
    empty_dir "$db_dir" 0750 && slapadd -n1 -F "$slapd_d" -l "$dit_ldif" \
        && chown -R "$user:$user" "$db_dir"
}

empty_tree() {  # slaptest opens the database read-only: it must exist
    slapadd -n1 -F "$slapd_d" -l /dev/null && chown -R "$user:$user" "$db_dir"
}

test_config() {
    runuser -u "$user" -- slaptest -F "$slapd_d"
}

run() {  # run STEP
    case $1 in
        config) config ;;
        tree) tree ;;
        empty) empty_tree ;;
        test) test_config ;;
        *) echo "build-offline.sh: unknown step $1" >&2; return 2 ;;
    esac
    status=$?
    [ "$status" -eq 0 ] || fail "$1" "$status"
}

if [ "$step" = all ]; then
    for s in config tree test; do run "$s"; done
elif [ "$step" = replica ]; then
    for s in config empty test; do run "$s"; done
else
    run "$step"
fi
