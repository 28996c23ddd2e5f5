"""Chat: rooms, membership, messages, read markers and search."""
