"""Expand a panel's SQL exactly as Grafana and the ClickHouse plugin do before ClickHouse sees it.

Three stages, in the order they run for a real panel query (standards.md §4.3):

1. Frontend, ``CHDatasource.applyConditionalAll`` (clickhouse-datasource ``src/data/CHDatasource.ts``):
   ``$__conditionalAll(cond, $var)`` is scanned right to left; its arguments are split on commas at
   bracket depth 1 (``getMacroArgs``); the call becomes ``1=1`` when the variable's current value,
   JavaScript-``toString``-ed, is ``''`` or ``'$__all'``, else ``cond``. The call text is replaced with
   JavaScript ``String.replace`` (first occurrence, ``$&``-style patterns honoured in the replacement).
2. Frontend, ``templateSrv.replace`` with the plugin's default formatter: ``$var``, ``${var}``,
   ``${var:format}`` and ``[[var]]``; "All" on a multi-value variable without a custom all value means
   every option; arrays default to ``'a','b'``; unknown names (``$__interval_s``) are left alone.
3. Backend, sqlds ``interpolate`` with the plugin's macros (``pkg/macros/macros.go``): ``\\$__name\\b``
   followed by an optional bracketed argument list, arguments split on depth-1 commas and trimmed.

Only the backend macros Veil's dashboards use are implemented, one function each; any other ``$__``
macro left in the SQL raises, so a dashboard cannot start using a macro these tests do not model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

ALL = "$__all"


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's state as Grafana holds it.

    Args:
        name: the variable name.
        current: the selected value: a string, or a list for a multi-value variable. ``"$__all"`` (or
            ``["$__all"]``) is Grafana's "All" option.
        options: the values the variable offers (what "All" expands to).
    """

    name: str
    current: str | Sequence[str]
    options: Sequence[str] = ()

    def is_all(self) -> bool:
        return self.current == ALL or (not isinstance(self.current, str) and list(self.current) == [ALL])

    def value(self) -> str | list[str]:
        """The value templateSrv interpolates: every option for "All", else the selection."""
        if self.is_all():
            return list(self.options)
        return self.current if isinstance(self.current, str) else list(self.current)


@dataclass(frozen=True)
class TimeRange:
    """The panel's time range and Grafana's computed interval."""

    start: datetime
    end: datetime
    interval_s: float


def expand(sql: str, variables: Sequence[Variable], time_range: TimeRange) -> str:
    """The SQL ClickHouse receives for ``sql`` under these variables and this time range."""
    sql = apply_conditional_all(sql, variables)
    sql = interpolate_variables(sql, variables)
    return expand_backend_macros(sql, time_range)


# ---------------------------------------------------------------------------------------------------------
# 1. $__conditionalAll (frontend)

_CONDITIONAL_ALL = "$__conditionalAll("
# The plugin's regex: the name in ${name} or $name (JavaScript \w is ASCII only).
_CONDITIONAL_VAR = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", re.ASCII)


def apply_conditional_all(raw: str, variables: Sequence[Variable]) -> str:
    """``CHDatasource.applyConditionalAll``: each call becomes ``cond`` or ``1=1``."""
    if not raw:
        return raw
    by_name = {v.name: v for v in variables}
    index = raw.rfind(_CONDITIONAL_ALL)
    while index != -1:
        params = _get_macro_args(raw, index + len(_CONDITIONAL_ALL) - 1)
        if len(params) != 2:
            return raw  # the plugin gives up and sends the query as it is
        phrase = params[0]
        match = _CONDITIONAL_VAR.search(params[1].strip())
        if match:
            variable = by_name.get(match.group(0))
            if variable is not None and _js_to_string(variable.current) in ("", ALL):
                phrase = "1=1"
        replaced = _js_replace_first(raw, f"{_CONDITIONAL_ALL}{params[0]},{params[1]})", phrase)
        if replaced == raw:
            raise AssertionError(f"$__conditionalAll did not change the query: {raw!r}")
        raw = replaced
        index = raw.rfind(_CONDITIONAL_ALL)
    return raw


def _get_macro_args(query: str, args_index: int) -> list[str]:
    """``CHDatasource.getMacroArgs``: arguments of the call whose ``(`` is at ``args_index``."""
    args: list[str] = []
    depth = 0
    last_end = 1
    tail = query[args_index:]
    for match in re.finditer(r"\(|\)|,", tail):
        token, after = match.group(0), match.end()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        if token == "," and depth == 1:
            args.append(tail[last_end : after - 1])
            last_end = after
        if depth == 0:
            args.append(tail[last_end : after - 1])
            return args
    return []


def _js_to_string(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


def _js_replace_first(text: str, pattern: str, replacement: str) -> str:
    """JavaScript ``text.replace(pattern, replacement)`` for a string pattern."""
    at = text.find(pattern)
    if at == -1:
        return text
    out: list[str] = []
    i = 0
    while i < len(replacement):
        char = replacement[i]
        nxt = replacement[i + 1] if i + 1 < len(replacement) else ""
        if char == "$" and nxt in ("$", "&", "`", "'"):
            out.append({"$": "$", "&": pattern, "`": text[:at], "'": text[at + len(pattern) :]}[nxt])
            i += 2
            continue
        out.append(char)
        i += 1
    return text[:at] + "".join(out) + text[at + len(pattern) :]


# ---------------------------------------------------------------------------------------------------------
# 2. Template variables (frontend templateSrv.replace)

_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}", re.ASCII
)


def _format_singlequote(value: str | list[str]) -> str:
    if isinstance(value, list):
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in value)
    return "'" + value.replace("'", "\\'") + "'"


def _format_raw(value: str | list[str]) -> str:
    return ",".join(value) if isinstance(value, list) else value


def _format_datasource_default(value: str | list[str]) -> str:
    # CHDatasource.format: arrays become 'a','b' (no escaping); anything else is used raw.
    return "'" + "','".join(value) + "'" if isinstance(value, list) else value


_FORMATS: Mapping[str, Callable[[str | list[str]], str]] = {
    "singlequote": _format_singlequote,
    "raw": _format_raw,
}


def interpolate_variables(sql: str, variables: Sequence[Variable]) -> str:
    """``templateSrv.replace(sql, scopedVars, datasource.format)``."""
    by_name = {v.name: v for v in variables}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        variable = by_name.get(name)
        if variable is None:
            return match.group(0)
        if match.group(5):
            raise AssertionError(f"field paths are not modelled: {match.group(0)}")
        if fmt is None:
            return _format_datasource_default(variable.value())
        if fmt not in _FORMATS:
            raise AssertionError(f"variable format {fmt!r} is not modelled: {match.group(0)}")
        return _FORMATS[fmt](variable.value())

    return _VARIABLE.sub(replace, sql)


# ---------------------------------------------------------------------------------------------------------
# 3. Backend macros (sqlds interpolate + the plugin's pkg/macros)


def _to_datetime(moment: datetime) -> str:
    return f"toDateTime({math.floor(moment.timestamp())})"


def macro_time_filter(args: list[str], time_range: TimeRange) -> str:
    """``$__timeFilter(col)``: ``col >= toDateTime(from_s) AND col <= toDateTime(to_s)``."""
    if len(args) != 1:
        raise ValueError(f"$__timeFilter: expected 1 argument, received {len(args)}")
    column = args[0]
    return f"{column} >= {_to_datetime(time_range.start)} AND {column} <= {_to_datetime(time_range.end)}"


def macro_interval_s(args: list[str], time_range: TimeRange) -> str:
    """``$__interval_s``: the interval in whole seconds, at least 1."""
    return str(int(max(time_range.interval_s, 1)))


BACKEND_MACROS: Mapping[str, Callable[[list[str], TimeRange], str]] = {
    "timeFilter": macro_time_filter,
    "interval_s": macro_interval_s,
}


def _parse_args(text: str) -> tuple[list[str] | None, int]:
    """sqlds ``parseArgs``: (args, consumed length); (None, 0) without a bracket; (None, -1) unclosed."""
    if not text.startswith("("):
        return None, 0
    args: list[str] = []
    depth = 0
    current: list[str] = []
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    return None, -1


def expand_backend_macros(sql: str, time_range: TimeRange) -> str:
    """sqlds ``interpolate``: replace every occurrence of each registered macro."""
    for name, macro in BACKEND_MACROS.items():
        calls = []
        for match in re.finditer(rf"\$__{name}\b", sql, re.ASCII):
            args, length = _parse_args(sql[match.end() :])
            if length < 0:
                raise ValueError(f"$__{name}: missing close bracket")
            calls.append((sql[match.start() : match.end() + length], args or []))
        # Like sqlds: matches are found first, then each call's text is replaced everywhere.
        for full, args in calls:
            sql = sql.replace(full, macro(args, time_range))
    leftover = re.search(r"\$__\w+", sql, re.ASCII)
    if leftover:
        raise AssertionError(f"unexpanded macro {leftover.group(0)} in: {sql}")
    return sql
