"""``patient_data.fastjson``: orjson's speed, the standard library's (and so Django's
``JSONSerializer``'s) results, with and without orjson installed."""

from __future__ import annotations

import gc
import json
import math

import pytest
from django.core.signing import JSONSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_data import fastjson
from patient_data.bulk.sweep import _frozen_heap

pytestmark = pytest.mark.skipif(fastjson.orjson is None, reason="orjson not installed")

#: Every JSON value, and what ``json`` reads beyond strict JSON: NaN, infinities, integers
#: past 64 bits, lone surrogates, astral and non-ASCII characters.
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text()
    | st.text(st.characters(codec=None, categories=["Cs", "Co", "Lo", "So"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
#: JSON number literals as written by hand (and some that are not numbers).
NUMBERS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a, b) -> bool:
    """Equal values of equal types all the way down (``1 == 1.0 == True`` is not enough;
    NaN equals NaN, -0.0 is not 0.0); iterative, for values nested 1024 deep."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not ((math.isnan(x) and math.isnan(y)) or repr(x) == repr(y)):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def outcome(loads, text):
    try:
        return ("value", loads(text))
    except Exception as exc:  # noqa: BLE001 - the exception's type is the outcome
        return ("error", type(exc))


def assert_reads_like_json(text: str) -> None:
    expected, got = outcome(json.loads, text), outcome(fastjson.loads, text)
    assert expected[0] == got[0]
    if expected[0] == "error":
        assert got[1] is expected[1]
    else:
        assert same(got[1], expected[1])


@SETTINGS
@given(value=VALUES, ascii=st.booleans())
def test_loads_reads_what_json_writes_as_json_reads_it(value, ascii):
    assert_reads_like_json(json.dumps(value, ensure_ascii=ascii))


@SETTINGS
@given(value=VALUES)
def test_loads_reads_a_session_payload_as_djangos_json_serializer(value):
    # The sweep reads the latin-1 text of the stored bytes, as Django's serializer does;
    # a payload may hold UTF-8 (another writer) or Django's ASCII escapes.
    for payload in (
        json.dumps({"k": value}).encode("latin-1"),
        json.dumps({"k": value}, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ):
        text = payload.decode("latin-1")
        expected = outcome(JSONSerializer().loads, payload)
        got = outcome(fastjson.loads, text)
        assert expected[0] == got[0]
        assert same(got[1], expected[1]) if got[0] == "value" else got[1] is expected[1]


@SETTINGS
@given(number=NUMBERS)
def test_loads_reads_number_literals_as_json_does(number):
    assert_reads_like_json(number)
    assert_reads_like_json(f'{{"n":[{number}]}}')


@SETTINGS
@given(text=st.text(alphabet='{}[]":,.-+0123456789eEtruefalsnNI\\ \n\tuabcd\x00é😀'))
def test_loads_accepts_and_refuses_what_json_does(text):
    assert_reads_like_json(text)


@pytest.mark.parametrize(
    "text",
    [
        '"\\ud800"',
        '"\\udc00\\ud800"',
        '"\\ud83d\\ude00"',
        '"\ud800"',
        "[NaN, Infinity, -Infinity]",
        "1e400",
        "-1e400",
        "[1e-400]",
        "-0",
        "-0.0",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        '{"a": 1, "a": 2, "b": 3}',
        '"\x7f"',
        '"\x1f"',
        " {} ",
        "01",
        "[1,]",
        "",
        "[" * 1024 + "]" * 1024,
        "[" * 1025 + "]" * 1025,
        "[" * 5000 + "]" * 5000,
    ],
)
def test_loads_where_orjson_differs_from_json(text):
    assert_reads_like_json(text)


def test_without_orjson_it_is_the_standard_librarys(monkeypatch):
    monkeypatch.setattr(fastjson, "orjson", None)
    for text in ['{"a": [1, 2.5, "é"]}', "[NaN]", "123456789012345678901234567890", "{"]:
        assert_reads_like_json(text)


def test_the_sweep_sets_the_heap_aside_while_it_runs_and_gives_it_back():
    gc.unfreeze()
    threshold = gc.get_threshold()
    with _frozen_heap():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 50_000
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
    # A process that froze its heap itself keeps it frozen.
    gc.freeze()
    before = gc.get_freeze_count()
    try:
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()
