"""Source marks: where in which file each value of the site file was written."""

from __future__ import annotations

from dataclasses import dataclass, field

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """Render a key path as users write it: ``accounts[0].mail``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top)"


@dataclass(frozen=True)
class Mark:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Marks:
    """Line marks of a loaded site file, by key path; lookups fall back to the parent."""

    file: str = "<site>"
    lines: dict[Path, int] = field(default_factory=dict)

    def at(self, path: Path) -> Mark:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return Mark(self.file, self.lines.get(path, 1))
