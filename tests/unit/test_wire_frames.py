"""The text frames built once per event are the frames wsproto would write for each socket."""

from __future__ import annotations

import pytest
from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol

from cmschat.realtime.wire import text_frame


@pytest.mark.parametrize(
    "text",
    ["", "a" * 125, "a" * 126, "한" * 42, "a" * 0xFFFF, "a" * 0x10000, '{"type":"pong"}'],
)
def test_a_prebuilt_frame_is_byte_for_byte_what_wsproto_sends(text: str) -> None:
    """Every length class (7-bit, 16-bit, 64-bit) and UTF-8: a client parses the frame the
    same whichever way it was written."""
    server = FrameProtocol(client=False, extensions=list[Extension]())
    assert text_frame(text) == bytes(server.send_data(text, fin=True))


def test_a_client_reads_the_prebuilt_frame_back() -> None:
    """What a browser's side of the protocol decodes is the text sent."""
    client = FrameProtocol(client=True, extensions=list[Extension]())
    client.receive_bytes(text_frame("héllo " * 30))
    (frame,) = list(client.received_frames())
    assert frame.payload == "héllo " * 30
    assert frame.frame_finished and frame.message_finished
