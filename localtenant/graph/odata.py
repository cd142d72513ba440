"""The OData query options Graph supports on the collections we serve: $filter (eq, startswith, any() on
string collections, and/or/not, parentheses), $select, $top with @odata.nextLink ($skiptoken)."""
from __future__ import annotations

import base64
import re
from typing import Any, Callable
from urllib.parse import urlencode

from .exceptions import bad_request, unsupported_query

Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),:/])|(?P<word>[A-Za-z_$@.][\w.$@-]*)"
                    r"|(?P<num>-?\d+)|(?P<bad>\S))")


def _tokens(text: str) -> list[str]:
    out = []
    for m in _TOKEN.finditer(text):
        if m.group("bad"):
            raise unsupported_query("Invalid filter clause")
        out.append(m.group(m.lastgroup))
    return out


def _literal(tok: str) -> Any:
    if tok.startswith("'"):
        return tok[1:-1].replace("''", "'")
    if tok in ("true", "false"):
        return tok == "true"
    if tok == "null":
        return None
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    raise unsupported_query("Invalid filter clause")


def _get(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("/"):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks, self.i = _tokens(text), 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or expected is not None and tok.lower() != expected:
            raise unsupported_query("Invalid filter clause")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.disjunction()
        if self.peek() is not None:
            raise unsupported_query("Invalid filter clause")
        return pred

    def disjunction(self) -> Predicate:
        return self._chain("or", self.conjunction, lambda a, b: lambda o: a(o) or b(o))

    def conjunction(self) -> Predicate:
        return self._chain("and", self.unary, lambda a, b: lambda o: a(o) and b(o))

    def _chain(self, word: str, operand: Callable[[], Predicate],
               combine: Callable[[Predicate, Predicate], Predicate]) -> Predicate:
        """`operand (word operand)*`, left to right ("and" binds tighter than "or": conjunction is the operand
        of disjunction)."""
        left = operand()
        while (self.peek() or "").lower() == word:
            self.take()
            left = combine(left, operand())
        return left

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok == "(":
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        if (tok or "").lower() == "not":
            self.take()
            inner = self.unary()
            return lambda o: not inner(o)
        if (tok or "").lower() == "startswith":
            self.take(), self.take("(")
            path = self.path()
            self.take(",")
            prefix = _literal(self.take())
            self.take(")")
            return lambda o: isinstance(_get(o, path), str) and _get(o, path).lower().startswith(prefix.lower())
        return self.comparison()

    def path(self) -> str:
        parts = [self.take()]
        while self.peek() == "/" and (self.toks[self.i + 1:self.i + 2] or [""])[0].lower() != "any":
            self.take()
            parts.append(self.take())
        return "/".join(parts)

    def comparison(self) -> Predicate:
        path = self.path()
        if self.peek() == "/":
            self.take(), self.take("any"), self.take("(")
            var = self.take()
            self.take(":")
            if self.take() != var:
                raise unsupported_query("Invalid filter clause")
            op, value = self.take().lower(), _literal(self.take())
            self.take(")")
            if op != "eq":
                raise unsupported_query("Unsupported Query.")
            return lambda o: any(_eq(v, value) for v in (_get(o, path) or []))
        op, value = self.take().lower(), _literal(self.take())
        if op == "eq":
            return lambda o: _eq(_get(o, path), value)
        if op == "ne":
            return lambda o: not _eq(_get(o, path), value)
        raise unsupported_query("Unsupported Query.")


def _eq(actual: Any, expected: Any) -> bool:
    # Directory string comparisons are case-insensitive.
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected.lower()
    return actual == expected


def parse_filter(text: str | None) -> Predicate:
    if not text:
        return lambda o: True
    return _Parser(text).parse()


def select(obj: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if not fields:
        return obj
    return {k: v for k, v in obj.items() if k in fields or k.startswith("@odata")}


def select_fields(query) -> list[str] | None:
    raw = query.get("$select")
    return [f.strip() for f in raw.split(",") if f.strip()] if raw else None


def page(items: list[dict[str, Any]], query, base_url: str, context: str) -> dict[str, Any]:
    """One page of a collection; @odata.nextLink carries the other query options and a $skiptoken."""
    try:
        top = int(query.get("$top", 100))
        skip = int(base64.urlsafe_b64decode(query["$skiptoken"]).decode()) if "$skiptoken" in query else 0
    except ValueError:
        raise bad_request("Invalid page size or skip token specified.") from None
    if not 1 <= top <= 999:
        raise bad_request("Invalid page size specified: '{}'. Must be between 1 and 999 inclusive.".format(top))
    fields = select_fields(query)
    body: dict[str, Any] = {"@odata.context": context,
                            "value": [select(o, fields) for o in items[skip:skip + top]]}
    if skip + top < len(items):
        params = {k: v for k, v in query.items() if k != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(str(skip + top).encode()).decode()
        body["@odata.nextLink"] = f"{base_url}?{urlencode(params)}"
    return body
