"""STOMP 1.0–1.2: the frame codec and one connection's protocol state."""
