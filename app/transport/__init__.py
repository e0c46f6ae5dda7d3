"""Transports: how clients reach the core (SockJS sessions carrying STOMP).

Warren owns its SockJS server code (``framing``, ``session``, ``endpoint``) instead of the ``sockjs`` package
(aio-libs, 0.13.0), which passed 58 of the 69 tests of the official protocol suite and lost messages in real
browsers. This package passes 68 of 69 (the last one is hixie-76, see ``endpoint``). What changed, and where:

* ``framing`` — frames escaped for every context; htmlfile/JSONP frames cannot end their script (``</script>`` in
  a message ran as code in the page's origin with the package).
* ``session`` — a frame leaves the queue only once written, a polling answer only once the next poll arrives;
  a refused second receiver changes nothing; aborted requests end the session at once (aiohttp ≥ 3.9 no longer
  cancels handlers); released sessions expire; the application hears of the end once, with what was never
  delivered.
* ``websocket`` — a WebSocket session's frames are written from the event loop (one flush per loop tick for every
  session with output, flow control by the transport's high-water mark), not by a writer task per session; its
  heart-beats come from the manager's sweep.
* ``endpoint`` — every URL of the protocol: CORS and preflight, the origin allow-list on ``/info``, every transport
  and the WebSocket upgrade, ``JSESSIONID`` with SameSite/Secure, strict ``xhr_send``/``jsonp_send`` input,
  callback validation, the iframe page from this server with a correct ETag.
* ``iframe`` — the iframe page runs the sockjs-client release of the page that framed it (every 1.x release; one
  server-wide client, as other servers have, fails every page on another release).
* ``sockjs`` — Warren's wiring: one STOMP connection per session, the send bound, undelivered chat messages
  back to the hub, shutdown.
"""
