"""RocketMQ's SQL92 message filters: a parser and an evaluator, sans I/O.

`parse(text)` returns a `Filter` or raises `SqlError` with the 1-based column of the offending token;
`Filter.matches(properties)` evaluates it against a message's properties (strings). The grammar and the
semantics are RocketMQ's (its selector language, which comes from JMS):

- literals: `'text'` (a quote inside is written `''`), integers (64-bit), decimals (`1.5`, `2e3`, `.5`),
  `TRUE`, `FALSE`, `NULL`; a property is an identifier `[A-Za-z_$][A-Za-z0-9_$.]*`; keywords are
  case-insensitive; `+` / `-` may precede a number;
- `=`, `<>`, `>`, `>=`, `<`, `<=`, `[NOT] BETWEEN a AND b`, `prop [NOT] IN ('a', ...)`, `IS [NOT] NULL`,
  `AND`, `OR`, `NOT`, parentheses. `>`, `>=`, `<`, `<=` and `BETWEEN` take numbers (a string or boolean
  literal there, `NULL` in `=` / `<>`, and an expression that is not a condition are parse errors);
- three-valued logic: a comparison with an absent property is unknown, `NOT unknown` is unknown, `AND` is
  false if either side is false, `OR` true if either side is true; a message matches only when the whole
  filter is true;
- conversions as RocketMQ's `ComparisonExpression` makes them: a property compared with an integer is read as
  a 64-bit integer, with a decimal as a double, with `TRUE` / `FALSE` as a boolean (`true` in any case is
  true); two strings compared by `>`... are both read as doubles; an integer and a decimal compare as
  doubles; values of different kinds are otherwise unequal and `<`. A value that does not convert (`'abc' > 1`,
  `'1.5' > 1`) makes the evaluation fail and the message does not match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

__all__ = ["Filter", "SqlError", "parse"]

Value = Union[str, int, float, bool, None]  # noqa: UP007 (a runtime alias)
MAX_LENGTH = 16 * 1024  # a longer expression is refused (it is kept with every subscription)
MAX_DEPTH = 100
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE"}
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<id>[A-Za-z_$][A-Za-z0-9_$.]*)|(?P<op><>|>=|<=|[=<>(),+-]))"
)
_JAVA_LONG = re.compile(r"[+-]?\d+")
_JAVA_DOUBLE = re.compile(r"[+-]?(?:NaN|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fFdD]?)")


class SqlError(ValueError):
    """A filter that does not parse; `column` is 1-based."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column = column


class _EvalError(Exception):
    """A value that does not convert: the message does not match."""


def _java_long(text: str) -> int:
    if not _JAVA_LONG.fullmatch(text) or not _LONG_MIN <= int(text) <= _LONG_MAX:
        raise _EvalError(text)
    return int(text)


def _java_double(text: str) -> float:
    stripped = text.strip(" \t\n\r\x0b\x0c\x00")
    if not _JAVA_DOUBLE.fullmatch(stripped):
        raise _EvalError(text)
    core = stripped.rstrip("fFdD") if not stripped.endswith("Infinity") else stripped
    return float(core.replace("Infinity", "inf"))


def _kind(v: Value) -> type:
    return type(v)


def _cmp_num(a: float, b: float) -> int:
    """Java's `Double.compareTo`: NaN above everything and equal to itself, -0.0 below 0.0."""
    if math.isnan(a) or math.isnan(b):
        return 0 if math.isnan(a) and math.isnan(b) else (1 if math.isnan(a) else -1)
    if a == b:
        return (math.copysign(1, a) > math.copysign(1, b)) - (math.copysign(1, a) < math.copysign(1, b))
    return -1 if a < b else 1


def _compare(lv: Value, rv: Value) -> int:
    """RocketMQ's `ComparisonExpression.__compare` with string conversion on."""
    lk, rk = _kind(lv), _kind(rv)
    if lk is not rk:
        if lk is bool:
            raise _EvalError("a boolean compared with another kind")
        if lk is int and rk is float:
            lv = float(lv)  # type: ignore[arg-type]
        elif lk is int and rk is str:
            rv = _java_long(rv)  # type: ignore[arg-type]
        elif lk is float and rk is int:
            rv = float(rv)  # type: ignore[arg-type]
        elif lk is float and rk is str:
            rv = _java_double(rv)  # type: ignore[arg-type]
        elif lk is str and rk is bool:
            lv = lv.lower() == "true"  # type: ignore[union-attr]
        elif lk is str and rk is int:
            lv = _java_long(lv)  # type: ignore[arg-type]
        elif lk is str and rk is float:
            lv = _java_double(lv)  # type: ignore[arg-type]
        else:
            return -1
    if isinstance(lv, float) or isinstance(rv, float):
        return _cmp_num(float(lv), float(rv))  # type: ignore[arg-type]
    return (lv > rv) - (lv < rv)  # type: ignore[operator]


Eval = Callable[[Mapping[str, str]], Value]


@dataclass(frozen=True, slots=True)
class _Node:
    """A parsed expression: `run` evaluates it; `boolean` says whether it is a condition; `const` / `value`
    describe a literal, `prop` a property name."""

    run: Eval
    boolean: bool
    const: bool = False
    value: Value = None
    prop: str = ""


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed SQL92 filter."""

    text: str
    _root: _Node

    def matches(self, properties: Mapping[str, str]) -> bool:
        try:
            return self._root.run(properties) is True
        except _EvalError:
            return False


def _literal(value: Value) -> _Node:
    return _Node(lambda p: value, boolean=type(value) is bool or value is None, const=True, value=value)


def _not(x: Value) -> Value:
    return None if x is None else not x


def _equal(a: _Node, b: _Node) -> Eval:
    def run(p: Mapping[str, str]) -> Value:
        lv, rv = a.run(p), b.run(p)
        if (lv is None) != (rv is None):
            return None if lv is None else False
        if lv is None or (type(lv) is type(rv) and lv == rv):
            return True
        return _compare(lv, rv) == 0

    return run


def _order(a: _Node, b: _Node, test: Callable[[int], bool]) -> Eval:
    def run(p: Mapping[str, str]) -> Value:
        lv = a.run(p)
        if lv is None:
            return None
        rv = b.run(p)
        if rv is None:
            return None
        if type(lv) is str and type(rv) is str:
            return test(_cmp_num(_java_double(lv), _java_double(rv)))
        return test(_compare(lv, rv))

    return run


def _and(a: _Node, b: _Node) -> Eval:
    def run(p: Mapping[str, str]) -> Value:
        lv = a.run(p)
        if lv is False:
            return False
        rv = b.run(p)
        if rv is False:
            return False
        return None if lv is None or rv is None else True

    return run


def _or(a: _Node, b: _Node) -> Eval:
    def run(p: Mapping[str, str]) -> Value:
        lv = a.run(p)
        if lv is True:
            return True
        rv = b.run(p)
        if rv is True:
            return True
        return None if lv is None or rv is None else False

    return run


_ORDER_TESTS: dict[str, Callable[[int], bool]] = {
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # kind, text, column
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
                raise SqlError(col, f"unexpected character {text[col - 1]!r}")
            kind = m.lastgroup or ""
            word, start = m.group(kind), m.start(kind)
            if kind == "id" and word.upper() in _KEYWORDS:
                kind, word = "kw", word.upper()
            self.tokens.append((kind, word, start + 1))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def peek(self, *words: str) -> bool:
        if self.i >= len(self.tokens):
            return False
        kind, word, _ = self.tokens[self.i]
        return kind in ("kw", "op") and word in words

    def column(self) -> int:
        return self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text) + 1

    def fail(self, reason: str) -> SqlError:
        if self.i < len(self.tokens):
            return SqlError(self.column(), f"{reason}, found {self.tokens[self.i][1]!r}")
        return SqlError(self.column(), f"{reason}, found the end")

    def expect(self, word: str) -> None:
        if not self.peek(word):
            raise self.fail(f"expected {word!r}")
        self.i += 1

    def condition(self, node: _Node, col: int) -> _Node:
        if not node.boolean:
            raise SqlError(col, "not a condition (a property or a value alone)")
        return node

    def parse(self) -> _Node:
        col = self.column()
        node = self.condition(self.or_expr(), col)
        if self.i < len(self.tokens):
            raise self.fail("expected the end")
        return node

    def or_expr(self) -> _Node:
        col = self.column()
        node = self.and_expr()
        while self.peek("OR"):
            self.i += 1
            rcol = self.column()
            right = self.condition(self.and_expr(), rcol)
            node = _Node(_or(self.condition(node, col), right), boolean=True)
        return node

    def and_expr(self) -> _Node:
        col = self.column()
        node = self.equality()
        while self.peek("AND"):
            self.i += 1
            rcol = self.column()
            right = self.condition(self.equality(), rcol)
            node = _Node(_and(self.condition(node, col), right), boolean=True)
        return node

    def equality(self) -> _Node:
        node = self.comparison()
        while True:
            if self.peek("=", "<>"):
                op = self.tokens[self.i][1]
                self.i += 1
                col = self.column()
                right = self.comparison()
                if (node.const and node.value is None) or (right.const and right.value is None):
                    raise SqlError(col, "NULL cannot be compared with = or <>; use IS NULL")
                if node.const and right.const and type(node.value) is bool and type(right.value) is not bool:
                    raise SqlError(col, "a boolean cannot be compared with another kind of value")
                eq = _equal(node, right)
                node = _Node(eq if op == "=" else (lambda p, eq=eq: _not(eq(p))), boolean=True)  # type: ignore[misc]
            elif self.peek("IS"):
                self.i += 1
                negate = self.peek("NOT")
                self.i += negate
                self.expect("NULL")
                is_null = _equal(node, _literal(None))
                node = _Node((lambda p, f=is_null: _not(f(p))) if negate else is_null, boolean=True)  # type: ignore[misc]
            else:
                return node

    def numeric(self, node: _Node, col: int) -> _Node:
        if (node.const and type(node.value) not in (int, float)) or (node.boolean and not node.const):
            raise SqlError(col, "only numbers and properties can be compared with >, >=, <, <= or BETWEEN")
        return node

    def comparison(self) -> _Node:
        col = self.column()
        node = self.unary()
        while True:
            if self.peek(">", ">=", "<", "<="):
                test = _ORDER_TESTS[self.tokens[self.i][1]]
                self.i += 1
                rcol = self.column()
                right = self.numeric(self.unary(), rcol)
                node = _Node(_order(self.numeric(node, col), right, test), boolean=True)
                continue
            following = self.tokens[self.i + 1][1] if self.i + 1 < len(self.tokens) else ""
            negate = self.peek("NOT") and following in ("IN", "BETWEEN")
            self.i += negate
            if self.peek("IN"):
                node = self.in_list(node, col, negate)
            elif self.peek("BETWEEN"):
                node = self.between(node, col, negate)
            elif negate:
                raise self.fail("expected IN or BETWEEN")
            else:
                return node

    def in_list(self, node: _Node, col: int, negate: bool) -> _Node:
        if not node.prop:
            raise SqlError(col, "IN needs a property on its left")
        self.i += 1
        self.expect("(")
        values: set[str] = set()
        while True:
            if self.i >= len(self.tokens) or self.tokens[self.i][0] != "str":
                raise self.fail("expected a string literal in the IN list")
            values.add(self.tokens[self.i][1][1:-1].replace("''", "'"))
            self.i += 1
            if self.peek(")"):
                self.i += 1
                break
            self.expect(",")
        name = node.prop

        def run(p: Mapping[str, str]) -> Value:
            v = p.get(name)
            return None if v is None else (v in values) != negate

        return _Node(run, boolean=True)

    def between(self, node: _Node, col: int, negate: bool) -> _Node:
        self.i += 1
        lcol = self.column()
        low = self.numeric(self.unary(), lcol)
        self.expect("AND")
        hcol = self.column()
        high = self.numeric(self.unary(), hcol)
        value = self.numeric(node, col)
        if low.const and high.const and _compare(high.value, low.value) < 0:
            raise SqlError(hcol, f"BETWEEN {low.value} AND {high.value}: the low value is above the high one")
        if negate:
            return _Node(_or(_Node(_order(value, low, _ORDER_TESTS["<"]), True),
                             _Node(_order(value, high, _ORDER_TESTS[">"]), True)), boolean=True)  # fmt: skip
        return _Node(_and(_Node(_order(value, low, _ORDER_TESTS[">="]), True),
                          _Node(_order(value, high, _ORDER_TESTS["<="]), True)), boolean=True)  # fmt: skip

    def unary(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SqlError(self.column(), f"nested deeper than {MAX_DEPTH}")
        try:
            if self.peek("NOT"):
                self.i += 1
                col = self.column()
                inner = self.condition(self.unary(), col)
                return _Node(lambda p: _not(inner.run(p)), boolean=True)
            if self.peek("+", "-"):
                sign = -1 if self.tokens[self.i][1] == "-" else 1
                self.i += 1
                if self.i >= len(self.tokens) or self.tokens[self.i][0] != "num":
                    raise self.fail("expected a number after the sign")
                return self.number(sign)
            return self.primary()
        finally:
            self.depth -= 1

    def number(self, sign: int) -> _Node:
        _, word, col = self.tokens[self.i]
        self.i += 1
        if re.fullmatch(r"\d+", word):
            value = sign * int(word)
            if not _LONG_MIN <= value <= _LONG_MAX:
                raise SqlError(col, f"{word} is out of the 64-bit integer range")
            return _literal(value)
        number = sign * float(word)
        if math.isinf(number):
            raise SqlError(col, f"{word} is out of the double range")
        return _literal(number)

    def primary(self) -> _Node:
        if self.i >= len(self.tokens):
            raise self.fail("expected a value, a property or '('")
        kind, word, _ = self.tokens[self.i]
        if kind == "num":
            return self.number(1)
        self.i += 1
        if kind == "str":
            return _literal(word[1:-1].replace("''", "'"))
        if kind == "id":
            return _Node(lambda p: p.get(word), boolean=False, prop=word)
        if kind == "kw" and word in ("TRUE", "FALSE", "NULL"):
            return _literal(None if word == "NULL" else word == "TRUE")
        if word == "(":
            node = self.or_expr()
            self.expect(")")
            return node
        self.i -= 1
        raise self.fail("expected a value, a property or '('")


def parse(text: str) -> Filter:
    """Parse a RocketMQ SQL92 filter; raises `SqlError` (with the column) for one that does not parse."""
    if len(text) > MAX_LENGTH:
        raise SqlError(MAX_LENGTH + 1, f"the expression is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise SqlError(1, "the expression is empty")
    return Filter(text, _Parser(text).parse())
