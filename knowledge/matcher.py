"""Matching a consumer's question to a knowledge entry, with a calibrated confidence.

A wrong confident answer is worse than none, so the matcher returns not only the closest
entries but the probability that the best one is on the right topic; below a threshold
the bot declines and offers suggestions.

How it works: every question phrasing of every entry is a row of two TF-IDF matrices
(jieba words with the domain dictionary, and character 1–3-grams), fitted once with
scikit-learn (imported only when fitting, so a cached index starts fast).  Queries are
*not* vectorised with `transform` (about 1 ms of per-call
overhead); instead the fitted vocabulary, idf and an inverted index (term → rows,
weights) score a query in tens of microseconds with `numpy.bincount`.  An entry's
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

from classifiers.linear import LinearTextClassifier, term_frequencies
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


class _InvertedTfidf:
    """A fitted TF-IDF space that scores queries by cosine without `transform`.

    Spaces built with the same `vocabulary` share term columns, so a query's terms are
    counted once and scored in several spaces (phrasings, entries, topics).
    """

    def __init__(
        self, documents: list[list[str]], vocabulary: dict[str, int] | None = None
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer  # only needed to fit

        vectorizer = TfidfVectorizer(
            analyzer=_identity, lowercase=False, sublinear_tf=True, token_pattern=None,
            vocabulary=vocabulary,
        )
        matrix = vectorizer.fit_transform(documents).tocsc()
        self.n_rows = matrix.shape[0]
        self.vocabulary: dict[str, int] = dict(vectorizer.vocabulary_)
        self.idf: np.ndarray = vectorizer.idf_
        self._indptr = matrix.indptr
        self._rows = matrix.indices
        self._weights = matrix.data

    def score(self, tokens: Sequence[str]) -> tuple[np.ndarray, float]:
        """Cosine of the query with every row, and the share of tokens the space knows."""
        columns, tf, coverage = term_frequencies(tokens, self.vocabulary)
        return self.score_terms(columns, tf), coverage

    def score_terms(self, columns: np.ndarray, tf: np.ndarray) -> np.ndarray:
        """Cosine with every row for a query given as (columns, sublinear tf)."""
        rows, values = self.postings(columns, tf)
        return np.bincount(rows, weights=values, minlength=self.n_rows)

    def postings(self, columns: np.ndarray, tf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, contribution) of the query's terms, gathered in one vectorised step."""
        if not len(columns):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        weights = tf * self.idf[columns]
        weights /= np.sqrt(weights @ weights)
        starts, ends = self._indptr[columns], self._indptr[columns + 1]
        lengths = ends - starts
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
            lengths.sum()
        )
        return self._rows[positions], self._weights[positions] * np.repeat(weights, lengths)


def _identity(tokens: list[str]) -> list[str]:
    return tokens


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
        self.words_ = _InvertedTfidf(row_words)
        self.chars_ = _InvertedTfidf([self.processor.char_ngrams(r) for r in rows])
        entry_docs: list[list[str]] = [[] for _ in self.entries_]
        topic_docs: list[list[str]] = [[] for _ in topic_ids]
        for row_index, tokens in enumerate(row_words):
            entry_docs[self.row_entry_[row_index]].extend(tokens)
            topic_docs[self.entry_topic_[self.row_entry_[row_index]]].extend(tokens)
        self.entry_docs_ = _InvertedTfidf(entry_docs, self.words_.vocabulary)
        self.topic_docs_ = _InvertedTfidf(topic_docs, self.words_.vocabulary)
        self._fit_keywords()
        self._fit_gate(rows, [self.processor.normalize(t) for t in out_of_scope])
        self._fit_calibration(rows, out_of_scope, calibration)
        return self

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
        p = self.gate_.predict_proba_terms(char_terms, char_tf)["in"]
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

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
        self, normalized: str, exclude_row: int | None = None
    ) -> tuple[np.ndarray, Callable[[int], list[float]]]:
        """Entry similarities, and a function giving calibration features of one entry."""
        words = self.processor.words(normalized)
        word_terms, word_tf, word_coverage = term_frequencies(words, self.words_.vocabulary)
        char_terms, char_tf, char_coverage = term_frequencies(
            self.processor.char_ngrams(normalized), self.chars_.vocabulary
        )
        weights = self.weights
        word_rows, word_values = self.words_.postings(word_terms, word_tf)
        char_rows, char_values = self.chars_.postings(char_terms, char_tf)
        # One pass over the rows for both spaces: at 100x the base size this add is the cost.
        combined = np.bincount(
            np.concatenate((word_rows, char_rows)),
            weights=np.concatenate((weights.word * word_values, weights.char * char_values)),
            minlength=self.words_.n_rows,
        )
        if exclude_row is not None:
            combined[exclude_row] = 0.0
        entry_scores = np.maximum.reduceat(combined, self.entry_starts_)
        if weights.entry:
            entry_scores = entry_scores + weights.entry * self.entry_docs_.score_terms(
                word_terms, word_tf
            )
        if weights.topic:
            topic_scores = self.topic_docs_.score_terms(word_terms, word_tf)
            entry_scores = entry_scores + weights.topic * topic_scores[self.entry_topic_]
        boosts = np.zeros(len(self.entries_))
        for word in set(words):
            ids = self.keyword_entries_.get(word)
            if ids is not None:
                boosts[ids] += weights.keyword
        np.minimum(boosts, weights.keyword_cap, out=boosts)
        entry_scores = entry_scores + boosts * (entry_scores > 0)
        length = math.log1p(len(self.processor.content(normalized)))
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
                self._best_word_row(best, word_rows, word_values, exclude_row),
                float(boosts[best]),
                word_coverage,
                char_coverage,
                length,
                gate,
            ]

        return entry_scores, features

    def _best_word_row(self, entry: int, rows: np.ndarray, values: np.ndarray,
                       exclude_row: int | None) -> float:
        """The best word-space cosine among one entry's phrasings (a calibration feature)."""
        low = int(self.entry_starts_[entry])
        high = int(self.entry_starts_[entry + 1]) if entry + 1 < len(self.entry_starts_) \
            else self.words_.n_rows
        inside = (rows >= low) & (rows < high) & (rows != (exclude_row or -1))
        if not inside.any():
            return 0.0
        return float(np.bincount(rows[inside] - low, weights=values[inside]).max())

    def _confidence(self, features: list[float]) -> float:
        z = float(np.dot(self.calibration_coef_, features)) + self.calibration_intercept_
        return 1.0 / (1.0 + math.exp(-z))

    def match(self, text: str, k: int | None = None) -> MatchResult:
        """The best entries for a query and whether the bot should answer with the first."""
        k = self.suggestions if k is None else k
        normalized = self.processor.normalize(text)
        if not self.processor.content(normalized):
            return MatchResult(query=text, candidates=(), confidence=0.0, answered=False)
        scores, features = self._score(normalized)
        count = min(max(k, 1), len(scores))
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top], kind="stable")]
        candidates = tuple(
            Candidate(self.entries_[i], float(scores[i])) for i in top if scores[i] > 0
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
