"""SSH into the lab's site hosts: the lab's key, authorized_keys, waiting for sshd."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.plan import LabContainer
from mailstack.lab.state import KEY, write_atomic

SSH_TIMEOUT = 30.0


def require_ssh() -> str:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise ToolError("the lab needs an SSH client on this machine (ssh not found): install "
                        "the Debian package openssh-client (apt-get install -y openssh-client)")
    return ssh


def ensure_key(where: Path, site: str) -> tuple[Path, str]:
    """The lab's ed25519 key pair (made once); returns (private key path, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = where / KEY
    pub = where / f"{KEY}.pub"
    if key.is_file() and pub.is_file():
        os.chmod(key, 0o600)
        return key, pub.read_text(encoding="utf-8").strip()
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    line = f"{line} mailstack-lab-{site}"
    write_atomic(key, pem, 0o600)
    write_atomic(pub, line + "\n", 0o644)
    return key, line


def authorize(c: LabContainer, public_key: str) -> None:
    box = Container(c.name)
    box.exec(["install", "-d", "-m", "0700", "/root/.ssh"], check=True)
    box.put_file("/root/.ssh/authorized_keys", public_key + "\n", 0o600)


def ssh_argv(key: Path, ip: str, *command: str, timeout: int = 5) -> list[str]:
    """``ssh`` as the lab's Ansible inventory uses it (root, the lab key, no host key checks)."""
    return [
        "ssh", "-F", "/dev/null", "-i", str(key), "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={timeout}", f"root@{ip}", *command,
    ]


def wait_ssh(c: LabContainer, key: Path, timeout: float = SSH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            proc = subprocess.run(ssh_argv(key, c.ip, "true"), capture_output=True, text=True,
                                  timeout=15, check=False)
            if proc.returncode == 0:
                return
            last = (proc.stderr or proc.stdout).strip()
        except subprocess.TimeoutExpired:
            last = "ssh did not answer within 15 s"
        if time.monotonic() >= deadline:
            raise ToolError(f"ssh -i {key} root@{c.ip} (container {c.name}) does not work "
                            f"after {timeout:g} s:\n  {last}")
        time.sleep(0.5)
