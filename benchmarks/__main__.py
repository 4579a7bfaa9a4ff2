"""`python -m benchmarks [name [options]]`: run one benchmark, or every one without a name.

    python -m benchmarks                     # all benchmarks, default options
    python -m benchmarks knowledge --help    # one benchmark and its own options
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from benchmarks import BENCHMARKS


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the named benchmark (options after the name go to it), or run them all."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("benchmarks: " + ", ".join(BENCHMARKS))
        return 0
    if not args:
        status = 0
        for name, module in BENCHMARKS.items():
            print(f"== benchmark {name} ==", flush=True)
            status |= importlib.import_module(module).main([])
        return status
    name, options = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[name]).main(options))


if __name__ == "__main__":
    sys.exit(main())
