"""Route templates as the Functions host understands them, matched without a framework router.

The Functions host uses ASP.NET Core route templates: `{name}`, `{name?}` (optional), `{name:int}`
(constraint), `{name=default}`, `{*rest}` (catch-all), literals compared case-insensitively. Starlette's own
path syntax differs, so templates are compiled here to regular expressions, and the table answers the three
outcomes the host needs to tell apart: a match, a path that exists under other methods (405), nothing (404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Target = TypeVar("Target")

_PARAMETER = re.compile(r"^\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}$")

# The constraints worth enforcing locally; any other constraint is stripped and matches one segment,
# which is looser than Azure but never rejects a request Azure would accept for a valid value.
_CONSTRAINT_PATTERNS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
}
_ANY_SEGMENT = r"[^/]+"


@dataclass(frozen=True)
class RouteTemplate:
    """One compiled template. `precedence` sorts literal-heavy routes before parameter-heavy ones."""

    template: str
    pattern: re.Pattern[str]
    parameters: tuple[str, ...]
    precedence: tuple[int, ...]


def compile_template(prefix: str, route: str) -> RouteTemplate:
    segments = [s for s in f"{prefix.strip('/')}/{route.strip('/')}".split("/") if s]
    regex, parameters, precedence = "", [], []
    for segment in segments:
        parameter = _PARAMETER.match(segment)
        if parameter is None:
            regex += "/" + re.escape(segment)
            precedence.append(0)
            continue
        name = parameter["name"]
        parameters.append(name)
        if parameter["star"]:
            # A catch-all takes the rest of the path, including slashes, and may be empty.
            regex += f"(?:/(?P<{name}>.*))?"
            precedence.append(3)
            continue
        optional, segment_pattern = _parse_modifiers(parameter["rest"])
        group = f"/(?P<{name}>{segment_pattern})"
        regex += f"(?:{group})?" if optional else group
        precedence.append(2 if optional else 1)
    # ASP.NET ignores one trailing slash; so does this.
    pattern = re.compile(f"^{regex}/?$", re.IGNORECASE)
    return RouteTemplate(route, pattern, tuple(parameters), tuple(precedence))


def _parse_modifiers(rest: str) -> tuple[bool, str]:
    """`rest` is what follows the name: `?`, `=default`, `:constraint(args)` in any combination."""
    optional = rest.endswith("?") or "=" in rest
    rest = rest.rstrip("?").split("=", 1)[0]
    constraints = [c.split("(", 1)[0].lower() for c in rest.split(":") if c]
    known = [_CONSTRAINT_PATTERNS[c] for c in constraints if c in _CONSTRAINT_PATTERNS]
    return optional, known[0] if known else _ANY_SEGMENT


@dataclass
class Match(Generic[Target]):
    target: Target | None
    route_params: dict[str, str] = field(default_factory=dict)
    allowed_methods: frozenset[str] = frozenset()

    @property
    def method_not_allowed(self) -> bool:
        return self.target is None and bool(self.allowed_methods)


class RouteTable(Generic[Target]):
    """Routes with their methods; `None` as methods means every method, as in the Functions host."""

    def __init__(self) -> None:
        self._routes: list[tuple[RouteTemplate, frozenset[str] | None, Target]] = []

    def add(self, template: RouteTemplate, methods: frozenset[str] | None, target: Target) -> None:
        self._routes.append((template, methods, target))
        self._routes.sort(key=lambda route: route[0].precedence)

    def match(self, method: str, path: str) -> Match[Target]:
        allowed: set[str] = set()
        for template, methods, target in self._routes:
            found = template.pattern.match(path)
            if found is None:
                continue
            if methods is None or method in methods:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return Match(target, params)
            allowed |= methods
        return Match(None, allowed_methods=frozenset(allowed))
