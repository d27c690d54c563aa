"""Label rules: a small, safe parser (no eval) that turns a rule string into class labels from factors.

Grammar (whitespace is free; ``and``/``or`` are case-insensitive; ``and`` binds tighter than ``or``)::

    rule       := multiclass | binary
    multiclass := FACTOR                     one class per category of a categorical factor
                | FACTOR ":" INT             INT >= 2 equal-width bins over a continuous factor's range
    binary     := or_expr                    class 1 where true, class 0 where false
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := atom ("and" atom)*
    atom       := FACTOR OP VALUE | "(" or_expr ")"
    OP         := "==" | "!=" | "<" | ">" | "<=" | ">="
    VALUE      := NUMBER | CATEGORY          a category name only for a categorical factor (== and != only)

Class names: a binary rule ``R`` gives ``["not(R)", "R"]`` with ``R`` written canonically (no spaces
around operators, e.g. ``shape==circle and obj_size<0.4``); a categorical factor gives its category names;
``factor:k`` gives ``"factor in [lo, hi)"`` for each bin (the outer bins also take values beyond the range).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stylex.errors import StylexError


@dataclass(frozen=True)
class FactorSpec:
    """One generative factor of a synthetic dataset.

    Attributes:
        name: identifier used in rules, in ``factors.csv`` and in ``ImageDataset.factors``.
        low, high: sampling range [low, high) of a continuous factor; used for ``factor:k`` bins and for
            ``correlate``. For a categorical factor, [0, len(categories)).
        categories: names of a categorical factor's int codes (code i is ``categories[i]``); empty when
            continuous.
        doc: what the factor means, in one line.
    """

    name: str
    low: float
    high: float
    categories: tuple[str, ...] = ()
    doc: str = ""

    @property
    def is_categorical(self) -> bool:
        return bool(self.categories)


_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|<|>)|(?P<punct>[():]))"
)
MAX_BINS = 1000
"""Most bins a ``factor:k`` rule may ask for."""

MAX_TOKENS = 200
"""Longest rule, in tokens (names, numbers, operators, brackets); keeps parsing and evaluation shallow."""

_OPS = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    ">": np.greater,
    "<=": np.less_equal,
    ">=": np.greater_equal,
}


def _small_int(raw: str) -> int | None:
    """The value of a whole number of at most 6 digits, else None."""
    return int(raw) if re.fullmatch(r"\d{1,6}", raw) else None


def _tokenize(text: str, valid: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise StylexError(f"Cannot read label rule {text!r} at {text[pos:]!r}; {valid}.")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        value = m.group(kind)
        if kind == "name" and value.lower() in ("and", "or"):
            kind, value = "bool", value.lower()
        tokens.append((kind, value))
        pos = m.end()
    return tokens


@dataclass(frozen=True)
class LabelRule:
    """A parsed label rule; ``apply`` maps factor arrays to labels.

    Attributes:
        text: the rule as given.
        class_names: [K] name of each class, indexed by label.
        factors_used: names of the factors the rule reads (these cannot be ``correlate``-d).
        tree: the parsed rule, nested tuples: ``("cmp", factor, op, value)``, ``("and"|"or", left, right)``,
            ``("categories", factor)`` or ``("bins", factor, k, low, high)``.
    """

    text: str
    class_names: tuple[str, ...]
    factors_used: tuple[str, ...]
    tree: tuple

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def apply(self, factors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Labels for per-image factor arrays.

        Args:
            factors: factor name -> values [N] (categorical factors as int codes).

        Returns:
            int64 labels [N] in ``[0, num_classes)``.
        """
        tree = self.tree
        if tree[0] == "categories":
            return np.asarray(factors[tree[1]], dtype=np.int64)
        if tree[0] == "bins":
            _, name, k, low, high = tree
            x = np.asarray(factors[name], dtype=np.float64)
            return np.clip(np.floor((x - low) / (high - low) * k), 0, k - 1).astype(np.int64)
        return _evaluate(tree, factors).astype(np.int64)


def _evaluate(node: tuple, factors: Mapping[str, np.ndarray]) -> np.ndarray:
    if node[0] == "cmp":
        _, name, op, value = node
        return _OPS[op](np.asarray(factors[name]), value)
    left, right = _evaluate(node[1], factors), _evaluate(node[2], factors)
    return (left & right) if node[0] == "and" else (left | right)


def _format(node: tuple, specs: Mapping[str, FactorSpec], parent: str = "or") -> str:
    if node[0] == "cmp":
        _, name, op, value = node
        spec = specs[name]
        shown = spec.categories[value] if spec.is_categorical else f"{value:g}"
        return f"{name}{op}{shown}"
    text = f"{_format(node[1], specs, node[0])} {node[0]} {_format(node[2], specs, node[0])}"
    return f"({text})" if node[0] == "or" and parent == "and" else text


def parse_label_rule(text: str, factors: Sequence[FactorSpec]) -> LabelRule:
    """Parse a label rule (grammar in the module docstring) against the known factors.

    Args:
        text: e.g. ``"shape==circle"``, ``"obj_size>0.4 and bg_hue<0.5"``, ``"shape"``, ``"obj_hue:4"``.
        factors: the factors a rule may name.

    Returns:
        The parsed rule.

    Raises:
        StylexError: bad syntax, an unknown factor or category, or an operator that does not fit the factor;
            the message lists the valid factors.
    """
    specs = {f.name: f for f in factors}
    listing = ", ".join(
        f"{f.name} ({'/'.join(f.categories)})" if f.is_categorical else f"{f.name} ([{f.low:g}, {f.high:g}))"
        for f in factors
    )
    valid = (
        "write 'factor OP value' joined by and/or (OP one of == != < > <= >=), 'factor' for a categorical factor "
        f"or 'factor:k' for k bins; factors: {listing}"
    )
    tokens = _tokenize(text, valid)
    if not tokens:
        raise StylexError(f"Label rule is empty; {valid}.")
    if len(tokens) > MAX_TOKENS:
        raise StylexError(f"Label rule has {len(tokens)} tokens, more than {MAX_TOKENS}; write a shorter rule.")

    def fail(why: str) -> StylexError:
        return StylexError(f"Cannot read label rule {text!r}: {why}; {valid}.")

    def factor(name: str) -> FactorSpec:
        if name not in specs:
            raise fail(f"unknown factor {name!r}")
        return specs[name]

    # multi-class forms: "factor" or "factor:k"
    if tokens[0][0] == "name" and (len(tokens) == 1 or tokens[1] == ("punct", ":")):
        spec = factor(tokens[0][1])
        if len(tokens) == 1:
            if not spec.is_categorical:
                raise fail(f"{spec.name} is continuous, so give a number of bins, e.g. {spec.name}:2")
            return LabelRule(text, spec.categories, (spec.name,), ("categories", spec.name))
        k = _small_int(tokens[2][1]) if len(tokens) == 3 and tokens[2][0] == "num" else None
        if k is None or not 2 <= k <= MAX_BINS:
            raise fail(f"after ':' give a whole number of bins >= 2 (at most {MAX_BINS})")
        if spec.is_categorical:
            raise fail(f"{spec.name} is categorical, so write just {spec.name!r} for one class per category")
        edges = np.linspace(spec.low, spec.high, k + 1)
        names = tuple(f"{spec.name} in [{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(k))
        return LabelRule(text, names, (spec.name,), ("bins", spec.name, k, spec.low, spec.high))

    # binary form: recursive descent over the token list
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise fail("it ends too early")
        pos += 1
        return tokens[pos - 1]

    def atom() -> tuple:
        kind, value = take()
        if (kind, value) == ("punct", "("):
            node = or_expr()
            if peek() != ("punct", ")"):
                raise fail("a '(' is not closed")
            take()
            return node
        if kind != "name":
            raise fail(f"expected a factor name, got {value!r}")
        spec = factor(value)
        op_kind, op = take()
        if op_kind != "op":
            raise fail(f"expected an operator after {spec.name}, got {op!r}")
        value_kind, raw = take()
        if spec.is_categorical:
            if op not in ("==", "!="):
                raise fail(f"{spec.name} is categorical, so compare it only with == or !=")
            if value_kind == "name" and raw in spec.categories:
                return ("cmp", spec.name, op, spec.categories.index(raw))
            code = _small_int(raw) if value_kind == "num" else None
            if code is not None and code < len(spec.categories):
                return ("cmp", spec.name, op, code)
            raise fail(f"{raw!r} is not a category of {spec.name} ({'/'.join(spec.categories)})")
        if value_kind != "num":
            raise fail(f"{spec.name} is continuous, so compare it with a number, not {raw!r}")
        return ("cmp", spec.name, op, float(raw))

    def and_expr() -> tuple:
        node = atom()
        while peek() == ("bool", "and"):
            take()
            node = ("and", node, atom())
        return node

    def or_expr() -> tuple:
        node = and_expr()
        while peek() == ("bool", "or"):
            take()
            node = ("or", node, and_expr())
        return node

    tree = or_expr()
    if pos != len(tokens):
        raise fail(f"unexpected {tokens[pos][1]!r}")
    canonical = _format(tree, specs)
    used: list[str] = []

    def collect(node: tuple) -> None:
        if node[0] == "cmp":
            if node[1] not in used:
                used.append(node[1])
        else:
            collect(node[1])
            collect(node[2])

    collect(tree)
    return LabelRule(text, (f"not({canonical})", canonical), tuple(used), tree)
