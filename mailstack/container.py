"""Run the mail daemons' own tools in podman containers of the mailstack lab image.

The image ``localhost/mailstack-lab:bookworm`` is built by ``lab/scripts/build-image.sh`` (no
registry needed) and boots systemd as PID 1. The run flags are the ones measured to work on
this project's machines (Debian 12 hosts with cgroups in hybrid mode): ``--systemd=always``,
the host's empty cgroup2 mount at /sys/fs/cgroup/unified (without it Dovecot restarts could
hang for 90 s) and
``--cap-add SYS_PTRACE`` (without it ``systemctl restart slapd`` left the old slapd running).

Typical use by a checker, with no network at all::

    with Container.throwaway("check-postfix") as c:
        c.put_tree(rendered_dir, "/")
        result = c.exec(["postfix", "check"])

Every failure of podman itself is raised as :class:`~mailstack.errors.ToolError` with a
one-line message followed by the tail of podman's stderr. Nothing here uses a shell on the
host.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from mailstack.errors import ToolError

__all__ = [
    "BARE_IMAGE",
    "DEFAULT_HOSTNAME",
    "IMAGE",
    "RUN_FLAGS",
    "Container",
    "commit",
    "image_exists",
    "image_id",
    "podman_available",
    "remove_image",
    "run_flags",
]

IMAGE = "localhost/mailstack-lab:bookworm"
"""The lab image built by mailstack/lab/scripts/build-image.sh."""

BARE_IMAGE = "localhost/mailstack-bare:bookworm"
"""What a real server is (lab/scripts/build-image.sh bare): no mail stack, apt on file:/debs only."""

DEFAULT_HOSTNAME = "mail.example.test"
"""Host name of throwaway containers (an FQDN: postfix and slapd's scripts want one)."""

_CGROUP_UNIFIED = "/sys/fs/cgroup/unified"


def _base_run_flags() -> tuple[str, ...]:
    flags = ["--systemd=always"]
    if os.path.isdir(_CGROUP_UNIFIED):
        flags += ["-v", f"{_CGROUP_UNIFIED}:{_CGROUP_UNIFIED}:rw"]
    flags += ["--cap-add", "SYS_PTRACE"]
    return tuple(flags)


RUN_FLAGS: tuple[str, ...] = _base_run_flags()
"""Flags every mail-daemon container needs (``--hostname`` comes per container: run_flags())."""

BOOT_TIMEOUT = 90.0
"""Seconds :meth:`Container.start` waits for systemd to finish booting."""

EXEC_TIMEOUT = 300.0
"""Default seconds for one :meth:`Container.exec`."""

_PODMAN_TIMEOUT = 120.0
_STDERR_TAIL_LINES = 8


def run_flags(hostname: str) -> list[str]:
    """RUN_FLAGS plus ``--hostname HOSTNAME``: what ``podman run`` needs for a mail container."""
    return [*RUN_FLAGS, "--hostname", hostname]


def _tail(text: str | bytes | None, lines: int = _STDERR_TAIL_LINES) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in kept)


def _error(message: str, stderr: str | bytes | None = None) -> ToolError:
    tail = _tail(stderr)
    return ToolError(f"{message}\n{tail}" if tail else message)


def _podman(
    args: Sequence[str],
    *,
    what: str,
    input: str | None = None,
    timeout: float = _PODMAN_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` (text mode); raise ToolError for a missing podman, a timeout or,
    with ``check``, a non-zero exit. ``what`` names the action for the message."""
    argv = ["podman", *args]
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError(
            f"{what}: podman is not installed (run `mailstack lab setup` as root)"
        ) from None
    except subprocess.TimeoutExpired as exc:
        raise _error(f"{what}: podman did not finish within {timeout:g} s", exc.stderr) from None
    if check and proc.returncode != 0:
        raise _error(f"{what}: podman exited with {proc.returncode}", proc.stderr)
    return proc


def podman_available() -> bool:
    """True when a working podman is on PATH (``podman version`` answers)."""
    if shutil.which("podman") is None:
        return False
    try:
        proc = subprocess.run(
            ["podman", "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def image_exists(image: str = IMAGE) -> bool:
    """True when ``image`` is in local podman storage (False also when podman is missing)."""
    try:
        proc = subprocess.run(
            ["podman", "image", "exists", image],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def image_id(image: str) -> str | None:
    """The ID of ``image`` in local podman storage, or None when it is not there."""
    proc = _podman(["image", "inspect", "--format", "{{.Id}}", image],
                   what=f"inspecting image {image}", check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def commit(name: str, image_tag: str) -> str:
    """Snapshot container ``name`` as image ``image_tag``; return the new image's ID.

    Volumes (the cgroup mount) are not part of the image; a container started from the
    snapshot with :meth:`Container.start` gets them again.
    """
    proc = _podman(
        ["commit", "--quiet", "--pause=false", name, image_tag],
        what=f"snapshot of container {name} as {image_tag}",
        timeout=600,
    )
    return proc.stdout.strip().removeprefix("sha256:")


def remove_image(tag: str, *, missing_ok: bool = True) -> None:
    """Remove image ``tag`` (only the tag while another tag still names the same image)."""
    args = ["rmi", *(["--ignore"] if missing_ok else []), tag]
    _podman(args, what=f"removing image {tag}")


class Container:
    """A podman container of the lab image, driven by name.

    Make one with :meth:`start` or :meth:`throwaway`; ``Container(name)`` attaches to one that
    already exists. As a context manager it removes the container on exit.
    """

    def __init__(self, name: str, *, hostname: str | None = None, image: str = IMAGE) -> None:
        self.name = name
        self.hostname = hostname
        self.image = image
        self.system_state: str | None = None
        """What ``systemctl is-system-running`` said after boot: running or degraded."""

    def __repr__(self) -> str:
        return f"Container({self.name!r}, hostname={self.hostname!r}, image={self.image!r})"

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        name: str,
        *,
        hostname: str,
        network: str = "none",
        ip: str | None = None,
        aliases: Iterable[str] = (),
        image: str = IMAGE,
        volumes: Iterable[tuple[str, str]] = (),
        labels: dict[str, str] | None = None,
        caps: Iterable[str] = (),
        boot_timeout: float = BOOT_TIMEOUT,
    ) -> Container:
        """Run ``image`` detached as ``name`` with systemd as PID 1 and wait until it booted.

        ``volumes``: ``(host folder, container path)`` pairs, bind-mounted read-only;
        ``labels``: podman labels (``podman inspect`` shows them under Config.Labels);
        ``caps``: capabilities added to RUN_FLAGS' (``NET_ADMIN``: fail2ban's bans in nftables).
        ``network`` is ``"none"`` (loopback only) or the name of a podman network; ``ip`` and
        ``aliases`` (DNS names on that network) need a real network. Returns once
        ``systemctl is-system-running --wait`` says running or degraded (the state is kept
        in :attr:`system_state`). On any failure the container is removed and ToolError
        raised.
        """
        aliases = tuple(aliases)
        if network == "none" and (ip or aliases):
            raise ValueError("ip and aliases need a podman network, not network='none'")
        args = ["run", "--detach", "--pull", "never", "--name", name, *run_flags(hostname)]
        args += ["--network", network]
        if ip:
            args += ["--ip", ip]
        for alias in aliases:
            args += ["--network-alias", alias]
        for source, target in volumes:
            args += ["-v", f"{source}:{target}:ro"]
        for label, value in (labels or {}).items():
            args += ["--label", f"{label}={value}"]
        for cap in caps:
            args += ["--cap-add", cap]
        args.append(image)
        _podman(args, what=f"starting container {name} from {image}")
        container = cls(name, hostname=hostname, image=image)
        try:
            container._wait_booted(boot_timeout)
        except BaseException:
            container._remove_quietly()
            raise
        return container

    @classmethod
    def throwaway(
        cls,
        prefix: str,
        hostname: str = DEFAULT_HOSTNAME,
        *,
        image: str = IMAGE,
        boot_timeout: float = BOOT_TIMEOUT,
    ) -> Container:
        """Start a uniquely named container ``PREFIX-<8 hex>`` with no network at all.

        Meant for a checker: ``with Container.throwaway("check-dovecot") as c: ...``.
        """
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls.start(
            name, hostname=hostname, network="none", image=image, boot_timeout=boot_timeout
        )

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                proc = subprocess.run(
                    ["podman", "exec", self.name, "systemctl", "is-system-running", "--wait"],
                    capture_output=True,
                    text=True,
                    timeout=max(remaining, 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                last = "systemctl is-system-running --wait did not return"
                break
            state = proc.stdout.strip().splitlines()[-1:] or [""]
            if state[0] in ("running", "degraded"):
                self.system_state = state[0]
                return
            last = (proc.stdout + proc.stderr).strip()
            if not self._is_running():
                raise _error(
                    f"container {self.name} stopped while booting systemd",
                    self._logs_tail() or last,
                )
            time.sleep(0.2)
        raise _error(
            f"container {self.name} did not finish booting systemd within {timeout:g} s",
            last,
        )

    def _is_running(self) -> bool:
        proc = _podman(
            ["container", "inspect", "--format", "{{.State.Running}}", self.name],
            what=f"inspecting container {self.name}",
            check=False,
        )
        return proc.returncode == 0 and proc.stdout.strip() == "true"

    def _logs_tail(self) -> str:
        proc = _podman(
            ["logs", "--tail", str(_STDERR_TAIL_LINES), self.name],
            what=f"logs of container {self.name}",
            check=False,
        )
        return (proc.stdout + proc.stderr).strip()

    def remove(self) -> None:
        """Remove the container at once (``podman rm -f -t 0``); fine if it is already gone."""
        _podman(
            ["rm", "--force", "--ignore", "--time", "0", self.name],
            what=f"removing container {self.name}",
        )

    def _remove_quietly(self) -> None:
        with contextlib.suppress(ToolError):
            self.remove()

    def exists(self) -> bool:
        """True while a container of this name exists (running or not)."""
        proc = _podman(
            ["container", "exists", self.name],
            what=f"looking up container {self.name}",
            check=False,
        )
        return proc.returncode == 0

    def __enter__(self) -> Container:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.remove()
        else:
            self._remove_quietly()  # don't hide the original error

    # -- running things inside -----------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        input: bytes | str | None = None,
        check: bool = False,
        timeout: float = EXEC_TIMEOUT,
        user: str | None = None,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container (no shell) and return its result in text mode.

        stdout and stderr are captured (UTF-8; undecodable bytes kept as surrogate escapes);
        ``input`` goes to stdin (bytes pass through unchanged). The command's exit code is
        ``returncode``; with ``check`` a non-zero one raises ToolError. A failure of podman
        itself (exit 125 with podman's own "Error:" message, e.g. no such container) and a
        timeout always raise ToolError.
        """
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of strings, not one string")
        args = ["podman", "exec"]
        if input is not None:
            args.append("--interactive")
        if user:
            args += ["--user", user]
        if workdir:
            args += ["--workdir", workdir]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        args += [self.name, *argv]
        if isinstance(input, bytes):
            input = input.decode("utf-8", "surrogateescape")
        shown = " ".join(argv)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        try:
            proc = subprocess.run(
                args,
                input=input if input is not None else "",
                capture_output=True,
                encoding="utf-8",
                errors="surrogateescape",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise ToolError("podman is not installed (run `mailstack lab setup`)") from None
        except subprocess.TimeoutExpired as exc:
            raise _error(
                f"`{shown}` in container {self.name} did not finish within {timeout:g} s",
                exc.stderr,
            ) from None
        if proc.returncode == 125 and proc.stderr.lstrip().startswith("Error:"):
            raise _error(f"podman exec in container {self.name} failed", proc.stderr)
        if check and proc.returncode != 0:
            raise _error(
                f"`{shown}` in container {self.name} exited with {proc.returncode}",
                proc.stderr or proc.stdout,
            )
        return proc

    def put_tree(self, local_dir: str | os.PathLike[str], dest: str = "/") -> None:
        """Copy the contents of ``local_dir`` into ``dest`` in the container (created if missing).

        ``local_dir/etc/postfix/main.cf`` lands at ``DEST/etc/postfix/main.cf``. Files keep
        their modes and mtimes, symlinks stay symlinks; every owner becomes root (fix owners
        afterwards with exec(["chown", ...])). Directories that already exist in the
        container keep their own mode and owner; new ones get the local mode.
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise ToolError(f"put_tree: {root} is not a directory")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for entry in [*dirnames, *sorted(filenames)]:
                    path = Path(dirpath, entry)
                    arcname = path.relative_to(root).as_posix()
                    tar.add(path, arcname=arcname, recursive=False, filter=_as_root)
        self._extract(buffer.getvalue(), dest, what=f"copying {root} to {self.name}:{dest}")

    def put_file(self, path_in_container: str, content: bytes | str, mode: int = 0o644) -> None:
        """Write one file (owner root, ``mode``), creating missing parent directories."""
        if not path_in_container.startswith("/"):
            raise ValueError(f"path_in_container must be absolute: {path_in_container!r}")
        data = content.encode("utf-8") if isinstance(content, str) else content
        info = tarfile.TarInfo(path_in_container.lstrip("/"))
        info.size = len(data)
        info.mode = mode
        info.mtime = int(time.time())
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info, io.BytesIO(data))
        self._extract(buffer.getvalue(), "/", what=f"writing {self.name}:{path_in_container}")

    def _extract(self, tar_bytes: bytes, dest: str, *, what: str) -> None:
        script = 'mkdir -p -- "$1" && exec tar -x --no-overwrite-dir -C "$1" -f -'
        try:
            proc = subprocess.run(
                ["podman", "exec", "--interactive", self.name, "sh", "-c", script, "sh", dest],
                input=tar_bytes,
                capture_output=True,
                timeout=_PODMAN_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise ToolError(f"{what}: podman is not installed") from None
        except subprocess.TimeoutExpired as exc:
            message = f"{what}: did not finish within {_PODMAN_TIMEOUT:g} s"
            raise _error(message, exc.stderr) from None
        if proc.returncode != 0:
            raise _error(f"{what}: failed with exit {proc.returncode}", proc.stderr)

    def failed_units(self) -> list[str]:
        """Names of the units systemd lists as failed in the container."""
        proc = self.exec(
            ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--full"]
        )
        return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
