"""Real-time delivery, domain-free: the connection hub, ordered delivery to each
connection, the event brokers and the publisher of committed events.

Events are plain data routed by room or user; the WebSocket transport (cmschat/websocket/)
and the app wire in what needs the domain (authentication, sends, stored events).
"""
