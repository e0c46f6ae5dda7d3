"""Warren's exception hierarchy.

Every error a user or operator can meet has its own class with a message that says what to do. None of them
shadows a builtin name. Transports map them to their own wire form (HTTP status, STOMP ERROR frame), so the core
never needs to know which transport a request came from.
"""

from __future__ import annotations


class WarrenError(Exception):
    """Base class of every error Warren raises on purpose."""

    #: A short machine-readable reason, used in metrics labels, STOMP ``message`` headers and JSON error bodies.
    reason: str = "error"


class ConfigurationError(WarrenError):
    """An environment variable has a value Warren cannot use; the message names the variable."""

    reason = "configuration"


class InvalidUsername(WarrenError):
    reason = "invalid-username"


class UnknownUser(WarrenError):
    reason = "unknown-user"

    def __init__(self, username: str) -> None:
        super().__init__(f"no user named {username!r}: check the receiver's name")
        self.username = username


class MessageTooLarge(WarrenError):
    reason = "too-large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes as stored (UTF-8; a quote or line break counts 2 bytes, other control "
            f"characters 6); the limit is {limit} bytes (MAX_MESSAGE_BYTES)"
        )
        self.size = size
        self.limit = limit


class InvalidMessage(WarrenError):
    """A message whose fields are missing or of the wrong type."""

    reason = "invalid-message"


class MailboxFull(WarrenError):
    """The receiver's mailbox holds as many messages or bytes as it may (``MAILBOX_MAX``, ``MAILBOX_MAX_BYTES``).

    Nothing already in it is dropped to make room: the new message is refused."""

    reason = "mailbox-full"

    def __init__(self, username: str) -> None:
        super().__init__(
            f"{username!r} is offline and their mailbox is full; try again after they have read their mail"
        )
        self.username = username


class MailboxShareFull(MailboxFull):
    """This sender's mail fills its share of the receiver's mailbox (``MAILBOX_SENDER_SHARE``).

    Only this sender is refused: others can still write to the receiver. A subclass of ``MailboxFull`` so code
    that handles a full mailbox handles this too.
    """

    reason = "mailbox-share-full"

    def __init__(self, username: str, sender: str) -> None:
        WarrenError.__init__(
            self,
            f"your messages already fill your share of {username!r}'s mailbox while they are offline; wait until "
            "they have read their mail before sending more (others can still write to them)",
        )
        self.username = username
        self.sender = sender


class BackplaneUnavailable(WarrenError):
    """The message broker cannot be reached right now; nothing was accepted, the sender may retry."""

    reason = "broker-unavailable"

    #: Seconds a client should wait before retrying (HTTP ``Retry-After``).
    retry_after: int = 5


class RateLimited(WarrenError):
    reason = "rate-limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManySessions(WarrenError):
    reason = "too-many-sessions"

    def __init__(self, username: str, limit: int) -> None:
        super().__init__(f"{username!r} already has {limit} connections on this node; close a tab and retry")
        self.limit = limit


class ShuttingDown(WarrenError):
    reason = "shutting-down"

    def __init__(self) -> None:
        super().__init__("this node is shutting down; reconnect and try again")
