"""Which certificate each public TLS port serves (stdlib only: runs in the lab's client or on
the controller). Job on stdin: {"ca": PEM or null (the system's CAs), "endpoints": [[host,
port, how], ...] ("tls", or the protocol whose STARTTLS comes first: verify.TLS_PORTS),
"addresses": {host: address to connect to} (optional)}; prints {"host:port":
{"serial": HEX, "not_after": ...} or {"error": TEXT}}.

Each port is reached the way a client does (SMTP, IMAP, POP3 or ManageSieve STARTTLS, or TLS
from the first byte, as the job says); the certificate must chain to ``ca`` and name the host
(Python's default checks).
"""

from __future__ import annotations

import json
import socket
import ssl
import sys


def _line(f) -> str:
    text = f.readline().decode("latin-1")
    if not text:
        raise ConnectionError("the server closed the connection")
    return text


def _starttls(how: str, sock: socket.socket) -> None:
    f = sock.makefile("rb")
    if how == "smtp":
        while _line(f)[3:4] != " ":
            pass
        sock.sendall(b"EHLO verify.invalid\r\n")
        while _line(f)[3:4] != " ":
            pass
        sock.sendall(b"STARTTLS\r\n")
        answer = _line(f)
    elif how == "imap":
        _line(f)
        sock.sendall(b"a STARTTLS\r\n")
        answer = _line(f)
        while not answer.startswith("a "):
            answer = _line(f)
        answer = answer[2:]
    elif how == "pop3":
        _line(f)
        sock.sendall(b"STLS\r\n")
        answer = _line(f)
    else:  # ManageSieve: capabilities, then OK
        while not _line(f).startswith("OK"):
            pass
        sock.sendall(b"STARTTLS\r\n")
        answer = _line(f)
    if not answer.startswith(("220", "OK", "+OK")):
        raise ConnectionError(f"STARTTLS refused: {answer.strip()}")


def served(job: dict) -> dict[str, dict[str, str]]:
    ctx = ssl.create_default_context(cadata=job.get("ca") or None)
    out: dict[str, dict[str, str]] = {}
    for host, port, how in job["endpoints"]:
        key = f"{host}:{port}"
        try:
            address = (job.get("addresses") or {}).get(host) or host
            with socket.create_connection((address, port), timeout=15) as sock:
                if how != "tls":
                    _starttls(how, sock)
                with ctx.wrap_socket(sock, server_hostname=host) as tls:
                    cert = tls.getpeercert() or {}
            out[key] = {"serial": str(cert["serialNumber"]), "not_after": str(cert["notAfter"])}
        except (OSError, ssl.SSLError, ValueError) as err:
            out[key] = {"error": f"{type(err).__name__}: {err}"}
    return out


if __name__ == "__main__":
    print(json.dumps(served(json.loads(sys.stdin.read()))))
