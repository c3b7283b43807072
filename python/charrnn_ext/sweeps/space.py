"""The search space of a sweep: which ``charrnn train`` options every trial
gets as they are (``[fixed]``) and which ones the sampler chooses
(``[search]``, one distribution per option).

A space comes from a TOML file or from a dict of the same shape::

    [fixed]
    text = "data/my_text.txt"      # omitted: the built-in corpus
    max-minutes = 5

    [search]
    hidden = { choice = [64, 128, 256] }
    eta = { loguniform = [1e-3, 1e-1] }
    layers = { int = [1, 3] }
    dropout = { uniform = [0.0, 0.3] }

Keys are the option names of :data:`charrnn_ext.config.OPTIONS`, spelt with
dashes (as on the command line) or underscores. Everything is checked here,
before any trial starts: a value or range end that the option's
:meth:`~charrnn_ext.config.Option.check` refuses, an unknown option or
distribution, an option a sweep sets itself. The messages name the key.
This module knows nothing of Optuna: :meth:`Dist.to_optuna` imports it
when called.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import OPTIONS, Option
from ..fileio import UnreadableFile, printable, read_text_file

__all__ = ["DISTRIBUTIONS", "Dist", "Space", "SpaceError", "load_space", "parse_space", "read_space_text"]

#: The distributions a [search] entry can name, with what they take.
DISTRIBUTIONS = {
    "choice": "a list of values",
    "uniform": "[low, high]",
    "loguniform": "[low, high] with low > 0",
    "int": "[low, high] of integers",
}

#: Options a space may not name, and why.
_NOT_IN_A_SPACE = {
    "out": "the sweep gives every trial its own run folder",
    "resume": "a sweep is continued with charrnn sweep --resume",
    "stop_after": "a trial must run to its end to be compared with the others",
    "threads": "the threads of every trial are set with --threads-per-trial",
    "init_from": "the trials of a sweep start from random weights",
}

#: Options that may be fixed but not searched, and why.
_FIXED_ONLY = {"text": "validation losses on different texts cannot be compared"}

#: The options of a charrnn train run.
_TRAIN_OPTIONS = {o.name: o for o in OPTIONS if o.group in ("model", "train", "run")}

#: A grid larger than this is surely a mistake (an int range meant as a choice).
MAX_GRID = 100_000


class SpaceError(ValueError):
    """A space that cannot be swept; the message names the file and the key."""


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


@dataclass(frozen=True)
class Dist:
    """One searched option: ``kind`` is a key of :data:`DISTRIBUTIONS`;
    ``values`` the choices, or (low, high) for the ranges (both ends included)."""

    kind: str
    values: tuple[Any, ...]

    def to_optuna(self) -> Any:
        """The Optuna distribution (imports Optuna)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.values)
        low, high = self.values
        if self.kind == "int":
            return IntDistribution(int(low), int(high))
        return FloatDistribution(float(low), float(high), log=self.kind == "loguniform")

    def grid_size(self) -> int | None:
        """How many values :meth:`grid_values` lists, counted without listing them."""
        if self.kind == "choice":
            return len(self.values)
        if self.kind == "int":
            return int(self.values[1]) - int(self.values[0]) + 1
        return None

    def grid_values(self) -> list[Any] | None:
        """Every value of a choice or an int range; None for the continuous ranges."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.values[0]), int(self.values[1]) + 1))
        return None

    def as_toml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.values))
        low, high = self.values
        return {
            "int": f"an integer in [{low}, {high}]",
            "uniform": f"uniform in [{low:g}, {high:g}]",
            "loguniform": f"log-uniform in [{low:g}, {high:g}]",
        }[self.kind]


@dataclass(frozen=True)
class Space:
    """A checked space. ``fixed`` and ``search`` are keyed by option name
    (underscores); values are as :meth:`Option.check` returns them."""

    fixed: dict[str, Any]
    search: dict[str, Dist]
    source: str = "space"
    spelling: dict[str, str] = field(default_factory=dict, compare=False)  # option name -> key as written

    def key(self, name: str) -> str:
        """How the space's author wrote an option (for messages and tables)."""
        return self.spelling.get(name, name.replace("_", "-"))

    @property
    def text(self) -> str | None:
        """The training text's path as written, or None for the built-in corpus."""
        return self.fixed.get("text")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as the dict (or TOML) it can be read back from."""
        return {
            "fixed": {self.key(k): v for k, v in self.fixed.items()},
            "search": {self.key(k): d.as_toml() for k, d in self.search.items()},
        }

    def to_toml(self) -> str:
        """The space as a TOML file."""
        d = self.to_dict()
        lines = ["[fixed]"] + [f"{k} = {_toml_value(v)}" for k, v in d["fixed"].items()]
        lines += ["", "[search]"]
        for k, spec in d["search"].items():
            ((kind, values),) = spec.items()
            lines.append(f"{k} = {{ {kind} = {_toml_value(values)} }}")
        return "\n".join(lines) + "\n"

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions by option name (imports Optuna)."""
        return {name: d.to_optuna() for name, d in self.search.items()}

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every searched option, for an exhaustive search.
        The points are counted before any value is listed, so that a huge
        int range is refused without the memory to list it."""
        size = 1
        for name, d in self.search.items():
            count = d.grid_size()
            if count is None:
                raise SpaceError(
                    f"{self.source}: [search] {self.key(name)}: a grid search takes only choice and int "
                    f"distributions, not {d.kind}"
                )
            size *= count
            if size > MAX_GRID:
                raise SpaceError(
                    f"{self.source}: the grid has more than {MAX_GRID:,} points ([search] {self.key(name)} alone "
                    f"has {count:,}); use fewer values or another sampler"
                )
        return {name: d.grid_values() or [] for name, d in self.search.items()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # a JSON string is a TOML basic string, once DEL (which TOML wants escaped) is
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _fail(source: str, where: str, message: str) -> SpaceError:
    """The error of a key: control and format characters of the key (NUL, a
    right-to-left override) are escaped, never echoed raw."""
    return SpaceError(f"{printable(source, 300)}: {printable(where, 120)}: {printable(message, 2000)}")


def _option_for(source: str, table: str, key: Any) -> Option:
    if not isinstance(key, str):
        raise _fail(source, f"[{table}]", f"option names are strings, got {key!r}")
    name = key.replace("-", "_")
    where = f"[{table}] {key}"
    if name in _NOT_IN_A_SPACE:
        raise _fail(source, where, f"cannot be set in a space: {_NOT_IN_A_SPACE[name]}")
    if name not in _TRAIN_OPTIONS:
        raise _fail(
            source,
            where,
            "unknown option; a space names charrnn train options: "
            + ", ".join(sorted(k.replace("_", "-") for k in _TRAIN_OPTIONS if k not in _NOT_IN_A_SPACE)),
        )
    if table == "search" and name in _FIXED_ONLY:
        raise _fail(source, where, f"can only be fixed: {_FIXED_ONLY[name]}")
    return _TRAIN_OPTIONS[name]


def _checked(source: str, where: str, o: Option, value: Any) -> Any:
    if not _scalar(value):
        raise _fail(source, where, f"expected a single value, got {type(value).__name__} {value!r}")
    try:
        out = o.check(value)
    except (TypeError, ValueError) as exc:
        raise _fail(source, where, str(exc)) from None
    if out is None:
        raise _fail(source, where, "needs a value")
    return out


def _parse_dist(source: str, key: str, o: Option, spec: Any) -> Dist:
    where = f"[search] {key}"
    kinds = ", ".join(f"{k} = {v}" for k, v in DISTRIBUTIONS.items())
    if not isinstance(spec, Mapping):
        raise _fail(
            source,
            where,
            f"expected a distribution such as {{ choice = [...] }} ({kinds}), got {spec!r}; "
            f"a value for every trial belongs in [fixed]",
        )
    if len(spec) != 1:
        raise _fail(source, where, f"expected exactly one distribution ({kinds}), got {sorted(spec) or 'none'}")
    kind, values = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise _fail(source, where, f"unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    where = f"[search] {key}.{kind}"
    if not isinstance(values, list):
        raise _fail(source, where, f"expected {DISTRIBUTIONS[kind]}, got {values!r}")
    if kind == "choice":
        if not values:
            raise _fail(source, where, "needs at least one value")
        checked = tuple(_checked(source, f"{where}[{i}]", o, v) for i, v in enumerate(values))
        if len(set(checked)) != len(checked):
            raise _fail(source, where, f"lists a value twice: {values!r}")
        return Dist(kind, checked)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _fail(source, where, f"expected {DISTRIBUTIONS[kind]}, got {values!r}")
    if o.kind is str:
        raise _fail(source, where, f"{o.name} takes words, not numbers: use choice = [...]")
    if o.kind is int and kind != "int":
        raise _fail(source, where, f"{o.name} takes integers: use int = [low, high] or choice = [...]")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise _fail(source, where, f"expected {DISTRIBUTIONS[kind]}, got {values!r}")
    if not all(math.isfinite(v) for v in values):
        raise _fail(source, where, f"the range must be finite, got {values!r}")
    low, high = values
    if not low < high:
        raise _fail(source, where, f"low must be below high, got {values!r} (a single value belongs in [fixed])")
    if kind == "loguniform" and low <= 0:
        raise _fail(source, where, f"a log-uniform range needs low > 0, got {low!r}")
    checked = (_checked(source, f"{where}[0]", o, low), _checked(source, f"{where}[1]", o, high))
    return Dist(kind, checked)


def parse_space(data: Mapping[str, Any], source: str = "space") -> Space:
    """Check a space given as a dict of [fixed] and [search] tables;
    :class:`SpaceError` names ``source`` and the offending key."""
    if not isinstance(data, Mapping):
        raise SpaceError(f"{source}: expected a table with [fixed] and [search], got {type(data).__name__}")
    unknown = [k for k in data if k not in ("fixed", "search")]
    if unknown:
        raise _fail(source, f"[{unknown[0]}]", "unknown table; a space has [fixed] and [search]")
    tables = {}
    for table in ("fixed", "search"):
        value = data.get(table, {})
        if not isinstance(value, Mapping):
            raise SpaceError(f"{source}: [{table}]: expected a table, got {value!r}")
        tables[table] = value
    fixed: dict[str, Any] = {}
    search: dict[str, Dist] = {}
    spelling: dict[str, str] = {}
    for table, entries in tables.items():
        for key, value in entries.items():
            o = _option_for(source, table, key)
            if o.name in spelling:
                raise _fail(source, f"[{table}] {key}", f"{o.name} is already set as {spelling[o.name]!r}")
            spelling[o.name] = key
            if table == "fixed":
                fixed[o.name] = _checked(source, f"[fixed] {key}", o, value)
            else:
                search[o.name] = _parse_dist(source, key, o, value)
    if not search:
        raise SpaceError(f"{source}: [search]: names no option; a sweep needs at least one searched option")
    lengths = [spelling[n] for n in ("steps", "epochs") if n in spelling]
    if len(lengths) > 1:
        raise _fail(source, lengths[1], f"a run's length is given by {lengths[0]} already; name only one of them")
    if "val_fraction" in fixed and fixed["val_fraction"] == 0:
        raise _fail(
            source,
            f"[fixed] {spelling['val_fraction']}",
            "a sweep compares validation losses, so it needs val-fraction > 0",
        )
    if "val_fraction" in search and 0 in search["val_fraction"].values:
        raise _fail(
            source,
            f"[search] {spelling['val_fraction']}",
            "a sweep compares validation losses, so it needs val-fraction > 0",
        )
    return Space(fixed=fixed, search=search, source=source, spelling=spelling)


#: A space file is a few lines; anything much larger is not one.
MAX_SPACE_BYTES = 1 << 20
#: The most dotted parts one key may have, and the deepest nesting of arrays and
#: tables: a space needs 2 and 3. tomllib's time and memory grow with the square of
#: the parts of a dotted key (a 347 KB file with a 50,000-part key took 9 GB), so
#: they are counted before it parses anything.
MAX_KEY_PARTS = 16
MAX_NESTING = 16

# What matters for counting key parts and nesting, outside strings and comments.
_TOKENS = re.compile(r"\"\"\"|'''|[\"'#\[\]{}\n,=.]")
_ENDS = {
    '"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""', re.S),
    "'''": re.compile(r"(?:[^']|'(?!''))*'''", re.S),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"'),
    "'": re.compile(r"[^'\n]*'"),
    "#": re.compile(r"[^\n]*"),
}


def check_toml_shape(text: str, source: str) -> None:
    """Refuse, in one linear pass, a TOML text with a key of more than
    :data:`MAX_KEY_PARTS` dotted parts or nested more than
    :data:`MAX_NESTING` deep, before tomllib parses it. Strings and comments
    are skipped; a malformed one is left for tomllib to report."""
    depth = dots = 0
    pos = 0
    while (m := _TOKENS.search(text, pos)) is not None:
        token, pos = m.group(), m.end()
        if token in _ENDS:
            end = _ENDS[token].match(text, pos)
            if end is None:
                return  # an unterminated string: tomllib says where
            pos = end.end()
        elif token in "[{":
            depth, dots = depth + 1, 0
            if depth > MAX_NESTING:
                line = text.count("\n", 0, pos) + 1
                raise SpaceError(f"{source}: line {line}: nested more than {MAX_NESTING} deep; a space is two tables")
        elif token in "]}":
            depth, dots = max(0, depth - 1), 0
        elif token == ".":
            dots += 1
            if dots >= MAX_KEY_PARTS:
                line = text.count("\n", 0, pos) + 1
                raise SpaceError(
                    f"{source}: line {line}: a dotted key of more than {MAX_KEY_PARTS} parts; a space's keys "
                    f"are option names"
                )
        else:
            dots = 0


def load_space(path: str | os.PathLike[str]) -> Space:
    """Read and check a TOML space file."""
    p = Path(path)
    if not p.exists():
        raise SpaceError(f"space file not found: {p}")
    if p.is_dir():
        raise SpaceError(f"expected a TOML space file but got a directory: {p}")
    if not p.is_file():
        raise SpaceError(f"{p}: not a regular file (a device or a pipe?); a space is a TOML file")
    if p.stat().st_size > MAX_SPACE_BYTES:
        raise SpaceError(
            f"{p}: {p.stat().st_size:,} bytes is far more than a space file needs (at most {MAX_SPACE_BYTES:,})"
        )
    try:
        text = read_text_file(p, MAX_SPACE_BYTES, "space file")
    except UnreadableFile as exc:
        raise SpaceError(f"space file not found: {p}" if exc.missing else str(exc)) from None
    check_toml_shape(text, str(p))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{p}: not valid TOML ({exc})") from None
    except RecursionError:
        raise SpaceError(f"{p}: nested too deeply to be a space file") from None
    return parse_space(data, source=str(p))


def read_space_text(space: Space) -> tuple[str, str] | None:
    """(absolute path, text) of the space's training text, or None for the
    built-in corpus; a text that cannot be read raises SpaceError."""
    if space.text is None:
        return None
    from ..data import load_text

    path = os.path.abspath(space.text)
    try:
        return path, load_text(path)
    except (OSError, ValueError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail(space.source, f"[fixed] {space.key('text')}", message) from None
