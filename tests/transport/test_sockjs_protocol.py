"""The SockJS protocol, point by point, against ``python -m app.conformance``'s services.

These tests cover what the official suite (sockjs/sockjs-protocol, ``sockjs-protocol.py``) checks — written
independently, in the suite's order: greeting, iframe page, ``/info``, session URLs, framing, WebSocket,
xhr-polling, xhr-streaming, eventsource, htmlfile, JSONP, ``JSESSIONID``, raw WebSocket, JSON encoding, closing and
aborted requests, HTTP/1.0 — plus the faults the ``sockjs`` package had (each named where it is tested).

The services: ``/echo`` sends every message back, ``/close`` closes each session as it opens,
``/disabled_websocket_echo`` has no WebSocket, ``/cookie_needed_echo`` is ``/echo``. Streaming responses end
after 4096 bytes, as the suite expects of a test server.
"""

from __future__ import annotations

import json
import re

import aiohttp
import pytest

from app.conformance import MANAGERS
from tests.transport.conftest import ServerFactory
from tests.transport.support import Http, RawRequest, eventually, new_session_url, sockjs_messages

NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


def content_type(reply_headers: object) -> str:
    return str(reply_headers["Content-Type"]).replace(" ", "")  # type: ignore[index]


# -- greeting ------------------------------------------------------------------------------------------------------


async def test_greeting(conformance: str, http: Http) -> None:
    for url in (f"{conformance}/echo", f"{conformance}/echo/"):
        reply = await http.get(url)
        assert reply.status == 200
        assert content_type(reply.headers) == "text/plain;charset=UTF-8"
        assert reply.text == "Welcome to SockJS!\n"
        assert "Set-Cookie" not in reply.headers


async def test_unknown_urls_are_not_found(conformance: str, http: Http) -> None:
    for suffix in ("/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"):
        assert (await http.get(f"{conformance}/echo{suffix}")).status == 404, suffix


# -- iframe page ---------------------------------------------------------------------------------------------------

IFRAME_BODY = re.compile(
    r"""^<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="(?P<sockjs_url>[^"]*)"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe\(\);
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>$"""
)


@pytest.mark.parametrize(
    "suffix",
    ["/iframe.html", "/iframe-a.html", "/iframe-.html", "/iframe-0.1.2abc-dirty.2144.html", "/iframe-a.html?t=1234"],
)
async def test_iframe_page_loads_sockjs_client_from_this_server(conformance: str, http: Http, suffix: str) -> None:
    reply = await http.get(f"{conformance}/echo{suffix}")
    assert reply.status == 200
    assert content_type(reply.headers) == "text/html;charset=UTF-8"
    assert "public" in reply.headers["Cache-Control"]
    assert re.search("max-age=[1-9][0-9]{6}", reply.headers["Cache-Control"])
    assert reply.headers["Expires"] and reply.headers["ETag"]
    assert "Last-Modified" not in reply.headers and "Set-Cookie" not in reply.headers
    match = IFRAME_BODY.match(reply.text.strip())
    assert match is not None, reply.text
    # Warren's loader, from this server (never a CDN): it runs the page's release (tests/transport/test_iframe.py).
    assert match.group("sockjs_url") == "/echo/iframe-loader.js"


async def test_iframe_page_misspelt_is_not_found(conformance: str, http: Http) -> None:
    misspelt = ("/iframe.htm", "/iframe", "/IFRAME.HTML", "/IFRAME", "/iframe.HTML", "/iframe.xml", "/iframe-/.html")
    for suffix in misspelt:
        assert (await http.get(f"{conformance}/echo{suffix}")).status == 404, suffix


async def test_iframe_page_answers_304_only_to_its_own_etag(conformance: str, http: Http) -> None:
    first = await http.get(f"{conformance}/echo/iframe.html")
    again = await http.get(f"{conformance}/echo/iframe.html")
    etag = first.headers["ETag"]
    assert etag == again.headers["ETag"]
    cached = await http.get(f"{conformance}/echo/iframe.html", headers={"If-None-Match": etag})
    assert cached.status == 304 and cached.body == b"" and "Content-Type" not in cached.headers
    listed = await http.get(f"{conformance}/echo/iframe.html", headers={"If-None-Match": f'"old", {etag}'})
    assert listed.status == 304
    # The package answered 304 to any If-None-Match: a browser holding another version kept the wrong page.
    stale = await http.get(f"{conformance}/echo/iframe.html", headers={"If-None-Match": '"something-else"'})
    assert stale.status == 200 and IFRAME_BODY.match(stale.text.strip())


# -- /info ---------------------------------------------------------------------------------------------------------


async def test_info(conformance: str, http: Http) -> None:
    reply = await http.get(f"{conformance}/echo/info", headers={"Origin": "test"})
    assert reply.status == 200
    assert content_type(reply.headers) == "application/json;charset=UTF-8"
    assert "Set-Cookie" not in reply.headers
    assert reply.headers["Cache-Control"] == NO_CACHE
    assert "Expires" not in reply.headers and "Last-Modified" not in reply.headers
    assert reply.headers["Access-Control-Allow-Origin"] == "test"
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    data = reply.json()
    assert data["websocket"] is True
    assert data["cookie_needed"] is True
    assert data["origins"] == ["*:*"]
    assert isinstance(data["entropy"], int) and 0 <= data["entropy"] < 2**32


async def test_info_entropy_differs_each_time(conformance: str, http: Http) -> None:
    values = {(await http.get(f"{conformance}/echo/info")).json()["entropy"] for _ in range(3)}
    assert len(values) == 3


async def test_info_without_websocket(conformance: str, http: Http) -> None:
    reply = await http.get(f"{conformance}/disabled_websocket_echo/info")
    assert reply.status == 200 and reply.json()["websocket"] is False
    url = new_session_url(f"{conformance}/disabled_websocket_echo")
    assert (await http.get(url + "/websocket")).status == 404
    assert (await http.get(f"{conformance}/disabled_websocket_echo/websocket")).status == 404


async def verify_preflight(http: Http, url: str, methods: str) -> None:
    for origin in ("test", "null"):
        reply = await http.options(url, headers={"Access-Control-Request-Method": methods, "Origin": origin})
        assert reply.status in (200, 204), (url, reply.status)
        assert "public" in reply.headers["Cache-Control"]
        assert re.search("max-age=[1-9][0-9]{6}", reply.headers["Cache-Control"])
        assert reply.headers["Expires"]
        assert int(reply.headers["Access-Control-Max-Age"]) > 1_000_000
        for method in methods.split(","):
            assert method.strip() in reply.headers["Access-Control-Allow-Methods"]
        assert reply.body == b""
        # file:// pages send "null"; echoing it is what lets the browser read the answer.
        assert reply.headers["Access-Control-Allow-Origin"] == origin
        assert reply.headers["Access-Control-Allow-Credentials"] == "true"


async def test_preflight_is_answered(conformance: str, http: Http) -> None:
    # The package never routed OPTIONS: browsers could not use xhr transports across origins.
    await verify_preflight(http, f"{conformance}/echo/info", "OPTIONS, GET")
    for transport in ("xhr", "xhr_send", "xhr_streaming"):
        await verify_preflight(http, f"{conformance}/echo/abc/abc/{transport}", "OPTIONS, POST")


async def test_preflight_echoes_requested_headers(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo") + "/xhr"
    asked = {"Origin": "test", "Access-Control-Request-Method": "POST"}
    reply = await http.options(url, headers={**asked, "Access-Control-Request-Headers": "a, b, c"})
    assert reply.headers["Access-Control-Allow-Headers"] == "a, b, c"
    assert reply.headers["Access-Control-Allow-Origin"] == "test"
    for headers in ({**asked, "Access-Control-Request-Headers": ""}, asked):
        reply = await http.options(url, headers=headers)
        assert reply.status in (200, 204) and "Access-Control-Allow-Headers" not in reply.headers


# -- session URLs and framing --------------------------------------------------------------------------------------


async def test_any_server_and_session_values(conformance: str, http: Http) -> None:
    for part in ("/a/a1", "/_/_2", "/1/3", "/abcdefgh_i-j%20/abcdefg_i-j%204"):
        reply = await http.post(f"{conformance}/echo{part}/xhr")
        assert (reply.status, reply.text) == (200, "o\n"), part


async def test_invalid_session_paths_are_not_found(conformance: str, http: Http) -> None:
    for part in ("//", "/a./a", "/a/a.", "/./.", "/", "///"):
        assert (await http.get(f"{conformance}/echo{part}/xhr")).status == 404, part
        assert (await http.post(f"{conformance}/echo{part}/xhr")).status == 404, part


async def test_server_id_is_ignored(conformance: str, http: Http) -> None:
    session = new_session_url(f"{conformance}/echo").rsplit("/", 1)[1]
    assert (await http.post(f"{conformance}/echo/000/{session}/xhr")).text == "o\n"
    assert (await http.post(f"{conformance}/echo/000/{session}/xhr_send", body='["a"]')).status == 204
    assert (await http.post(f"{conformance}/echo/999/{session}/xhr")).text == 'a["a"]\n'


async def test_simple_session(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    reply = await http.post(url + "/xhr")
    assert (reply.status, reply.text) == (200, "o\n")
    reply = await http.post(url + "/xhr_send", body='["a"]')
    assert (reply.status, reply.body) == (204, b"")
    assert (await http.post(url + "/xhr")).text == 'a["a"]\n'
    assert (await http.post(f"{conformance}/echo/000/bad_session/xhr_send", body='["a"]')).status == 404


async def test_refused_second_poll_keeps_the_first_and_its_message(conformance: str, http: Http) -> None:
    """A second receiving request gets 2010 and changes nothing (the package closed the first, losing mail)."""
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    first = await RawRequest.send(url + "/xhr")
    second = await http.post(url + "/xhr")
    assert (second.status, second.text) == (200, 'c[2010,"Another connection still open"]\n')
    assert (await http.post(url + "/xhr_send", body='["still here"]')).status == 204
    assert await first.body() == b'a["still here"]\n'
    await first.close()


async def test_closed_session_answers_close_frame_until_it_expires(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/close")
    assert (await http.post(url + "/xhr")).text == "o\n"
    for _ in range(2):
        reply = await http.post(url + "/xhr")
        assert (reply.status, reply.text) == (200, 'c[3000,"Go away!"]\n')


# -- WebSocket -----------------------------------------------------------------------------------------------------


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


async def test_websocket_needs_an_upgrade(conformance: str, http: Http) -> None:
    url = f"{conformance}/echo/0/0/websocket"
    assert (await http.get(url)).status == 400
    assert (await http.get(url, headers={"Upgrade": "WebSocket", "Connection": "close"})).status == 400
    for headers in ({"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}):
        reply = await http.post(url, headers=headers)
        assert reply.status == 405 and reply.headers["Allow"] and reply.body == b""
        assert "Content-Type" not in reply.headers


async def test_websocket_echo_and_empty_frames(conformance: str, http: Http) -> None:
    async with http.session.ws_connect(ws_url(new_session_url(f"{conformance}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        await ws.send_str("")
        await ws.send_str("[]")
        await ws.send_str('["a"]')
        assert await ws.receive_str(timeout=5) == 'a["a"]'
        await ws.send_str('"bare string"')
        assert await ws.receive_str(timeout=5) == 'a["bare string"]'


async def test_websocket_close(conformance: str, http: Http) -> None:
    async with http.session.ws_connect(ws_url(new_session_url(f"{conformance}/close")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        assert await ws.receive_str(timeout=5) == 'c[3000,"Go away!"]'
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_websocket_sessions_may_share_an_id(conformance: str, http: Http) -> None:
    url = ws_url(new_session_url(f"{conformance}/echo")) + "/websocket"
    async with http.session.ws_connect(url) as one, http.session.ws_connect(url) as two:
        assert await one.receive_str(timeout=5) == "o" and await two.receive_str(timeout=5) == "o"
        await one.send_str('["a"]')
        await two.send_str('["b"]')
        assert await one.receive_str(timeout=5) == 'a["a"]'
        assert await two.receive_str(timeout=5) == 'a["b"]'
    async with http.session.ws_connect(url) as again:
        assert await again.receive_str(timeout=5) == "o"


async def test_websocket_sessions_are_not_reachable_over_http(conformance: str, http: Http) -> None:
    """Sending to a WebSocket session's id over xhr_send must not inject messages into it."""
    url = new_session_url(f"{conformance}/echo")
    async with http.session.ws_connect(ws_url(url) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        assert (await http.post(url + "/xhr_send", body='["injected"]')).status == 404
        await ws.send_str('["own"]')
        assert await ws.receive_str(timeout=5) == 'a["own"]'


async def test_websocket_broken_json_drops_the_connection(conformance: str, http: Http) -> None:
    async with http.session.ws_connect(ws_url(new_session_url(f"{conformance}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        await ws.send_str('["a')
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_websocket_handshake_headers(conformance: str) -> None:
    url = new_session_url(f"{conformance}/echo") + "/websocket"
    headers = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Origin: http://asd\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    )
    request = await RawRequest.send(url, "GET", headers=headers)
    head = (await request.head()).decode().lower()
    await request.close()
    assert head.startswith("http/1.1 101")
    assert "sec-websocket-accept: hsmrc0smlyukagmm5oppg2hagwk=" in head
    assert "connection: upgrade" in head and "upgrade: websocket" in head
    assert "content-length" not in head


# -- xhr-polling ---------------------------------------------------------------------------------------------------


async def test_xhr_polling(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    reply = await http.post(url + "/xhr", headers={"Origin": "test"})
    assert (reply.status, reply.text) == (200, "o\n")
    assert content_type(reply.headers) == "application/javascript;charset=UTF-8"
    assert reply.headers["Access-Control-Allow-Origin"] == "test"
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    assert reply.headers["Cache-Control"] == NO_CACHE and "Expires" not in reply.headers
    reply = await http.post(url + "/xhr_send", body='["x"]', headers={"Origin": "test"})
    assert (reply.status, reply.body) == (204, b"")
    assert content_type(reply.headers) == "text/plain;charset=UTF-8"
    assert reply.headers["Access-Control-Allow-Origin"] == "test"
    assert reply.headers["Cache-Control"] == NO_CACHE
    assert (await http.post(url + "/xhr")).text == 'a["x"]\n'


async def test_xhr_send_to_unknown_session(conformance: str, http: Http) -> None:
    assert (await http.post(new_session_url(f"{conformance}/echo") + "/xhr_send", body='["x"]')).status == 404


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ('["x', "Broken JSON encoding."),
        ("", "Payload expected."),
        # The package accepted any JSON: a bare string became one message per character.
        ('"abc"', "Broken JSON encoding."),
        ('{"a": 1}', "Broken JSON encoding."),
        ('["a", 1]', "Broken JSON encoding."),
        ("[null]", "Broken JSON encoding."),
        (b"[\"\xff\"]", "Broken JSON encoding."),
    ],
)
async def test_xhr_send_refuses_anything_but_an_array_of_strings(
    conformance: str, http: Http, payload: str | bytes, error: str
) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    reply = await http.post(url + "/xhr_send", body=payload)
    assert reply.status == 500 and error in reply.text
    assert (await http.post(url + "/xhr_send", body='["a"]')).status == 204
    # Nothing of the refused payload reached the application.
    assert (await http.post(url + "/xhr")).text == 'a["a"]\n'


async def test_xhr_send_takes_any_content_type(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    types = ["text/plain", "T", "application/json", "application/xml", "", "application/json; charset=utf-8"]
    for kind in types:
        reply = await http.post(url + "/xhr_send", body='["a"]', headers={"Content-Type": kind})
        assert (reply.status, reply.body) == (204, b""), kind
    assert (await http.post(url + "/xhr")).text == "a[" + ",".join(['"a"'] * len(types)) + "]\n"


async def test_xhr_send_empty_frame(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    assert (await http.post(url + "/xhr_send", body="[]")).status == 204
    assert (await http.post(url + "/xhr_send", body='["a"]')).status == 204
    assert (await http.post(url + "/xhr")).text == 'a["a"]\n'


# -- xhr-streaming -------------------------------------------------------------------------------------------------


async def test_xhr_streaming(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("POST", url + "/xhr_streaming", headers={"Origin": "test"}) as stream:
        assert stream.status == 200
        assert content_type(stream.headers) == "application/javascript;charset=UTF-8"
        assert stream.headers["Access-Control-Allow-Origin"] == "test"
        assert stream.headers["Cache-Control"] == NO_CACHE
        assert await stream.exactly(2049) == b"h" * 2048 + b"\n"
        assert await stream.until(b"\n") == b"o\n"
        assert (await http.post(url + "/xhr_send", body='["x"]')).status == 204
        assert await stream.until(b"\n") == b'a["x"]\n'


async def test_xhr_streaming_ends_after_the_response_limit(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    message = '"' + "x" * 128 + '"'
    async with http.stream("POST", url + "/xhr_streaming") as stream:
        await stream.exactly(2049)
        assert await stream.until(b"\n") == b"o\n"
        for _ in range(31):
            assert (await http.post(url + "/xhr_send", body=f"[{message}]")).status == 204
            assert await stream.until(b"\n") == f"a[{message}]\n".encode()
        assert await stream.ended()
    # The session lives on: the client's next request carries it.
    assert (await http.post(url + "/xhr_send", body='["next"]')).status == 204
    assert (await http.post(url + "/xhr")).text == 'a["next"]\n'


# -- eventsource ---------------------------------------------------------------------------------------------------


async def test_eventsource(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("GET", url + "/eventsource") as stream:
        assert stream.status == 200
        assert content_type(stream.headers) == "text/event-stream"
        assert stream.headers["Cache-Control"] == NO_CACHE
        assert await stream.exactly(2) == b"\r\n"
        assert await stream.until(b"\r\n\r\n") == b"data: o\r\n\r\n"
        assert (await http.post(url + "/xhr_send", body='["x"]')).status == 204
        assert await stream.until(b"\r\n\r\n") == b'data: a["x"]\r\n\r\n'
        assert (await http.post(url + "/xhr_send", body=r'["  \u0000\n\r "]')).status == 204
        assert await stream.until(b"\r\n\r\n") == b'data: a["  \\u0000\\n\\r "]\r\n\r\n'


async def test_eventsource_ends_after_the_response_limit(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    message = '"' + "x" * 4096 + '"'
    async with http.stream("GET", url + "/eventsource") as stream:
        await stream.exactly(2)
        assert await stream.until(b"\r\n\r\n") == b"data: o\r\n\r\n"
        assert (await http.post(url + "/xhr_send", body=f"[{message}]")).status == 204
        assert await stream.until(b"\r\n\r\n") == f"data: a[{message}]\r\n\r\n".encode()
        assert await stream.ended()


# -- htmlfile ------------------------------------------------------------------------------------------------------

HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"""


async def test_htmlfile(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("GET", url + "/htmlfile?c=%63allback") as stream:
        assert stream.status == 200
        assert content_type(stream.headers) == "text/html;charset=UTF-8"
        assert stream.headers["Cache-Control"] == NO_CACHE
        prelude = await stream.until(b"</script>")
        prelude += await stream.until(b"\r\n")
        assert prelude.strip().decode() == HTMLFILE_HEAD % "callback" and len(prelude) > 1024
        assert await stream.until(b"</script>\r\n") == b'<script>\np("o");\n</script>\r\n'
        assert (await http.post(url + "/xhr_send", body='["x"]')).status == 204
        assert await stream.until(b"</script>\r\n") == b'<script>\np("a[\\"x\\"]");\n</script>\r\n'


async def test_htmlfile_message_cannot_end_the_script(conformance: str, http: Http) -> None:
    """``</script>`` in a message stays inside the string literal (the package let it close the element)."""
    hostile = "</script><script>window.__pwned=1</script><!-- & \u2028 \u2029 >"
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("GET", url + "/htmlfile?c=callback") as stream:
        await stream.until(b"</script>")
        await stream.until(b'p("o");\n</script>\r\n')
        assert (await http.post(url + "/xhr_send", body=json.dumps([hostile]))).status == 204
        frame = (await stream.until(b"\n</script>\r\n")).decode()
    script = frame.removeprefix("<script>\np(").removesuffix(");\n</script>\r\n")
    for forbidden in ("<", ">", "&", "\u2028", "\u2029"):
        assert forbidden not in script
    assert sockjs_messages(json.loads(script)) == [hostile]


async def test_htmlfile_and_jsonp_callback_must_be_a_plain_name(conformance: str, http: Http) -> None:
    for transport in ("htmlfile", "jsonp"):
        reply = await http.get(f"{conformance}/echo/a/a/{transport}")
        assert reply.status == 500 and '"callback" parameter required' in reply.text
        for callback in ("%20", "*", "abc(", "abc%28", "a-b", "x;alert(1)"):
            reply = await http.get(f"{conformance}/echo/a/a/{transport}?c={callback}")
            assert reply.status == 500 and 'invalid "callback" parameter' in reply.text, (transport, callback)


async def test_htmlfile_ends_after_the_response_limit(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("GET", url + "/htmlfile?c=callback") as stream:
        prelude_and_open = await stream.until(b'p("o");\n</script>\r\n')
        assert prelude_and_open.endswith(b'\r\n<script>\np("o");\n</script>\r\n')
        message = "x" * 4096
        assert (await http.post(url + "/xhr_send", body=f'["{message}"]')).status == 204
        expected = f'<script>\np("a[\\"{message}\\"]");\n</script>\r\n'.encode()
        assert await stream.until(b"</script>\r\n") == expected
        assert await stream.ended()


# -- JSONP ---------------------------------------------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_jsonp_polling(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    reply = await http.get(url + "/jsonp?c=%63allback")
    assert reply.status == 200
    assert content_type(reply.headers) == "application/javascript;charset=UTF-8"
    assert reply.headers["Cache-Control"] == NO_CACHE
    assert reply.text == '/**/callback("o");\r\n'
    reply = await http.post(url + "/jsonp_send", body="d=%5B%22x%22%5D", headers=FORM)
    assert (reply.status, reply.text) == (200, "ok")
    assert content_type(reply.headers) == "text/plain;charset=UTF-8"
    assert reply.headers["Cache-Control"] == NO_CACHE
    assert (await http.get(url + "/jsonp?c=%63allback")).text == '/**/callback("a[\\"x\\"]");\r\n'


async def test_jsonp_send_validation(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    reply = await http.post(url + "/jsonp_send", body="d=%5B%22x", headers=FORM)
    assert reply.status == 500 and "Broken JSON encoding." in reply.text
    reply = await http.post(url + "/jsonp_send", body='d="abc"', headers=FORM)
    assert reply.status == 500 and "Broken JSON encoding." in reply.text
    for data in ("", "d=", "p=p"):
        reply = await http.post(url + "/jsonp_send", body=data, headers=FORM)
        assert reply.status == 500 and "Payload expected." in reply.text, data
    assert (await http.post(url + "/jsonp_send", body="d=%5B%22b%22%5D", headers=FORM)).text == "ok"
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("a[\\"b\\"]");\r\n'


async def test_jsonp_send_content_types_and_empty_frame(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    assert (await http.post(url + "/jsonp_send", body="d=%5B%5D", headers=FORM)).text == "ok"
    assert (await http.post(url + "/jsonp_send", body="d=%5B%22abc%22%5D", headers=FORM)).text == "ok"
    plain = {"Content-Type": "text/plain"}
    assert (await http.post(url + "/jsonp_send", body='["%61bc"]', headers=plain)).text == "ok"
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("a[\\"abc\\",\\"%61bc\\"]");\r\n'


async def test_jsonp_frames_cannot_break_out_of_the_call(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    hostile = '");alert(1);//</script>\u2028'
    assert (await http.post(url + "/xhr_send", body=json.dumps([hostile]))).status == 204
    body = (await http.get(url + "/jsonp?c=x")).text
    argument = body.removeprefix("/**/x(").removesuffix(");\r\n")
    assert "<" not in argument and "\u2028" not in argument
    assert sockjs_messages(json.loads(argument)) == [hostile]


async def test_jsonp_close(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/close")
    assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    for _ in range(2):
        assert (await http.get(url + "/jsonp?c=x")).text == '/**/x("c[3000,\\"Go away!\\"]");\r\n'


# -- JSESSIONID ----------------------------------------------------------------------------------------------------


def jsessionid(reply_headers: object) -> list[str]:
    return [part.strip() for part in str(reply_headers["Set-Cookie"]).split(";")]  # type: ignore[index]


async def test_jsessionid_on_every_session_transport(conformance: str, http: Http) -> None:
    base = f"{conformance}/cookie_needed_echo"
    info = await http.get(base + "/info")
    assert info.json()["cookie_needed"] is True and "Set-Cookie" not in info.headers
    url = new_session_url(base)
    reply = await http.post(url + "/xhr")
    parts = jsessionid(reply.headers)
    assert parts[0] == "JSESSIONID=dummy" and parts[1].lower() == "path=/"
    # It carries no authority, so scripts need not read it; over plain HTTP it cannot be SameSite=None.
    assert "HttpOnly" in parts and "SameSite=Lax" in parts and "Secure" not in parts
    reply = await http.post(new_session_url(base) + "/xhr", headers={"Cookie": "JSESSIONID=abcdef"})
    assert jsessionid(reply.headers)[:2] == ["JSESSIONID=abcdef", "Path=/"]
    for method, transport in (("POST", "xhr_streaming"), ("GET", "eventsource"), ("GET", "htmlfile?c=callback")):
        async with http.stream(method, new_session_url(base) + "/" + transport) as stream:
            assert jsessionid(stream.headers)[0] == "JSESSIONID=dummy", transport
    url = new_session_url(base)
    assert jsessionid((await http.get(url + "/jsonp?c=callback")).headers)[0] == "JSESSIONID=dummy"
    reply = await http.post(url + "/jsonp_send", body="d=%5B%22x%22%5D", headers=FORM)
    assert jsessionid(reply.headers)[0] == "JSESSIONID=dummy"


async def test_jsessionid_is_samesite_none_behind_https(conformance: str, http: Http) -> None:
    """Behind a TLS-terminating balancer the cookie must survive allowed cross-site pages: None; Secure."""
    url = new_session_url(f"{conformance}/cookie_needed_echo")
    reply = await http.post(url + "/xhr", headers={"X-Forwarded-Proto": "https"})
    parts = jsessionid(reply.headers)
    assert "SameSite=None" in parts and "Secure" in parts


# -- raw WebSocket -------------------------------------------------------------------------------------------------


async def test_raw_websocket(conformance: str, http: Http) -> None:
    async with http.session.ws_connect(ws_url(f"{conformance}/echo/websocket")) as ws:
        await ws.send_str("Hello world!\uffff")
        assert await ws.receive_str(timeout=5) == "Hello world!\uffff"


async def test_raw_websocket_close(conformance: str, http: Http) -> None:
    async with http.session.ws_connect(ws_url(f"{conformance}/close/websocket")) as ws:
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (3000, "Go away!")


# -- JSON encoding -------------------------------------------------------------------------------------------------

SERVER_ESCAPES = re.compile("[\x00-\x1f\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]")


async def test_server_escapes_what_browsers_mangle(conformance: str, http: Http) -> None:
    chars = "".join(chr(i) for i in range(255, 65536) if SERVER_ESCAPES.match(chr(i)))
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    assert (await http.post(url + "/xhr_send", body=json.dumps([chars]))).status == 204
    received = (await http.post(url + "/xhr")).text.strip()[2:-1]
    assert received == '"' + "".join(f"\\u{ord(c):04x}" for c in chars) + '"'


async def test_server_decodes_what_clients_escape(conformance: str, http: Http) -> None:
    chars = "".join(chr(i) for i in range(0, 65536) if not 0xD800 <= i <= 0xDFFF)
    url = new_session_url(f"{conformance}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    assert (await http.post(url + "/xhr_send", body=json.dumps([chars]))).status == 204
    assert sockjs_messages((await http.post(url + "/xhr")).text) == [chars]


# -- closing and aborted requests ----------------------------------------------------------------------------------


async def test_streaming_close_frame_then_every_request_gets_it(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/close")
    async with http.stream("POST", url + "/xhr_streaming") as first:
        await first.exactly(2049)
        assert await first.until(b"\n") == b"o\n"
        assert await first.until(b"\n") == b'c[3000,"Go away!"]\n'
        assert await first.ended()
    async with http.stream("POST", url + "/xhr_streaming") as second:
        await second.exactly(2049)
        assert await second.until(b"\n") == b'c[3000,"Go away!"]\n'
        assert await second.ended()


async def test_second_streaming_request_is_refused_and_ended(conformance: str, http: Http) -> None:
    url = new_session_url(f"{conformance}/echo")
    async with http.stream("POST", url + "/xhr_streaming") as first:
        await first.exactly(2049)
        assert await first.until(b"\n") == b"o\n"
        async with http.stream("POST", url + "/xhr_streaming") as second:
            await second.exactly(2049)
            assert await second.until(b"\n") == b'c[2010,"Another connection still open"]\n'
            assert await second.ended()
        # The refused request did not disturb the first one.
        assert (await http.post(url + "/xhr_send", body='["x"]')).status == 204
        assert await first.until(b"\n") == b'a["x"]\n'


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["production", "cancelling"])
async def test_aborted_poll_interrupts_the_session(
    conformance_factory: ServerFactory, http: Http, handler_cancellation: bool
) -> None:
    """An aborted request ends its session (1002) whether or not aiohttp cancels handlers on disconnect."""
    server = await conformance_factory(handler_cancellation=handler_cancellation)
    url = new_session_url(f"{server.url}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    pending = await RawRequest.send(url + "/xhr")
    # The refusal proves the raw request now holds the session.
    assert (await http.post(url + "/xhr")).text == 'c[2010,"Another connection still open"]\n'
    await pending.close()
    assert (await http.post(url + "/xhr")).text == 'c[1002,"Connection interrupted"]\n'


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["production", "cancelling"])
async def test_aborted_stream_interrupts_the_session(
    conformance_factory: ServerFactory, http: Http, handler_cancellation: bool
) -> None:
    server = await conformance_factory(handler_cancellation=handler_cancellation)
    url = new_session_url(f"{server.url}/echo")
    first = await RawRequest.send(url + "/xhr_streaming")
    await first.head()
    async with http.stream("POST", url + "/xhr_streaming") as second:
        await second.exactly(2049)
        assert await second.until(b"\n") == b'c[2010,"Another connection still open"]\n'
    await first.close()
    async with http.stream("POST", url + "/xhr_streaming") as third:
        await third.exactly(2049)
        assert await third.until(b"\n") == b'c[1002,"Connection interrupted"]\n'


async def test_aborted_poll_is_noticed_without_another_request(conformance_factory: ServerFactory, http: Http) -> None:
    """Production mode: the sweep ends a session whose only request was aborted, so its user leaves promptly."""
    server = await conformance_factory(disconnect_delay_seconds=60.0)
    manager = server.app[MANAGERS]["/echo"]
    url = new_session_url(f"{server.url}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    pending = await RawRequest.send(url + "/xhr")
    assert (await http.post(url + "/xhr")).text.startswith("c[2010")
    session = manager.get(url.rsplit("/", 1)[1])
    assert session is not None and not session.ended
    await pending.close()
    await eventually(lambda: session.ended, "the aborted poll's session to end", timeout=5)


async def test_released_session_expires(conformance_factory: ServerFactory, http: Http) -> None:
    """A client that stops polling is forgotten after the disconnect delay (the package kept it forever)."""
    server = await conformance_factory(disconnect_delay_seconds=0.3)
    url = new_session_url(f"{server.url}/echo")
    assert (await http.post(url + "/xhr")).text == "o\n"
    assert (await http.post(url + "/xhr_send", body='["x"]')).status == 204
    assert (await http.post(url + "/xhr")).text == 'a["x"]\n'

    async def forgotten() -> bool:
        return (await http.post(url + "/xhr_send", body="[]")).status == 404

    await eventually(forgotten, "the idle session to expire", timeout=5)
    assert (await http.post(url + "/xhr")).text == "o\n"


# -- HTTP/1.0 ------------------------------------------------------------------------------------------------------


async def test_http10_streaming_ends_with_the_connection(conformance: str) -> None:
    url = new_session_url(f"{conformance}/close")
    request = await RawRequest.send(url + "/xhr_streaming", version="1.0", headers="Connection: Keep-Alive\r\n")
    head = (await request.head()).decode().lower()
    body = await request.rest()
    await request.close()
    assert head.startswith("http/1.") and " 200 " in head.splitlines()[0]
    assert "transfer-encoding" not in head and "content-length" not in head
    assert body == b"h" * 2048 + b"\n" + b"o\n" + b'c[3000,"Go away!"]\n'
