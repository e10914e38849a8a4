"""Model prices: USD cost of a GenAI call from its model name and token counts.

The collector ships ``data/prices.yaml`` (USD per million input and output tokens of common OpenAI,
Anthropic, Google, Mistral and Meta models); a user's file in the same format replaces or adds entries.
A model name is priced by the longest listed key that is a prefix of it ending at a boundary, so dated
versions ("gpt-4o-2024-08-06") use their family's price while "gpt-4o-mini" keeps its own. A model that
matches nothing has no cost (``None``), never a cost of 0: a dashboard must be able to tell "free" from
"unknown".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_SHIPPED = "prices.yaml"
# Characters that may follow a priced key inside a longer model name. "." is deliberately absent, so
# "gpt-4.1" is never priced as "gpt-4"; neither is a letter, so "gpt-4o" is never priced as "gpt-4".
_BOUNDARIES = frozenset("-_:@")
# Distinct model names seen by one process are few; the bound only protects against garbage input.
_CACHE_LIMIT = 4096
_TOKENS_PER_UNIT = 1_000_000


class PriceFileError(ValueError):
    """A price file is missing, is not valid YAML, or does not follow the format."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input: float
    output: float


def normalize_model(model: str) -> str:
    """The lookup form of a model name: trimmed, lower case, its last path segment.

    ("openai/GPT-4o" -> "gpt-4o").
    """
    return model.strip().lower().rsplit("/", 1)[-1]


class PriceTable:
    """Prices of models by name; thread-safe, lookups cached.

    Args:
        prices: normalized model key -> price.
        aliases: normalized alias key -> a key of ``prices``; an alias is matched like a model key.
    """

    def __init__(self, prices: Mapping[str, ModelPrice], aliases: Mapping[str, str] | None = None) -> None:
        aliases = dict(aliases or {})
        missing = sorted(f"{alias} -> {target}" for alias, target in aliases.items() if target not in prices)
        if missing:
            raise PriceFileError(f"aliases point at models without a price: {', '.join(missing)}")
        self._entries: dict[str, ModelPrice] = {key: prices[target] for key, target in aliases.items()}
        self._entries.update(prices)
        self._cache: dict[str, ModelPrice | None] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into the receiver's worker processes (they price the calls they flatten): the entries
        # travel, the lock and the lookup cache are rebuilt there.
        return (PriceTable, (self._entries,))

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The shipped prices, overridden and extended by the file at ``path`` when one is given.

        Raises:
            PriceFileError: ``path`` (or the shipped file) cannot be read or does not follow the format.
        """
        shipped = resources.files("veil_collector").joinpath("data", _SHIPPED).read_text(encoding="utf-8")
        prices, aliases = _parse(shipped, source=f"veil_collector/data/{_SHIPPED}")
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise PriceFileError(f"cannot read price file {path}: {exc.strerror or exc}") from exc
            user_prices, user_aliases = _parse(text, source=str(path))
            # A user's model entry beats a shipped alias of the same name, and vice versa.
            for key in user_prices:
                aliases.pop(key, None)
            for key in user_aliases:
                prices.pop(key, None)
            prices.update(user_prices)
            aliases.update(user_aliases)
        return cls(prices, aliases)

    def price(self, model: str) -> ModelPrice | None:
        """The price that applies to ``model``, or None when no listed key matches it."""
        key = normalize_model(model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._match(key)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD cost of one call, or None when the model has no price (unknown is not free).

        Raises:
            ValueError: a token count is negative.
        """
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got input={input_tokens} output={output_tokens}")
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / _TOKENS_PER_UNIT

    def _match(self, key: str) -> ModelPrice | None:
        if not key:
            return None
        # Walk the name's boundary positions from the longest prefix down; names are short.
        for end in range(len(key), 0, -1):
            if end < len(key) and key[end] not in _BOUNDARIES:
                continue
            price = self._entries.get(key[:end])
            if price is not None:
                return price
        return None


def _parse(text: str, *, source: str) -> tuple[dict[str, ModelPrice], dict[str, str]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceFileError(f"{source} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}, {}
    if not isinstance(doc, dict):
        raise PriceFileError(f"{source}: expected a mapping of models and aliases, got {type(doc).__name__}")
    unknown = set(doc) - {"version", "models", "aliases"}
    if unknown:
        raise PriceFileError(f"{source}: unknown top-level keys {sorted(unknown)}; expected models, aliases")
    if doc.get("version", 1) != 1:
        raise PriceFileError(f"{source}: unsupported version {doc['version']!r}; expected version 1")
    models = _mapping(doc.get("models"), source, "models")
    aliases = _mapping(doc.get("aliases"), source, "aliases")
    prices = {normalize_model(str(name)): _price(entry, source, str(name)) for name, entry in models.items()}
    alias_map = {}
    for name, target in aliases.items():
        if not isinstance(target, str) or not target.strip():
            raise PriceFileError(f"{source}: alias {name!r} must name a model, got {target!r}")
        alias_map[normalize_model(str(name))] = normalize_model(target)
    return prices, alias_map


def _mapping(value: Any, source: str, field: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PriceFileError(f"{source}: '{field}' must be a mapping, got {type(value).__name__}")
    return value


def _price(entry: Any, source: str, name: str) -> ModelPrice:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise PriceFileError(
            f"{source}: model {name!r} needs exactly 'input' and 'output' (USD per 1M tokens), got {entry!r}"
        )
    values = []
    for side in ("input", "output"):
        value = entry[side]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PriceFileError(
                f"{source}: model {name!r} {side} price must be a number >= 0, not {value!r}"
            )
        values.append(float(value))
    return ModelPrice(*values)
