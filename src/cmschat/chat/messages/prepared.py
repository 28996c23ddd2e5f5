"""What a send's batch needs of it that no database read decides, worked out in the
sender's own task before the send queues for the group commit.

The writer is one task: whatever it does per send in the event loop's thread lengthens
every batch, while the loop idles as SQLite's thread writes and syncs the batch before.
A sender's task runs in those idle moments, so the content check, the rendering, the
search row's text, the audit digest and the JSON of the texts for the history tail are
done there, once per send, and the writer only reads them.

The content check's verdict is kept, not raised: the batch raises it in its place among
``send_message``'s checks (after membership and the repeat of a client id), so a send
refused for its content gets the same answer as before, and as alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmschat import jsonbytes
from cmschat.audit import service as audit
from cmschat.chat import rendering, search_index
from cmschat.chat.messages.sending import Draft, check_content
from cmschat.errors import Invalid


@dataclass(frozen=True, slots=True)
class Prepared:
    """A send's database-free work: its content's verdict, HTML, search text and digest."""

    refused: Invalid | None
    """``check_content``'s refusal (None: the content passes; the rest is then filled)."""
    html: str = ""
    """The safe HTML with no mention linked (``rendering.render_unlinked``)."""
    mentioned: list[str] = field(default_factory=list)
    """The lower-cased usernames it mentions, not yet known to be members."""
    grams: str = ""
    """The search index row's text (``search_index.gram_text``; "": no row)."""
    digest: str = ""
    """The content as the audit trail records it (``audit.text_digest``)."""
    content_json: bytes = b""
    """The content as JSON, for its history tail (``page_tail``)."""
    html_json: bytes = b""
    """``html`` as JSON, for the tail of a send whose mentions link none of it."""


def prepare(draft: Draft, *, max_length: int) -> Prepared:
    """The work a send's batch would do for it without the database, done now."""
    content = draft.content
    try:
        check_content(content, limit=max_length, has_files=bool(draft.attachment_ids))
    except Invalid as refused:
        return Prepared(refused)
    html, mentioned = rendering.render_unlinked(content)
    return Prepared(
        None,
        html,
        mentioned,
        search_index.gram_text(content),
        audit.text_digest(content),
        jsonbytes.dumps(content),
        jsonbytes.dumps(html),
    )
