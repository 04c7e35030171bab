"""The standard library's ``json.loads``, computed by orjson where it agrees.

The bulk sweep parses the JSON of every session that may hold patient data; orjson
(optional, ``requirements.txt``) does it several times faster. It is used only where its
result is the standard library's: :func:`loads` equals ``json.loads`` (what Django's
``JSONSerializer`` reads). orjson refuses what ``json`` accepts beyond strict JSON (``NaN``,
``Infinity``, numbers out of the float range, lone surrogates, nesting deeper than 1024): on
any error the text goes to ``json.loads``. Before Python 3.12 ``json.loads`` itself fails
somewhat under 1,000 levels (its limit counts the caller's frames), so there a text with over
500 brackets goes to it. orjson reads integers past 64 bits as floats without an error, so a
text with a run of 19 or more ASCII digits (anywhere, strings included) goes to
``json.loads`` too.

Without orjson it is the standard library's call.
"""

from __future__ import annotations

import json
import sys
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests with the module hidden
    orjson = None

#: Digits as zeros: a text holds an integer orjson might read past 64 bits (u64 has at most
#: 20 digits) only if its translation holds ``LONG_RUN`` (a C loop, faster than a regex).
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
LONG_RUN = b"0" * 19
#: Python < 3.12: ``json.loads`` counts each level of nesting against the interpreter's
#: recursion limit (with its caller's frames: it fails some depth under 1,000), orjson does
#: not. There a text with more brackets than this, which could nest that deep, goes to
#: ``json.loads`` (``str.count``: a C loop).
DEEP = None if sys.version_info >= (3, 12) else 500


def loads(text: str) -> Any:
    """``json.loads(text)``: the same value, or the same exception."""
    if orjson is None or (DEEP is not None and text.count("[") + text.count("{") > DEEP):
        return json.loads(text)
    # Lone surrogates pass as bytes that are no UTF-8: orjson refuses them.
    data = text.encode("utf-8", "surrogatepass")
    if LONG_RUN in data.translate(DIGITS_AS_ZERO):
        return json.loads(text)
    try:
        return orjson.loads(data)
    except Exception:  # noqa: BLE001 - what orjson refuses, json decides
        return json.loads(text)
