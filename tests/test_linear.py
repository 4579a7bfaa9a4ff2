"""The n-gram classifier's query-side arithmetic: counting terms must agree with the
plain definition whatever the tokens (order, repeats, unknowns), because the matcher and
the scam checker score with what it returns."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from classifiers.linear import known_terms

VOCABULARY = {"骗": 0, "转账": 1, "保险": 2, "a": 3, "": 4, "退保": 5}


def plain_known_terms(tokens: list[str],
                      vocabulary: dict[str, int]) -> tuple[list[int], list[int], int]:
    """The definition: known tokens, first-seen order, with their counts."""
    columns: list[int] = []
    counts: list[int] = []
    for token, count in Counter(tokens).items():
        if token in vocabulary:
            columns.append(vocabulary[token])
            counts.append(count)
    return columns, counts, sum(counts)


@given(st.lists(st.sampled_from([*VOCABULARY, "未知", "b", "退", "🙂"]), max_size=60))
def test_known_terms_are_the_known_tokens_in_first_seen_order_with_counts(tokens):
    assert known_terms(tokens, VOCABULARY) == plain_known_terms(tokens, VOCABULARY)


def test_a_query_of_unknown_tokens_has_no_terms():
    assert known_terms(["未知", "🙂", "未知"], VOCABULARY) == ([], [], 0)


def test_column_zero_counts_like_any_other():
    assert known_terms(["骗", "x", "骗"], VOCABULARY) == ([0], [2], 2)
