"""Transports: how clients reach the core (SockJS sessions carrying STOMP)."""
