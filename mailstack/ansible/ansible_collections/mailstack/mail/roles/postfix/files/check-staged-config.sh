#!/bin/sh
# mailstack: check a staged Postfix configuration directory as a whole before it goes live.
#
#   check-staged-config.sh STAGE LIVE        e.g. /etc/postfix.mailstack-stage /etc/postfix
#
# main.cf names its LDAP tables by absolute path below LIVE, so the checks run on a scratch copy
# of STAGE in which those paths point into the copy: the staged tables are what gets checked.
# In that copy `proxy:` is dropped from table names, because the running proxymap only serves the
# tables of the live main.cf. The checks, each of which must pass without a word of warning:
#   postfix check, postconf -n, and for every smtpd service of master.cf (with its -o options)
#   smtpd itself in stand-alone mode (-S) answering a QUIT: smtpd refuses values that postconf
#   accepts, such as an unknown TLS security level.
# Exit 0 when all pass; otherwise exit 1 with the problems on stdout (Ansible's script module
# merges stderr into it over SSH anyway), paths named as in LIVE.
set -u
stage=${1:?usage: check-staged-config.sh STAGE LIVE}
live=${2:?usage: check-staged-config.sh STAGE LIVE}
check="$stage-check"
problems=$(mktemp)
smtpd_problems=$(mktemp)
trap 'rm -rf "$check" "$problems" "$smtpd_problems"' EXIT
set -f  # master.cf values are passed on as words, never globbed

rm -rf "$check"
cp -a "$stage" "$check" || exit 1
for file in "$check/main.cf" "$check/master.cf"; do
    [ -f "$file" ] && sed -i -e "s#$live/#$check/#g" -e 's#proxy:\([a-z]*:\)#\1#g' "$file"
done

report() {  # report LABEL: every non-empty line of stdin, paths named as in LIVE
    sed -e "s#$check#$live#g" -e '/^[[:space:]]*$/d' -e "s#^#$1#" >>"$problems"
}

# smtpd logs through syslog only: read the journal. A failed smtpd has logged why; a clean one
# gets a short wait for late warnings.
check_smtpd() {  # check_smtpd SERVICE NAME ARGS...: one smtpd service in stand-alone mode
    service=$1 name=$2
    shift 2
    # SASL needs Dovecot's socket and wrapper mode a TLS client: both are left out of this test.
    out=$(printf 'QUIT\r\n' | MAIL_CONFIG="$check" timeout 20 "$daemon_dir/smtpd" -S -n "$service" \
        -t inet "$@" -o syslog_name="$name" -o smtpd_sasl_auth_enable=no \
        -o smtpd_tls_wrappermode=no 2>&1)
    status=$?
    tries=0
    while :; do
        logged=$(journalctl --no-pager -q -o cat "SYSLOG_IDENTIFIER=$name/smtpd" 2>/dev/null \
            | grep -E '(fatal|panic|error|warning): ')
        if [ -n "$logged" ] || { [ "$status" -eq 0 ] && [ "$tries" -ge 1 ]; } \
            || [ "$tries" -ge 10 ]; then
            break
        fi
        tries=$((tries + 1))
        sleep 0.2
    done
    # OpenSSL's own "TLS library problem" lines only repeat what smtpd says after them
    specific=$(printf '%s\n' "$logged" | grep -v 'TLS library problem')
    [ -n "$specific" ] && logged=$specific
    if [ -n "$logged" ]; then
        printf '%s\n' "$logged"
    elif [ "$status" -ne 0 ]; then
        printf 'exited with %s: %s\n' "$status" "$(printf '%s' "$out" | tail -n 2)"
    fi | sed -e "s#$check#$live#g" -e '/^[[:space:]]*$/d' -e "s#^#$service/inet\t#" >>"$smtpd_problems"
}

# The checks run side by side (postfix check alone takes seconds).
postfix -c "$check" check 2>&1 | report "postfix check: " &
postconf -c "$check" -n 2>&1 >/dev/null | report ""
daemon_dir=$(postconf -c "$check" -h daemon_directory 2>/dev/null)
tag="mailstack-check-$$"
postconf -c "$check" -F '*/inet/command' 2>/dev/null | {
    number=0
    while IFS= read -r line; do
        service=${line%%/inet/command = *}
        # shellcheck disable=SC2086  # the command's words, as master(8) splits them
        set -- ${line#* = }
        [ "${1:-}" = smtpd ] || continue
        shift
        number=$((number + 1))
        check_smtpd "$service" "$tag-$number" "$@" &
    done
    wait
}
wait
# one line per message, naming every smtpd service that said it
sort -s -t "$(printf '\t')" -k1,1 "$smtpd_problems" | awk -F '\t' '
    !($2 in services) { order[++n] = $2; services[$2] = $1; next }
    { services[$2] = services[$2] ", " $1 }
    END { for (i = 1; i <= n; i++)
        print "smtpd (" services[order[i]] ", main.cf and master.cf): " order[i] }' >>"$problems"

if [ -s "$problems" ]; then
    awk '!seen[$0]++' "$problems"
    exit 1
fi
exit 0
