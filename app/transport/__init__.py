"""Transports: how clients reach the core (SockJS sessions carrying STOMP).

Warren owns its SockJS server code instead of the ``sockjs`` package (aio-libs, 0.13.0), which passed 58 of the
69 tests of the official protocol suite and lost messages in real browsers. This package passes 68 of 69 (the last
one is hixie-76, see ``endpoint``). What changed, and where:

* ``framing`` — frames escaped for every context; htmlfile/JSONP frames cannot end their script (``</script>`` in
  a message ran as code in the page's origin with the package).
* ``session`` — a frame leaves the queue only once written, a polling answer only once the next poll arrives; the
  end is final and reported once, with what was never delivered.
* ``receiver`` — the request carrying a session, compared by identity; a client that went away is recognised
  although aiohttp ≥ 3.9 no longer cancels handlers.
* ``manager`` — sessions by owner and id; a refused second receiver changes nothing; aborted requests end the
  session at once; released sessions expire; pushed receivers are flushed once per loop tick and heart-beaten by
  the sweep.
* ``websocket`` — a WebSocket session's frames are written from the event loop (one flush per loop tick for every
  session with output, flow control by the transport's high-water mark), not by a writer task per session.
* ``endpoint`` — every URL of the protocol, routed: ``/info`` and the preflight here; ``policy`` (the origin
  allow-list, cross-site navigations, ids), ``responses`` (CORS, ``JSESSIONID`` with SameSite/Secure, refusals),
  ``receiving`` (polling and streaming, callback validation), ``sending`` (strict ``xhr_send``/``jsonp_send``
  input), ``websocket_handler`` (the upgrade and read loop); ``options`` configures them.
* ``iframe`` — the iframe page runs the sockjs-client release of the page that framed it (every 1.x release; one
  server-wide client, as other servers have, fails every page on another release), with a correct ETag.
* ``sockjs`` — Warren's wiring: one STOMP connection per session, the send bound, undelivered chat messages
  back to the hub, shutdown.
"""
