"""The price table: shipped prices, longest-prefix matching, user overrides, and clear format errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil_collector.pricing import ModelPrice, PriceFileError, PriceTable


@pytest.fixture(scope="module")
def shipped() -> PriceTable:
    return PriceTable.load()


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("openai/GPT-4o", "gpt-4o"),
        ("mistral-large-2411", "mistral-large"),
        ("chatgpt-4o-latest", "gpt-4o"),
        ("Meta-Llama-3.1-8B-Instruct-Turbo", "llama-3.1-8b"),
    ],
)
def test_versions_and_aliases_use_their_family_price(shipped: PriceTable, model: str, family: str) -> None:
    assert shipped.price(model) == shipped.price(family)
    assert shipped.price(model) is not None


def test_a_listed_dated_version_beats_its_family(shipped: PriceTable) -> None:
    assert shipped.price("gpt-4o-2024-05-13") == ModelPrice(5.0, 15.0)
    assert shipped.price("gpt-4o-2024-11-20") == ModelPrice(2.5, 10.0)


@pytest.mark.parametrize("model", ["gpt-4.7", "gpt-4oz", "acme-local-7b", "", "   "])
def test_prefixes_match_at_a_boundary_only_and_unknowns_cost_none(shipped: PriceTable, model: str) -> None:
    assert shipped.price(model) is None
    assert shipped.cost_usd(model, 1000, 1000) is None


def test_cost_is_per_million_tokens(shipped: PriceTable) -> None:
    # gpt-4o: 2.50 in / 10.00 out per million.
    assert shipped.cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert shipped.cost_usd("gpt-4o", 2_000, 500) == pytest.approx(0.005 + 0.005)
    assert shipped.cost_usd("gpt-4o", 0, 0) == 0.0


def test_negative_tokens_are_refused(shipped: PriceTable) -> None:
    with pytest.raises(ValueError, match="token counts"):
        shipped.cost_usd("gpt-4o", -1, 0)


def test_user_file_overrides_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  gpt-4o: {input: 1.0, output: 2.0}\n"
        "  acme-local: {input: 0, output: 0}\n"
        "aliases:\n"
        "  chatgpt-4o-latest: acme-local\n"
    )
    table = PriceTable.load(path)
    assert table.price("gpt-4o-2024-08-06") == ModelPrice(1.0, 2.0)
    assert table.cost_usd("acme-local-7b", 10, 10) == 0.0  # priced at zero: free, not unknown
    assert table.price("chatgpt-4o-latest") == ModelPrice(0.0, 0.0)
    assert table.price("claude-3-haiku") == ModelPrice(0.25, 1.25)  # shipped entries remain


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("models: [gpt-4o]\n", "'models' must be a mapping"),
        ("models:\n  x: {input: 1}\n", "needs exactly 'input' and 'output'"),
        ("models:\n  x: {input: -1, output: 1}\n", "must be a number >= 0"),
        ("models:\n  x: {input: one, output: 1}\n", "must be a number >= 0"),
        ("aliases:\n  y: nowhere\n", "aliases point at models without a price: y -> nowhere"),
        ("prices: {}\n", "unknown top-level keys"),
        ("version: 2\n", "unsupported version"),
        ("models: {x: [\n", "not valid YAML"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(content)
    with pytest.raises(PriceFileError, match=message):
        PriceTable.load(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot read price file"):
        PriceTable.load(tmp_path / "absent.yaml")
