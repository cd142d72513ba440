"""Just enough of Logic Apps to run the sample workflows literally: the workflow definition language's
expressions (the functions the samples use), runAfter with its statuses (an action whose conditions can no
longer be met is Skipped, and that counts as a status for those after it), If, Compose, a webhook that times
out, the Request trigger's Microsoft Entra ID authorization policy, and the HTTP action's documented
behaviour — the default exponential retry policy (4 retries on 408, 429 and 5xx) and the asynchronous
request-reply pattern (poll Location while 202, waiting Retry-After)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# How the run history shows secured inputs or outputs (Logic Apps: "secure data in run history").
SECURED = "<secured>"
RETRYABLE = lambda status: status in (408, 429) or status >= 500  # noqa: E731
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_$][\w$]*)"
                    r"|(?P<punct>\?\[|\?\.|[()\[\],.]))")


# ----------------------------------------------------------------------------------------- expressions
class Expression:
    def __init__(self, text: str, functions: dict[str, Callable[..., Any]]) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.functions = functions

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, Any]]:
        tokens, pos = [], 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            if not match:
                raise ValueError(f"cannot read expression at {text[pos:]!r}")
            kind = match.lastgroup
            value = match.group(kind)
            if kind == "str":
                value = value[1:-1].replace("''", "'")
            elif kind == "num":
                value = float(value) if "." in value else int(value)
            tokens.append((kind, value))
            pos = match.end()
        return tokens

    def take(self, value: str | None = None) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        if value is not None and token[1] != value:
            raise ValueError(f"expected {value!r}, got {token[1]!r}")
        self.pos += 1
        return token

    def peek(self) -> Any:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def evaluate(self) -> Any:
        value = self.expression()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def expression(self) -> Any:
        kind, token = self.take()
        if kind in ("str", "num"):
            value = token
        elif kind == "name" and token in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[token]
        elif kind == "name":
            self.take("(")
            args = []
            while self.peek() != ")":
                args.append(self.expression())
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
            if token not in self.functions:
                raise ValueError(f"function {token}() is not simulated")
            value = self.functions[token](*args)
        else:
            raise ValueError(f"unexpected {token!r}")
        while self.peek() in ("[", "?[", ".", "?."):
            _, accessor = self.take()
            if accessor.endswith("["):
                key = self.expression()
                self.take("]")
            else:
                key = self.take()[1]
            safe = accessor.startswith("?")
            if value is None and safe:
                continue
            if isinstance(value, dict):
                if key not in value and not safe:
                    raise KeyError(f"property {key!r} does not exist")
                value = value.get(key)
            else:
                value = value[key]
        return value


def _set(obj: dict, key: str, value: Any) -> dict:
    return {**obj, key: value}


def _remove(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _base64_to_string(value: str) -> str:
    """Strict base64 (as Logic Apps' base64ToString): a base64url string or missing padding is an error."""
    return base64.b64decode(value, validate=True).decode("utf-8")


# A webhook action's answer that stands for "nobody answered within limit.timeout".
TIMED_OUT = object()


@dataclass
class Run:
    trigger_body: dict[str, Any]
    parameters: dict[str, Any]
    trigger_headers: dict[str, str] = field(default_factory=dict)
    # Each run of a workflow has its own name (the sample's Idempotency-Key), in Logic Apps' form.
    run_name: str = field(default_factory=lambda: f"08584{uuid.uuid4().int % 10**23:023d}CU00")
    outputs: dict[str, Any] = field(default_factory=dict)  # action -> {"status", "body", "headers"}
    log: list[str] = field(default_factory=list)
    # What the run history shows per action: the inputs as sent (headers included) and the outputs, each
    # replaced by SECURED where the action's runtimeConfiguration.secureData lists it.
    history: dict[str, dict[str, Any]] = field(default_factory=dict)

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "triggerBody": lambda: self.trigger_body,
            "triggerOutputs": lambda: {"headers": self.trigger_headers, "body": self.trigger_body},
            "actions": lambda action: self._result(action),
            "split": lambda text, delimiter: text.split(delimiter),
            "last": lambda values: values[-1],
            "replace": lambda text, old, new: text.replace(old, new),
            "substring": lambda text, start, length: text[start:start + length],
            "length": len,
            "mod": lambda a, b: a % b,
            "sub": lambda a, b: a - b,
            "json": json.loads,
            "base64ToString": _base64_to_string,
            "parameters": lambda name: self.parameters[name],
            "body": lambda action: self.outputs[action]["body"],
            # A Compose action's outputs are its value; another action's, its status code, headers and body.
            "outputs": lambda action: self.outputs[action]["body"] if self.outputs[action].get("compose")
            else self.outputs[action],
            "workflow": lambda: {"run": {"name": self.run_name}},
            "listCallbackUrl": lambda: "https://logic.example/callback",
            "coalesce": lambda *values: next((v for v in values if v is not None), None),
            "concat": lambda *values: "".join(_string(v) for v in values),
            "join": lambda values, delimiter: delimiter.join(_string(v) for v in values or []),
            "equals": lambda a, b: a == b,
            "setProperty": _set,
            "removeProperty": _remove,
            "string": _string,
            "if": lambda condition, yes, no: yes if condition else no,
            "not": lambda value: not value,
        }

    def _result(self, action: str) -> dict[str, Any]:
        """What actions('name') gives: its status, and its outputs when it ran (a skipped one has none)."""
        out = self.outputs[action]
        if out["status"] == "Skipped":
            return {"name": action, "status": "Skipped"}
        return {"name": action, "status": out["status"],
                "outputs": {k: v for k, v in out.items() if k in ("statusCode", "headers", "body")}}

    def value(self, template: Any) -> Any:
        """A workflow value: "@expr" is the expression's value, "@{expr}" inside text is interpolated."""
        if isinstance(template, dict):
            return {key: self.value(item) for key, item in template.items()}
        if isinstance(template, list):
            return [self.value(item) for item in template]
        if not isinstance(template, str) or "@" not in template:
            return template
        if template.startswith("@") and not template.startswith(("@{", "@@")):
            return Expression(template[1:], self.functions()).evaluate()
        return re.sub(r"@\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}",
                      lambda m: _string(Expression(m.group(1), self.functions()).evaluate()), template)

    def condition(self, expression: Any) -> bool:
        if isinstance(expression, dict):
            (op, args), = expression.items()
            if op == "and":
                return all(self.condition(a) for a in args)
            if op == "or":
                return any(self.condition(a) for a in args)
            if op == "not":
                return not self.condition(args)
            values = [self.value(a) for a in args]
            return {"equals": lambda a, b: a == b}[op](*values)
        return bool(self.value(expression))


# ---------------------------------------------------------------------------------------- the engine
@dataclass
class Engine:
    """`token(audience)` plays the managed identity; `approval(inputs)` plays the approver's answer;
    `sleep(seconds)` is how the engine waits (tests record instead of sleeping)."""

    http: httpx.Client
    token: Callable[[str], str]
    approval: Callable[[dict[str, Any]], str]
    sleep: Callable[[float], None]
    waits: list[tuple[str, str, float]] = field(default_factory=list)  # (action, why, seconds)
    sent: list[tuple[str, str, str, int]] = field(default_factory=list)  # (action, method, url, status)
    connector_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, httpx.Request]] = field(default_factory=list)  # (action, what went on the wire)
    api_seconds: float = 0.0  # time spent waiting on the answers of HTTP actions

    def run(self, definition: dict[str, Any], run: Run) -> Run:
        self._actions(definition["actions"], run)
        return run

    def _actions(self, actions: dict[str, Any], run: Run) -> None:
        done: set[str] = set()
        while len(done) < len(actions):
            ready = [name for name, action in actions.items() if name not in done
                     and all(dep in done for dep in action.get("runAfter", {}))]
            if not ready:
                raise AssertionError(f"nothing can run after {sorted(done)}")
            for name in ready:
                action = actions[name]
                if all(run.outputs[dep]["status"] in statuses for dep, statuses in action.get("runAfter", {}).items()):
                    self._action(name, action, run)
                else:
                    self._skip(name, action, run)
                done.add(name)

    def _skip(self, name: str, action: dict[str, Any], run: Run) -> None:
        run.outputs[name] = {"status": "Skipped"}
        for inner in [*action.get("actions", {}).items(), *action.get("else", {}).get("actions", {}).items()]:
            self._skip(*inner, run)

    def _action(self, name: str, action: dict[str, Any], run: Run) -> None:
        kind = action["type"]
        run.log.append(name)
        if kind == "Response":
            run.outputs[name] = {"status": "Succeeded", "body": run.value(action["inputs"].get("body"))}
        elif kind == "Compose":
            run.outputs[name] = {"status": "Succeeded", "body": run.value(action["inputs"]), "compose": True}
        elif kind == "ApiConnectionWebhook":
            inputs = run.value(action["inputs"])
            self.connector_calls.append((name, inputs))
            answer = self.approval(inputs)
            if answer is TIMED_OUT:
                assert action.get("limit", {}).get("timeout"), f"{name} has no timeout: it would wait for ever"
                run.outputs[name] = {"status": "TimedOut"}
            else:
                run.outputs[name] = {"status": "Succeeded", "body": {"SelectedOption": answer}}
        elif kind == "ApiConnection":
            inputs = run.value(action["inputs"])
            self.connector_calls.append((name, inputs))
            run.outputs[name] = {"status": "Succeeded", "body": {}}
        elif kind == "If":
            taken, other = ("actions", "else") if run.condition(action["expression"]) else ("else", "actions")
            branch = action.get(taken, {}) if taken == "actions" else action.get("else", {}).get("actions", {})
            skipped = action.get(other, {}) if other == "actions" else action.get("else", {}).get("actions", {})
            self._actions(branch, run)
            for inner in skipped.items():
                self._skip(*inner, run)
            # A scope fails when an action in it failed and nothing after it ran on that failure.
            failed = any(run.outputs[n]["status"] == "Failed" for n in branch) and not any(
                "Failed" in statuses for a in branch.values() for statuses in a.get("runAfter", {}).values())
            run.outputs[name] = {"status": "Failed" if failed else "Succeeded", "body": None}
        elif kind == "Http":
            inputs = run.value(action["inputs"])
            response = self._http(name, inputs)
            ok = response.status_code < 400
            run.outputs[name] = {"status": "Succeeded" if ok else "Failed", "statusCode": response.status_code,
                                 "headers": dict(response.headers),
                                 "body": response.json() if "json" in response.headers.get("content-type", "")
                                 else response.text}
            secured = set(action.get("runtimeConfiguration", {}).get("secureData", {}).get("properties", []))
            shown = {"inputs": {**inputs, "headers": dict(response.request.headers)}, "outputs": run.outputs[name]}
            run.history[name] = {key: SECURED if key in secured else value for key, value in shown.items()}
        else:
            raise AssertionError(f"action type {kind} is not simulated")

    def _http(self, name: str, inputs: dict[str, Any]) -> httpx.Response:
        headers = dict(inputs.get("headers") or {})
        auth = inputs.get("authentication")
        if auth:
            assert auth["type"] == "ManagedServiceIdentity", auth
            headers["Authorization"] = f"Bearer {self.token(auth['audience'])}"
        body = inputs.get("body")
        content = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        policy = inputs.get("retryPolicy") or {"type": "exponential", "count": 4, "interval": "PT7S",
                                               "minimumInterval": "PT5S", "maximumInterval": "PT1H"}
        response = self._send(name, inputs["method"], inputs["uri"], headers, content, policy)
        while response.status_code == 202 and "location" in response.headers:
            # The HTTP action's async pattern: poll Location (with the same authentication) until not 202.
            self._wait(name, "202 polling", float(response.headers.get("retry-after", "10")))
            response = self._send(name, "GET", response.headers["location"],
                                  {k: v for k, v in headers.items() if k.lower() != "content-type"}, None, policy)
        return response

    def _send(self, name: str, method: str, url: str, headers: dict[str, str], content: str | None,
              policy: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            started = time.perf_counter()
            response = self.http.request(method, url, headers=headers, content=content)
            self.api_seconds += time.perf_counter() - started
            self.requests.append((name, response.request))
            self.sent.append((name, method, url, response.status_code))
            if not RETRYABLE(response.status_code) or attempt >= policy["count"]:
                return response
            attempt += 1
            self._wait(name, f"retry {attempt} after {response.status_code}", _backoff(policy, attempt))

    def _wait(self, name: str, why: str, seconds: float) -> None:
        self.waits.append((name, why, seconds))
        self.sleep(seconds)


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", duration)
    assert match, duration
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _backoff(policy: dict[str, Any], attempt: int) -> float:
    """Exponential: the interval doubles per attempt, held between the policy's minimum and maximum."""
    interval = _seconds(policy.get("interval", "PT7S")) * 2 ** (attempt - 1)
    return min(max(interval, _seconds(policy.get("minimumInterval", "PT5S"))),
               _seconds(policy.get("maximumInterval", "PT1H")))


# --------------------------------------------------------------------------- the trigger's authorization
class TriggerRefused(Exception):
    """What the Request trigger answers a caller no authorization policy admits: 401, and no run starts."""


def authorize_trigger(policies: dict[str, list[dict[str, str]]], authorization: str | None,
                      jwks: dict[str, Any]) -> dict[str, Any]:
    """A Consumption Request trigger with "OAuth with Microsoft Entra ID" (accessControl.triggers.
    openAuthenticationPolicies): the caller sends an Entra ID access token as a bearer token (never with the
    SAS signature too); its signature and lifetime are checked, and the run starts only when every claim of
    one policy (at least the issuer) equals the token's. Returns the token's claims."""
    import jwt  # pyjwt, as the API itself uses

    assert policies and all(any(c["name"] == "iss" for c in claims) for claims in policies.values()), \
        "each authorization policy needs at least the issuer claim"
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise TriggerRefused("no bearer token")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = next(jwt.PyJWK(k).key for k in jwks["keys"] if k.get("kid") == kid)
        claims = jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False, "require": ["exp"]})
    except (StopIteration, jwt.PyJWTError) as exc:
        raise TriggerRefused(f"the token was refused: {exc}") from None
    if not any(all(claims.get(c["name"]) == c["value"] for c in wanted) for wanted in policies.values()):
        raise TriggerRefused("no authorization policy admits this token")
    return claims


def bicep_trigger_policies(bicep: str, values: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """The Entra ID authorization policies a Bicep file gives a workflow (accessControl.triggers.
    openAuthenticationPolicies), each claim's value with the Bicep expressions in `values` replaced (a bare
    name, such as a parameter, or an interpolation such as `${tenant().tenantId}`)."""
    block = bicep[bicep.index("openAuthenticationPolicies"):]
    policies = {}
    for name, body in re.findall(r"(\w+): \{\s*type: 'AAD'\s*claims: \[(.*?)\]", block, re.S):
        claims = []
        for claim, value in re.findall(r"\{ name: '(\w+)', value: (.+) \}\s*$", body, re.M):
            if value in values:
                value = values[value]
            else:
                value = value.strip("'")
                for expression, replacement in values.items():
                    value = value.replace(expression, replacement)
            claims.append({"name": claim, "value": value})
        policies[name] = claims
    assert policies, "the Bicep file gives the trigger no Entra ID authorization policy"
    return policies
