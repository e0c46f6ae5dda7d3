"""The RabbitMQ backplane: nodes that share nothing but a broker.

Topology (names in ``app.backplane.topology``): every message is published, with publisher confirms, to the topic
exchange ``warren.messages`` under ``user.<token>``. Each node owns one exclusive queue ``warren.node.<node_id>``,
bound once per user online on that node. When no node has the user bound, the exchange's alternate exchange
``warren.mailbox`` routes the message to the durable mailbox ``warren.mailbox.<token>``; when that does not exist
either, the broker returns the message, and the publisher creates the mailbox and publishes again. Mailbox limits
(TTL, length, what a full mailbox does, when an unused one is deleted) are a broker policy that operators edit;
Warren only creates it when it is missing.

The package, one concept per module (each states its guarantees); read them in this order:

* ``backplane`` — ``RabbitMQBackplane``, the front: the ``Backplane`` contract, and when each part may be used;
* ``link`` — the one AMQP connection (aiormq), its kept channels, the reconnect loop;
* ``channels`` — opening and closing raw channels safely; the pool of short-lived ones;
* ``publisher`` — publish until stored: returned → create the mailbox → publish again; nacks (``MailboxFull``);
* ``mailbox`` — reading a mailbox a batch at a time, settling or releasing the batch;
* ``bindings`` — who is bound here, bind generations, bind/unbind, unbind everyone at shutdown;
* ``consumer`` — the node queue's worker: order, hand-over to the inbox, retries, markers (``settle_routed``);
* ``acks`` — batched acknowledgements and delayed requeues;
* ``resync`` — after a reconnect: re-bind, then catch up the mailboxes, in order.

How the frames of a publish are written (batched or plain, ``AMQP_PUBLISHER``) is ``app.backplane.amqp``.

In terms of the contract (``app.core.abc``): **stored before accepted** (``publish``/``store`` return after the
confirm; a full mailbox raises ``MailboxFull``; no confirm within 5 s raises ``BackplaneUnavailable``, and the
broker may still have stored it). **Order**: one publish channel, one consumer, one worker, acks after delivery,
so messages from one node to one receiver arrive in publish order, live and from the mailbox (publishes that
overlap in time can swap places when the first of them has to create the mailbox). **The bind race**: the hub
binds, then drains; a message routed before the binding existed is in the mailbox by the time bind-ok arrives
(routing hands it to the mailbox's queue process at once; the drain reaches that process only after the bind-ok
round trip). **Lost**: what sits in this node's queue, not yet handed over, when its connection dies; mail older
than the message TTL or in a mailbox nobody read for the policy's ``expires``; deliveries dropped after their
retries. Two nodes holding the same user both get every live message; if both drain that user's mailbox at once,
each message still reaches one of the user's tabs once, in order.
"""

from __future__ import annotations

from ..topology import setup_broker
from .acks import ACK_BATCH
from .backplane import RabbitMQBackplane
from .consumer import RetryPolicy

__all__ = ["ACK_BATCH", "RabbitMQBackplane", "RetryPolicy", "setup_broker"]
