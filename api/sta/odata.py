"""A parser for the OData subset of SensorThings API v1.1 query options (section 9.3).

``parse_filter`` turns ``$filter`` (and each ``$orderby`` term) into a small syntax tree;
``parse_orderby``, ``parse_select`` and ``parse_expand`` read the other options. Nothing
here knows about SQL: api/sta/compile.py turns trees into parameterised SQL. Every
problem raises `ODataError` with a message naming the option and the position.

Grammar (precedence from low to high, as OData 4.0 ABNF):
    or < and < not < eq ne gt ge lt le < add sub < mul div mod < unary minus < primary
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Functions of STA v1.1 table 9.3.3.5; geospatial functions are not offered (documented).
FUNCTIONS: dict[str, tuple[int, int]] = {
    # name: (min args, max args)
    "substringof": (2, 2),
    "endswith": (2, 2),
    "startswith": (2, 2),
    "length": (1, 1),
    "indexof": (2, 2),
    "substring": (2, 3),
    "tolower": (1, 1),
    "toupper": (1, 1),
    "trim": (1, 1),
    "concat": (2, 2),
    "year": (1, 1),
    "month": (1, 1),
    "day": (1, 1),
    "hour": (1, 1),
    "minute": (1, 1),
    "second": (1, 1),
    "fractionalseconds": (1, 1),
    "date": (1, 1),
    "time": (1, 1),
    "totaloffsetminutes": (1, 1),
    "now": (0, 0),
    "mindatetime": (0, 0),
    "maxdatetime": (0, 0),
    "round": (1, 1),
    "floor": (1, 1),
    "ceiling": (1, 1),
    # Points against a WKT polygon or point, as QGIS filters a map extent.
    "geo.intersects": (2, 2),
}
COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
ARITHMETIC = frozenset({"add", "sub", "mul", "div", "mod"})
MAX_FILTER_CHARS = 2000
MAX_DEPTH = 40


class ODataError(ValueError):
    """A query option that cannot be understood; the message says which and why."""


@dataclass(frozen=True)
class Literal:
    value: Any  # int, float, str, bool, None or an aware datetime
    kind: str  # "number", "string", "bool", "null", "datetime", "geography"


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]  # e.g. ("Datastream", "Thing", "name")


@dataclass(frozen=True)
class Unary:
    op: str  # "not" or "neg"
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


Node = Literal | Path | Unary | Binary | Call

_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})"
_TOKEN = re.compile(
    rf"""\s*(?:
      (?P<geography>geography'[^']*')
    | (?P<datetime>{_DATETIME})
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<name>[A-Za-z_@][A-Za-z0-9_.@]*(?:/[A-Za-z_@][A-Za-z0-9_.@]*)*)
    | (?P<punct>[(),])
    | (?P<minus>-)
    )""",
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(text: str, option: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ODataError(f"{option}: cannot read {text[pos : pos + 20]!r} at position {pos}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


@dataclass
class _Parser:
    tokens: list[_Token]
    option: str
    index: int = 0
    depth: int = field(default=0)

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def peek_word(self) -> str | None:
        token = self.peek()
        return token.text if token is not None and token.kind == "name" else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ODataError(f"{self.option}: the expression ends too early")
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise ODataError(
                f"{self.option}: expected {text!r} at position {token.pos}, found {token.text!r}"
            )

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ODataError(f"{self.option}: the expression is nested too deeply")

    def expression(self) -> Node:
        return self.or_()

    def or_(self) -> Node:
        node = self.and_()
        while self.peek_word() == "or":
            self.take()
            node = Binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek_word() == "and":
            self.take()
            node = Binary("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.peek_word() == "not":
            self.take()
            self.enter()
            node = Unary("not", self.not_())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        word = self.peek_word()
        if word in COMPARISONS:
            self.take()
            node = Binary(word, node, self.additive())
            if self.peek_word() in COMPARISONS:
                raise ODataError(f"{self.option}: comparisons cannot be chained; use 'and'")
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek_word() in ("add", "sub"):
            op = self.take().text
            node = Binary(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.peek_word() in ("mul", "div", "mod"):
            op = self.take().text
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token.kind == "minus":
            self.take()
            return Unary("neg", self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            self.enter()
            node = self.expression()
            self.expect(")")
            self.depth -= 1
            return node
        if token.kind == "number":
            text = token.text
            is_int = re.fullmatch(r"-?\d+", text) is not None
            return Literal(int(text) if is_int else float(text), "number")
        if token.kind == "string":
            return Literal(token.text[1:-1].replace("''", "'"), "string")
        if token.kind == "geography":
            return Literal(token.text[len("geography'") : -1], "geography")
        if token.kind == "datetime":
            try:
                value = datetime.fromisoformat(token.text.replace("Z", "+00:00"))
            except ValueError:
                raise ODataError(
                    f"{self.option}: {token.text!r} at position {token.pos} is not a valid time"
                ) from None
            return Literal(value, "datetime")
        if token.kind == "name":
            word = token.text
            if word in ("true", "false"):
                return Literal(word == "true", "bool")
            if word == "null":
                return Literal(None, "null")
            nxt = self.peek()
            if nxt is not None and nxt.kind == "punct" and nxt.text == "(":
                return self.call(token)
            if word in COMPARISONS | ARITHMETIC | {"and", "or", "not"}:
                raise ODataError(
                    f"{self.option}: operator {word!r} at position {token.pos} needs an operand"
                )
            return Path(tuple(word.split("/")))
        raise ODataError(f"{self.option}: unexpected {token.text!r} at position {token.pos}")

    def call(self, name_token: _Token) -> Node:
        name = name_token.text
        if name not in FUNCTIONS and (name.startswith("geo.") or name.startswith("st_")):
            raise ODataError(
                f"{self.option}: geospatial function {name!r} is not offered by this server"
            )
        if name not in FUNCTIONS:
            raise ODataError(
                f"{self.option}: unknown function {name!r} at position {name_token.pos}; "
                f"known: {', '.join(sorted(FUNCTIONS))}"
            )
        self.expect("(")
        self.enter()
        args: list[Node] = []
        nxt = self.peek()
        if not (nxt is not None and nxt.kind == "punct" and nxt.text == ")"):
            args.append(self.expression())
            while (nxt := self.peek()) is not None and nxt.text == ",":
                self.take()
                args.append(self.expression())
        self.expect(")")
        self.depth -= 1
        low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise ODataError(
                f"{self.option}: {name}() takes {expected} argument(s), got {len(args)}"
            )
        return Call(name, tuple(args))


def _parse_expression(text: str, option: str) -> Node:
    if len(text) > MAX_FILTER_CHARS:
        raise ODataError(f"{option}: longer than {MAX_FILTER_CHARS} characters")
    tokens = _tokenize(text, option)
    if not tokens:
        raise ODataError(f"{option}: empty expression")
    parser = _Parser(tokens, option)
    node = parser.expression()
    rest = parser.peek()
    if rest is not None:
        raise ODataError(f"{option}: unexpected {rest.text!r} at position {rest.pos}")
    return node


def parse_filter(text: str) -> Node:
    """The syntax tree of a ``$filter`` expression."""
    return _parse_expression(text, "$filter")


@dataclass(frozen=True)
class OrderTerm:
    expression: Node
    descending: bool


def parse_orderby(text: str) -> list[OrderTerm]:
    """``$orderby=phenomenonTime desc,id`` → terms (ascending unless ``desc``)."""
    terms: list[OrderTerm] = []
    for part in _split_top_level(text, ",", "$orderby"):
        part = part.strip()
        descending = False
        match = re.fullmatch(r"(.*?)\s+(asc|desc)", part)
        if match:
            part, descending = match.group(1), match.group(2) == "desc"
        if not part:
            raise ODataError("$orderby: empty term")
        terms.append(OrderTerm(_parse_expression(part, "$orderby"), descending))
    return terms


def parse_select(text: str) -> list[str]:
    """``$select=id,name`` → property names (``@iot.id`` is ``id``)."""
    names = [p.strip() for p in text.split(",")]
    if not all(names):
        raise ODataError("$select: empty property name")
    for name in names:
        if not re.fullmatch(r"@?[A-Za-z_][A-Za-z0-9_.]*", name):
            raise ODataError(f"$select: {name!r} is not a property name")
    return ["id" if n == "@iot.id" else n for n in names]


@dataclass
class ExpandItem:
    """One ``$expand`` entry: a navigation path and its own query options."""

    path: tuple[str, ...]
    options: dict[str, str]


def parse_expand(text: str) -> list[ExpandItem]:
    """``Datastreams($top=1;$expand=Observations),Locations`` → items.

    A path ``Datastreams/Sensor`` is the same as ``Datastreams($expand=Sensor)``.
    """
    items: list[ExpandItem] = []
    for part in _split_top_level(text, ",", "$expand"):
        part = part.strip()
        match = re.fullmatch(r"([A-Za-z/]+)(?:\((.*)\))?", part, re.DOTALL)
        if not match:
            raise ODataError(f"$expand: cannot read {part!r}")
        path = tuple(match.group(1).split("/"))
        if not all(path):
            raise ODataError(f"$expand: {part!r} has an empty navigation segment")
        options: dict[str, str] = {}
        if match.group(2) is not None:
            for option in _split_top_level(match.group(2), ";", "$expand"):
                key, sep, value = option.partition("=")
                key = key.strip()
                if not sep or key not in QUERY_OPTIONS:
                    raise ODataError(
                        f"$expand: {option.strip()!r} in {part!r} is not a query option"
                    )
                options[key] = value
        items.append(ExpandItem(path, options))
    return items


QUERY_OPTIONS = frozenset(
    {"$filter", "$orderby", "$top", "$skip", "$select", "$expand", "$count", "$resultFormat"}
)


def _split_top_level(text: str, separator: str, option: str) -> list[str]:
    """Split on `separator` outside parentheses and quoted strings."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise ODataError(f"{option}: unbalanced ')'")
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0 or quoted:
        raise ODataError(f"{option}: unbalanced parentheses or quotes")
    parts.append("".join(current))
    return parts
