"""Message rendering: the markdown subset, mentions, and that nothing a user types is live HTML."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import pytest

from cmschat.chat.rendering import ALLOWED_TAGS, find_mentions, render, render_unlinked

DATA = Path(__file__).resolve().parents[1] / "data"
XSS_FILES = [pytest.param(path, id=path.name) for path in sorted(DATA.glob("xss/*.txt"))] or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"no XSS payloads under {DATA}"))
]
LINK = '<a href="{}" target="_blank" rel="noopener noreferrer nofollow">{}</a>'
KNOWN = {"alice": 1, "bob": 2}

FORBIDDEN_TAG = re.compile(
    r"<\s*/?\s*(script|iframe|object|embed|svg|math|style|link|meta|img|form|input|base)\b",
    re.IGNORECASE,
)
EVENT_HANDLER = re.compile(r"<[^>]*\son\w+\s*=", re.IGNORECASE)
TAG = re.compile(r"<[^>]*>")
URL_ATTRIBUTE = re.compile(r"""\s(?:href|src)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""", re.I)
TAG_NAME = re.compile(r"<\s*/?\s*([^\s/>]+)")


def problems(output: str) -> list[str]:
    """Every way ``output`` could run script or carry markup the renderer never makes."""
    found = [f"forbidden tag {m.group()!r}" for m in FORBIDDEN_TAG.finditer(output)]
    found += [f"event handler in {m.group()!r}" for m in EVENT_HANDLER.finditer(output)]
    for tag in TAG.findall(output):
        for m in URL_ATTRIBUTE.finditer(tag):
            value = html.unescape(next(g for g in m.groups() if g is not None))
            # Browsers ignore whitespace and control characters inside a scheme.
            squashed = re.sub(r"[\s\x00-\x1f]", "", value).lower()
            if any(s in squashed for s in ("javascript:", "vbscript:", "data:")):
                found.append(f"dangerous URL in {tag!r}")
    found += [
        f"unexpected tag <{name}>"
        for name in TAG_NAME.findall(output)
        if name.lower() not in ALLOWED_TAGS
    ]
    return found


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("**bold**", "<strong>bold</strong>"),
        ("*italic* and _italic_", "<em>italic</em> and <em>italic</em>"),
        ("**굵게** 글씨", "<strong>굵게</strong> 글씨"),
        ("`a *b* <c>`", "<code>a *b* &lt;c&gt;</code>"),
        ("one\ntwo", "one<br>two"),
        ("```\nx = **1**\n<b>\n```", "<pre><code>x = **1**\n&lt;b&gt;</code></pre>"),
        (
            "go https://example.com/a?b=1&c=2.",
            "go "
            + LINK.format("https://example.com/a?b=1&amp;c=2", "https://example.com/a?b=1&amp;c=2")
            + ".",
        ),
        ("[docs](https://example.com/x_(y))", LINK.format("https://example.com/x_(y)", "docs")),
        ("[mail me](mailto:a@example.com)", LINK.format("mailto:a@example.com", "mail me")),
        ("snake_case_name", "snake_case_name"),
    ],
)
def test_markdown_subset_renders_to_exact_html(content: str, expected: str) -> None:
    assert render(content) == expected


def test_korean_text_and_emoji_pass_through_unchanged() -> None:
    text = "안녕하세요, 반갑습니다! 😀 👩‍👩‍👧 🇰🇷"
    assert render(text) == text


def test_known_mentions_become_spans_and_unknown_stay_plain_text() -> None:
    assert render("hi @Alice and @carol", known_users=KNOWN) == (
        'hi <span class="mention" data-user-id="1">@Alice</span> and @carol'
    )


def test_mentions_are_not_linked_inside_code_emails_or_urls() -> None:
    content = "`@alice` bob@example.com https://example.com/@alice\n```\n@bob\n```"
    assert "mention" not in render(content, known_users=KNOWN)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("[x](JAVASCRIPT:alert(1))", "[x](JAVASCRIPT:alert(1))"),
        ("[x](data:text/html;base64,AAAA)", "[x](data:text/html;base64,AAAA)"),
        ("[x](vbscript:msgbox(1))", "[x](vbscript:msgbox(1))"),
    ],
)
def test_user_html_and_dangerous_links_render_as_visible_text(content: str, expected: str) -> None:
    assert render(content) == expected


def test_a_quote_in_a_url_cannot_break_out_of_the_href() -> None:
    output = render('[x](https://example.com/"onclick="alert(1))')
    assert problems(output) == []
    assert 'href="https://example.com/"' in output
    assert '"onclick="alert(1))' in html.unescape(re.sub(r"<[^>]*>", "", output))


@pytest.mark.parametrize(
    "output",
    [
        '<img src=x onerror="alert(1)">',
        "<p onclick=alert(1)>x</p>",
        '<a href=" java\tscript:alert(1)">x</a>',
        "<a href='DATA:text/html,x'>x</a>",
        "<u>x</u>",
    ],
)
def test_the_sweep_checker_catches_live_markup(output: str) -> None:
    assert problems(output) != []


@pytest.mark.parametrize(
    "content",
    [
        "*" * 4000,
        "_a" * 2000,
        "[" * 4000,
        "`" * 4000,
        "@" * 4000,
        "http://" + "a" * 3990,
        "**a" * 1333,
        "[a](https://" + "(" * 3988,
        "```py\n" * 800,
        "".join("`" * n + "a" for n in range(1, 88)),
    ],
)
def test_adversarial_input_renders_quickly(content: str) -> None:
    started = time.perf_counter()
    render(content)
    find_mentions(content)
    assert time.perf_counter() - started < 0.5


def _swept(name: str, lines: list[tuple[int, str]]) -> None:
    assert lines, f"{name} has nothing to sweep"
    for number, line in lines:
        output = render(line, known_users=KNOWN)
        assert problems(output) == [], f"{name} line {number}: {line!r} -> {output!r}"


@pytest.mark.parametrize("path", XSS_FILES)
def test_xss_payload_file_renders_inert(path: Path) -> None:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    _swept(path.name, [(n, line) for n, line in enumerate(lines, 1) if line.strip()])


def test_big_list_of_naughty_strings_renders_inert() -> None:
    blns = DATA / "blns.json"
    strings = json.loads(blns.read_text(encoding="utf-8"))
    _swept(blns.name, [(n, s) for n, s in enumerate(strings) if s])


def test_find_mentions_in_order_unique_and_lower_cased() -> None:
    content = "@Bob, @alice and @BOB again; thanks @carol."
    assert find_mentions(content) == ["bob", "alice", "carol"]


def test_find_mentions_ignores_code_emails_urls_and_bad_names() -> None:
    content = (
        "`@alice` bob@example.com https://example.com/@dave [@erin](https://x.io)"
        "\n```\n@frank\n```\n@ab @" + "a" * 33 + " @real_one"
    )
    assert find_mentions(content) == ["real_one"]


@pytest.mark.parametrize(
    "content",
    [
        "plain words",
        "**bold** and _it_ with `code` and https://example.com/a?b=1&c=2",
        "hi @carol and @dave, see [x](https://example.com)",
        "```\n@alice in code\n```\nthen @Eve.",
        "<script>alert(1)</script> & @bob@example.com",
    ],
)
def test_one_pass_render_is_the_unlinked_render_and_finds_the_same_names(content: str) -> None:
    """A send renders once unless a mention is to be linked: that HTML and those names
    must be what the two-pass way (``find_mentions``, then ``render``) gives."""
    html_out, names = render_unlinked(content)
    assert html_out == render(content)
    assert names == find_mentions(content)
