"""Bounded, never-raising serialization of arbitrary values."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from veil._serialize import MAX_ITEMS, TRUNCATION_MARKER, dumps, truncate


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class User(BaseModel):
    name: str
    tags: list[str]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadModel:
    def model_dump(self) -> dict[str, object]:
        raise ValueError("broken")


def test_common_types() -> None:
    value = {
        "s": "text",
        "n": 1,
        "f": 1.5,
        "nan": float("nan"),
        "none": None,
        "list": [1, (2, 3)],
        "set": {4},
        "enum": Color.RED,
        "when": datetime.date(2026, 1, 2),
        "model": User(name="a", tags=["x"]),
        "dc": Point(1, 2),
        "blob": b"\x00" * 10,
        7: "int key",
    }
    assert json.loads(dumps(value, 10_000)) == {
        "s": "text",
        "n": 1,
        "f": 1.5,
        "nan": "nan",
        "none": None,
        "list": [1, [2, 3]],
        "set": [4],
        "enum": "red",
        "when": "2026-01-02",
        "model": {"name": "a", "tags": ["x"]},
        "dc": {"x": 1, "y": 2},
        "blob": "<bytes: 10 bytes>",
        "7": "int key",
    }


def test_objects_without_json_form_become_bounded_descriptions() -> None:
    assert json.loads(dumps([BadRepr(), BadModel()], 1000)) == [
        "<BadRepr object>",
        "<unserializable BadModel>",
    ]

    class Long:
        def __repr__(self) -> str:
            return "L" * 10_000

    assert json.loads(dumps(Long(), 100_000)).endswith(TRUNCATION_MARKER)
    assert len(json.loads(dumps(Long(), 100_000))) < 400


def test_cycles_and_huge_containers_are_bounded() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert "nested too deep" in dumps(cyclic, 10_000)
    big = list(range(MAX_ITEMS + 50))
    decoded = json.loads(dumps(big, 1_000_000))
    assert len(decoded) == MAX_ITEMS + 1
    assert decoded[-1] == "…50 more items"


def test_truncate_respects_utf8_byte_limit_and_marks_the_cut() -> None:
    text = "é" * 1000  # 2 bytes each
    cut = truncate(text, 101)
    assert cut.endswith(TRUNCATION_MARKER)
    assert len(cut.encode()) <= 101
    assert truncate("short", 100) == "short"


def test_lone_surrogates_become_encodable() -> None:
    assert truncate("a\ud800b" + "é", 100).encode("utf-8") == "a?bé".encode()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    ),
    st.integers(min_value=64, max_value=4096),
)
def test_dumps_never_raises_and_stays_within_the_limit(value: object, limit: int) -> None:
    text = dumps(value, limit)
    assert len(text.encode("utf-8")) <= limit
