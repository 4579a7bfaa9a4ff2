"""The measuring side of the knowledge benchmark: one fresh process per base size and step.

`benchmarks.knowledge` launches this module as a subprocess so that every figure comes
from a clean interpreter: the index build (`fit_matcher`, no cache) and its peak memory,
then, in another process, the start-up from the warm cache to the first answer, the query
latency of `Matcher.match`, the serving peak memory and the BM25 baseline.  Each step
prints one JSON object on its last stdout line.

    python -m benchmarks.knowledge_worker build --data-dir D --cache-dir C
    python -m benchmarks.knowledge_worker serve --data-dir D --cache-dir C --plan FILE --t0 T

Imports are kept to what the measured code needs (the BM25 package is imported only after
the matcher's figures are taken), so the start-up and memory figures are the matcher's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 3
WARMUP_QUERIES = 20


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(nanoseconds: Sequence[int]) -> dict[str, float]:
    """Median, p90, p99, mean and max of latencies given in ns, as milliseconds."""
    ms = np.asarray(nanoseconds, dtype=np.float64) / 1e6
    if not len(ms):
        return {}
    return {
        "n": len(ms),
        "median_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def _source(args: argparse.Namespace) -> Any:
    from knowledge.index import KnowledgeSource

    return KnowledgeSource(data_dir=Path(args.data_dir), cache_dir=Path(args.cache_dir))


class _FitSpy:
    """Wraps `knowledge.index.fit_matcher` to time it (and to tell a cache hit from a miss)."""

    def __init__(self) -> None:
        import knowledge.index as index

        self.index = index
        self.original: Callable[..., Any] = index.fit_matcher
        self.calls = 0
        self.seconds = 0.0
        index.fit_matcher = self

    def __call__(self, source: Any) -> Any:
        self.calls += 1
        start = time.perf_counter()
        try:
            return self.original(source)
        finally:
            self.seconds += time.perf_counter() - start


# -- build ---------------------------------------------------------------------------------
def run_build(args: argparse.Namespace) -> dict[str, Any]:
    """Fit the index from the data files (empty cache) and store it for the serve step."""
    spy = _FitSpy()
    start = time.perf_counter()
    matcher = spy.index.build_matcher(_source(args))
    total = time.perf_counter() - start
    cache_files = sorted(Path(args.cache_dir).glob("knowledge-*.pickle"))
    return {
        "fit_seconds": spy.seconds,
        "fit_calls": spy.calls,
        "build_matcher_seconds": total,
        "entries": len(matcher.entries_),
        "rows": len(matcher.row_entry_),
        "word_vocabulary": len(matcher.words_.vocabulary),
        "char_vocabulary": len(matcher.chars_.vocabulary),
        "segmentation_dictionary": len(matcher.processor.vocabulary or ()),
        "cache_mb": sum(p.stat().st_size for p in cache_files) / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- serve ---------------------------------------------------------------------------------
def _time_calls(function: Callable[[str], Any], texts: Sequence[str]) -> list[int]:
    timings = []
    clock = time.perf_counter_ns
    for text in texts:
        start = clock()
        function(text)
        timings.append(clock() - start)
    return timings


def _matcher_figures(matcher: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Latency of `match` over every round, and per query its best round (noise-free cost)."""
    queries: list[str] = plan["queries"]
    for text in queries[:WARMUP_QUERIES]:
        matcher.match(text)
    rounds = [_time_calls(matcher.match, queries) for _ in range(plan["rounds"])]
    processor = matcher.processor

    def tokenize(text: str) -> None:
        normalized = processor.normalize(text)
        processor.words(normalized)
        processor.char_ngrams(normalized)

    return {
        "latency": summarize([ns for timings in rounds for ns in timings]),
        "latency_best_of_rounds": summarize([min(per_query) for per_query in zip(*rounds,
                                                                                strict=True)]),
        "per_query_ns": rounds[0],
        "tokenize_latency": summarize(_time_calls(tokenize, queries)),
    }


def _accuracy(
    rank: Callable[[str], list[str]], items: list[dict[str, Any]]
) -> dict[str, float | int]:
    """Top-1 and top-3 topic accuracy of a ranking of topics over in-scope items."""
    in_scope = [item for item in items if item["topic"] is not None]
    top1 = top3 = 0
    for item in in_scope:
        topics = rank(item["text"])
        top1 += bool(topics) and topics[0] == item["topic"]
        top3 += item["topic"] in topics[:TOP_K]
    return {"in_scope": len(in_scope), "top1": top1 / len(in_scope), "top3": top3 / len(in_scope)}


def _matcher_accuracy(matcher: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The matcher's figures exactly as `xiaobao kb eval` computes them."""
    from knowledge.evaluation import EvalItem, evaluate

    report = evaluate(matcher, [EvalItem(i["text"], i["topic"]) for i in items]).as_dict()
    return {
        "in_scope": report["in_scope"],
        "out_of_scope": report["out_of_scope"],
        "top1": report["top1_topic_accuracy"],
        "top3": report["top3_topic_accuracy"],
        "in_scope_declined": report["in_scope_declined"],
        "out_of_scope_declined": report["out_of_scope_declined"],
    }


def _tokenize_rows(processor: Any, texts: list[str], processes: int) -> list[list[str]]:
    """Tokens of every text; split over processes for big bases (not a timed figure)."""
    if processes <= 1 or len(texts) < 20_000:
        return _words_of((processor, texts))
    import multiprocessing

    chunk = -(-len(texts) // processes)
    parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        tokenized = pool.map(_words_of, [(processor, part) for part in parts])
    return [tokens for part in tokenized for tokens in part]


def _words_of(job: tuple[Any, list[str]]) -> list[list[str]]:
    processor, texts = job
    return [processor.words(processor.normalize(text)) for text in texts]


class Bm25Baseline:
    """BM25 (rank-bm25's Okapi) over the matcher's rows and jieba tokens.

    One document per indexed phrasing (title and questions, normalised by the matcher's
    TextProcessor and cut by its `words`), exactly the rows the matcher scores; an entry
    scores as its best phrasing, as in the matcher.
    """

    def __init__(self, matcher: Any, processes: int) -> None:
        from rank_bm25 import BM25Okapi

        self.processor = matcher.processor
        self.entries = matcher.entries_
        rows = [text for entry in self.entries for text in (entry.title, *entry.questions)]
        self.entry_starts = matcher.entry_starts_
        self.model = BM25Okapi(_tokenize_rows(self.processor, rows, processes))

    def top(self, text: str, k: int = TOP_K) -> list[int]:
        """Indices of the k best entries for a query (segmentation included)."""
        tokens = self.processor.words(self.processor.normalize(text))
        scores = np.maximum.reduceat(self.model.get_scores(tokens), self.entry_starts)
        count = min(k, len(scores))
        best = np.argpartition(-scores, count - 1)[:count]
        return [int(i) for i in best[np.argsort(-scores[best], kind="stable")] if scores[i] > 0]

    def topics(self, text: str) -> list[str]:
        """Topics of the best entries, best first."""
        return [self.entries[i].topic for i in self.top(text)]


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Start from the warm cache, answer, then time queries; then the BM25 baseline."""
    plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    spy = _FitSpy()
    matcher = spy.index.build_matcher(_source(args))
    matcher.match(plan["queries"][0])
    start_to_first_answer = time.monotonic() - args.t0
    result: dict[str, Any] = {
        "cache_hit": spy.calls == 0,
        "start_to_first_answer_seconds": start_to_first_answer,
    }
    if spy.calls:
        # The index code or data changed since the build step (the cache key covers both):
        # start-up and memory figures would include a fit.  The parent runs us again.
        return result
    result["matcher"] = _matcher_figures(matcher, plan)
    result["peak_rss_mb"] = peak_rss_mb()
    if plan.get("eval_items"):
        result["matcher_accuracy"] = _matcher_accuracy(matcher, plan["eval_items"])
    if plan["bm25_queries"]:
        start = time.perf_counter()
        baseline = Bm25Baseline(matcher, args.processes)
        result["bm25_build_seconds"] = time.perf_counter() - start
        sample = plan["queries"][: plan["bm25_queries"]]
        for text in sample[:3]:
            baseline.top(text)
        timings = _time_calls(baseline.top, sample)
        result["bm25"] = {"latency": summarize(timings), "per_query_ns": timings}
        if plan.get("eval_items"):
            result["bm25_accuracy"] = _accuracy(baseline.topics, plan["eval_items"])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step and print its figures as JSON on the last line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.knowledge_worker")
    parser.add_argument("step", choices=("build", "serve"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--plan", help="JSON file: queries, rounds, BM25 sample, eval items")
    parser.add_argument("--t0", type=float, default=0.0,
                        help="time.monotonic() of the parent just before it started us")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes for the BM25 baseline's tokenisation")
    args = parser.parse_args(argv)
    result = run_build(args) if args.step == "build" else run_serve(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
