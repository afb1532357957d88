"""Command line: parse arguments, call the library, print, exit. No logic lives here."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailstack import __version__, core
from mailstack.errors import InputError, MailstackError

if TYPE_CHECKING:
    from mailstack import users as users_mod

# verify's parts, named here so that --help needs no import of verify's dependencies
VERIFY_PARTS = ("delivery", "submission", "port25", "plaintext", "tls", "old_tls_control", "access",
                "sieve", "ldap", "lists", "folders", "shared", "audit", "clients", "path", "routes",
                "wrong_credentials", "bad_certificate", "timers", "fetch", "vacation",
                "certificates")


LIMIT_HELP = ("only these hosts: host names of the site and roles, comma-separated "
              "(tomsk,relay); the others are left alone")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailstack", description="A mail site from one YAML file.")
    p.add_argument("--version", action="version", version=f"mailstack {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        v = sub.add_parser(name, help=help_text, description=help_text)
        v.add_argument("site", metavar="SITE", help="the site file (site.yml)")
        v.add_argument("--secrets", metavar="DIR", help="secrets folder (default: beside SITE)")
        return v

    c = verb("check", "find mistakes in a site file before anything runs")
    c.add_argument("--with-daemons", action="store_true",
                   help="also run slaptest, postfix check, doveconf... in a throwaway container")
    r = verb("render", "write every file of every host to OUT/<site>/")
    r.add_argument("-o", "--output", default="build", metavar="OUT", help="default: build")
    se = verb("secrets", "create missing secrets (passwords, site CA, host certificates)")
    se.add_argument("--renew", action="store_true",
                    help="also renew, from the site CA and with the same keys, the host "
                         "certificates that expire within 30 days (or are wrong for the site); "
                         "apply then rolls them out")
    rt = verb("routes", "which relay (and which credentials) a message would take")
    rt.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    rt.add_argument("--to", dest="rcpt", required=True, metavar="ADDR")
    cs = verb("client-settings", "what a mail client needs: servers, ports, TLS (text, a "
                                 "sheet to hand out, autoconfig, Autodiscover, mobileconfig)")
    cs.add_argument("user", metavar="USER", nargs="?",
                    help="an account's address (default: any address of the first domain)")
    cs.add_argument("--format", dest="fmt", default="text", choices=core.CLIENT_FORMATS,
                    help="default: text")
    cs.add_argument("--html", metavar="FILE",
                    help="write the one-page sheet to FILE (same as --format html -o FILE)")
    cs.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    lab = sub.add_parser("lab", help="run the site in local containers",
                         description="run the site in local containers (podman, --internal)")
    lab.add_argument("action", choices=["setup", "up", "down", "secrets"],
                     help="setup: install podman and build the lab's images (root, once); "
                          "secrets: make the outside world's missing secrets (lab stand-ins)")
    lab.add_argument("site", metavar="SITE", nargs="?", help="the site file (not for setup)")
    lab.add_argument("-b", "--build", default="build", metavar="DIR", help="default: build")
    lab.add_argument("--secrets", metavar="DIR", help="secrets folder (default: beside SITE)")
    lab.add_argument("--start", choices=["prepared", "bare", "handmade"], default="prepared",
                     help="how the site's hosts start (up): prepared (the lab image, default), "
                          "bare (a real server: no mail stack, apt from a local repository), "
                          "handmade (a mail stack someone set up by hand)")
    def targets(v: argparse.ArgumentParser, lab_help: str) -> None:
        group = v.add_mutually_exclusive_group(required=True)
        group.add_argument("-i", "--inventory", metavar="INVENTORY", help="Ansible inventory")
        group.add_argument("--lab", action="store_true", help=lab_help)
        v.add_argument("-b", "--build", default="build", metavar="DIR", help="default: build")

    a = verb("apply", "deploy the rendered site with Ansible over SSH")
    targets(a, "the lab's inventory (lab up first)")
    a.add_argument("--limit", metavar="HOSTS", help=LIMIT_HELP)
    a.add_argument("--check", action="store_true",
                   help="check mode: stage and check everything, change nothing live")
    a.add_argument("--diff", action="store_true",
                   help="show what changes: files as unified diffs (secret files hidden), "
                        "directory entries as LDIF change records")
    a.add_argument("--take-over", action="store_true",
                   help="take over a mail stack set up by hand: keep a dated copy of its "
                        "configurations, then apply (without it apply refuses such a host)")
    a.add_argument("--prune", action="store_true",
                   help="delete the directory entries the site no longer has (default: lock "
                        "them) and move the pruned accounts' mailboxes to a dated archive")
    pl = verb("plan", "what apply would change on each host, file by file and entry by entry "
                      "(apply --check --diff: nothing is changed)")
    targets(pl, "the lab's inventory (lab up first)")
    pl.add_argument("--limit", metavar="HOSTS", help=LIMIT_HELP)
    pl.add_argument("--prune", action="store_true",
                    help="show what apply --prune would delete and archive")
    st = verb("status", "how the site's unattended jobs fare: failed remote mailbox "
                        "collections, stopped timers, oversized messages left at the provider")
    targets(st, "the lab's hosts (lab up first)")
    au = verb("audit", "what a user deleted, expunged, copied or moved, and in which folder "
                       "(Dovecot's audit trail in the mail host's journal)")
    targets(au, "the lab's hosts (lab up first)")
    au.add_argument("--user", required=True, metavar="ADDR", help="the account (its address)")
    au.add_argument("--since", metavar="WHEN",
                    help="from this time on (journalctl's --since: '2026-12-01', --since=-2h, "
                         "'yesterday'); default: all the journal holds")
    v = verb("verify", "prove the live site: mail flows, TLS holds, the ACL denies")
    targets(v, "probe the lab from its client")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.add_argument("--only", action="append", metavar="PART", choices=VERIFY_PARTS,
                   help=f"only these checks ({', '.join(VERIFY_PARTS)}); repeatable")
    v.add_argument("--no-host-checks", action="store_true", help="skip the testinfra checks")
    v.add_argument("--allow-writes", action="store_true",
                   help="with -i: also run the checks that mail the accounts and write to the "
                        "directory (the lab always runs them)")
    _user_parser(sub, targets)
    _init_parser(sub)
    return p


def _init_parser(sub) -> None:
    i = sub.add_parser("init", help="start a new site: ask what you know, write DIR/site.yml, "
                                    "its secrets and an inventory",
                       description="start a new site: asks what an admin knows (each question "
                                   "has a flag; with the required ones given nothing is asked), "
                                   "writes DIR/site.yml (never over an existing one), makes its "
                                   "secrets and DIR/inventory.yml", allow_abbrev=False)
    i.add_argument("directory", metavar="DIR", help="where site.yml goes (made if missing)")
    i.add_argument("--hostname", metavar="FQDN", help="the server's full host name (required)")
    i.add_argument("--domain", action="append", metavar="DOMAIN",
                   help="a mail domain (required; repeatable)")
    i.add_argument("--site", dest="site_name", metavar="NAME",
                   help="the site's short name (default: the domain's first label)")
    i.add_argument("--relay-mode", choices=["direct", "relay"],
                   help="direct: by MX (default); relay: through --relay-host")
    i.add_argument("--relay-host", metavar="HOST", help="the relay server (name or IP address)")
    i.add_argument("--relay-port", metavar="PORT",
                   help="default 25, 587 with --relay-user, 465 with --relay-tls wrapper")
    i.add_argument("--relay-tls", choices=["verify", "encrypt", "wrapper"],
                   help="verify (default): STARTTLS, certificate checked; encrypt: unchecked; "
                        "wrapper: TLS from the first byte")
    i.add_argument("--relay-tls-name", metavar="NAME",
                   help="the name on the relay's certificate (needed for an IP address)")
    i.add_argument("--relay-user", metavar="LOGIN", help="the login at the relay, if it wants one")
    i.add_argument("--relay-password-file", metavar="FILE",
                   help="the relay password: the first line of FILE (never on the command line)")
    i.add_argument("--account", action="append", metavar="ADDRESS:NAME",
                   help='an account, e.g. ivan@example.org:"Ivan Petrov" (required; repeatable)')
    i.add_argument("--postmaster", metavar="ADDRESS",
                   help="the account that reads postmaster@ and abuse@ (default: the first)")
    i.add_argument("--fetch", action="append", metavar="ACCOUNT:PROTOCOL:HOST:USER[:PASSWORD_FILE]",
                   help="a remote mailbox (pop3 or imap, over TLS) collected into ACCOUNT; "
                        "the password is the first line of PASSWORD_FILE (repeatable)")
    i.add_argument("--no-input", action="store_true",
                   help="never ask, even in a terminal: a missing required answer is an error")


def _user_parser(sub, targets) -> None:
    u = sub.add_parser("user", help="accounts on the live directory: add, passwd, set, "
                                    "lock, unlock, remove, list, show",
                       description="accounts on the live directory (over SSH to its host, "
                                   "then ldapi as root); where the site file owns the "
                                   "accounts, add/lock/unlock/remove edit it too")
    acts = u.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, mail: bool = True) -> argparse.ArgumentParser:
        # no abbreviations: `--password X` must not be taken for --password-file X
        a = acts.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        a.add_argument("site", metavar="SITE", help="the site file (site.yml)")
        if mail:
            a.add_argument("mail", metavar="MAIL", help="the account's address")
        a.add_argument("--secrets", metavar="DIR", help="secrets folder (default: beside SITE)")
        targets(a, "the lab's directory (lab up first)")
        return a

    def password_options(a: argparse.ArgumentParser, what: str) -> None:
        a.add_argument("--password-file", metavar="FILE",
                       help=f"read {what} from the first line of FILE")
        a.add_argument("--stdin", action="store_true",
                       help=f"read {what} from the first line of standard input (default "
                            "when it is not a terminal; otherwise a prompt without echo)")

    ad = action("add", "a new account: into the site file, the secrets folder and the "
                       "directory")
    ad.add_argument("--name", required=True, help="the person's full name (cn)")
    ad.add_argument("--protocols", metavar="LIST",
                    help="services it may log in to, comma-separated (imap,pop3,submission,sieve; "
                         "default all)")
    ad.add_argument("--quota", metavar="SIZE", help="mailbox limit: bytes or 500M, 2G")
    ad.add_argument("--mailhost", metavar="HOST",
                    help="the host that keeps its mailbox (a site with several mail hosts)")
    password_options(ad, "the initial password")
    pw = action("passwd", "set an account's password (RFC 3062; never on the command line)")
    pw.add_argument("--self", dest="self_service", action="store_true",
                    help="as the user: bind with the old password over StartTLS (needs "
                         "ldap.network: true); with --stdin the old password is the first "
                         "line and the new one the second")
    password_options(pw, "the new password")
    st = action("set", "change an account's services or quota")
    st.add_argument("--protocols", metavar="LIST",
                    help="services it may log in to, comma-separated (imap,pop3,submission,sieve)")
    st.add_argument("--quota", metavar="SIZE",
                    help="mailbox limit: bytes or 500M, 2G; none: the site's default")
    action("lock", "refuse every login of the account (site file: enabled: false)")
    action("unlock", "let a locked account log in again")
    rm = action("remove", "take the account out of the site file; lock its entry (or delete "
                          "it with --prune); the mailbox stays")
    rm.add_argument("--prune", action="store_true", help="delete the entry instead of locking")
    action("list", "the directory's accounts and their state", mail=False)
    action("show", "one account as the directory holds it")


def _line(text: str) -> str:
    line = text.split("\n", 1)[0]
    return line[:-1] if line.endswith("\r") else line


def _passwords(args: argparse.Namespace, *labels: str) -> list[users_mod.PasswordSource]:
    """One source per label: a file, standard input (one line each), or a prompt without
    echo. Never the command line; the values are never printed."""
    import getpass

    lines: list[str] = []

    def stdin_line() -> str:
        if not lines:
            lines.extend(sys.stdin.read().split("\n"))
        value = lines.pop(0) if lines else ""
        return value[:-1] if value.endswith("\r") else value

    use_stdin = args.stdin or not sys.stdin.isatty()

    def source(label: str, last: bool) -> users_mod.PasswordSource:
        def get() -> str:
            if last and args.password_file:
                try:
                    text = open(args.password_file, encoding="utf-8").read()  # noqa: SIM115
                except OSError as err:
                    raise InputError(f"{args.password_file}: cannot read the password: "
                                     f"{err.strerror}") from None
                return _line(text)
            if use_stdin:
                return stdin_line()
            first = getpass.getpass(f"{label}: ")
            if last and getpass.getpass(f"{label} (again): ") != first:
                raise InputError("the two passwords differ; nothing was changed")
            return first
        return get

    return [source(label, i == len(labels) - 1) for i, label in enumerate(labels)]


def _secrets_created(directory: Path, created: list[str]) -> None:
    for name in created:
        print(f"created {directory / name}")


def _init(args: argparse.Namespace) -> int:
    from mailstack import init, init_prompts

    init.refuse_existing(args.directory)  # before any question
    answers = init.from_flags(
        hostname=args.hostname, domains=args.domain or (), site=args.site_name,
        relay_mode=args.relay_mode, relay_host=args.relay_host, relay_port=args.relay_port,
        relay_tls=args.relay_tls, relay_tls_name=args.relay_tls_name, relay_user=args.relay_user,
        relay_password_file=args.relay_password_file, accounts=args.account or (),
        postmaster=args.postmaster, fetch=args.fetch)
    answers = init_prompts.complete(answers, interactive=not args.no_input
                                    and sys.stdin.isatty() and sys.stdout.isatty())
    rep = init.create(args.directory, answers)
    print(f"wrote {rep.site_file}")
    for path in rep.typed:
        print(f"wrote {path} (the password you gave)")
    _secrets_created(rep.secrets_dir, rep.secrets_created)
    print(f"wrote {rep.inventory} (how apply reaches {rep.hostname} over SSH as root: check it)"
          if rep.inventory_written else f"{rep.inventory}: exists, kept")
    print("next:")
    for command in rep.next_commands():
        print(f"    {command}")
    return 0


def _user(args: argparse.Namespace) -> int:
    from mailstack import users

    where = users.Where(lab=args.lab, inventory=args.inventory, build_dir=args.build,
                        secrets_dir=args.secrets)
    if args.action == "list":
        print(users.table(users.listing(args.site, where=where)))
        return 0
    if args.action == "show":
        print("\n".join(users.show(args.site, args.mail, where=where)))
        return 0
    protocols = ([p.strip() for p in args.protocols.split(",") if p.strip()]
                 if getattr(args, "protocols", None) is not None else None)
    if args.action == "set":
        result = users.set_account(args.site, args.mail, protocols=protocols,
                                   quota=args.quota, where=where)
    elif args.action == "add":
        (pw,) = _passwords(args, f"initial password for {args.mail}")
        result = users.add(args.site, args.mail, args.name, pw, protocols=protocols,
                           quota=args.quota, mailhost=args.mailhost, where=where)
    elif args.action == "passwd" and args.self_service:
        users.self_service_target(args.site, where)  # one line before any prompt
        old, new = _passwords(args, f"old password of {args.mail}",
                              f"new password for {args.mail}")
        result = users.passwd_self(args.site, args.mail, old, new, where=where)
    elif args.action == "passwd":
        (pw,) = _passwords(args, f"new password for {args.mail}")
        result = users.passwd(args.site, args.mail, pw, where=where)
    elif args.action in ("lock", "unlock"):
        result = users.set_locked(args.site, args.mail, args.action == "lock", where=where)
    else:
        result = users.remove(args.site, args.mail, prune=args.prune, where=where)
    for line in result.lines:
        print(line)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # a run builds one site's objects and ends: the collector's full passes over them (tens of
    # thousands of entries at 10,000 accounts) cost a quarter of a check and free nothing
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        if args.verb == "check":
            report = core.check(args.site, secrets_dir=args.secrets,
                                with_daemons=args.with_daemons)
            for finding in report.findings:
                print(finding, file=sys.stderr)
            for verdict in report.daemon_verdicts:
                print(verdict)
            if not report.ok:
                return 1
            print(f"{args.site}: ok ({len(report.site.accounts)} accounts, "
                  f"{len(report.site.hosts)} hosts)")
        elif args.verb == "render":
            path = core.render(args.site, args.output, secrets_dir=args.secrets)
            print(f"rendered {path}")
        elif args.verb == "secrets":
            rep = core.make_secrets(args.site, secrets_dir=args.secrets, renew=args.renew)
            _secrets_created(rep.directory, rep.created)
            for missing in rep.missing_external:
                print(f"{missing}: missing; put it there yourself (it cannot be generated)",
                      file=sys.stderr)
            if not rep.created and not args.renew:
                print(f"{rep.directory}: nothing to create")
            for r in rep.renewals:
                until = r.not_after.strftime("%Y-%m-%d %H:%M UTC")
                print(f"renewed {r.path}: {r.reason}; the new one is valid until {until} "
                      "(same key)" if r.renewed else
                      f"{r.path}: valid until {until}, not due: not renewed")
            if any(r.renewed for r in rep.renewals):
                print(f"`mailstack apply {args.site}` puts the renewed certificates on the "
                      "hosts (Postfix and Dovecot reload, slapd restarts)")
            return 1 if rep.missing_external else 0
        elif args.verb == "routes":
            print(f"{args.sender} -> {args.rcpt}: "
                  f"{core.routes(args.site, args.sender, args.rcpt)}")
        elif args.verb == "client-settings":
            fmt, target = ("html", args.html) if args.html else (args.fmt, args.output)
            data = core.client_settings(args.site, args.user, fmt=fmt, secrets_dir=args.secrets)
            if target:
                core.write_file(target, data)
                print(f"wrote {target}")
            else:
                sys.stdout.buffer.write(data)
        elif args.verb == "lab":
            from mailstack import lab

            if args.action == "setup":
                lab.setup()
                print("the lab is ready: podman, the lab image and the bare image")
                return 0
            if args.site is None:
                print(f"mailstack lab {args.action}: SITE is required", file=sys.stderr)
                return 2
            if args.action == "up":
                state = lab.up(args.site, build_dir=args.build, secrets_dir=args.secrets,
                               start=args.start)
                for name in state.secrets_created:
                    print(f"created secret {name} (a lab stand-in)")
                for warning in state.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                for c in state.containers:
                    print(f"{c.role:<8} {c.name:<40} {c.ip:<15} {c.hostname}")
                print(f"inventory: {state.inventory}")
            elif args.action == "secrets":
                made = lab.prepare_outside_secrets(args.site, build_dir=args.build,
                                                   secrets_dir=args.secrets)
                for name in made.created:
                    print(f"created secret {name} (a lab stand-in)")
                for warning in made.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                if not made.created:
                    print("the lab's outside secrets are all there")
            else:
                lab.down(args.site, build_dir=args.build)
                print("lab removed")
        elif args.verb in ("apply", "plan"):
            from mailstack import apply

            inventory = args.inventory
            if args.lab:
                from mailstack import lab

                inventory = lab.state(args.site, build_dir=args.build).inventory
            planning = args.verb == "plan"
            apply.apply(args.site, inventory=inventory, build_dir=args.build,
                        secrets_dir=args.secrets, limit=args.limit,
                        check_only=planning or args.check, diff=planning or args.diff,
                        take_over=not planning and args.take_over,
                        prune=args.prune)
        elif args.verb == "status":
            from mailstack import status

            st_report = status.status(args.site, lab=args.lab, inventory=args.inventory,
                                      build_dir=args.build, secrets_dir=args.secrets)
            print(st_report.text())
            return 0 if st_report.ok else 1
        elif args.verb == "audit":
            from mailstack import audit

            found = audit.audit(args.site, args.user, since=args.since, lab=args.lab,
                                inventory=args.inventory, build_dir=args.build,
                                secrets_dir=args.secrets)
            print(audit.text(args.user.strip().lower(), found))
        elif args.verb == "user":
            return _user(args)
        elif args.verb == "init":
            return _init(args)
        elif args.verb == "verify":
            from mailstack import verify

            result = verify.verify(args.site, lab=args.lab, inventory=args.inventory,
                                   build_dir=args.build, secrets_dir=args.secrets,
                                   parts=args.only, host_checks=not args.no_host_checks,
                                   allow_writes=args.allow_writes)
            print(result.to_json() if args.json else result.table())
            return 0 if result.ok else 1
    except MailstackError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line, the traceback only on request
        if os.environ.get("MAILSTACK_TRACEBACK"):
            raise
        print(f"mailstack: internal error: {type(err).__name__}: {err} (a bug; set "
              "MAILSTACK_TRACEBACK=1 to see where)", file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
