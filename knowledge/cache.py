"""A cache of the fitted matcher, so the service answers within a second of starting.

Fitting (segmentation dictionary, TF-IDF, calibration) takes a couple of seconds and
needs scikit-learn; a restart with unchanged data should not pay that.  The cache key is a
hash of every input file and of the matcher's own code, so any edit to the base, the
lexicon or the algorithm rebuilds it.  Files are written atomically; an unreadable or
stale cache is simply rebuilt.
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
CODE_FILES = ("base.py", "matcher.py", "text.py", "index.py", "../classifiers/linear.py")


def fingerprint(inputs: Iterable[Path]) -> str:
    """A hash of the given files (folders: their files) and of the matcher's code."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    paths: list[Path] = [package / name for name in CODE_FILES]
    for path in inputs:
        paths.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir()
                     else [path])
    for path in paths:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def load(cache_dir: Path, key: str) -> Any | None:
    """The cached object for this key, or None when absent or unreadable."""
    path = cache_dir / f"knowledge-{key}.pickle"
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)  # our own file, keyed by hash
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable knowledge cache %s: %s", path, error)
        return None


def store(cache_dir: Path, key: str, value: Any) -> None:
    """Write the object atomically and drop older cache files."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        target = cache_dir / f"knowledge-{key}.pickle"
        os.replace(temporary, target)
        for old in cache_dir.glob("knowledge-*.pickle"):
            if old != target:
                old.unlink(missing_ok=True)
    except OSError as error:
        log.warning("could not write the knowledge cache in %s: %s", cache_dir, error)
