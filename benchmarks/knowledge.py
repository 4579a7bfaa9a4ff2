"""Knowledge-matcher benchmark (issue 3, item 6): speed, start-up, memory, and a BM25 baseline.

    .venv/bin/python -m benchmarks knowledge [--factors 1,10,100] [--seed N] [--keep DIR]

In one run, on the real base and on synthetic bases ×10 and ×100 (see
`benchmarks.synthetic`), each in fresh subprocesses (`benchmarks.knowledge_worker`):

* index build time: `fit_matcher` with no cache, and the build's peak RSS;
* start to first answer from the warm cache, the query latency of `Matcher.match`
  (segmentation included) and the serving process's peak RSS;
* the baseline: BM25 (`rank-bm25`) over the same rows and jieba tokens, for latency at
  every size and for top-1/top-3 topic accuracy on `evaluation/kb_eval.jsonl`;

and, on the real base, through the command line as users run it: `xiaobao ask --json`
from process start to the first answer with a cold and a warm cache, a minimal
`python -c` around `build_matcher`, and `xiaobao ask --jsonl` on 1,000 questions.
The figures are printed as a table and written to `var/bench/knowledge.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVAL_FILE = ROOT / "evaluation" / "kb_eval.jsonl"
OUTPUT = ROOT / "var" / "bench" / "knowledge.json"
FACTORS = (1, 10, 100)
SEED = 1
# Per size: how often every query is timed (rounds) or how many are timed, and how many
# of the same queries BM25 answers (its rank-bm25 scoring is pure Python per document).
ROUNDS = {1: 5, 10: 3, 100: 3}
MATCHER_SAMPLE = {100: 300}
BM25_SAMPLE = {1: None, 10: 100, 100: 20}
DEFAULT_BM25_SAMPLE = 20
WARM_RUNS = 3
JSONL_QUESTIONS = 1000
CODE_FOLDERS = ("knowledge", "classifiers", "bot")  # matcher, its classifier, the CLI
CODE_SUFFIXES = frozenset({".py", ".yaml", ".txt", ".toml", ".jsonl"})
COLD_START_QUESTION = "有人打电话说能帮我全额退保，靠谱吗"

# The targets (issue 3, "Targets").
TARGETS = {
    "median_ms_x1": 1.0,
    "p99_ms_x1": 5.0,
    "p99_ms_x100": 15.0,
    "bm25_speedup_x100": 20.0,
    "first_answer_seconds": 2.5,
    "peak_rss_mb": 250.0,
    "top1": 0.90,
    "top3": 0.97,
}


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    print(f"[bench knowledge {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def _xiaobao() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("xiaobao")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


@dataclass(frozen=True)
class ChildResult:
    """What a timed child process did: output, exit code, wall time, peak RSS."""

    stdout: str
    stderr: str
    code: int
    first_line_seconds: float
    wall_seconds: float
    peak_rss_mb: float

    def check(self, what: str) -> ChildResult:
        """Raise with the child's stderr when it failed."""
        if self.code != 0:
            raise RuntimeError(f"{what} failed (exit {self.code}):\n{self.stderr[-3000:]}")
        return self


def run_child(command: Sequence[str], stdin_path: Path | None = None,
              env: dict[str, str] | None = None) -> ChildResult:
    """Run a command; time the first stdout line and the exit; read its rusage (wait4)."""
    with tempfile.TemporaryFile() as errors, (
        stdin_path.open("rb") if stdin_path else open(os.devnull, "rb")
    ) as stdin:
        start = time.monotonic()
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=errors,
                                   cwd=ROOT, env=env or _env())
        assert process.stdout is not None
        first = process.stdout.readline()
        first_line = time.monotonic() - start
        rest = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", errors="replace")
    return ChildResult((first + rest).decode("utf-8", errors="replace"), stderr,
                       process.returncode, first_line, wall, usage.ru_maxrss / 1024)


def run_worker(step: str, data_dir: Path, cache_dir: Path, *extra: str) -> dict[str, Any]:
    """Run one step of `benchmarks.knowledge_worker` in a fresh interpreter."""
    command = [sys.executable, "-m", "benchmarks.knowledge_worker", step,
               "--data-dir", str(data_dir), "--cache-dir", str(cache_dir), *extra]
    if step == "serve":
        command += ["--t0", repr(time.monotonic())]  # CLOCK_MONOTONIC is system-wide
    result = run_child(command).check(f"worker {step} ({data_dir})")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["child_peak_rss_mb"] = result.peak_rss_mb
    return figures


# -- inputs --------------------------------------------------------------------------------
def read_eval_items(path: Path = EVAL_FILE) -> list[dict[str, Any]]:
    """The labelled evaluation messages ({"text", "topic"}, topic null = out of scope)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        {"text": record["text"], "topic": record.get("topic")}
        for record in (json.loads(line) for line in lines if line.strip())
    ]


def make_plan(factor: int, queries: list[str], items: list[dict[str, Any]]) -> dict[str, Any]:
    """What the serve worker times at one size."""
    sample = MATCHER_SAMPLE.get(factor)
    timed = queries[:sample] if sample else queries
    bm25 = BM25_SAMPLE.get(factor, DEFAULT_BM25_SAMPLE)
    return {
        "queries": timed,
        "rounds": ROUNDS.get(factor, 1),
        "bm25_queries": len(timed) if bm25 is None else min(bm25, len(timed)),
        "eval_items": items if factor == 1 else [],
    }


def prepare_base(factor: int, work: Path, seed: int) -> tuple[Path, float]:
    """The data folder of the base ×factor (the real one for 1) and seconds to write it."""
    from knowledge.base import DEFAULT_DATA_DIR

    if factor == 1:
        return DEFAULT_DATA_DIR, 0.0
    from benchmarks.synthetic import write_synthetic_base
    from knowledge.base import load_knowledge

    start = time.perf_counter()
    directory = write_synthetic_base(load_knowledge(), factor, work / f"base-x{factor}", seed)
    return directory, time.perf_counter() - start


# -- measurements --------------------------------------------------------------------------
def measure_size(factor: int, work: Path, seed: int, queries: list[str],
                 items: list[dict[str, Any]], keep: bool = False) -> dict[str, Any]:
    """Build, then serve, the base ×factor, each in a fresh process."""
    load_average = os.getloadavg()
    data_dir, written = prepare_base(factor, work, seed)
    if factor > 1:
        log(f"x{factor}: synthetic base written in {written:.1f} s")
    cache_dir = work / f"cache-x{factor}"
    log(f"x{factor}: building the index (fit_matcher, no cache)")
    build = run_worker("build", data_dir, cache_dir)
    plan = make_plan(factor, queries, items)
    plan_file = work / f"plan-x{factor}.json"
    plan_file.write_text(json.dumps(plan, ensure_ascii=False), encoding="utf-8")
    log(f"x{factor}: {build['entries']} entries indexed in {build['fit_seconds']:.1f} s; "
        f"timing {len(plan['queries'])} queries x {plan['rounds']}, "
        f"BM25 on {plan['bm25_queries']}")
    serve_args = ("--plan", str(plan_file), "--processes", str(os.cpu_count() or 1))
    serve = run_worker("serve", data_dir, cache_dir, *serve_args)
    retried = not serve["cache_hit"]
    if retried:
        # The cache key covers the matcher's code: someone edited it since the build step.
        # This serve refitted and stored the index, so the next one starts from the cache.
        log(f"x{factor}: cache miss (knowledge code changed during the run); serving again")
        serve = run_worker("serve", data_dir, cache_dir, *serve_args)
        if not serve["cache_hit"]:
            raise RuntimeError("the knowledge index cache missed twice; is the code changing?")
    if not keep:  # a ×100 base and its index take about 400 MB of disk
        if factor > 1:
            shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)
    matcher_ns: list[int] = serve["matcher"].pop("per_query_ns")
    bm25_ns: list[int] = serve.get("bm25", {}).pop("per_query_ns", [])
    figures: dict[str, Any] = {"factor": factor, "synthetic_write_seconds": written,
                               "serve_retried_after_cache_miss": retried,
                               "queries": len(plan["queries"]), "rounds": plan["rounds"],
                               "load_average": load_average,
                               "build": build, **serve}
    if bm25_ns:
        # Ratios on the very same queries (the first len(bm25_ns) of the matcher's round 1).
        same = matcher_ns[: len(bm25_ns)]
        figures["bm25_over_matcher"] = {
            "queries": len(bm25_ns),
            "median": statistics.median(bm25_ns) / statistics.median(same),
            "p99": _percentile(bm25_ns, 99) / _percentile(same, 99),
            "mean": statistics.fmean(bm25_ns) / statistics.fmean(same),
        }
    return figures


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def measure_cold_start(work: Path) -> dict[str, Any]:
    """Process start to first answer, through `xiaobao ask` and a minimal `python -c`."""
    cache_dir = work / "cache-cli"
    env = _env()
    env["XIAOBAO_KNOWLEDGE_CACHE_DIR"] = str(cache_dir)
    ask = [*_xiaobao(), "ask", "--json", COLD_START_QUESTION]
    log("cold start: xiaobao ask --json with an empty cache (fits and stores the index)")
    cold = run_child(ask, env=env).check("xiaobao ask (cold)")
    answer = json.loads(cold.stdout)
    log(f"cold start: {WARM_RUNS} runs of xiaobao ask --json with the warm cache")
    warm = [run_child(ask, env=env).check("xiaobao ask (warm)") for _ in range(WARM_RUNS)]
    snippet = (
        "import sys\n"
        "from pathlib import Path\n"
        "from knowledge.index import KnowledgeSource, build_matcher\n"
        "matcher = build_matcher(KnowledgeSource(cache_dir=Path(sys.argv[1])))\n"
        "best = matcher.match(sys.argv[2]).best\n"
        "print(best.entry.id if best else '-', flush=True)\n"
    )
    python_c = [sys.executable, "-c", snippet, str(cache_dir), COLD_START_QUESTION]
    log(f"cold start: {WARM_RUNS} runs of python -c build_matcher with the warm cache")
    minimal = [run_child(python_c).check("python -c build_matcher")
               for _ in range(WARM_RUNS)]
    return {
        "question": COLD_START_QUESTION,
        "answered_entry": answer.get("entry_id"),
        "ask_cold_cache": _runs([cold]),
        "ask_warm_cache": _runs(warm),
        "python_c_warm_cache": _runs(minimal),
        "cache_dir": cache_dir,
    }


def _runs(results: list[ChildResult]) -> dict[str, Any]:
    firsts = [r.first_line_seconds for r in results]
    return {
        "runs": len(results),
        "first_answer_seconds_median": statistics.median(firsts),
        "first_answer_seconds_min": min(firsts),
        "first_answer_seconds_max": max(firsts),
        "wall_seconds_median": statistics.median(r.wall_seconds for r in results),
        "peak_rss_mb_max": max(r.peak_rss_mb for r in results),
    }


def measure_jsonl(work: Path, cache_dir: Path, queries: list[str], seed: int) -> dict[str, Any]:
    """`xiaobao ask --jsonl` on 1,000 questions from the evaluation set (warm cache)."""
    rng = random.Random(seed)
    lines = [rng.choice(queries) for _ in range(JSONL_QUESTIONS)]
    questions = work / "questions.txt"
    questions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = _env()
    env["XIAOBAO_KNOWLEDGE_CACHE_DIR"] = str(cache_dir)
    log(f"xiaobao ask --jsonl on {JSONL_QUESTIONS} questions")
    result = run_child([*_xiaobao(), "ask", "--jsonl"], stdin_path=questions, env=env)
    result.check("xiaobao ask --jsonl")
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if len(answers) != JSONL_QUESTIONS:
        raise RuntimeError(f"xiaobao ask --jsonl answered {len(answers)} of {JSONL_QUESTIONS}")
    return {
        "questions": JSONL_QUESTIONS,
        "answers": len(answers),
        "answered": sum(answer["topic"] is not None for answer in answers),
        "wall_seconds": result.wall_seconds,
        "questions_per_second": JSONL_QUESTIONS / result.wall_seconds,
        "peak_rss_mb": result.peak_rss_mb,
    }


def code_fingerprints() -> dict[str, str]:
    """Per folder, a hash of the code and data the figures depend on (others edit them)."""
    hashes = {}
    for folder in CODE_FOLDERS:
        digest = hashlib.sha256()
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in CODE_SUFFIXES and path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
        hashes[folder] = digest.hexdigest()[:16]
    return hashes


def environment() -> dict[str, Any]:
    """The machine the figures were taken on."""
    nproc = shutil.which("nproc")
    cores = (subprocess.run([nproc], capture_output=True, text=True, check=False).stdout.strip()
             if nproc else str(os.cpu_count()))
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": cores,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_average_at_start": os.getloadavg(),
    }


# -- report --------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _num(value: float | int | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured figure and whether it is met."""
    sizes = {size["factor"]: size for size in report["sizes"]}
    checks: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, limit: float, higher_is_better: bool,
            unit: str, note: str = "") -> None:
        if measured is None:
            return
        ok = measured >= limit if higher_is_better else measured < limit
        checks.append({"target": name, "measured": measured, "limit": limit, "unit": unit,
                       "met": ok, "note": note})

    def best_of_rounds(size: dict[str, Any]) -> str:
        best = size["matcher"]["latency_best_of_rounds"]["p99_ms"]
        return f"(p99 of each query's best of {size['rounds']} rounds: {best:.2f} ms)"

    real = sizes.get(1)
    if real:
        add("median latency at x1 < 1 ms", real["matcher"]["latency"]["median_ms"],
            TARGETS["median_ms_x1"], False, "ms")
        add("p99 latency at x1 < 5 ms", real["matcher"]["latency"]["p99_ms"],
            TARGETS["p99_ms_x1"], False, "ms", best_of_rounds(real))
        accuracy = real.get("matcher_accuracy")
        if accuracy:
            add("top-1 topic accuracy >= 90%", accuracy["top1"], TARGETS["top1"], True, "")
            add("top-3 topic accuracy >= 97%", accuracy["top3"], TARGETS["top3"], True, "")
            add("in-scope declined <= 5%", accuracy["in_scope_declined"], 0.05000001, False, "")
            add("out-of-scope declined >= 90%", accuracy["out_of_scope_declined"], 0.90, True,
                "")
        add("peak RSS serving at x1 < 250 MB", real["peak_rss_mb"], TARGETS["peak_rss_mb"],
            False, "MB")
    big = sizes.get(100)
    if big:
        add("p99 latency at x100 < 15 ms", big["matcher"]["latency"]["p99_ms"],
            TARGETS["p99_ms_x100"], False, "ms", best_of_rounds(big))
        ratio = big.get("bm25_over_matcher")
        if ratio:
            add("x100: >= 20x faster than BM25 (median)", ratio["median"],
                TARGETS["bm25_speedup_x100"], True, "x")
    cold = report.get("cold_start")
    if cold:
        add("process start to first answer < 2.5 s (xiaobao ask, warm cache)",
            cold["ask_warm_cache"]["first_answer_seconds_median"],
            TARGETS["first_answer_seconds"], False, "s")
        add("peak RSS of xiaobao ask < 250 MB", cold["ask_warm_cache"]["peak_rss_mb_max"],
            TARGETS["peak_rss_mb"], False, "MB")
    return checks


def render(report: dict[str, Any]) -> str:
    """The figures as a readable plain-text table."""
    env = report["environment"]
    sizes = report["sizes"]
    head = ["", *(f"x{size['factor']}" for size in sizes)]
    rows: list[list[str]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    def each(path: Sequence[str], fmt: Any) -> list[str]:
        values = []
        for size in sizes:
            value: Any = size
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(fmt(value) if value is not None else "-")
        return values

    row("load average (1 min) before the step", [f"{s['load_average'][0]:.2f}" for s in sizes])
    row("entries", each(("build", "entries"), lambda v: _num(v)))
    row("indexed phrasings (rows)", each(("build", "rows"), lambda v: _num(v)))
    row("word / char-n-gram terms", [
        f"{s['build']['word_vocabulary']:,} / {s['build']['char_vocabulary']:,}" for s in sizes])
    row("index build: fit_matcher, no cache", each(("build", "fit_seconds"),
                                                   lambda v: _num(v, " s")))
    row("peak RSS while building", each(("build", "child_peak_rss_mb"),
                                        lambda v: _num(v, " MB", 0)))
    row("start -> first answer (warm cache)", each(("start_to_first_answer_seconds",),
                                                    lambda v: _num(v, " s", 2)))
    row("peak RSS serving (load + queries)", each(("peak_rss_mb",), lambda v: _num(v, " MB", 0)))
    row("matcher latency median", each(("matcher", "latency", "median_ms"), _ms))
    row("matcher latency p99", each(("matcher", "latency", "p99_ms"), _ms))
    row("  p99 of each query's best round", each(("matcher", "latency_best_of_rounds",
                                                  "p99_ms"), _ms))
    row("  of which normalise+tokenise, median", each(("matcher", "tokenize_latency",
                                                       "median_ms"), _ms))
    row("  queries x rounds timed", [f"{s['queries']} x {s['rounds']}" for s in sizes])
    row("BM25 latency median", each(("bm25", "latency", "median_ms"), _ms))
    row("BM25 latency p99", each(("bm25", "latency", "p99_ms"), _ms))
    row("  BM25 queries timed", each(("bm25", "latency", "n"), lambda v: _num(v)))
    row("BM25 / matcher time, median", each(("bm25_over_matcher", "median"),
                                            lambda v: _num(v, "x")))
    row("BM25 / matcher time, p99", each(("bm25_over_matcher", "p99"), lambda v: _num(v, "x")))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    table = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                  for i, cell in enumerate(line))
        for line in [head, *rows]
    ]
    out = [
        "xiaobao knowledge-matcher benchmark",
        f"{env['date']}  nproc={env['nproc']}  Python {env['python']}  {env['platform']}",
        "load average at start: " + ", ".join(f"{x:.2f}" for x in env["load_average_at_start"])
        + " (other processes may be running; figures are wall-clock)",
        f"queries: {report['queries']['source']} ({report['queries']['texts']} texts, "
        f"shuffled with seed {report['seed']}); synthetic bases: see benchmarks/synthetic.py",
        "",
        *table,
    ]
    if any(s["bm25"]["latency"]["n"] < s["queries"] for s in sizes if "bm25" in s):
        out.append("  BM25 is slow (rank-bm25 scores every document in Python), so where it is "
                   "timed on fewer queries\n  they are the first N of the matcher's, and the "
                   "ratios compare the same N queries (p99 of\n  so few samples is close to "
                   "their maximum)")
    real = next((s for s in sizes if s["factor"] == 1), None)
    if real and "matcher_accuracy" in real:
        m, b = real["matcher_accuracy"], real.get("bm25_accuracy", {})
        out += [
            "",
            f"accuracy on {report['queries']['source']} (real base; {m['in_scope']} in scope, "
            f"{m['out_of_scope']} out of scope)",
            f"{'':22}{'matcher':>9}{'BM25':>9}{'matcher - BM25':>16}",
        ]
        for key, label in (("top1", "top-1 topic accuracy"), ("top3", "top-3 topic accuracy")):
            diff = f"{(m[key] - b[key]) * 100:+.1f} pts" if key in b else "-"
            bm = f"{b[key]:.1%}" if key in b else "-"
            out.append(f"{label:22}{m[key]:>9.1%}{bm:>9}{diff:>16}")
        out.append(f"matcher declines {m['in_scope_declined']:.1%} of in-scope and "
                   f"{m['out_of_scope_declined']:.1%} of out-of-scope messages "
                   "(BM25 has no refusal)")
    cold = report.get("cold_start")
    if cold:
        def line(label: str, runs: dict[str, Any]) -> str:
            spread = (f" (min {runs['first_answer_seconds_min']:.2f}, max "
                      f"{runs['first_answer_seconds_max']:.2f}, {runs['runs']} runs)"
                      if runs["runs"] > 1 else "")
            return (f"{label:44}{runs['first_answer_seconds_median']:6.2f} s{spread}, "
                    f"peak RSS {runs['peak_rss_mb_max']:.0f} MB")

        out += ["", "process start -> first answer (fresh process, real base)",
                line("xiaobao ask --json, cache cold (fits)", cold["ask_cold_cache"]),
                line("xiaobao ask --json, cache warm", cold["ask_warm_cache"]),
                line("python -c build_matcher, cache warm", cold["python_c_warm_cache"])]
    jsonl = report.get("jsonl")
    if jsonl:
        out.append(f"xiaobao ask --jsonl, {jsonl['questions']:,} questions (warm cache): "
                   f"{jsonl['wall_seconds']:.2f} s wall incl. start-up, "
                   f"{jsonl['questions_per_second']:.0f} questions/s, {jsonl['answered']} "
                   f"answered, peak RSS {jsonl['peak_rss_mb']:.0f} MB")
    retried = [f"x{s['factor']}" for s in sizes if s["serve_retried_after_cache_miss"]]
    changed = [folder for folder in report["code_changed_during_run"]
               if folder != "bot" or "cold_start" in report]
    if changed or retried:
        out += ["", "WARNING: " + ", ".join(f"{folder}/" for folder in changed)
                + " changed during this run (other people are editing)"
                + (f"; the serve step of {', '.join(retried)} missed the index cache and was "
                   "run again" if retried else "")
                + ("; matcher figures may mix code versions" if {"knowledge", "classifiers"}
                   & set(changed) else "; bot/ affects only the xiaobao ask figures")]
    out += ["", "targets (issue 3)"]
    for check in report["targets"]:
        unit = check["unit"]
        value = (f"{check['measured']:.1%}" if unit == "" else
                 f"{check['measured']:.2f} {unit}")
        out.append(f"  {_verdict(check['met']):7}{check['target']:66}{value:>9}"
                   + (f"  {check['note']}" if check["note"] else ""))
    out.append(f"total benchmark time {report['total_seconds']:.0f} s; figures written to "
               f"{report['output']}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole knowledge benchmark and print its report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks knowledge",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", default=",".join(map(str, FACTORS)),
                        help="base sizes as multiples of the real base (default 1,10,100)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (synthetic bases, caches)")
    parser.add_argument("--skip-cli", action="store_true",
                        help="skip the command-line measurements (cold start, --jsonl)")
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",") if f.strip()]
    started = time.monotonic()
    items = read_eval_items()
    queries = [item["text"] for item in items]
    random.Random(args.seed).shuffle(queries)
    report: dict[str, Any] = {
        "environment": environment(),
        "seed": args.seed,
        "queries": {"source": str(EVAL_FILE.relative_to(ROOT)), "texts": len(queries)},
        "code_fingerprints": code_fingerprints(),
        "targets_from_issue": TARGETS,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="xiaobao-bench-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_cli:
            cold = measure_cold_start(work)
            report["jsonl"] = measure_jsonl(work, cold.pop("cache_dir"), queries, args.seed)
            report["cold_start"] = cold
        for factor in factors:
            report["sizes"].append(measure_size(factor, work, args.seed, queries, items,
                                                keep=args.keep is not None))
    after = code_fingerprints()
    report["code_changed_during_run"] = [
        folder for folder, digest in report["code_fingerprints"].items() if after[folder] != digest
    ]
    report["targets"] = check_targets(report)
    report["total_seconds"] = time.monotonic() - started
    output: Path = args.output
    report["output"] = str(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n",
                      encoding="utf-8")
    print(render(report))
    return 0
