"""Message rendering: a small markdown subset turned into sanitised HTML.

The whole message is HTML-escaped first, so nothing the user typed can ever become a tag;
only this module adds tags, and nh3 (ammonia) re-checks the result against an allow-list.
Recognised pieces (code, links, mentions) are swapped for NUL-delimited placeholders so
that later passes (emphasis, line breaks) cannot reach inside them.

Every regex here is linear: no nested quantifiers, and each repeated group can only run
to the next delimiter, so 4,000 characters of adversarial input cost well under a
millisecond per pass.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping

import nh3

ALLOWED_TAGS = frozenset({"b", "strong", "i", "em", "code", "pre", "a", "br", "span", "p"})
ALLOWED_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "target"}),
    "span": frozenset({"class", "data-user-id"}),
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"
# Forced on every link, overriding whatever value an <a> might carry.
_FORCED_ATTRIBUTES: Mapping[str, Mapping[str, str]] = {"a": {"target": "_blank"}}

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
# A fence line: ``` plus an optional language word (which is ignored).
_FENCE_OPEN = re.compile(r"```[\w+#.-]*")
_BACKTICKS = re.compile(r"`+")
# Matched on escaped text: a URL may hold "&amp;" but stops at &quot; &lt; &gt; &#x27;.
_URL_CHAR = r"(?:[^\s()<>\"'&\x00]|&amp;)"
# A host must follow "://": nh3 would drop an href like "http://;x", leaving a bare <a>.
_HOST_START = r"(?=[\w\[])"
# [label](url), allowing one level of balanced parentheses in the URL (Wikipedia links).
_LINK = re.compile(
    rf"\[([^\[\]\n]+)\]\(((?:https?://{_HOST_START}|mailto:)(?:{_URL_CHAR}|\({_URL_CHAR}*\))+)\)",
    re.IGNORECASE,
)
_BARE_URL = re.compile(
    r"(?<![\w/])https?://" + _HOST_START + r"(?:[^\s<>\"'&\x00]|&amp;)+", re.IGNORECASE
)
_URL_TRAILING = ".,:;!?*_]~"
# Not after a word character or email-ish punctuation, so "bob@example.com" is no mention.
_MENTION = re.compile(r"(?<![\w.%+@/-])@([A-Za-z0-9._-]+)")
_BOLD = re.compile(r"\*\*(?=[^\s*])((?:[^*\n]|\*(?!\*))+?)(?<=[^\s*])\*\*")
_ITALIC_STAR = re.compile(r"(?<!\*)\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?!\*)")
# Underscores only at word edges, so snake_case_names stay as typed.
_ITALIC_UNDERSCORE = re.compile(r"(?<!\w)_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?!\w)")
# What can start markup (code and fences, links, emphasis, URLs) or needs the full pass
# (NUL, CR, lone surrogates, a leading byte order mark, which nh3's parser drops). A text
# with none of it is plain: its HTML is the text escaped as nh3 writes text (&, <, >,
# no-break space), its line breaks and its mentions, so it skips the renderer's passes and
# nh3's parse (tests/unit/test_rendering_plain.py proves it equal).
_NOT_PLAIN = re.compile(r"[`*_\[\x00\r\ud800-\udfff]|://|^\ufeff")


def find_mentions(content: str) -> list[str]:
    """Return the lower-cased usernames @mentioned outside code, links and emails, in order."""
    renderer = _Renderer(known_users={})
    renderer.render(content)
    return list(dict.fromkeys(renderer.mentions))


def render_unlinked(content: str) -> tuple[str, list[str]]:
    """One pass for the common case: the safe HTML with no mention linked, and the
    lower-cased usernames mentioned (as ``find_mentions``). When none of them is to be
    linked, that HTML is ``render``'s: a second pass is needed only for known mentions."""
    renderer = _Renderer(known_users={})
    plain = _plain(renderer, content)
    safe = _clean(renderer.render(content)) if plain is None else plain
    return safe, list(dict.fromkeys(renderer.mentions))


def render(content: str, *, known_users: Mapping[str, int] | None = None) -> str:
    """Render a message's content to safe HTML, linking mentions of ``known_users``."""
    renderer = _Renderer(known_users=known_users or {})
    plain = _plain(renderer, content)
    return _clean(renderer.render(content)) if plain is None else plain


def _plain(renderer: _Renderer, content: str) -> str | None:
    """A plain text's safe HTML, exactly as the full pass and nh3 write it; None if the
    text is not plain (``_NOT_PLAIN``)."""
    if _NOT_PLAIN.search(content):
        return None
    # Four replaces ("&" first) write what one ``str.translate`` with a dict would, at a
    # tenth of its cost: that translate looks each character up in the dict.
    text = (
        content.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\u00a0", "&nbsp;")
    )
    if "@" in text:
        # Tags added here are final: nh3 writes a mention's span back as it is given.
        text = _MENTION.sub(renderer.mention_html, text)
    return text.replace("\n", "<br>")


def _clean(unsafe: str) -> str:
    return nh3.clean(
        unsafe,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        set_tag_attribute_values=_FORCED_ATTRIBUTES,
    )


class _Renderer:
    """One rendering pass: holds the placeholders and the mentions found along the way."""

    def __init__(self, *, known_users: Mapping[str, int]) -> None:
        self.known_users = known_users
        self.parts: list[str] = []
        self.mentions: list[str] = []

    def render(self, content: str) -> str:
        # NUL marks our placeholders, and lone surrogates cannot cross into nh3 (Rust).
        text = content.replace("\x00", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")
        text = _SURROGATE.sub("\ufffd", text)
        lines = html.escape(text).split("\n")
        return self._unmask("".join(self._blocks(lines)))

    def _hold(self, fragment: str) -> str:
        self.parts.append(fragment)
        return f"\x00{len(self.parts) - 1}\x00"

    def _unmask(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.parts[int(m.group(1))], text)

    def _blocks(self, lines: list[str]) -> list[str]:
        # For each line, the next bare ``` line after it: finds closers without rescanning.
        next_close: list[int | None] = [None] * len(lines)
        closer: int | None = None
        for index in range(len(lines) - 1, -1, -1):
            next_close[index] = closer
            if lines[index].strip() == "```":
                closer = index
        out: list[str] = []
        text: list[str] = []
        index = 0
        while index < len(lines):
            end = next_close[index]
            if end is not None and _FENCE_OPEN.fullmatch(lines[index].strip()):
                if text:
                    out.append(self._inline("\n".join(text)))
                    text = []
                out.append("<pre><code>" + "\n".join(lines[index + 1 : end]) + "</code></pre>")
                index = end + 1
            else:
                text.append(lines[index])
                index += 1
        if text:
            out.append(self._inline("\n".join(text)))
        return out

    def _inline(self, text: str) -> str:
        text = self._code_spans(text)
        text = _LINK.sub(self._link, text)
        text = _BARE_URL.sub(self._bare_url, text)
        text = _MENTION.sub(self._mention, text)
        return _emphasis(text).replace("\n", "<br>")

    def _code_spans(self, text: str) -> str:
        # A run of N backticks opens a span closed by the next run of exactly N on that line.
        out: list[str] = []
        pos = 0
        unclosed: set[tuple[int, int]] = set()  # (run length, line end) known to have no closer
        while match := _BACKTICKS.search(text, pos):
            run, body = len(match.group()), match.end()
            line_end = text.find("\n", body)
            line_end = len(text) if line_end < 0 else line_end
            close = None
            if (run, line_end) not in unclosed:
                close = re.compile(rf"(?<!`)`{{{run}}}(?!`)").search(text, body, line_end)
            if close is None:
                unclosed.add((run, line_end))
                out.append(text[pos:body])
                pos = body
                continue
            out.append(text[pos : match.start()])
            out.append(self._hold(f"<code>{text[body : close.start()]}</code>"))
            pos = close.end()
        out.append(text[pos:])
        return "".join(out)

    def _link(self, match: re.Match[str]) -> str:
        label = self._unmask(_emphasis(match.group(1)))
        return self._hold(f'<a href="{match.group(2)}">{label}</a>')

    def _bare_url(self, match: re.Match[str]) -> str:
        url = match.group()
        # Sentence punctuation and unbalanced ")" after a URL belong to the sentence.
        end, opened, closed = len(url), url.count("("), url.count(")")
        while end:
            if url.endswith("&amp;", 0, end):
                end -= len("&amp;")
            elif url[end - 1] == ")" and closed > opened:
                closed -= 1
                end -= 1
            elif url[end - 1] in _URL_TRAILING:
                end -= 1
            else:
                break
        url, rest = url[:end], url[end:]
        if url.endswith("//"):
            return match.group()
        return self._hold(f'<a href="{url}">{url}</a>') + rest

    def _mention(self, match: re.Match[str]) -> str:
        return self.mention_html(match, hold=self._hold)

    def mention_html(
        self, match: re.Match[str], hold: Callable[[str], str] = lambda html: html
    ) -> str:
        """A mention's HTML (a span if its user is known), noted in ``mentions``;
        ``hold`` keeps it from the later passes."""
        typed = match.group(1).rstrip(".")  # "thanks @bob." ends a sentence
        rest = match.group(1)[len(typed) :]
        if not 3 <= len(typed) <= 32:
            return match.group()
        name = typed.lower()
        self.mentions.append(name)
        user_id = self.known_users.get(name)
        if user_id is None:
            return hold(f"@{typed}") + rest
        span = f'<span class="mention" data-user-id="{int(user_id)}">@{typed}</span>'
        return hold(span) + rest


def _emphasis(text: str) -> str:
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC_STAR.sub(r"<em>\1</em>", text)
    return _ITALIC_UNDERSCORE.sub(r"<em>\1</em>", text)
