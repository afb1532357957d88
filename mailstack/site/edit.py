"""Edits of a site file that keep the admin's comments, order and layout (``mailstack user``).

ruamel.yaml reads the file round-trip and says where each account is (line and column); the
edit is made on those lines only, so everything else stays byte for byte, and the result is
read back with ruamel.yaml and compared with the data the edit means. Where a layout does not
allow a line edit (accounts written in flow style, no ``accounts:`` yet), ruamel.yaml writes
the whole document round-trip instead (comments and order kept; long flow collections may be
wrapped differently).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from mailstack.errors import InputError


def _yaml() -> YAML:
    y = YAML()  # round-trip
    y.preserve_quotes = True
    y.width = 100
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _load(text: str, name: str) -> Any:
    try:
        return _yaml().load(text)
    except YAMLError as err:
        raise InputError(f"{name}: cannot read the site file: {err}") from None


def plain(value: Any) -> Any:
    """ruamel's round-trip values as plain dicts, lists and scalars (for comparing)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _dump(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def _accounts(data: Any) -> CommentedSeq | None:
    if not isinstance(data, dict):
        return None
    accounts = data.get("accounts")
    return accounts if isinstance(accounts, CommentedSeq) else None


def _index(data: Any, mail: str) -> int | None:
    for i, item in enumerate(_accounts(data) or []):
        if isinstance(item, dict) and str(item.get("mail", "")).lower() == mail.lower():
            return i
    return None


def has_account(text: str, mail: str, name: str = "site.yml") -> bool:
    return _index(_load(text, name), mail) is not None


class _Lines:
    """The file's lines and where an account item starts and ends in them."""

    def __init__(self, text: str, data: Any) -> None:
        self.lines = text.splitlines(keepends=True)
        self.data = data
        self.seq = _accounts(data)

    @staticmethod
    def _filler(line: str) -> bool:
        stripped = line.strip()
        return not stripped or stripped.startswith("#")

    def block(self) -> bool:
        """Whether the accounts are a block sequence of block mappings (line edits work)."""
        if self.seq is None or not self.seq or self.seq.fa.flow_style():
            return False
        return all(isinstance(item, CommentedMap) and not item.fa.flow_style()
                   for item in self.seq)

    def start(self, i: int) -> int:
        """Index of the line holding item ``i``'s dash."""
        line, _ = self.seq.lc.item(i)  # type: ignore[union-attr]
        if self.lines[line].lstrip().startswith("-"):
            return line
        if line > 0 and self.lines[line - 1].strip() == "-":
            return line - 1
        raise ValueError("no dash where the item starts")

    def end(self, i: int) -> int:
        """Index of the line after item ``i``'s last line of content."""
        assert self.seq is not None
        if i + 1 < len(self.seq):
            stop = self.start(i + 1)
        else:
            stop = len(self.lines)
            keys = list(self.data)
            after = keys.index("accounts") + 1
            if after < len(keys):
                stop = self.data.lc.key(keys[after])[0]
        while stop > self.start(i) + 1 and self._filler(self.lines[stop - 1]):
            stop -= 1
        return stop

    def dash_col(self, i: int) -> int:
        line = self.lines[self.start(i)]
        return len(line) - len(line.lstrip())

    def key_col(self, i: int) -> int:
        return int(self.seq.lc.item(i)[1])  # type: ignore[union-attr]

    def text(self) -> str:
        return "".join(self.lines)


def _flow_lists(values: dict[str, Any]) -> CommentedMap:
    """A mapping for ruamel to dump, its lists in flow style ([imap, pop3]) as the site writes."""
    item = CommentedMap()
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            seq = CommentedSeq(v)
            seq.fa.set_flow_style()
            item[k] = seq
        else:
            item[k] = v
    return item


def _item_text(account: dict[str, Any], dash: int, key: int) -> str:
    """One account as block YAML lines at the file's indentation."""
    item = _flow_lists(account)
    y = _yaml()
    y.indent(mapping=2, sequence=key - dash, offset=0)
    out = io.StringIO()
    y.dump([item], out)
    return "".join(" " * dash + line if line.strip() else line
                   for line in out.getvalue().splitlines(keepends=True))


def _finish(text: str, name: str, expect: Any, by_lines: Callable[[], str | None],
            whole: Callable[[Any], None]) -> str:
    """The edit made on lines if that reads back as ``expect``, else by a round-trip dump."""
    try:
        edited = by_lines()
    except (ValueError, IndexError, KeyError, TypeError):
        edited = None
    if edited is not None:
        try:
            if plain(_yaml().load(edited)) == expect:
                return edited
        except YAMLError:
            pass
    data = _load(text, name)
    whole(data)
    edited = _dump(data)
    if plain(_yaml().load(edited)) != expect:  # pragma: no cover - ruamel's own round trip
        raise InputError(f"{name}: the edit could not be written without changing other values")
    return edited


def add_account(text: str, account: dict[str, Any], name: str = "site.yml") -> str:
    """``text`` with ``account`` (mail, name, and protocols/quota if given) appended to
    ``accounts:``."""
    data = _load(text, name)
    if _index(data, account["mail"]) is not None:
        raise InputError(f"{name}: {account['mail']} is already an account of the site file")
    expect = plain(data) if isinstance(data, dict) else {}
    expect.setdefault("accounts", [])
    if expect["accounts"] is None:
        expect["accounts"] = []
    expect["accounts"].append(plain(dict(account)))

    def by_lines() -> str | None:
        at = _Lines(text, data)
        if not at.block():
            return None
        last = len(at.seq) - 1  # type: ignore[arg-type]
        stop = at.end(last)
        at.lines[stop:stop] = [_item_text(account, at.dash_col(last), at.key_col(last))]
        if stop > 0 and not at.lines[stop - 1].endswith("\n"):
            at.lines[stop - 1] += "\n"
        return at.text()

    def whole(d: Any) -> None:
        if not isinstance(d, dict):
            raise InputError(f"{name}: the site file is not a mapping")
        if not isinstance(d.get("accounts"), list):
            d["accounts"] = CommentedSeq()
        item = CommentedMap()
        for k, v in account.items():
            item[k] = list(v) if isinstance(v, (list, tuple)) else v
        d["accounts"].append(item)

    return _finish(text, name, expect, by_lines, whole)


def _references(data: Any, mail: str) -> list[tuple[Any, Any]]:
    """Where the site names the account ``mail`` besides its item: (container, key or index)
    of every group membership, group send_as and shared folder right (the user commands drop
    them with the account; the directory's memberships follow on the next apply)."""
    out: list[tuple[Any, Any]] = []
    if not isinstance(data, dict):
        return out
    for group in data.get("groups") or []:
        for key in ("members", "send_as"):
            seq = group.get(key) if isinstance(group, dict) else None
            for i, value in enumerate(seq or []):
                if str(value).lower() == mail.lower():
                    out.append((seq, i))
    for folder in data.get("shared_folders") or []:
        rights = folder.get("rights") if isinstance(folder, dict) else None
        for key in list(rights or {}):
            if str(key).lower() == mail.lower():
                out.append((rights, key))
    return out


def _drop_reference(lines: list[str], container: Any, where: Any) -> None:
    """Remove one reference on its line: an item of a one-line flow sequence (``[a, b]``) or
    the one-line entry of a block mapping; anything else raises ValueError (the caller then
    writes the document round-trip)."""
    if isinstance(container, CommentedSeq):
        if not container.fa.flow_style():
            line, col = container.lc.item(where)
            text = lines[line]
            if not text[:col].rstrip().endswith("-") or len(container) == 1:
                raise ValueError("not a one-line block item")
            lines[line] = ""
            return
        line, col = container.lc.item(where)
        text = lines[line]
        value = str(container[where])
        if text[col:col + len(value)] != value:
            raise ValueError("not a plain scalar")
        end = col + len(value)
        if where + 1 < len(container):
            nline, ncol = container.lc.item(where + 1)
            if nline != line:
                raise ValueError("flow sequence over several lines")
            lines[line] = text[:col] + text[ncol:]
        else:
            start = text.rfind(",", 0, col)
            if start < 0:
                raise ValueError("the only item")
            lines[line] = text[:start] + text[end:]
        return
    line, _ = container.lc.key(where)
    if container.fa.flow_style() or container.lc.value(where)[0] != line:
        raise ValueError("not a one-line block entry")
    lines[line] = ""


def remove_account(text: str, mail: str, name: str = "site.yml") -> str:
    """``text`` without the account ``mail`` (its comments above the next item stay), nor its
    group memberships, the groups' send_as and shared folder rights that name it. A group it
    is the only member of is refused (the admin decides what becomes of the group)."""
    data = _load(text, name)
    i = _index(data, mail)
    if i is None:
        raise InputError(f"{name}: {mail} is not an account of the site file")
    for group in data.get("groups") or []:
        members = [str(m).lower() for m in (group or {}).get("members") or []]
        if members and set(members) == {mail.lower()}:
            raise InputError(f"{name}: {mail} is the only member of the group "
                             f"{group.get('name')}: remove the group (or give it another "
                             "member) first")
    refs = _references(data, mail)
    expect = plain(data)
    del expect["accounts"][i]
    for group in expect.get("groups") or []:
        for key in ("members", "send_as"):
            if key in group:
                group[key] = [m for m in group[key] if str(m).lower() != mail.lower()]
    for folder in expect.get("shared_folders") or []:
        if "rights" in folder:
            folder["rights"] = {k: v for k, v in folder["rights"].items()
                                if k.lower() != mail.lower()}

    def by_lines() -> str | None:
        at = _Lines(text, data)
        if not at.block():
            return None
        # the references first, from the end of the file (earlier positions stay valid)
        for container, where in sorted(
                refs, key=lambda r: _position(*r), reverse=True):
            _drop_reference(at.lines, container, where)
        start = at.start(i)
        while start > 0 and at.lines[start - 1].strip().startswith("#") and (
                len(at.lines[start - 1]) - len(at.lines[start - 1].lstrip())
                == at.dash_col(i)):
            start -= 1  # the comment right above the item is about it
        del at.lines[start:at.end(i)]
        return at.text()

    def whole(d: Any) -> None:
        for container, where in sorted(_references(d, mail), key=lambda r: _position(*r),
                                       reverse=True):
            del container[where]
        del d["accounts"][i]

    return _finish(text, name, expect, by_lines, whole)


def _position(container: Any, where: Any) -> tuple[int, int]:
    if isinstance(container, CommentedSeq):
        line, col = container.lc.item(where)
    else:
        line, col = container.lc.key(where)
    return int(line), int(col)


def set_enabled(text: str, mail: str, enabled: bool, name: str = "site.yml") -> str:
    """``text`` with the account ``mail`` locked (``enabled: false``) or not (the key gone:
    enabled is the default)."""
    return set_keys(text, mail, {"enabled": None if enabled else False}, name)


def set_keys(text: str, mail: str, values: dict[str, Any], name: str = "site.yml") -> str:
    """``text`` with keys of the account ``mail`` set (``None``: the key removed, so the
    default applies)."""
    if _index(_load(text, name), mail) is None:
        raise InputError(f"{name}: {mail} is not an account of the site file")
    for key, value in values.items():
        text = _set_key(text, mail, key, value, name)
    return text


def _key_line(key: str, value: Any, col: int) -> str:
    item = _flow_lists({key: value})
    out = io.StringIO()
    _yaml().dump(item, out)
    lines = out.getvalue().splitlines(keepends=True)
    if len(lines) != 1:
        raise ValueError("not one line")
    return " " * col + lines[0]


def _set_key(text: str, mail: str, key: str, value: Any, name: str) -> str:
    data = _load(text, name)
    i = _index(data, mail)
    assert i is not None
    expect = plain(data)
    if value is None:
        expect["accounts"][i].pop(key, None)
    else:
        expect["accounts"][i][key] = plain(list(value) if isinstance(value, tuple) else value)
    if plain(data) == expect:
        return text

    def by_lines() -> str | None:
        at = _Lines(text, data)
        if not at.block():
            return None
        item = at.seq[i]  # type: ignore[index]
        if key in item:
            line, col = item.lc.key(key)
            keys = list(item)
            nxt = keys.index(key) + 1
            stop = item.lc.key(keys[nxt])[0] if nxt < len(keys) else at.end(i)
            if stop != line + 1 or line == at.start(i):
                return None  # not a line of its own
            if value is None:
                del at.lines[line]
            else:
                at.lines[line] = _key_line(key, value, col)
            return at.text()
        stop = at.end(i)
        at.lines[stop:stop] = [_key_line(key, value, at.key_col(i))]
        if not at.lines[stop - 1].endswith("\n"):
            at.lines[stop - 1] += "\n"
        return at.text()

    def whole(d: Any) -> None:
        if value is None:
            d["accounts"][i].pop(key, None)
        else:
            d["accounts"][i][key] = list(value) if isinstance(value, tuple) else value

    return _finish(text, name, expect, by_lines, whole)
