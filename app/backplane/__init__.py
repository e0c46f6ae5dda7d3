"""Backplanes: how messages move between nodes and wait for offline users. Chosen by key at start-up."""

from __future__ import annotations

from ..config import Settings
from ..core.abc import Backplane


def create_backplane(settings: Settings) -> Backplane:
    """``rabbitmq`` when an AMQP URL is configured, else the embedded ``memory`` backplane."""
    if settings.amqp_url:
        from .rabbitmq import RabbitMQBackplane

        backplane: Backplane = RabbitMQBackplane(settings, management_url=settings.rabbitmq_management_url)
        return backplane
    from .memory import MemoryBackplane

    return MemoryBackplane(
        mailbox_ttl=settings.mailbox_ttl,
        mailbox_max=settings.mailbox_max,
        mailbox_max_bytes=settings.mailbox_max_bytes,
        sender_share=settings.mailbox_sender_share,
    )
