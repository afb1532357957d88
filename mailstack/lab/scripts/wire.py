"""Pin relay addresses inside the lab and announce this container's MAC address.

Run in a lab container as ``python3 -c TEXT JSON`` with CAP_NET_ADMIN/CAP_NET_RAW.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import ipaddress
import json
import socket
import subprocess
import sys
from pathlib import Path

want = json.loads(sys.argv[1])
dev = None
for line in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                           check=True).stdout.splitlines():
    f = line.split()
    if f[3].split("/")[0] == want["ip"]:
        dev = f[1]
        break
if dev is None:
    sys.exit(f"no interface holds {want['ip']}")
def ip(*args):
    subprocess.run(["ip", *args], check=True)
for a in want["pin"]:
    ip("addr", "replace", f"{a}/32", "dev", dev)
for a, mac in want["routes"]:
    ip("route", "replace", f"{a}/32", "dev", dev, "src", want["ip"])
    ip("neigh", "replace", a, "lladdr", mac, "dev", dev, "nud", "permanent")
mac = bytes.fromhex(Path(f"/sys/class/net/{dev}/address").read_text().strip().replace(":", ""))
addr = ipaddress.IPv4Address(want["ip"]).packed
arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + addr + b"\x00" * 6 + addr)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind((dev, 0))
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
