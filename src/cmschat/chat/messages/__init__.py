"""Messages, in four modules by purpose.

- ``sending``: storing a new message (idempotent by ``client_id``, rate-limited), the one
  call both transports (HTTP and WebSocket) make;
- ``commands``: the other changes: edit, delete to a tombstone, move the read marker;
- ``views``: the API and event shapes of stored messages;
- ``reads``: history pages, unread counts, and the replay of a room's events.
"""
