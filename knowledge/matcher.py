"""Matching a consumer's question to a knowledge entry, with a calibrated confidence.

A wrong confident answer is worse than none, so the matcher returns not only the closest
entries but the probability that the best one is on the right topic; below a threshold
the bot declines and offers suggestions.

How it works: every question phrasing of every entry is a row of two TF-IDF matrices
(jieba words with the domain dictionary, and character 1–3-grams), fitted once with
scikit-learn (imported only when fitting, so a cached index starts fast).  Queries are
*not* vectorised with `transform` (about 1 ms of per-call
overhead); instead the fitted vocabulary, idf and an inverted index (term → rows,
weights) score a query in tens of microseconds with `numpy.bincount`; at the real base's
size the four spaces' posting lists are fused so that one gather and one `bincount` score
them all (per-call numpy overhead is most of the cost there).  An entry's
similarity is the best of its rows plus a small boost for shared domain keywords.  A
logistic regression over features of the best candidate (similarity, margin to the
runner-up, vocabulary coverage) turns the similarity into a probability; it is fitted on
leave-one-out matches of the base's own questions and on out-of-scope messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifiers.linear import (
    LinearTextClassifier,
    known_terms,
    sublinear_tf,
    term_frequencies,
)
from knowledge.base import Entry, KnowledgeBase
from knowledge.text import CHAR_NGRAMS, TextProcessor


@dataclass(frozen=True)
class ScoringWeights:
    """How the similarity signals add up to an entry's score (tuned on the dev set).

    `word`/`char`: best single phrasing, by words and by character n-grams;
    `entry`/`topic`: all phrasings of the entry / of its topic taken as one document,
    which helps long, rambling questions that echo several phrasings at once;
    `keyword`: per shared domain-dictionary term, capped at `keyword_cap`.
    """

    word: float = 0.4
    char: float = 0.6
    entry: float = 0.9
    topic: float = 1.2
    keyword: float = 0.1
    keyword_cap: float = 0.3



@dataclass(frozen=True)
class Candidate:
    """One knowledge entry proposed for a query."""

    entry: Entry
    similarity: float


@dataclass(frozen=True)
class MatchResult:
    """The outcome of matching one query: the best entries and how sure we are."""

    query: str
    candidates: tuple[Candidate, ...]
    confidence: float
    answered: bool

    @property
    def best(self) -> Candidate | None:
        """The best candidate, whether or not it is confident enough to answer."""
        return self.candidates[0] if self.candidates else None

    @property
    def entry(self) -> Entry | None:
        """The entry to answer with, or None when the bot should decline."""
        return self.candidates[0].entry if self.answered and self.candidates else None


# A posting list at least this long on average is copied term by term (one memory pass and a
# Python step per term); shorter ones are gathered by one fancy index (three passes over
# the positions, but no per-term Python cost).  At the real base lists hold a few rows; at
# 100x they hold hundreds and the copy is about twice as fast.
_SLICE_COPY_MIN_AVERAGE = 128
# Up to this many suggestions, and from this many entries on (below, argpartition is
# cheaper), the best entries are found by repeated argmax (see _top_entries).
_ARGMAX_TOP_MAX = 8
_ARGMAX_TOP_MIN_ENTRIES = 2048
# Bases up to this many indexed phrasings keep every space's postings fused in one array
# (see _FusedPostings): a query there costs mostly per-call numpy overhead, which the fused
# gather cuts (1.4x faster at 10x the real base too).  Larger bases keep the per-space
# path, whose slice copies suit their long posting lists.
_FUSED_MAX_ROWS = 100_000


class _InvertedTfidf:
    """A fitted TF-IDF space that scores queries by cosine without `transform`.

    Spaces built with the same `vocabulary` share term columns, so a query's terms are
    counted once and scored in several spaces (phrasings, entries, topics).
    """

    def __init__(
        self, documents: list[list[str]], vocabulary: dict[str, int] | None = None,
        row_order: np.ndarray | None = None,
    ) -> None:
        """Fit on `documents`; row i of the index is document `row_order[i]` when given.

        The rows are reordered after fitting, not before: scikit-learn's per-row sums run
        in an order that depends on the document order, and a reordered fit would change
        weights in the last bit.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer  # only needed to fit

        vectorizer = TfidfVectorizer(
            analyzer=_identity, lowercase=False, sublinear_tf=True, token_pattern=None,
            vocabulary=vocabulary,
        )
        matrix = vectorizer.fit_transform(documents)
        if row_order is not None:
            matrix = matrix[row_order]
        matrix = matrix.tocsc()
        self.n_rows = matrix.shape[0]
        self.vocabulary: dict[str, int] = dict(vectorizer.vocabulary_)
        self.idf: np.ndarray = vectorizer.idf_
        self._indptr = matrix.indptr
        self._rows = matrix.indices
        self._weights = matrix.data

    def score_terms(self, columns: np.ndarray, tf: np.ndarray) -> np.ndarray:
        """Cosine with every row for a query given as (columns, sublinear tf)."""
        rows, values = self.postings(columns, tf)
        return np.bincount(rows, weights=values, minlength=self.n_rows)

    def postings(self, columns: np.ndarray, tf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, contribution) of the query's terms, gathered in one vectorised step."""
        lengths = self.lengths(columns)
        total = int(lengths.sum())
        if total >= _SLICE_COPY_MIN_AVERAGE * len(columns):
            rows = np.empty(total, dtype=self.row_dtype)
            values = np.empty(total)
            self.gather(columns, tf, lengths, rows, values)
            return rows, values
        if not total:
            return np.zeros(0, dtype=self.row_dtype), np.zeros(0)
        weights = tf * self.idf[columns]
        weights /= np.sqrt(weights @ weights)
        positions = np.repeat(self._indptr[columns] - np.cumsum(lengths) + lengths, lengths)
        positions += np.arange(total)
        return self._rows[positions], self._weights[positions] * np.repeat(weights, lengths)

    def release_postings(self) -> None:
        """Drop the posting lists once a `_FusedPostings` holds them (the matcher then never
        gathers from this space), so a small base does not keep and pickle them twice."""
        empty = np.zeros(0, dtype=np.int32)
        self._indptr, self._rows, self._weights = empty, empty, np.zeros(0)

    @property
    def row_dtype(self) -> np.dtype:
        """The integer type of row ids (what a caller's gather buffer must hold)."""
        return self._rows.dtype

    def lengths(self, columns: np.ndarray) -> np.ndarray:
        """How many rows each term's posting list holds (sizes the output before gathering)."""
        return self._indptr[columns + 1] - self._indptr[columns]

    def gather(
        self, columns: np.ndarray, tf: np.ndarray, lengths: np.ndarray,
        rows: np.ndarray, values: np.ndarray,
    ) -> None:
        """Write the query's postings into `rows`/`values` (preallocated, len = lengths.sum()).

        Each value is (document weight × query weight), the product `bincount` then sums per
        row in term order, so every way of gathering gives bit-identical cosines.  Writing
        into the caller's buffers lets several spaces share one array without a concatenate.
        """
        if not len(columns):
            return
        weights = tf * self.idf[columns]
        weights /= np.sqrt(weights @ weights)
        starts = self._indptr[columns]
        if len(rows) >= _SLICE_COPY_MIN_AVERAGE * len(columns):
            bounds = list(zip(starts.tolist(), (starts + lengths).tolist(), strict=True))
            np.concatenate([self._rows[a:b] for a, b in bounds], out=rows)
            np.concatenate([self._weights[a:b] for a, b in bounds], out=values)
        else:
            positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            positions += np.arange(len(rows))
            np.take(self._rows, positions, out=rows)
            np.take(self._weights, positions, out=values)
        values *= np.repeat(weights, lengths)


class _FusedPostings:
    """The posting lists of all four spaces in one pair of arrays, for one gather per query.

    At the real base a query has ~30 terms and ~1,400 postings, and the cost is per-call
    numpy overhead: gathering each space separately takes ~60 calls.  Here the columns are
    laid out as the words' phrasing postings [0, W), their entry postings [W, 2W), their
    topic postings [2W, 3W), then the character n-grams' phrasing postings [3W, 3W + C);
    row ids are bins of one `bincount`: a phrasing grid, then entries, then topics.  Each
    bin still receives its contributions in the same order as with separate spaces (word
    terms, then n-grams, each in query order), so the sums are bit-identical.

    The grid puts phrasing k of entry e at bin k * n_entries + e, padded with bins no
    posting reaches (0.0, below every score): each entry's best phrasing is then one
    `max(axis=0)` over a (max phrasings, entries) view.
    """

    def __init__(
        self, spaces: tuple[_InvertedTfidf, _InvertedTfidf, _InvertedTfidf, _InvertedTfidf],
        gate: LinearTextClassifier | None, row_entry: np.ndarray, slot_of_row: np.ndarray,
        entry_topic: np.ndarray,
    ) -> None:
        """`spaces`: words, chars, entry documents, topic documents, as the matcher fits them."""
        words, chars, entry_docs, topic_docs = spaces
        counts = np.bincount(row_entry)
        n_entries = len(counts)
        self.shape = (int(counts.max()), n_entries)
        self.n_grid = self.shape[0] * n_entries
        phrasing = np.arange(len(row_entry)) - np.flatnonzero(
            np.r_[True, np.diff(row_entry) != 0]
        )[row_entry]
        self.bin_of_row = phrasing * n_entries + row_entry  # fit order -> grid bin
        bin_of_slot = np.empty(len(row_entry), dtype=np.intp)
        bin_of_slot[slot_of_row] = self.bin_of_row
        self.entry_bins = [e + n_entries * np.arange(n) for e, n in enumerate(counts)]
        self.entries_at = self.n_grid
        self.topic_bins = entry_topic + (self.n_grid + n_entries)
        self.n_bins = self.n_grid + n_entries + topic_docs.n_rows
        # other_topic[t]: the entries outside topic t (a calibration feature's mask).
        topics = np.arange(topic_docs.n_rows)
        self.other_topic = entry_topic[None, :] != topics[:, None]
        layout = (
            (words, bin_of_slot), (entry_docs, np.arange(n_entries) + self.n_grid),
            (topic_docs, np.arange(topic_docs.n_rows) + self.n_grid + n_entries),
            (chars, bin_of_slot),
        )
        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        offset = 0
        for space, _ in layout:
            indptr = space._indptr.astype(np.int64)
            starts.append(indptr[:-1] + offset)
            lengths.append(np.diff(indptr))
            offset += int(indptr[-1])
        self.starts = np.concatenate(starts)
        self.lengths = np.concatenate(lengths)
        # int32 bins (the grid stays far below 2**31): half the memory and pickle.
        self.rows = np.concatenate([bins[space._rows] for space, bins in layout]).astype(
            np.int32
        )
        self.weights = np.concatenate([space._weights for space, _ in layout])
        self.n_words = len(words.idf)
        # One take gives a query's idf in every space that shares its columns.
        self.word_idf = np.vstack([words.idf, entry_docs.idf, topic_docs.idf])
        char_idf = [chars.idf] if gate is None else [chars.idf, gate.idf_]
        self.char_idf = np.vstack(char_idf)

    @staticmethod
    def fits(row_entry: np.ndarray) -> bool:
        """Whether a base is small enough, and its grid dense enough, for this layout."""
        counts = np.bincount(row_entry)
        grid = int(counts.max()) * len(counts)
        return len(row_entry) <= _FUSED_MAX_ROWS and grid <= 2 * len(row_entry)


class _EntryMax:
    """The best row score of every entry in a few vectorised passes instead of a reduceat.

    Rows are laid out "phrasing-major": slot = offset[k] + rank[entry] for the k-th phrasing
    of an entry, with entries ranked by how many phrasings they have (most first).  Block k
    then holds the k-th phrasing of a prefix of the ranked entries, so the per-entry max is
    an element-wise maximum over the blocks: a handful of numpy calls whose cost is a plain
    pass over the rows, where `np.maximum.reduceat` pays per entry (2x slower at 100x).
    """

    def __init__(self, row_entry: np.ndarray) -> None:
        counts = np.bincount(row_entry)
        order = np.argsort(-counts, kind="stable")
        self.rank = np.empty(len(counts), dtype=np.int64)
        self.rank[order] = np.arange(len(counts))
        self.sizes = [int(n) for n in (counts[:, None] > np.arange(counts.max())).sum(axis=0)]
        self.counts = counts
        self.offsets = np.cumsum([0, *self.sizes])
        starts = np.flatnonzero(np.r_[True, np.diff(row_entry) != 0])
        phrasing = np.arange(len(row_entry)) - starts[row_entry]
        self.slot_of_row = self.offsets[phrasing] + self.rank[row_entry]
        self.full_blocks = sum(1 for n in self.sizes if n == len(counts))

    def slots_of(self, entry: int) -> np.ndarray:
        """The slots of one entry's phrasings, ascending."""
        return self.offsets[: self.counts[entry]] + self.rank[entry]

    def best(self, slot_scores: np.ndarray) -> np.ndarray:
        """Each entry's highest slot score (0 for an entry none of whose rows scored)."""
        n_entries = len(self.rank)
        full = self.full_blocks * n_entries
        if self.full_blocks:
            ranked = slot_scores[:full].reshape(self.full_blocks, n_entries).max(axis=0)
        else:
            ranked = np.zeros(n_entries)
        offset = full
        for size in self.sizes[self.full_blocks:]:
            np.maximum(ranked[:size], slot_scores[offset : offset + size], out=ranked[:size])
            offset += size
        return ranked[self.rank]


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def _logit(p: float) -> float:
    """The log-odds of the domain gate's probability, kept off the infinities."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _top_entries(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` best scores, best first.

    Many entries tie (same topic, no phrasing touched), and `argpartition` is slow on
    ties: about 250 us over 22,600 entries.  When the best count + 1 scores are all
    distinct the answer is unambiguous, and count + 1 `argmax` passes find it in a fifth
    of the time at 100x; otherwise the original argpartition + stable sort decides, so tied
    results keep exactly their previous order.
    """
    if len(scores) >= _ARGMAX_TOP_MIN_ENTRIES and count <= _ARGMAX_TOP_MAX:
        remaining = scores.copy()
        best = []
        for _ in range(count + 1):
            index = int(np.argmax(remaining))
            best.append(index)
            remaining[index] = -np.inf
        values = scores[best]
        if np.all(values[:-1] > values[1:]):
            return np.asarray(best[:count], dtype=np.intp)
    negated = -scores
    top = negated.argpartition(count - 1)[:count]
    return top.take(negated.take(top).argsort(kind="stable"))


class Matcher:
    """Fitted once from a knowledge base; `match` only reads what `fit` built."""

    def __init__(
        self,
        processor: TextProcessor,
        threshold: float = 0.5,
        suggestions: int = 3,
        weights: ScoringWeights | None = None,
    ) -> None:
        self.processor = processor
        self.threshold = threshold
        self.suggestions = suggestions
        self.weights = weights or ScoringWeights()

    # -- fitting -----------------------------------------------------------------------
    def fit(
        self,
        base: KnowledgeBase,
        out_of_scope: Sequence[str] = (),
        calibration: Sequence[tuple[str, str | None]] = (),
    ) -> Matcher:
        """Index every phrasing of every entry and calibrate the confidence.

        `out_of_scope` messages teach the domain gate what the bot must decline;
        `calibration` holds realistic labelled queries (topic id, or None for out of
        scope) on which the confidence is fitted.  Without them, leave-one-out matches of
        the base's own questions stand in (these overrate long, rambling questions).
        """
        self.base_ = base
        self.entries_ = base.entries
        rows: list[str] = []
        row_entry: list[int] = []
        for index, entry in enumerate(self.entries_):
            for phrasing in (entry.title, *entry.questions):
                rows.append(self.processor.normalize(phrasing))
                row_entry.append(index)
        self.row_entry_ = np.asarray(row_entry, dtype=np.int64)
        self.entry_starts_ = np.flatnonzero(np.r_[True, np.diff(self.row_entry_) != 0])
        topic_ids = {topic: i for i, topic in enumerate(sorted({e.topic for e in self.entries_}))}
        self.entry_topic_ = np.asarray([topic_ids[e.topic] for e in self.entries_], dtype=np.int64)
        row_words = [self.processor.words(r) for r in rows]
        # The row spaces index rows by slot (see _EntryMax), not by fit order.
        self.entry_max_ = _EntryMax(self.row_entry_)
        row_of_slot = np.argsort(self.entry_max_.slot_of_row)
        self.words_ = _InvertedTfidf(row_words, row_order=row_of_slot)
        self.chars_ = _InvertedTfidf(
            [self.processor.char_ngrams(r) for r in rows], row_order=row_of_slot
        )
        entry_docs: list[list[str]] = [[] for _ in self.entries_]
        topic_docs: list[list[str]] = [[] for _ in topic_ids]
        for row_index, tokens in enumerate(row_words):
            entry_docs[self.row_entry_[row_index]].extend(tokens)
            topic_docs[self.entry_topic_[self.row_entry_[row_index]]].extend(tokens)
        self.entry_docs_ = _InvertedTfidf(entry_docs, self.words_.vocabulary)
        self.topic_docs_ = _InvertedTfidf(topic_docs, self.words_.vocabulary)
        self._fit_keywords()
        self._fit_gate(rows, [self.processor.normalize(t) for t in out_of_scope])
        self._fit_fused()
        self._fit_calibration(rows, out_of_scope, calibration)
        return self

    def _fit_fused(self) -> None:
        """The fused postings of the small-base path (None for a large base)."""
        self.fused_: _FusedPostings | None = None
        if not _FusedPostings.fits(self.row_entry_):
            return
        self.fused_ = _FusedPostings(
            (self.words_, self.chars_, self.entry_docs_, self.topic_docs_), self.gate_,
            self.row_entry_, self.entry_max_.slot_of_row, self.entry_topic_,
        )
        for space in (self.words_, self.chars_, self.entry_docs_, self.topic_docs_):
            space.release_postings()
        # An entry's keyword boost by how many keywords it shares: the same float additions
        # as adding the weight once per shared keyword, then the cap.
        counts = np.bincount(
            np.concatenate([np.zeros(0, np.int64), *self.keyword_entries_.values()]),
            minlength=len(self.entries_),
        )
        sums = [0.0]
        for _ in range(int(counts.max())):
            sums.append(sums[-1] + self.weights.keyword)
        self.boost_by_count_ = np.minimum(np.asarray(sums), self.weights.keyword_cap)

    def _fit_keywords(self) -> None:
        keywords = self.processor.keywords
        postings: dict[str, list[int]] = {}
        for index, entry in enumerate(self.entries_):
            text = self.processor.normalize(" ".join((entry.title, *entry.questions)))
            for word in set(self.processor.words(text)) & keywords:
                postings.setdefault(word, []).append(index)
        self.keyword_entries_ = {
            word: np.asarray(ids, dtype=np.int64) for word, ids in postings.items()
        }

    def _fit_gate(self, rows: list[str], out_of_scope: list[str]) -> None:
        """A character model of "is this about our domain at all?" (None without examples)."""
        self.gate_: LinearTextClassifier | None = None
        if out_of_scope:
            self.gate_ = LinearTextClassifier(
                ngram_range=CHAR_NGRAMS, c=4.0, vocabulary=self.chars_.vocabulary
            ).fit(
                rows + out_of_scope, ["in"] * len(rows) + ["out"] * len(out_of_scope)
            )

    def _gate_logit(self, char_terms: np.ndarray, char_tf: np.ndarray) -> float:
        if self.gate_ is None:
            return 0.0
        return _logit(self.gate_.predict_proba_terms(char_terms, char_tf)["in"])

    def _fit_calibration(
        self,
        rows: list[str],
        out_of_scope: Sequence[str],
        calibration: Sequence[tuple[str, str | None]],
    ) -> None:
        from sklearn.linear_model import LogisticRegression  # only needed to fit

        features: list[list[float]] = []
        labels: list[int] = []
        if calibration:
            for text, truth in calibration:
                normalized = self.processor.normalize(text)
                scores, feats = self._score(normalized)
                best = int(np.argmax(scores))
                features.append(feats(best))
                labels.append(int(truth is not None and self.entries_[best].topic == truth))
        else:
            for row_index, normalized in enumerate(rows):
                truth = self.entries_[self.row_entry_[row_index]].topic
                scores, feats = self._score(normalized, exclude_row=row_index)
                best = int(np.argmax(scores))
                features.append(feats(best))
                labels.append(int(self.entries_[best].topic == truth))
            for text in out_of_scope:
                scores, feats = self._score(self.processor.normalize(text))
                features.append(feats(int(np.argmax(scores))))
                labels.append(0)
        model = LogisticRegression(C=1.0, max_iter=2000)
        model.fit(np.asarray(features), np.asarray(labels))
        self.calibration_coef_ = model.coef_[0].copy()
        self.calibration_intercept_ = float(model.intercept_[0])

    # -- scoring -----------------------------------------------------------------------
    def _score(
        self, normalized: str, exclude_row: int | None = None, content: str | None = None
    ) -> tuple[np.ndarray, Callable[[int], list[float]]]:
        """Entry similarities, and a function giving calibration features of one entry.

        `content` is `processor.content(normalized)` when the caller already has it.
        """
        if content is None:
            content = self.processor.content(normalized)
        if self.fused_ is not None:
            return self._score_fused(normalized, exclude_row, content)
        return self._score_spaces(normalized, exclude_row, content)

    def _score_fused(
        self, normalized: str, exclude_row: int | None, content: str
    ) -> tuple[np.ndarray, Callable[[int], list[float]]]:
        """`_score` for a small base: every space gathered at once (see _FusedPostings).

        Same arithmetic, value for value and in the same order, as `_score_spaces`; only
        the number of numpy calls differs.
        """
        fused = self.fused_
        assert fused is not None
        weights = self.weights
        words = self.processor.words(normalized)
        grams = self.processor.char_ngrams(normalized)
        word_cols, word_counts, word_known = known_terms(words, self.words_.vocabulary)
        char_cols, char_counts, char_known = known_terms(grams, self.chars_.vocabulary)
        n_word = len(word_cols)
        columns: list[int] = []
        query: list[np.ndarray] = []
        char_q = None
        if n_word:
            # Rows: the query's weights in the phrasing, entry and topic spaces.
            # `take`, not [:, cols]: that result is column-major, and a strided row would
            # make `row @ row` sum in another order than a 1-D query vector does.
            word_q = fused.word_idf.take(word_cols, axis=1)
            if max(word_counts) > 1:
                word_q *= sublinear_tf(word_counts)
            for row in word_q:  # a contiguous row: its dot is the very sum a 1-D query gets
                row /= math.sqrt(row.dot(row))
            n = fused.n_words
            columns = [*word_cols, *[c + n for c in word_cols], *[c + 2 * n for c in word_cols]]
            query.append(word_q.ravel())
        if char_cols:
            # Rows: the query's weights in the n-gram space and in the domain gate.
            char_q = fused.char_idf.take(char_cols, axis=1)
            if max(char_counts) > 1:
                char_q *= sublinear_tf(char_counts)
            for row in char_q:
                row /= math.sqrt(row.dot(row))
            first = 3 * fused.n_words
            columns += [c + first for c in char_cols]
            query.append(char_q[0])
        n_word_postings = 0
        if columns:
            terms = np.array(columns)
            # Array methods, not np.take & co.: their Python wrappers cost ~1 us a call here.
            lengths = fused.lengths.take(terms)
            ends = lengths.cumsum()
            positions = (fused.starts.take(terms) - ends + lengths).repeat(lengths)
            positions += np.arange(int(ends[-1]))
            rows = fused.rows.take(positions)
            values = fused.weights.take(positions)
            values *= (np.concatenate(query) if len(query) > 1 else query[0]).repeat(lengths)
            if n_word:
                n_word_postings = int(ends[n_word - 1])
                head = int(ends[3 * n_word - 1])
            else:
                head = 0
            word_values = values[:n_word_postings].copy()
            values[:n_word_postings] *= weights.word
            values[head:] *= weights.char
            bins = np.bincount(rows, weights=values, minlength=fused.n_bins)
        else:
            rows, word_values = np.zeros(0, dtype=np.intp), np.zeros(0)
            bins = np.zeros(fused.n_bins)
        exclude_bin = None
        if exclude_row is not None:
            exclude_bin = int(fused.bin_of_row[exclude_row])
            bins[exclude_bin] = 0.0
        entry_scores = np.maximum.reduce(bins[: fused.n_grid].reshape(fused.shape), axis=0)
        if weights.entry:
            start = fused.entries_at
            entry_scores = entry_scores + weights.entry * bins[start : start + len(entry_scores)]
        if weights.topic:
            entry_scores = entry_scores + weights.topic * bins.take(fused.topic_bins)
        boosts = None
        get = self.keyword_entries_.get
        hits = [ids for word in set(words) if (ids := get(word)) is not None]
        if hits:
            shared = np.bincount(np.concatenate(hits), minlength=len(entry_scores))
            boosts = self.boost_by_count_.take(shared)
            entry_scores = entry_scores + boosts * (entry_scores > 0)
        length = math.log1p(len(content))
        word_coverage = float(word_known) / len(words) if n_word else 0.0
        char_coverage = float(char_known) / len(grams) if char_cols else 0.0

        def features(best: int) -> list[float]:
            top = entry_scores[best]
            other_topic = float(
                np.maximum.reduce(entry_scores, where=fused.other_topic[self.entry_topic_[best]],
                                  initial=0.0)
            )
            slots = fused.entry_bins[best]
            if exclude_bin is not None:
                slots = slots[slots != exclude_bin]
            best_word = 0.0
            if len(slots):
                # Each phrasing's word cosine, summed in term order as `_best_word_row` does.
                word_rows = rows[:n_word_postings]
                by_bin = np.bincount(word_rows, weights=word_values, minlength=fused.n_grid)
                best_word = float(np.maximum.reduce(by_bin.take(slots)))
            gate = 0.0
            if self.gate_ is not None:
                p = self.gate_.predict_proba_weights(
                    None if char_q is None else terms[3 * n_word :] - 3 * fused.n_words,
                    None if char_q is None else char_q[1],
                )["in"]
                gate = _logit(p)
            return [
                float(top),
                float(top - other_topic),
                best_word,
                0.0 if boosts is None else float(boosts[best]),
                word_coverage,
                char_coverage,
                length,
                gate,
            ]

        return entry_scores, features

    def _add_boosts(
        self, words: list[str], entry_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Entry scores plus the shared-keyword boost (on scoring entries), and the boosts."""
        weights = self.weights
        boosts = np.zeros(len(self.entries_))
        get = self.keyword_entries_.get
        hits = [ids for word in set(words) if (ids := get(word)) is not None]
        if not hits:
            return entry_scores, boosts  # adding +0.0 would change nothing
        # Every hit adds the same weight, so the order of the words does not matter.
        for ids in hits:
            boosts[ids] += weights.keyword
        np.minimum(boosts, weights.keyword_cap, out=boosts)
        return entry_scores + boosts * (entry_scores > 0), boosts

    def _score_spaces(
        self, normalized: str, exclude_row: int | None, content: str
    ) -> tuple[np.ndarray, Callable[[int], list[float]]]:
        """`_score` for a large base: each space gathered on its own, long lists by slices.

        Only without `fused_`: with it, the spaces' own posting lists are released.
        """
        words = self.processor.words(normalized)
        word_terms, word_tf, word_coverage = term_frequencies(words, self.words_.vocabulary)
        char_terms, char_tf, char_coverage = term_frequencies(
            self.processor.char_ngrams(normalized), self.chars_.vocabulary
        )
        weights = self.weights
        word_rows, word_values, word_lengths, rows, values = self._row_postings(
            word_terms, word_tf, char_terms, char_tf
        )
        # One pass over the rows for both spaces: at 100x the base size this add is the cost.
        combined = np.bincount(rows, weights=values, minlength=self.words_.n_rows)
        exclude_slot = None
        if exclude_row is not None:
            exclude_slot = int(self.entry_max_.slot_of_row[exclude_row])
            combined[exclude_slot] = 0.0
        entry_scores = self.entry_max_.best(combined)
        if weights.entry:
            entry_scores = entry_scores + weights.entry * self.entry_docs_.score_terms(
                word_terms, word_tf
            )
        if weights.topic:
            topic_scores = self.topic_docs_.score_terms(word_terms, word_tf)
            entry_scores = entry_scores + weights.topic * topic_scores[self.entry_topic_]
        entry_scores, boosts = self._add_boosts(words, entry_scores)
        length = math.log1p(len(content))
        gate = self._gate_logit(char_terms, char_tf)

        def features(best: int) -> list[float]:
            top = entry_scores[best]
            other_topic = float(
                np.max(entry_scores, where=self.entry_topic_ != self.entry_topic_[best],
                       initial=0.0)
            )
            return [
                float(top),
                float(top - other_topic),
                self._best_word_row(best, word_rows, word_values, word_lengths, exclude_slot),
                float(boosts[best]),
                word_coverage,
                char_coverage,
                length,
                gate,
            ]

        return entry_scores, features

    def _row_postings(
        self, word_terms: np.ndarray, word_tf: np.ndarray,
        char_terms: np.ndarray, char_tf: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The query's word postings (rows, values, list lengths), and word + char postings
        weighted for one bincount.

        Both spaces are gathered straight into one buffer (no concatenate); the word values
        are also returned unweighted, as the calibration feature `_best_word_row` needs.
        """
        word_lengths = self.words_.lengths(word_terms)
        char_lengths = self.chars_.lengths(char_terms)
        n_word = int(word_lengths.sum())
        total = n_word + int(char_lengths.sum())
        if total < _SLICE_COPY_MIN_AVERAGE * (len(word_terms) + len(char_terms)):
            # Short lists (a query of rare terms): fewer numpy calls beat a memory pass.
            word_rows, word_values = self.words_.postings(word_terms, word_tf)
            char_rows, char_values = self.chars_.postings(char_terms, char_tf)
            rows = np.concatenate((word_rows, char_rows))
            values = np.concatenate(
                (self.weights.word * word_values, self.weights.char * char_values)
            )
            return word_rows, word_values, word_lengths, rows, values
        rows = np.empty(total, dtype=self.words_.row_dtype)
        values = np.empty(total)
        word_values = np.empty(n_word)
        self.words_.gather(word_terms, word_tf, word_lengths, rows[:n_word], word_values)
        self.chars_.gather(char_terms, char_tf, char_lengths, rows[n_word:], values[n_word:])
        np.multiply(word_values, self.weights.word, out=values[:n_word])
        values[n_word:] *= self.weights.char
        return rows[:n_word], word_values, word_lengths, rows, values

    def _best_word_row(self, entry: int, rows: np.ndarray, values: np.ndarray,
                       lengths: np.ndarray, exclude_slot: int | None) -> float:
        """The best word-space cosine among one entry's phrasings (a calibration feature).

        `rows` holds one ascending posting list per query term (`lengths` long each), so a
        single binary search finds the entry's few slots in every list: the cost follows the
        number of terms, not the tens of thousands of postings a query has at 100x.  Each
        slot's contributions are added in term order, as `bincount` did.
        """
        slots = self.entry_max_.slots_of(entry)
        if exclude_slot is not None:
            slots = slots[slots != exclude_slot]
        if not len(rows) or not len(slots):
            return 0.0
        term_base = np.arange(len(lengths), dtype=np.int64) * self.words_.n_rows
        keys = np.repeat(term_base, lengths) + rows
        wanted = (term_base[:, None] + slots[None, :]).ravel()
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        found = np.flatnonzero(keys[at] == wanted)  # term-major, so each slot's in term order
        if not len(found):
            return 0.0
        slot_index = found % len(slots)
        return float(np.bincount(slot_index, weights=values[at[found]]).max())

    def _confidence(self, features: list[float]) -> float:
        z = float(self.calibration_coef_.dot(features)) + self.calibration_intercept_
        return 1.0 / (1.0 + math.exp(-z))

    def match(self, text: str, k: int | None = None) -> MatchResult:
        """The best entries for a query and whether the bot should answer with the first."""
        k = self.suggestions if k is None else k
        normalized = self.processor.normalize(text)
        content = self.processor.content(normalized)
        if not content:
            return MatchResult(query=text, candidates=(), confidence=0.0, answered=False)
        scores, features = self._score(normalized, content=content)
        top = _top_entries(scores, min(max(k, 1), len(scores)))
        entries = self.entries_
        candidates = tuple(
            Candidate(entries[i], score)
            for i, score in zip(top.tolist(), scores[top].tolist(), strict=True) if score > 0
        )
        if not candidates:
            return MatchResult(query=text, candidates=(), confidence=0.0, answered=False)
        confidence = self._confidence(features(int(top[0])))
        return MatchResult(
            query=text,
            candidates=candidates,
            confidence=confidence,
            answered=confidence >= self.threshold,
        )
