"""local.settings.json: the file `func start` reads app settings from, in the same shape.

Settings must reach os.environ before function_app is imported, because the app reads its settings at
import time in Azure too (the platform sets them before the worker starts).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

log = logging.getLogger("devhost")


def load_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file, as strings."""
    document = json.loads(Path(path).read_text())
    if document.get("IsEncrypted"):
        raise ValueError(f"{path}: encrypted local settings are not supported; store them unencrypted")
    return {name: str(value) for name, value in (document.get("Values") or {}).items()}


def apply_settings(values: Mapping[str, str], *, override: bool = False) -> list[str]:
    """Put settings into os.environ. Like Core Tools, a variable already set in the environment wins
    unless `override` is given; the names skipped are returned (and logged, values never)."""
    skipped = []
    for name, value in values.items():
        if name in os.environ and not override:
            skipped.append(name)
            continue
        os.environ[name] = value
    if skipped:
        log.info("kept from the environment instead of local settings: %s", ", ".join(sorted(skipped)))
    return skipped


def write_settings(path: Path, values: Mapping[str, str]) -> None:
    """Write a local.settings.json readable by its owner only: it holds secrets of the local tenant."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"IsEncrypted": False, "Values": dict(values)}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file left by an older run keeps its mode through O_TRUNC
    with os.fdopen(descriptor, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
