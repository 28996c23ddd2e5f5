"""An index row's text (``gram_text``) is the distinct grams of its message, in order, as
``grams`` gives them: the rows, and so what search finds, stay the same."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmschat.chat import search_index


def reference(text: str) -> str:
    """What a message's index row held before ``gram_text``."""
    return " ".join(dict.fromkeys(search_index.grams(text)))


TEXTS = [
    "",
    "a",
    "ab",
    "hello @admin 5",
    "hello hello hello",
    "회의를 회의에서 회의",
    "中文消息 日本語のテキスト",
    "snake_case_name __dunder__ _",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ① ﬁ",
    "Straße ΣΊΣΥΦΟΣ İstanbul",
    "e\u0301 combining, a\u200bzero width, a\u200djoiner",
    "😀👍🏽 emoji 👨‍👩‍👧 x😀y",
    "https://example.com/a?b=1&c=2 bob@example.com",
    "12345 3.14 1,000",
    "\x00\x01 tabs\tand\nlines",
]


@pytest.mark.parametrize("text", TEXTS)
def test_gram_text_is_the_distinct_grams_in_order(text: str) -> None:
    assert search_index.gram_text(text) == reference(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60))
def test_gram_text_of_any_text(text: str) -> None:
    assert search_index.gram_text(text) == reference(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([*"ab_ 1", "회의", "를", "ｆ", "😀", "é", "e\u0301"])).map("".join))
def test_gram_text_of_runs_and_separators(text: str) -> None:
    assert search_index.gram_text(text) == reference(text)
