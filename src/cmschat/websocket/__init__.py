"""The WebSocket transport: the endpoint and the frame actions, beside ``cmschat.api`` for
HTTP. It calls the same services as HTTP; delivery to sockets is ``cmschat.realtime``'s."""
