"""A cache of fitted models (knowledge matcher, scam checker, triage), keyed by content.

Fitting takes seconds and needs scikit-learn; a restart with unchanged data should not pay
that, so the service answers within a second or two of starting.  The key is a hash of
every input file and of the code that fits the model, so any edit to the data or the
algorithm rebuilds it.  Files are written atomically; an unreadable or stale cache is
simply rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fingerprint(inputs: Iterable[Path]) -> str:
    """A hash of the given files (folders: every file below them), code and data alike."""
    digest = hashlib.sha256()
    paths: list[Path] = []
    for path in inputs:
        paths.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir()
                     else [path])
    for path in paths:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def load(cache_dir: Path, name: str, key: str) -> Any | None:
    """The cached object `name` for this key, or None when absent or unreadable."""
    path = cache_dir / f"{name}-{key}.pickle"
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)  # our own file, keyed by hash
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable model cache %s: %s", path, error)
        return None


def store(cache_dir: Path, name: str, key: str, value: Any) -> None:
    """Write the object atomically and drop older versions of the same name."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        target = cache_dir / f"{name}-{key}.pickle"
        os.replace(temporary, target)
        for old in cache_dir.glob(f"{name}-*.pickle"):
            if old != target:
                old.unlink(missing_ok=True)
    except OSError as error:
        log.warning("could not write the model cache in %s: %s", cache_dir, error)


def cached(cache_dir: Path | None, name: str, inputs: Iterable[Path], fit: Any) -> Any:
    """`fit()`'s result, from the cache when none of `inputs` changed since it was stored."""
    if cache_dir is None:
        return fit()
    key = fingerprint(inputs)
    value = load(cache_dir, name, key)
    if value is None:
        value = fit()
        store(cache_dir, name, key, value)
    return value
