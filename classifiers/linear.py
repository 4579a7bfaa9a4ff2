"""A character n-gram TF-IDF + logistic-regression text classifier that predicts in numpy.

The scam checker and the complaint triage both need "short Chinese text → label" with a
probability.  scikit-learn fits the model; prediction then uses only the fitted
vocabulary, idf and coefficients, because `Pipeline.predict_proba` costs about a
millisecond of per-call overhead and importing scikit-learn costs more than a second at
start-up — neither is needed to score one message.
"""

from __future__ import annotations

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
        for size in range(low, high + 1):
            grams.extend(chunk[i : i + size] for i in range(len(chunk) - size + 1))
    return grams


def term_frequencies(
    tokens: Sequence[str], vocabulary: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Known terms of a query as (columns, sublinear tf), and the share of tokens known."""
    get = vocabulary.get
    pairs = [(j, c) for t, c in Counter(tokens).items() if (j := get(t)) is not None]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
    table = np.array(pairs, dtype=np.int64)
    coverage = float(table[:, 1].sum()) / len(tokens)
    return table[:, 0], 1.0 + np.log(table[:, 1]), coverage


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
        logits = self.intercept_.copy()
        if len(columns):
            weights = tf * self.idf_[columns]
            weights /= np.sqrt(weights @ weights)
            logits = logits + weights @ self.coef_t_[columns]
        logits -= logits.max()
        exp = np.exp(logits)
        probabilities = exp / exp.sum()
        return {label: float(p) for label, p in zip(self.classes_, probabilities, strict=True)}

    def predict(self, text: str) -> tuple[str, float]:
        """The most probable label and its probability."""
        probabilities = self.predict_proba(text)
        label = max(probabilities, key=probabilities.__getitem__)
        return label, probabilities[label]
