"""Benchmarks of xiaobao, run with `python -m benchmarks [name ...]` (no name: all of them).

Each benchmark is a module of this package with a `main(argv) -> int`; `BENCHMARKS` maps
the name given on the command line to it.  See benchmarks/README.md.
"""

BENCHMARKS: dict[str, str] = {
    "knowledge": "benchmarks.knowledge",
    "load": "benchmarks.load",
    "instructions": "benchmarks.instructions",
}
