"""Plain texts skip the markdown passes and nh3, and their HTML stays byte for byte the same.

``full`` is the renderer's full pass followed by nh3, as every text was rendered before the
plain fast path; each case asserts the fast path's answer equals it.
"""

from __future__ import annotations

import sys
import unicodedata
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmschat.chat import rendering

KNOWN = {"admin": 1, "bob": 2, "jo-ann": 3, "r.lee": 4}

CORPUS = [
    "",
    " ",
    "hello",
    "  leading and trailing  ",
    "hello @admin 5",
    "thanks @bob.",
    "@bob, @admin and @carol!",
    "@ab is too short, @" + "x" * 33 + " too long",
    "mail bob@example.com, not @bob@example.com",
    "@Jo-Ann and @R.Lee... and @r.lee.",
    "50% of @bob; a+@bob; a/@bob; a-@bob; a.@bob; a@bob",
    'it\'s "quoted" & <b>not bold</b> <script>alert(1)</script>',
    "&amp; &lt; &#x27; &nbsp; &copy;",
    "a\u00a0no-break\u00a0space @bob\u00a0x",
    "line one\nline two\n\nline four\n",
    "\n\n@bob\n",
    "tabs\there\x0bvertical\x0cform\x01ctl\x7fdel\x1fus",
    "中文消息，@admin 你好。日本語のテキスト、한국어 메시지",
    "emoji 😀👍🏽👨‍👩‍👧 and flags 🇫🇷 @bob 🎉",
    "combining e\u0301 and zero\u200bwidth\u200d joiner \ufeff bom",
    "right-to-left \u202eevil\u202c and עברית and العربية",
    "noncharacters \ufffe\uffff\U0001fffe\U0010ffff",
    "example.com and www.example.com (no scheme) and http:/x and https:",
    "ratio 1:2, time 10:30, (parens) {braces} ~tilde~ #hash $dollar ^caret |pipe \\back",
    "= + - . , ; ! ? ' \" / % @ # $ ^ ( ) { } | ~",
]
"""Texts that take the fast path: every one is plain."""

MARKUP = [
    "`code`",
    "```\nfenced\n```",
    "**bold** and *em* and _em_",
    "snake_case_name",
    "[label](https://example.com)",
    "see https://example.com/a?b=1&c=2.",
    "HTTP://EXAMPLE.COM",
    "mailto [x](mailto:bob@example.com)",
    "nul\x00byte",
    "windows\r\nline",
    "old mac\rline",
    "[brackets] only",
    "ftp://not-a-link but a scheme separator",
    "@jo_ann with an underscore",
]
"""Texts that need the full pass (a trigger character or ``://``)."""


def full(content: str, known: dict[str, int]) -> tuple[str, list[str]]:
    """The full pass and nh3, and the mentions found: what every text got before."""
    renderer = rendering._Renderer(known_users=known)
    safe = rendering._clean(renderer.render(content))
    return safe, list(dict.fromkeys(renderer.mentions))


@pytest.mark.parametrize("content", CORPUS)
def test_plain_texts_render_as_the_full_pass_does(content: str) -> None:
    with mock.patch.object(rendering.nh3, "clean", side_effect=AssertionError("nh3 ran")):
        unlinked = rendering.render_unlinked(content)
        linked = rendering.render(content, known_users=KNOWN)
    assert unlinked == full(content, {})
    assert linked == full(content, KNOWN)[0]
    assert rendering.find_mentions(content) == unlinked[1]


@pytest.mark.parametrize("content", MARKUP)
def test_markup_still_takes_the_full_pass(content: str) -> None:
    expected = full(content, KNOWN)[0], full(content, {})
    with mock.patch.object(rendering, "_clean", wraps=rendering._clean) as clean:
        got = rendering.render(content, known_users=KNOWN), rendering.render_unlinked(content)
    assert got == expected
    assert clean.call_count == 2


def test_every_code_point_renders_as_the_full_pass_does() -> None:
    """The BMP and the emoji plane whole, other planes' first blocks, a block at a time
    between mentions; where a block is not plain, each of its characters alone."""
    step, checked = 1024, 0
    starts = [*range(0, 0x20000, step), *range(0x20000, 0x110000, 0x10000)]
    for start in starts:
        chars = [chr(c) for c in range(start, start + step) if not 0xD800 <= c <= 0xDFFF]
        content = "x" + " @bob ".join(chars) + " @admin."
        if rendering._plain(rendering._Renderer(known_users={}), content) is not None:
            assert rendering.render(content, known_users=KNOWN) == full(content, KNOWN)[0]
            checked += 1
            continue
        for char in chars:
            alone = f"a{char}b @bob{char}@admin {char}"
            if rendering._plain(rendering._Renderer(known_users={}), alone) is not None:
                assert rendering.render(alone, known_users=KNOWN) == full(alone, KNOWN)[0]
                checked += 1
    assert checked > 1000


def test_invisible_and_control_characters_first_render_as_the_full_pass_does() -> None:
    """A parser may drop what starts its input (nh3 drops a leading U+FEFF): every control,
    format, separator and noncharacter code point as a text's first character."""
    kinds = {"Cc", "Cf", "Zs", "Zl", "Zp", "Cn"}
    checked = 0
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF or unicodedata.category(chr(code)) not in kinds:
            continue
        if unicodedata.category(chr(code)) == "Cn" and (code & 0xFFFE) != 0xFFFE:
            continue  # unassigned: only the noncharacters U+xFFFE / U+xFFFF
        content = chr(code) + "hi @bob"
        assert rendering.render(content, known_users=KNOWN) == full(content, KNOWN)[0], hex(code)
        assert rendering.render_unlinked(content) == full(content, {}), hex(code)
        checked += 1
    assert checked > 250


PIECES = [
    *"abz09 .,;!?'\"/%#$^(){}|~-+=\n\t",
    *"&<>\u00a0",
    "&amp;",
    "&nbsp;",
    "<b>",
    "</script>",
    "@",
    "@admin",
    "@bob.",
    "@Jo-Ann",
    "@r.lee",
    "@nobody",
    "bob@example.com",
    "한국어",
    "회의를",
    "中文",
    "😀",
    "👨‍👩‍👧",
    "\u200d",
    "\ufeff",
    "\u202e",
    "`",
    "*",
    "_",
    "[x](https://example.com)",
    "https://example.com/a?b=1&c=2",
    "://",
    "\r\n",
    "\x00",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_any_mix_renders_as_the_full_pass_does(content: str) -> None:
    """Escapes, mentions, Korean, emoji, markup and URLs in any order and number: the
    fast path (where the text is plain) writes what the full pass and nh3 write."""
    assert rendering.render_unlinked(content) == full(content, {})
    assert rendering.render(content, known_users=KNOWN) == full(content, KNOWN)[0]
