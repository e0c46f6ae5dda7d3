"""The messaging core: envelopes, local connections, delivery and mailbox drain order.

The core never imports aiohttp, sockjs or aio-pika; transports and backplanes depend on it, never the reverse.
"""
