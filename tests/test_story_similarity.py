"""The agent-led check's "nearly the same story" count: exact, and bounded in memory.

Agent-led surrender rings file the same text for many clients, so each new complaint is
compared with the recent stories.  The comparison keeps the recent stories' trigrams
between filings; these tests pin that keeping them changes no count.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.complaint_records import SIMILAR_TEXT, StoryTrigrams, _similar, _trigrams

TEMPLATE = ("业务员说我的保险不划算，可以帮我全额退保，只收百分之二十手续费，"
            "材料都由他们准备，让我去{}说是被误导销售，钱退回来以后再买他们推荐的理财")


def plain_count(story: str, recent: list[str]) -> int:
    mine = _trigrams(story)
    return sum(_similar(mine, _trigrams(text)) >= SIMILAR_TEXT for text in recent)


def test_nearly_the_same_story_counts_and_a_different_one_does_not():
    recent = [TEMPLATE.format("银保监"), TEMPLATE.format("保险公司"),
              "信用卡年费没说清楚就扣了，客服也不解释"]
    assert StoryTrigrams().count_alike(TEMPLATE.format("监管局"), recent) == 2


def test_kept_trigrams_give_the_same_counts_as_computing_them_afresh():
    stories = StoryTrigrams()
    recent: list[str] = []
    for place in ["银保监", "保险公司", "12378", "消保委", "监管局", "银保监"]:
        story = TEMPLATE.format(place)
        assert stories.count_alike(story, recent) == plain_count(story, recent)
        recent.insert(0, story)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="退保手续费全额业务员投诉ab12", max_size=30), max_size=12),
       st.text(alphabet="退保手续费全额业务员投诉ab12", max_size=30))
def test_any_stories_count_as_the_plain_jaccard_comparison(recent, story):
    stories = StoryTrigrams()
    assert stories.count_alike(story, recent) == plain_count(story, recent)
    assert stories.count_alike(story, recent[::-1]) == plain_count(story, recent)


def test_only_the_latest_comparison_is_kept_and_never_beyond_the_budget():
    stories = StoryTrigrams(budget=100)
    long_story = "".join(chr(0x4E00 + i) for i in range(300))  # more trigrams than the budget
    stories.count_alike("新的投诉", [TEMPLATE.format("银保监"), long_story])
    assert set(stories._kept) == {TEMPLATE.format("银保监")}
    stories.count_alike("新的投诉", ["另一件事情的投诉内容"])
    assert set(stories._kept) == {"另一件事情的投诉内容"}
    assert stories.count_alike(long_story, [long_story]) == 1
