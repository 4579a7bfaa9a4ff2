"""A character n-gram TF-IDF + logistic-regression text classifier that predicts in numpy.

The scam checker and the complaint triage both need "short Chinese text → label" with a
probability.  scikit-learn fits the model; prediction then uses only the fitted
vocabulary, idf and coefficients, because `Pipeline.predict_proba` costs about a
millisecond of per-call overhead and importing scikit-learn costs more than a second at
start-up — neither is needed to score one message.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

_KEEP = re.compile(r"[0-9a-z\u4e00-\u9fff]+")


def char_ngrams(text: str, low: int = 1, high: int = 3) -> list[str]:
    """Character n-grams inside runs of letters, digits and Chinese characters."""
    text = unicodedata.normalize("NFKC", text).lower()
    grams: list[str] = []
    for chunk in _KEEP.findall(text):
        length = len(chunk)
        for size in range(low, high + 1):
            grams += [chunk[i : i + size] for i in range(length - size + 1)]
    return grams


# 1 + ln(count) for small counts, computed by the same vectorised `np.log` as a query's
# array would be (elementwise, so each entry is bit for bit the value computed in place);
# a table lookup saves two numpy calls per query.
_SUBLINEAR_TF: list[float] = (1.0 + np.log(np.arange(1, 256, dtype=np.int64))).tolist()


def known_terms(
    tokens: Sequence[str], vocabulary: dict[str, int]
) -> tuple[list[int], list[int], int]:
    """The tokens the vocabulary knows, as (columns, counts, known tokens) in first-seen order.

    Plain lists, so a caller scoring several spaces can build one array for all of them.
    Every token is looked up and counted in C (`map` and `Counter`), with unknown tokens
    counted under None and dropped: a pasted message has hundreds of character n-grams,
    and a Python loop over them was a tenth of a scam check's time.  A vocabulary maps each
    token to its own column, so counting columns is counting tokens.
    """
    counted = Counter(map(vocabulary.get, tokens))
    unknown = counted.pop(None, 0)
    return list(counted), list(counted.values()), len(tokens) - unknown  # type: ignore[arg-type]


def sublinear_tf(counts: list[int]) -> np.ndarray:
    """1 + ln(count) per term, as `TfidfVectorizer(sublinear_tf=True)` weighs counts."""
    if max(counts) <= len(_SUBLINEAR_TF):
        table = _SUBLINEAR_TF
        return np.array([table[count - 1] for count in counts])
    return 1.0 + np.log(np.array(counts, dtype=np.int64))


def term_frequencies(
    tokens: Sequence[str], vocabulary: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Known terms of a query as (columns, sublinear tf), and the share of tokens known."""
    columns, counts, known = known_terms(tokens, vocabulary)
    if not columns:
        return np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
    return np.array(columns, dtype=np.int64), sublinear_tf(counts), float(known) / len(tokens)


def sublinear_tfidf(
    tokens: Sequence[str], vocabulary: dict[str, int], idf: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """A query's TF-IDF vector as (columns, l2-normalised weights), and its coverage.

    The same weighting as a fitted `TfidfVectorizer(sublinear_tf=True)`, computed for one
    query without `transform`; coverage is the share of tokens the vocabulary knows.
    """
    columns, tf, coverage = term_frequencies(tokens, vocabulary)
    weights = tf * idf[columns]
    if len(weights):
        weights /= np.sqrt(weights @ weights)
    return columns, weights, coverage


class LinearTextClassifier:
    """Fitted once from labelled texts; `predict_proba` only reads what `fit` built."""

    def __init__(self, ngram_range: tuple[int, int] = (1, 3), c: float = 10.0,
                 class_weight: str | None = "balanced",
                 vocabulary: dict[str, int] | None = None) -> None:
        self.ngram_range = ngram_range
        self.c = c
        self.class_weight = class_weight
        self.vocabulary = vocabulary

    def _grams(self, text: str) -> list[str]:
        return char_ngrams(text, *self.ngram_range)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> LinearTextClassifier:
        """Learn the vocabulary, idf and one weight vector per label."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizer = TfidfVectorizer(analyzer=self._grams, sublinear_tf=True, min_df=1,
                                     vocabulary=self.vocabulary)
        matrix = vectorizer.fit_transform(texts)
        model = LogisticRegression(C=self.c, class_weight=self.class_weight, max_iter=3000)
        model.fit(matrix, list(labels))
        self.vocabulary_: dict[str, int] = dict(vectorizer.vocabulary_)
        self.idf_ = vectorizer.idf_.astype(np.float64)
        self.classes_: list[str] = [str(c) for c in model.classes_]
        coef = model.coef_.astype(np.float64)
        intercept = model.intercept_.astype(np.float64)
        if len(self.classes_) == 2:  # binary: sklearn keeps one row for the second class
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_t_ = np.ascontiguousarray(coef.T)  # vocabulary x classes
        self.intercept_ = intercept
        return self

    def predict_proba(self, text: str) -> dict[str, float]:
        """The probability of each label for one text."""
        return self.predict_proba_grams(self._grams(text))

    def predict_proba_grams(self, grams: Sequence[str]) -> dict[str, float]:
        """The same, for n-grams the caller already computed (same `ngram_range`)."""
        columns, tf, _ = term_frequencies(grams, self.vocabulary_)
        return self.predict_proba_terms(columns, tf)

    def predict_proba_terms(self, columns: np.ndarray, tf: np.ndarray) -> dict[str, float]:
        """The same, for terms already counted against this model's vocabulary."""
        if len(columns):
            weights = tf * self.idf_.take(columns)
            weights /= math.sqrt(weights.dot(weights))
            return self.predict_proba_weights(columns, weights)
        return self.predict_proba_weights(None, None)

    def predict_proba_weights(
        self, columns: np.ndarray | None, weights: np.ndarray | None
    ) -> dict[str, float]:
        """The same, for a query already weighted by this model's idf and l2-normalised.

        Lets a caller that normalises several spaces at once skip repeating the work;
        `columns` and `weights` are both None for a query with no known term.
        """
        logits = self.intercept_
        if weights is not None:
            logits = logits + weights @ self.coef_t_.take(columns, axis=0)
        logits = logits - np.maximum.reduce(logits)
        exp = np.exp(logits)
        total = float(np.add.reduce(exp))
        # Python's float division is numpy's, value for value, without another array.
        return dict(zip(self.classes_, [e / total for e in exp.tolist()], strict=True))

    def predict(self, text: str) -> tuple[str, float]:
        """The most probable label and its probability."""
        probabilities = self.predict_proba(text)
        label = max(probabilities, key=probabilities.__getitem__)
        return label, probabilities[label]
