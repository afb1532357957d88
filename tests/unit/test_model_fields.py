"""No model field is silently ignored: changing any field of the site file either changes the
render or is refused by `check`.

Every field of the model (mailstack/site/model.py) is walked, in the bundled example (first
item of each list, first entry of each map); a field the example sets gets another value, a
field it leaves out gets a non-default one. Then either `check` reports an error (the value is
refused, e.g. a setting that is not implemented yet) or the rendered tree (or the set of
secrets `mailstack secrets` makes or leaves to the admin) differs.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml

from mailstack import checks, core, secrets
from mailstack import render as rendering
from mailstack.site import model
from mailstack.site.load import load_site
from tests.conftest import EXAMPLE, copy_secrets

Path_ = tuple[str | int, ...]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(model))


def _plain(tp: Any) -> tuple[Any, bool]:
    """(type without None, whether None was allowed)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _other(tp: Any, value: Any) -> Any:
    """A different value of type ``tp`` than ``value`` (``value`` may be absent: None)."""
    tp, _ = _plain(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return next(c for c in get_args(tp) if c != value)
    if tp is bool:
        return not value
    if tp is int:
        return (value or 0) + 1
    if tp is str:
        return (value or "x") + "x"
    if origin is tuple:
        item = get_args(tp)[0]
        items = list(value or ())
        if get_origin(item) is Literal:
            choices = list(get_args(item))
            return choices[:1] if items != choices[:1] else choices
        return items[:-1] if items else ["x"]
    if origin is dict:
        items = dict(value or {})
        if items:
            items.popitem()
            return items
        return {"x": "x"}
    raise AssertionError(f"no other value for {tp}")


def _default(f: dataclasses.Field) -> Any:
    """The field's default as the site file would say it (None for a required field)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if dataclasses.is_dataclass(value):
        return {}
    return list(value) if isinstance(value, tuple) else value


def mutations(cls: type, node: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """(key path, new value) for every leaf field of ``cls`` below ``node`` (YAML data)."""
    out: list[tuple[Path_, Any]] = []
    node = node or {}
    for f in dataclasses.fields(cls):
        if f.name == "marks":
            continue
        tp, _ = _plain(_hints(cls)[f.name])
        here = (*path, f.name)
        value = node.get(f.name, _default(f))
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue  # an optional section (relay auth) the example leaves out
            out += mutations(tp, value if isinstance(value, dict) else {}, here)
        elif origin is tuple and dataclasses.is_dataclass(get_args(tp)[0]):
            if value:
                out += mutations(get_args(tp)[0], value[0], (*here, 0))
        elif origin is dict and dataclasses.is_dataclass(get_args(tp)[1]):
            if value:
                key = next(iter(value))
                out += mutations(get_args(tp)[1], value[key], (*here, key))
        else:
            out.append((here, _other(tp, value)))
    return out


def _set(data: dict, path: Path_, value: Any) -> dict:
    data = copy.deepcopy(data)
    node: Any = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return data


def _render(site_file: Path) -> dict[str, dict[str, bytes]] | list[str]:
    """The rendered tree and the secrets the site needs, or the errors `check` reports."""
    site = load_site(site_file)
    store = secrets.SecretStore(site_file.parent / "secrets")
    errors = [str(f) for f in checks.run(site, store) if f.severity == "error"]
    if errors:
        return errors
    _, plan = core.plan(site_file)
    rendered = rendering.render_plan(plan)
    return {host: {f.spec.path: f.content for f in files} for host, files in rendered.items()} | {
        "manifest": {"": str(rendering.manifest(plan, rendered)).encode()},
        # what `mailstack secrets` makes or leaves to the admin (tls.mode: files)
        "secrets": {r.name: r.kind.encode() for r in secrets.required(site)}}


BASE = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
CASES = mutations(model.Site, BASE)


def test_every_field_of_the_model_is_walked() -> None:
    walked = {".".join(str(k) for k in p if not isinstance(k, int)) for p, _ in CASES}
    for name in ("site", "hosts.mail.hostname", "ldap.password_hash", "accounts.protocols",
                 "accounts.password_secret", "relays.head-office.port", "fetch.keep",
                 "fetch.folders", "tls.mode", "postfix.main", "routes.senders"):
        assert name in walked, name


@pytest.mark.parametrize(("path", "value"), CASES,
                         ids=[".".join(str(k) for k in p) for p, _ in CASES])
def test_a_changed_field_changes_the_render_or_is_refused(tmp_path: Path, path: Path_,
                                                          value: Any) -> None:
    copy_secrets(tmp_path / "secrets")
    site_file = tmp_path / "site.yml"
    site_file.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    before = _render(site_file)
    assert isinstance(before, dict), before
    site_file.write_text(yaml.safe_dump(_set(BASE, path, value)), encoding="utf-8")
    try:
        after = _render(site_file)
    except Exception as err:  # a refusal that is not a finding (an InputError of the loader)
        from mailstack.errors import MailstackError

        assert isinstance(err, MailstackError), err
        return
    assert isinstance(after, list) or after != before, \
        f"{'.'.join(map(str, path))} = {value!r} changes nothing and is not refused"
