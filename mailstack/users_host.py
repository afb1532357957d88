"""The part of `mailstack user` that runs on a site host (stdlib and Debian's python3-ldap3).

``users.py`` sends this file and one JSON job on SSH's stdin (nothing secret is on a command
line or in a file on the host) and reads one JSON object from stdout. On the directory's host
it works over the ldapi socket as root (SASL EXTERNAL, the peercred identity slapd grants
``manage``); on a Dovecot host it flushes the auth cache. Passwords go to slapd only through
the Password Modify extended operation (RFC 3062); the one userPassword value written directly
is the unusable placeholder of a new entry, which the operation replaces at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# attributes read back by list and show (userPassword: only its scheme leaves the host)
READ = ("mail", "cn", "objectClass", "homeDirectory", "mailstackLocked",
        "mailstackDisabledService", "mailstackQuota", "mailstackOrigin", "mailstackMailHost",
        "userPassword")
ENTRY_CLASS = "mailstackEntry"
LOCKED = "mailstackLocked"


class Failed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _describe(conn) -> str:
    result = conn.result or {}
    text = (result.get("message") or "").strip()
    desc = result.get("description") or f"result {result.get('result')}"
    return f"{desc}: {text}" if text else desc


def _root(job: dict):
    import ldap3
    from ldap3.core.exceptions import LDAPException

    server = ldap3.Server(f"ldapi://{job['socket']}", connect_timeout=10)
    conn = ldap3.Connection(server, authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL,
                            sasl_credentials="", receive_timeout=30, raise_exceptions=False)
    try:
        ok = conn.bind()
    except LDAPException as err:
        raise Failed("down", f"{type(err).__name__}: {err}") from None
    if not ok:
        raise Failed("ldap", f"the SASL EXTERNAL bind as root failed: {_describe(conn)}")
    return conn


def _scheme(values: list) -> str:
    if not values:
        return "none"
    value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else values[0]
    if value.startswith("{CRYPT}!"):
        return "not set"
    return value[:value.index("}") + 1] if value.startswith("{") and "}" in value else "plain"


def _read(conn, dn: str):
    import ldap3

    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(READ))
    code = (conn.result or {}).get("result")
    if code == 32:
        return None
    if code != 0:
        raise Failed("ldap", f"{dn}: reading the entry failed: {_describe(conn)}")
    return _attrs(conn.response[0])


def _attrs(item: dict) -> dict:
    raw = item.get("raw_attributes") or {}
    out: dict = {}
    for name in READ:
        values: list = next((v for k, v in raw.items() if k.lower() == name.lower()), [])
        if name == "userPassword":
            out["password"] = _scheme(values)
        else:
            out[name] = [v.decode("utf-8", "replace") for v in values]
    out["dn"] = item.get("dn")
    return out


def _need(conn, dn: str) -> dict:
    entry = _read(conn, dn)
    if entry is None:
        raise Failed("unknown", f"{dn}: no such entry")
    return entry


def _check(conn, what: str) -> None:
    if (conn.result or {}).get("result") not in (0, None):
        raise Failed("ldap", f"{what}: {_describe(conn)}")


def _set_password(conn, dn: str, password: str) -> None:
    result = conn.extend.standard.modify_password(dn, None, password)
    if result is False or (conn.result or {}).get("result") not in (0, None):
        raise Failed("refused", f"the directory refused the new password: {_describe(conn)}")


def add(conn, job: dict) -> dict:
    dn = job["dn"]
    if _read(conn, dn) is not None:
        raise Failed("exists", f"{dn} exists already in the directory")
    attrs: dict[str, list[str]] = {}
    for name, value in job["entry"]:
        attrs.setdefault(name, []).append(value)
    conn.add(dn, attributes=attrs)
    _check(conn, f"adding {dn}")
    try:
        _set_password(conn, dn, job["password"])
    except Failed:
        conn.delete(dn)  # a refused password leaves nothing behind
        raise
    return {"entry": _read(conn, dn)}


def passwd(conn, job: dict) -> dict:
    _need(conn, job["dn"])
    _set_password(conn, job["dn"], job["password"])
    return {}


def lock(conn, job: dict) -> dict:
    import ldap3

    dn = job["dn"]
    entry = _need(conn, dn)
    changes: dict[str, list] = {}
    if job["locked"]:
        if ENTRY_CLASS.lower() not in {c.lower() for c in entry["objectClass"]}:
            changes["objectClass"] = [(ldap3.MODIFY_ADD, [ENTRY_CLASS])]
        changes[LOCKED] = [(ldap3.MODIFY_REPLACE, ["TRUE"])]
    elif entry[LOCKED]:
        changes[LOCKED] = [(ldap3.MODIFY_DELETE, [])]
    if changes:
        conn.modify(dn, changes)
        _check(conn, f"changing {dn}")
    return {"changed": bool(changes), "entry": _read(conn, dn)}


def set_attrs(conn, job: dict) -> dict:
    """Replace the attributes the job names (an empty list deletes one)."""
    import ldap3

    dn = job["dn"]
    entry = _need(conn, dn)
    changes: dict[str, list] = {}
    for name, values in job["replace"].items():
        if sorted(entry.get(name, [])) != sorted(values):
            changes[name] = [(ldap3.MODIFY_REPLACE, values)]
    if changes and ENTRY_CLASS.lower() not in {c.lower() for c in entry["objectClass"]}:
        changes["objectClass"] = [(ldap3.MODIFY_ADD, [ENTRY_CLASS])]
    if changes:
        conn.modify(dn, changes)
        _check(conn, f"changing {dn}")
    return {"changed": bool(changes), "entry": _read(conn, dn)}


def delete(conn, job: dict) -> dict:
    entry = _need(conn, job["dn"])
    conn.delete(job["dn"])
    _check(conn, f"deleting {job['dn']}")
    return {"entry": entry}


def listing(conn, job: dict) -> dict:
    import ldap3

    conn.search(job["people"], job["filter"], search_scope=ldap3.SUBTREE,
                attributes=list(READ))
    code = (conn.result or {}).get("result")
    if code == 32:
        return {"entries": []}
    if code != 0:
        raise Failed("ldap", f"searching {job['people']}: {_describe(conn)}")
    return {"entries": [_attrs(item) for item in conn.response if item.get("type") ==
                        "searchResEntry"]}


def show(conn, job: dict) -> dict:
    return {"entry": _need(conn, job["dn"])}


def flush(users: list[str]) -> str:
    """Dovecot's auth cache forgets these users (works with the cache off too)."""
    proc = subprocess.run(["doveadm", "auth", "cache", "flush", *users], capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        return f"doveadm auth cache flush failed (exit {proc.returncode}): " + " / ".join(
            lines[-2:])
    return ""


OPS = {"add": add, "passwd": passwd, "lock": lock, "set": set_attrs, "delete": delete,
       "list": listing, "show": show}


def context_csn(conn, base: str) -> str:
    """The newest contextCSN of the suffix ("" when there is none): where the tree stands."""
    conn.search(base, "(objectClass=*)", search_scope="BASE", attributes=["contextCSN"])
    values = [str(v) for e in conn.response if e.get("type") == "searchResEntry"
              for v in e.get("attributes", {}).get("contextCSN", [])]
    return max(values, default="")


def caught_up(job: dict, seconds: float = 10.0) -> str:
    """On a host with a replica: wait until it holds the provider's change (its contextCSN
    reaches ``after_csn``), so that a flushed cache is not filled again from the old entry.
    "" when it has (or the host has no directory), else why not."""
    import time

    if not job.get("after_csn") or not os.path.exists(job["socket"]):
        return ""
    conn = _root(job)
    try:
        deadline = time.monotonic() + seconds
        while context_csn(conn, job["base"]) < job["after_csn"]:
            if time.monotonic() > deadline:
                return f"the local replica has not received the change within {seconds:.0f} s"
            time.sleep(0.05)
        return ""
    finally:
        conn.unbind()


def run_job(line: str) -> int:
    job = json.loads(line)
    out: dict = {"ok": True}
    try:
        if job["op"] in OPS:
            conn = _root(job)
            try:
                out.update(OPS[job["op"]](conn, job))
                if job.get("base"):
                    out["csn"] = context_csn(conn, job["base"])
            finally:
                conn.unbind()
        elif job["op"] == "flush":
            lag = caught_up(job)
            if lag:
                out["flush_error"] = lag
    except Failed as err:
        out = {"ok": False, "error": err.kind, "message": err.message}
    except Exception as err:  # reported as one line by users.py, never a traceback
        out = {"ok": False, "error": "crash", "message": f"{type(err).__name__}: {err}"}
    if out["ok"] and job.get("flush") and not out.get("flush_error"):
        out["flush_error"] = flush(job["flush"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover - by hand: python3 users_host.py < job
    sys.exit(run_job(sys.stdin.readline()))
