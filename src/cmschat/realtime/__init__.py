"""Real-time delivery: the WebSocket gateway, connection hub and event brokers."""
