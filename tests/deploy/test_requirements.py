"""requirements.txt is all Azure's remote build installs (it reads no constraints file), so it must pin the
whole runtime closure at the versions CI installed from constraints.txt and tested.

After a deliberate upgrade, the failure message lists the lines requirements.txt should hold.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, tuple[str, Requirement]]:
    """name -> (version, requirement) of every line; anything but an exact `==` pin fails the test."""
    out: dict[str, tuple[str, Requirement]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path.name}: {line!r} is not an exact pin"
        out[canonicalize_name(req.name)] = (spec[0].version, req)
    return out


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version of the roots and of everything they need on this interpreter (markers
    evaluated, extras followed): what CI installed and tested."""
    seen: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        dist = metadata.distribution(name)
        seen[name] = dist.version
        for text in dist.requires or []:
            dep = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(dep.name), frozenset(dep.extras)))
    return seen


def as_lines(versions: dict[str, str]) -> str:
    return "\n".join(f"{n}=={v}" for n, v in sorted(versions.items()))


RUNTIME = pins(ROOT / "requirements.txt")


def test_requirements_pin_the_whole_runtime_closure_at_the_tested_versions():
    tested = installed_closure([req for _, req in RUNTIME.values()])
    pinned = {name: version for name, (version, _) in RUNTIME.items()}
    assert pinned == tested, f"requirements.txt should pin exactly:\n{as_lines(tested)}"


def test_constraints_agree_with_every_runtime_pin():
    constraints = {name: version for name, (version, _) in pins(ROOT / "constraints.txt").items()}
    differing = {n: (v, constraints.get(n)) for n, (v, _) in RUNTIME.items() if constraints.get(n) != v}
    assert not differing, f"requirements.txt vs constraints.txt: {differing}"


@pytest.mark.slow(15)
def test_a_fresh_install_of_requirements_alone_resolves_to_the_tested_versions(tmp_path):
    """What remote build does: pip with requirements.txt and nothing else (no constraints from this
    machine's pip configuration either), as into an empty environment."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(ROOT / "requirements.txt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    pinned = {name: version for name, (version, _) in RUNTIME.items()}
    assert resolved == pinned, f"a fresh install would get:\n{as_lines(resolved)}"
