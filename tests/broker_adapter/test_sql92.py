"""SQL92 filters (`dledger.broker_adapter.sql92`): examples of RocketMQ's semantics, parse errors with their
column, and a property test against a straightforward evaluator of generated expression trees."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.broker_adapter.sql92 import SqlError, parse

EXAMPLES = [
    ("a > 5", {"a": "10"}, True),
    ("a > 5", {"a": "3"}, False),
    ("a > 5", {}, False),  # absent: unknown
    ("NOT (a > 5)", {}, False),  # NOT unknown is unknown
    ("a > 5", {"a": "abc"}, False),  # does not convert: no match
    ("a > 1", {"a": "2.5"}, False),  # an integer literal reads the property as a 64-bit integer
    ("a > 1.5", {"a": "2"}, True),
    ("a = 1.0", {"a": "1"}, True),
    ("a = 'x'", {"a": "x"}, True),
    ("a <> 'x'", {"a": "y"}, True),
    ("a <> 'x'", {}, False),
    ("a = TRUE", {"a": "TRUE"}, True),
    ("a = FALSE", {"a": "yes"}, True),  # anything but "true" (any case) reads as false
    ("a IN ('x', 'it''s')", {"a": "it's"}, True),
    ("a NOT IN ('x')", {}, False),
    ("a BETWEEN 1 AND 3", {"a": "3"}, True),
    ("a NOT BETWEEN 1 AND 3", {"a": "4"}, True),
    ("a IS NULL", {}, True),
    ("a IS NOT NULL", {"a": ""}, True),
    ("a > 5 OR b = 'x'", {"b": "x"}, True),  # unknown OR true
    ("a > 5 AND b = 'x'", {"b": "y"}, False),
    ("TRUE", {}, True),
    ("NULL", {}, False),
    ("a = 1 OR b = 1 AND c = 1", {"a": "1", "b": "0"}, True),  # AND binds tighter than OR
    ("(a = 1 OR b = 1) AND c = 1", {"a": "1", "b": "0"}, False),
    ("TAGS = 'A' and NOT (x >= -2)", {"TAGS": "A", "x": "-3"}, True),  # keywords in any case
    ("a > b", {"a": "2.5", "b": "10"}, False),  # two strings compare as doubles
    ("TRUE OR a > 1", {"a": "abc"}, True),  # evaluation stops at TRUE: the failed conversion is never made
    ("a > 1 OR TRUE", {"a": "abc"}, False),  # it is made first: no match
    ("FALSE AND a > 1", {"a": "abc"}, False),
]


@pytest.mark.parametrize(("text", "props", "want"), EXAMPLES)
def test_rocketmq_semantics(text: str, props: dict[str, str], want: bool) -> None:
    assert parse(text).matches(props) is want


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("a >", 4),
        ("a", 1),
        ("a > 1 AND b", 11),
        ("a > 'x'", 5),
        ("a = NULL", 5),
        ("a BETWEEN 3 AND 1", 17),
        ("1 IN ('a')", 1),
        ("x IN (1)", 7),
        ("a @ b", 3),
        ("(a > 1", 7),
        ("NOT a > 5", 5),  # NOT binds to `a`, which is not a condition
        ("a > 99999999999999999999", 5),
        ("a > 1 b", 7),
        ("", 1),
    ],
)
def test_a_parse_error_says_where(text: str, column: int) -> None:
    with pytest.raises(SqlError) as err:
        parse(text)
    assert err.value.column == column and f"column {column}" in str(err.value)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(SqlError, match="nested deeper"):
        parse("NOT " * 500 + "TRUE")
    with pytest.raises(SqlError):
        parse("(" * 10_000 + "TRUE" + ")" * 10_000)


# ---- property test: generated trees, rendered to text, against a direct evaluation of the tree ----

PROPS = ["a", "b", "c"]
VALUES = st.one_of(st.none(), st.sampled_from(["1", "2", "5", "-3", "2.5", "abc", "true", "x", "it's", ""]))
INTS = st.integers(-5, 5)
FLOATS = st.sampled_from([0.5, 2.5, -1.5, 5.0])
STRS = st.sampled_from(["x", "abc", "it's", "1", ""])


def leaves() -> st.SearchStrategy[Any]:
    prop = st.sampled_from(PROPS)
    return st.one_of(
        st.tuples(st.just("num"), st.sampled_from([">", ">=", "<", "<=", "=", "<>"]), prop, st.one_of(INTS, FLOATS)),
        st.tuples(st.just("str"), st.sampled_from(["=", "<>"]), prop, STRS),
        st.tuples(st.just("bool"), prop, st.booleans()),
        st.tuples(st.just("in"), prop, st.lists(STRS, min_size=1, max_size=3), st.booleans()),
        st.tuples(st.just("between"), prop, INTS, INTS, st.booleans()).map(
            lambda t: (t[0], t[1], min(t[2], t[3]), max(t[2], t[3]), t[4])
        ),
        st.tuples(st.just("null"), prop, st.booleans()),
        st.tuples(st.just("const"), st.booleans()),
    )


TREES = st.recursive(
    leaves(),
    lambda kids: st.one_of(
        st.tuples(st.just("not"), kids),
        st.tuples(st.sampled_from(["and", "or"]), kids, kids),
    ),
    max_leaves=12,
)


def _case(word: str, flip: bool) -> str:
    return word.lower() if flip else word


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _num(n: float) -> str:
    return repr(n) if isinstance(n, float) else str(n)


def render(t: Any, lower: bool) -> str:
    kw = lambda w: _case(w, lower)  # noqa: E731
    kind = t[0]
    if kind == "num":
        return f"{t[2]} {t[1]} {_num(t[3])}"
    if kind == "str":
        return f"{t[2]} {t[1]} {_quote(t[3])}"
    if kind == "bool":
        return f"{t[1]} = {kw('TRUE' if t[2] else 'FALSE')}"
    if kind == "in":
        return f"{t[1]} {kw('NOT ') if t[3] else ''}{kw('IN')} ({', '.join(map(_quote, t[2]))})"
    if kind == "between":
        return f"{t[1]} {kw('NOT ') if t[4] else ''}{kw('BETWEEN')} {t[2]} {kw('AND')} {t[3]}"
    if kind == "null":
        return f"{t[1]} {kw('IS')} {kw('NOT ') if t[2] else ''}{kw('NULL')}"
    if kind == "const":
        return kw("TRUE" if t[1] else "FALSE")
    if kind == "not":
        return f"{kw('NOT')} ({render(t[1], lower)})"
    left, right = render(t[1], lower), render(t[2], lower)
    if kind == "and":  # OR binds looser than AND: an OR operand needs parentheses
        left = f"({left})" if t[1][0] == "or" else left
        right = f"({right})" if t[2][0] == "or" else right
    return f"{left} {kw(kind.upper())} {right}"


class Unconvertible(Exception):
    pass


def as_int(v: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", v):
        raise Unconvertible(v)
    return int(v)


def as_float(v: str) -> float:
    try:
        return float(v)  # the generated values hold no Java-only spellings
    except ValueError:
        raise Unconvertible(v) from None


def ref(t: Any, p: dict[str, str]) -> bool | None:
    """Direct evaluation: None is unknown; Unconvertible ends the evaluation (the message does not match)."""
    kind = t[0]
    if kind == "num":
        _, op, name, lit = t
        if name not in p:
            return None
        v = as_int(p[name]) if isinstance(lit, int) else as_float(p[name])
        result = {">": v > lit, ">=": v >= lit, "<": v < lit, "<=": v <= lit, "=": v == lit, "<>": v != lit}[op]
        return result
    if kind == "str":
        _, op, name, lit = t
        return None if name not in p else (p[name] == lit) == (op == "=")
    if kind == "bool":
        return None if t[1] not in p else (p[t[1]].lower() == "true") == t[2]
    if kind == "in":
        return None if t[1] not in p else (p[t[1]] in t[2]) != t[3]
    if kind == "between":
        _, name, lo, hi, neg = t
        if name not in p:
            return None
        v = as_int(p[name])
        return (lo <= v <= hi) != neg
    if kind == "null":
        return (t[1] not in p) != t[2]
    if kind == "const":
        return bool(t[1])
    if kind == "not":
        inner = ref(t[1], p)
        return None if inner is None else not inner
    left = ref(t[1], p)
    if kind == "and":
        if left is False:
            return False
        right = ref(t[2], p)
        return False if right is False else (None if None in (left, right) else True)
    if left is True:
        return True
    right = ref(t[2], p)
    return True if right is True else (None if None in (left, right) else False)


def ref_matches(t: Any, p: dict[str, str]) -> bool:
    try:
        return ref(t, p) is True
    except Unconvertible:
        return False


@settings(max_examples=1000, deadline=None)
@given(TREES, st.fixed_dictionaries({name: VALUES for name in PROPS}), st.booleans())
def test_the_parser_and_evaluator_agree_with_a_direct_evaluation(
    tree: Any, values: dict[str, Any], lower: bool
) -> None:
    props = {k: v for k, v in values.items() if v is not None}
    text = render(tree, lower)
    assert parse(text).matches(props) is ref_matches(tree, props), text
