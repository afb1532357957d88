"""The bench's directory entries, on the mail host (``python3 -c TEXT ARG``).

``N``: add accounts shaped like the first account of the example (its entry read as root over
ldapi, "ivan" replaced by ``benchNNNNN`` in its DN and values) until the suffix holds at least
N entries (the site file owns the accounts: an apply after this locks them all); prints
{"entries": count}. ``list``: prints {"accounts": [the bench's addresses]}.
"""
import base64
import json
import subprocess
import sys

LDAP = ["-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"]


def search(base: str, filt: str, *attrs: str, scope: str = "sub") -> list[dict[str, list[str]]]:
    out = subprocess.run(["ldapsearch", *LDAP, "-LLL", "-o", "ldif-wrap=no", "-s", scope,
                          "-b", base, filt, *attrs], capture_output=True, text=True, check=True)
    entries, cur = [], None
    for line in out.stdout.splitlines():
        if not line:
            cur = None
            continue
        name, _, value = line.partition(":")
        if value.startswith(": "):
            value = base64.b64decode(value[2:]).decode("utf-8", "replace")
        else:
            value = value[1:]
        if cur is None:
            cur = {}
            entries.append(cur)
        cur.setdefault(name, []).append(value)
    return entries


suffix = search("", "(objectClass=*)", "namingContexts", scope="base")[0]["namingContexts"][0]
bench = sorted(e["mail"][0] for e in search(suffix, "(mail=bench*)", "mail"))
if sys.argv[1] == "list":
    print(json.dumps({"accounts": bench}))
    sys.exit(0)
count = len(search(suffix, "(objectClass=*)", "1.1"))
need = int(sys.argv[1]) - count
if need > 0:
    template = search(suffix, "(mail=ivan@*)", "*")[0]
    ldif = []
    for i in range(len(bench), len(bench) + need):
        name = f"bench{i:05d}"
        for attr, values in template.items():
            for value in values:
                value = value.replace("ivan", name).replace("Ivan", name.capitalize())
                encoded = base64.b64encode(value.encode()).decode()
                ldif.append(f"{attr}:: {encoded}")
        ldif.append("")
    subprocess.run(["ldapadd", *LDAP], input="\n".join(ldif), text=True, check=True,
                   capture_output=True)
    count = len(search(suffix, "(objectClass=*)", "1.1"))
print(json.dumps({"entries": count}))
