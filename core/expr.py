"""Requirement and rank expressions: `FREE_CPU > 60 & HYPERVISOR = "kvm"`, `FREE_MEM - 2 * RUNNING_VMS`.

A small recursive-descent parser compiled to closures: no eval, no attribute access, bounded size.
Grammar (lowest precedence first):
    or   := and ('|' and)*
    and  := not ('&' not)*
    not  := '!' not | cmp
    cmp  := sum (('=' | '!=' | '>' | '<' | '>=' | '<=') sum)?
    sum  := term (('+' | '-') term)*
    term := unary (('*' | '/') unary)*
    unary:= '-' unary | atom
    atom := NUMBER | "STRING" | NAME | '(' or ')'
`=` and `!=` on strings accept `*` and `?` wildcards on the right (`NAME = "node-*"`).
An unknown variable makes a comparison false and an arithmetic result 0, as in OpenNebula.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Mapping

Vars = Mapping[str, Any]
Compiled = Callable[[Vars], Any]

MAX_LENGTH = 1024
# Parentheses nest at most this deep. With chains of operators evaluated flat, this bounds the
# recursion of parsing and evaluation alike far below Python's limit (1,000 nested parentheses
# or `!` raised RecursionError, a 500 from the API).
MAX_DEPTH = 32
_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"[^"\n]*")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|
                        (?P<op>!=|>=|<=|[=<>&|!()+\-*/]))""", re.X)


class ExpressionError(ValueError):
    """Raised with the position of the first problem."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at position {position}")
        self.position = position


class _Missing:
    """An unknown variable: comparisons with it are false, arithmetic with it gives missing."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


def _tokens(source: str) -> list[tuple[str, str, int]]:
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    out, pos = [], 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if not match:
            raise ExpressionError(f"unexpected {source[pos:].strip()[:1]!r}", pos)
        kind = match.lastgroup
        out.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    out.append(("end", "", len(source)))
    return out


def _num(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float:
        return value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return MISSING
    return MISSING


_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}
_NUMBER = (int, float)


def _compare(op: str, left: Any, right: Any) -> bool:
    if type(left) in _NUMBER and type(right) in _NUMBER:
        return _OPS[op](left, right)
    if left is MISSING or right is MISSING:
        return False
    if isinstance(left, str) or isinstance(right, str):
        if op not in ("=", "!="):
            left, right = _num(left), _num(right)
            if left is MISSING or right is MISSING:
                return False
        else:
            equal = fnmatch.fnmatchcase(str(left), str(right))
            return equal if op == "=" else not equal
    left, right = _num(left), _num(right)
    if left is MISSING or right is MISSING:
        return False
    return _OPS[op](left, right)


def _arith(op: str, left: Any, right: Any) -> Any:
    left, right = _num(left), _num(right)
    if left is MISSING or right is MISSING:
        return MISSING
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left / right if right else MISSING  # division by zero is unknown, not a crash


class _Parser:
    def __init__(self, source: str, directions: Mapping[str, int] | None = None):
        self.tokens = _tokens(source)
        self.index = 0
        self.names: set[str] = set()
        # For falls_only(): how each variable moves (+1 grows, -1 shrinks), and what was seen.
        self.directions = directions or {}
        self.negated = 0
        self.moving_refs = 0
        self.falling_refs = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        if value is not None and token[1] != value:
            raise ExpressionError(f"expected {value!r}, got {token[1] or 'the end'!r}", token[2])
        self.index += 1
        return token

    def parse(self) -> Compiled:
        node = self.or_()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ExpressionError(f"unexpected {value!r}", pos)
        return node

    def or_(self) -> Compiled:
        parts = [self.and_()]
        while self.peek()[1] == "|" and self.peek()[0] == "op":
            self.take()
            parts.append(self.and_())
        if len(parts) == 1:
            return parts[0]
        return lambda v, ps=tuple(parts): any(p(v) for p in ps)

    def and_(self) -> Compiled:
        parts = [self.not_()]
        while self.peek()[1] == "&" and self.peek()[0] == "op":
            self.take()
            parts.append(self.not_())
        if len(parts) == 1:
            return parts[0]
        return lambda v, ps=tuple(parts): all(p(v) for p in ps)

    def not_(self) -> Compiled:
        count = 0
        while self.peek()[1] == "!" and self.peek()[0] == "op":  # a chain of `!` is one negation or none
            self.take()
            count += 1
        if not count:
            return self.cmp()
        self.negated += 1
        inner = self.cmp()
        self.negated -= 1
        if count % 2:
            return lambda v: not bool(inner(v))
        return lambda v: bool(inner(v))

    def cmp(self) -> Compiled:
        left = self.sum()
        kind, value, _ = self.peek()
        if kind == "op" and value in ("=", "!=", ">", "<", ">=", "<="):
            self.take()
            right = self.sum()
            name, constant = getattr(left, "variable", None), getattr(right, "number", None)
            direction = self.directions.get(name or "", 0)
            if direction and constant is not None and not self.negated and \
                    ((direction < 0 and value in (">", ">=")) or (direction > 0 and value in ("<", "<="))):
                self.falling_refs += 1  # e.g. FREE_CPU > 60: can only turn false as the variable moves
            if name is not None and constant is not None:
                # The common shape `FREE_CPU > 60`, without the generic dispatch.
                def compare_variable(v, name=name, constant=constant, op=value, fast=_OPS[value]):
                    x = v.get(name, MISSING)
                    return fast(x, constant) if type(x) in _NUMBER else _compare(op, x, constant)
                return compare_variable
            return lambda v, op=value: _compare(op, left(v), right(v))
        return left

    def _arithmetic(self, ops: tuple[str, str], operand) -> Compiled:
        """Left-associative chain of `operand (op operand)*` for one precedence level, evaluated in a
        loop: a long chain costs no recursion."""
        first = operand()
        rest = []
        while self.peek()[0] == "op" and self.peek()[1] in ops:
            op = self.take()[1]
            rest.append((op, operand()))
        if not rest:
            return first
        if len(rest) == 1:
            (op, right), = rest
            return lambda v: _arith(op, first(v), right(v))

        def chain(v, first=first, rest=tuple(rest)):
            value = first(v)
            for op, right in rest:
                value = _arith(op, value, right(v))
            return value
        return chain

    def sum(self) -> Compiled:
        return self._arithmetic(("+", "-"), self.term)

    def term(self) -> Compiled:
        return self._arithmetic(("*", "/"), self.unary)

    def unary(self) -> Compiled:
        count = 0
        while self.peek()[1] == "-" and self.peek()[0] == "op":  # `--x` is x: one closure at most
            self.take()
            count += 1
        inner = self.atom()
        if count % 2:
            return lambda v: _arith("-", 0.0, inner(v))
        if count:
            return lambda v: _arith("+", 0.0, inner(v))
        return inner

    def atom(self) -> Compiled:
        kind, value, pos = self.take()
        if kind == "num":
            number = float(value)
            literal = lambda v: number  # noqa: E731
            literal.number = number
            return literal
        if kind == "str":
            text = value[1:-1]
            return lambda v: text
        if kind == "name":
            self.names.add(value)
            if value in self.directions:
                self.moving_refs += 1
            lookup = lambda v: v.get(value, MISSING)  # noqa: E731
            lookup.variable = value
            return lookup
        if value == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}", pos)
            node = self.or_()
            self.take(")")
            self.depth -= 1
            return node
        raise ExpressionError(f"unexpected {value or 'end of expression'!r}", pos)


def compile_requirement(source: str) -> Compiled:
    """A predicate: true only when the expression is true. Empty means always true."""
    if not source.strip():
        return lambda v: True
    node = _Parser(source).parse()
    return lambda v: bool(node(v))


def compile_rank(source: str) -> Compiled:
    """A number: higher is better. Unknown values rank 0."""
    if not source.strip():
        return lambda v: 0.0
    node = _Parser(source).parse()

    def rank(v: Vars) -> float:
        value = _num(node(v))
        return 0.0 if value is MISSING else float(value)
    return rank


def variables(source: str) -> set[str]:
    """The variable names an expression reads (to know whether it depends on usage)."""
    parser = _Parser(source)
    if source.strip():
        parser.parse()
    return parser.names


def falls_only(source: str, directions: Mapping[str, int]) -> bool:
    """True when the requirement can only turn from true to false as the variables move the way
    `directions` says (+1 grows, -1 shrinks): every moving variable sits in a plain comparison with a
    constant, in the falling direction, outside any negation. Conservative: False when unsure."""
    parser = _Parser(source, directions)
    if source.strip():
        parser.parse()
    return parser.moving_refs == parser.falling_refs
