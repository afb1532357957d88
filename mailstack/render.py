"""plan -> templates -> an atomic, byte-identical tree and manifest.

``render_plan`` formats every :class:`FileSpec` with Jinja2 (``StrictUndefined``; templates
only format) and ``write_tree`` writes ``<out>/<site>/<host>/<path>`` plus
``<out>/<site>/manifest.json`` into a temporary folder first, then renames it into place, so
a failed render leaves an earlier one untouched. What others keep in ``<out>/<site>/`` (the
lab's ``lab/``) is carried over. Secret files are 0600 in the build tree too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from mailstack import resources
from mailstack.errors import MailstackError
from mailstack.ldap import ldif
from mailstack.plan import FileSpec, SitePlan

TEMPLATES = resources.TEMPLATES


def _ldif_filter(entry: object) -> str:
    if isinstance(entry, str):
        return entry  # an include: line
    assert isinstance(entry, ldif.Entry)
    return "\n".join(ldif.entry_lines(entry))


def environment(root: Path | None = None) -> jinja2.Environment:
    """The one Jinja environment (StrictUndefined: a missing value is an error, never an empty
    string) for the site's templates, or for another folder of templates (the lab's fixtures)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root or TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["ldif"] = _ldif_filter
    return env


@dataclass(frozen=True)
class RenderedFile:
    spec: FileSpec
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def render_plan(plan: SitePlan) -> dict[str, list[RenderedFile]]:
    env = environment()
    out: dict[str, list[RenderedFile]] = {}
    for name, host in plan.hosts.items():
        files = []
        for spec in host.files:
            try:
                text = env.get_template(spec.template).render(**spec.data)
            except jinja2.TemplateNotFound as err:
                raise MailstackError(f"template {err.name} is missing from {TEMPLATES} (needed "
                                     f"for {spec.path} of host {name}): the installation is "
                                     "incomplete; reinstall mailstack") from None
            except jinja2.TemplateError as err:
                lineno = getattr(err, "lineno", None)
                where = f"{spec.template}:{lineno}" if lineno else spec.template
                raise MailstackError(f"{where}: {err.message or err} (rendering {spec.path} of "
                                     f"host {name})") from None
            files.append(RenderedFile(spec, text.encode("utf-8")))
        out[name] = files
    return out


MANIFEST_FORMAT = 2
"""Version of manifest.json, the contract between render and everything downstream (2: each
file says which role places it and how its daemon picks it up)."""


def manifest(plan: SitePlan, rendered: dict[str, list[RenderedFile]]) -> dict:
    hosts = {}
    for name, host in plan.hosts.items():
        hosts[name] = {
            "hostname": host.hostname,
            "roles": list(host.roles),
            "packages": list(host.packages),
            "services": list(host.services),
            "facts": host.facts,
            "files": {
                f.spec.path: {"mode": f"{f.spec.mode:04o}", "owner": f.spec.owner,
                              "group": f.spec.group, "sha256": f.sha256, "secret": f.spec.secret,
                              "role": f.spec.role, "pickup": f.spec.pickup}
                for f in rendered[name]
            },
        }
    return {"site": plan.site, "format": MANIFEST_FORMAT, "hosts": hosts}


def _rendered_hosts(tree: Path) -> list[str]:
    """The host folders an earlier render wrote (from its manifest)."""
    try:
        return list(json.loads((tree / "manifest.json").read_text(encoding="utf-8"))["hosts"])
    except (OSError, ValueError, KeyError):
        return []


def write_tree(plan: SitePlan, rendered: dict[str, list[RenderedFile]], out_dir: Path) -> Path:
    """Write the site's tree atomically; returns ``out_dir/<site>``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / plan.site
    tmp = Path(tempfile.mkdtemp(prefix=f".{plan.site}.new-", dir=out_dir))
    try:
        os.chmod(tmp, 0o700)
        for host, files in rendered.items():
            for f in files:
                target = tmp / host / f.spec.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                             0o600 if f.spec.secret else 0o644)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(f.content)
        text = json.dumps(manifest(plan, rendered), indent=2, sort_keys=True) + "\n"
        (tmp / "manifest.json").write_text(text, encoding="utf-8")
        old = None
        if final.exists():
            # carry over what others keep beside the render (the lab's lab/ folder)
            owned = {*_rendered_hosts(final), *rendered, "manifest.json"}
            for entry in sorted(final.iterdir()):
                if entry.name not in owned:
                    os.rename(entry, tmp / entry.name)
            old = Path(tempfile.mkdtemp(prefix=f".{plan.site}.old-", dir=out_dir))
            os.rename(final, old / "tree")
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MailstackError(f"{out_dir}: cannot write the render: {err}") from None
    return final
