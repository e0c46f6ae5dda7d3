"""The SockJS iframe page, and the sockjs-client it runs: the very release of the page that framed it.

The iframe transports (``iframe-eventsource``, ``iframe-htmlfile``, ``iframe-xhr-polling``, and the ``/info``
request of clients without CORS) run in a hidden iframe of this server's origin, ``<prefix>/iframe.html#<id>``.
sockjs-client refuses an iframe whose ``SockJS.version`` differs from the page's by a single character
(``Incompatible SockJS! Main site uses: "1.1.4", the iframe: "1.6.1"``). Spring's ``setClientLibraryUrl`` and
sockjs-node's ``sockjs_url`` make the iframe's client one setting for the whole server, so a fleet of pages on
different releases always has some of them failing. Here each iframe loads the release of its own page:

1. ``iframe.html`` (byte for byte the page the protocol specifies) loads ``<prefix>/iframe-loader.js`` instead
   of sockjs-client. The URL tells nothing: every 1.x release asks for ``iframe.html`` plus ``#`` and a random
   window id, with no version in the path, query, fragment or any header.
2. The loader does what ``SockJS.bootstrap_iframe()`` does first: it posts ``s`` ("ready") to the parent. The
   page answers every ``s`` with ``s`` and ``[version, transport, transUrl, baseUrl]`` (``lib/transport/iframe.js``
   in every release from 1.0.0 to 1.6.1): the version travels to the iframe, from the page that framed it.
3. The loader loads ``<prefix>/sockjs-client-<version>.min.js`` and calls the real ``SockJS.bootstrap_iframe()``,
   which posts ``s`` again; the page answers again (it answers every ``s``) and the real client takes over.

``sockjs-client-<version>.min.js`` is a sockjs-client release installed from npm in ``web/node_modules`` (one
alias per release in ``web/package.json``; ``web/build-sockjs.mjs`` builds the releases npm ships as sources only),
served for a year as immutable. A version Warren does not ship redirects to ``SOCKJS_CLIENT_URL`` (a self-hosted
client; ``{version}`` in it is replaced by the page's version), else it is 404 and the page's client moves on to
its next transport, as it did before.

Guarantees: the page keeps its ``frame-ancestors`` policy (only this origin and the allowed ones may frame it); the
loader takes the version only from its parent window and only in the shape of a release number, and the server
checks the same shape, so nothing the page sends can name another file; nothing is loaded from a CDN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from . import framing

log = logging.getLogger(__name__)

#: A sockjs-client release number as the page reports it (``SockJS.version``); the loader checks the same shape.
VERSION_PATTERN = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:-[0-9A-Za-z.]{1,40})?"
_VERSION = re.compile(f"^{VERSION_PATTERN}$")
LOADER_NAME = "iframe-loader.js"
LOADER_MAX_AGE = 24 * 3600
_JS = "application/javascript;charset=UTF-8"
_IMMUTABLE = f"public, max-age={framing.ONE_YEAR}, immutable"

_IFRAME_HTML = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="%s"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""

# ES3 on purpose: the iframe transports exist for browsers older than CORS (IE 8 has postMessage and JSON).
_LOADER_JS = """/* Warren: runs in this SockJS iframe the sockjs-client release of the page that framed it. */
(function () {
  var VERSION = /^%(version)s$/;
  var windowId = window.location.hash.slice(1);
  var asked = false;
  var loader;

  function report(text) {
    if (window.console && window.console.error) { window.console.error("SockJS iframe: " + text); }
  }
  function listen(on) {
    if (window.addEventListener) {
      if (on) { window.addEventListener("message", onMessage, false); }
      else { window.removeEventListener("message", onMessage, false); }
    } else if (on) { window.attachEvent("onmessage", onMessage); }
    else { window.detachEvent("onmessage", onMessage); }
  }
  function run(version) {
    var script = document.createElement("script");
    var done = false;
    var missing = "no sockjs-client " + version + " on this server (SOCKJS_CLIENT_URL can name one)";
    script.src = "sockjs-client-" + version + ".min.js";
    script.onload = script.onreadystatechange = function () {
      if (done || (script.readyState && !/^(loaded|complete)$/.test(script.readyState))) { return; }
      done = true;
      if (window.SockJS === loader || !window.SockJS || !window.SockJS.bootstrap_iframe) { report(missing); return; }
      /* It posts "s" again, and the page answers every "s": the real client takes over from here. */
      window.SockJS.bootstrap_iframe();
    };
    script.onerror = function () { done = true; report(missing); };
    document.getElementsByTagName("head")[0].appendChild(script);
  }
  function onMessage(event) {
    var message, params;
    if (asked || event.source !== window.parent) { return; }
    try {
      message = JSON.parse(event.data);
      params = JSON.parse(message.data);
    } catch (ignored) { return; }
    if (!message || message.windowId !== windowId || message.type !== "s" || !params) { return; }
    asked = true;
    listen(false);
    if (typeof params[0] !== "string" || !VERSION.test(params[0])) {
      report("the page sent no sockjs-client version");
      return;
    }
    run(params[0]);
  }

  /* What the real bootstrap_iframe does first: say "s" (ready). The page answers with its version,
     "s" [version, transport, transUrl, baseUrl]. */
  loader = {
    bootstrap_iframe: function () {
      listen(true);
      window.parent.postMessage(JSON.stringify({windowId: windowId, type: "s", data: ""}), "*");
    }
  };
  window.SockJS = loader;
})();
"""


@dataclass(frozen=True)
class SockJSClients:
    """The sockjs-client releases this server gives the iframe: installed ones by version, else a self-hosted URL."""

    #: Release number → its browser build (``dist/sockjs.min.js``).
    builds: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    #: ``SOCKJS_CLIENT_URL``: where a release not in ``builds`` is; ``{version}`` is replaced by the release number.
    self_hosted_url: str | None = None

    @classmethod
    def installed(cls, node_modules: Path, self_hosted_url: str | None = None) -> SockJSClients:
        """Every ``sockjs-client`` package under ``node_modules`` (``sockjs-client``, ``sockjs-client-1.1.4`` …)
        that has a browser build."""
        builds: dict[str, Path] = {}
        for package in sorted(node_modules.glob("sockjs-client*/package.json")):
            try:
                manifest = json.loads(package.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s is unreadable (%s): its sockjs-client is not served", package, exc)
                continue
            if not isinstance(manifest, dict) or manifest.get("name") != "sockjs-client":
                continue
            version, build = manifest.get("version"), package.parent / "dist" / "sockjs.min.js"
            if not isinstance(version, str) or not _VERSION.match(version):
                continue
            if build.is_file():
                builds[version] = build
            else:
                log.warning("%s has no dist/sockjs.min.js: run `make deps` (web/build-sockjs.mjs)", package.parent)
        if not builds and self_hosted_url is None:
            log.warning("no sockjs-client in %s: the iframe transports fail until `make deps` runs", node_modules)
        return cls(MappingProxyType(dict(sorted(builds.items(), key=lambda item: _release_key(item[0])))),
                   self_hosted_url)

    def self_hosted(self, version: str) -> str | None:
        if self.self_hosted_url is None:
            return None
        return self.self_hosted_url.replace("{version}", version)


def add_iframe_routes(router: web.UrlDispatcher, prefix: str, clients: SockJSClients, frame_ancestors: str) -> None:
    """``<prefix>/iframe[-anything].html``, its loader and the sockjs-client releases, under an endpoint's prefix.

    ``frame_ancestors`` is the CSP source list of who may frame the page (``OriginPolicy.frame_ancestors``).
    """
    page = _IframePage(prefix, clients, frame_ancestors)
    router.add_route("GET", prefix + "/iframe{version:[-0-9a-z_.]*}.html", page.page)
    router.add_get(prefix + "/" + LOADER_NAME, page.loader)
    router.add_get(prefix + "/sockjs-client-{version:" + VERSION_PATTERN + "}.min.js", page.client)


class _IframePage:
    def __init__(self, prefix: str, clients: SockJSClients, frame_ancestors: str) -> None:
        self.clients = clients
        self.frame_ancestors = frame_ancestors
        # An absolute path: the protocol suite requires one (``/`` or ``http``), and it is this endpoint's own.
        self.body = (_IFRAME_HTML % (prefix + "/" + LOADER_NAME).replace('"', "%22")).encode()
        self.etag = _etag(self.body)
        self.loader_body = (_LOADER_JS % {"version": VERSION_PATTERN.replace("(?:", "(")}).encode()
        self.loader_etag = _etag(self.loader_body)

    async def page(self, request: web.Request) -> web.Response:
        headers = {
            "ETag": self.etag,
            "Content-Security-Policy": f"frame-ancestors {self.frame_ancestors}",
            **framing.cache_for_a_year(),
        }
        if etag_matches(request.headers.get("If-None-Match"), self.etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = "text/html;charset=UTF-8"
        return web.Response(body=self.body, headers=headers)

    async def loader(self, request: web.Request) -> web.Response:
        # Kept a day, not a year like the page that names it: a new loader reaches every browser by tomorrow. Cached,
        # it costs the iframe no round trip (sockjs-client gives an iframe transport about three to open).
        headers = {"ETag": self.loader_etag, "Cache-Control": f"public, max-age={LOADER_MAX_AGE}"}
        if etag_matches(request.headers.get("If-None-Match"), self.loader_etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.loader_body, headers={**headers, "Content-Type": _JS})

    async def client(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        build = self.clients.builds.get(version)
        if build is not None:
            return web.FileResponse(build, headers={"Content-Type": _JS, "Cache-Control": _IMMUTABLE})
        elsewhere = self.clients.self_hosted(version)
        if elsewhere is not None:
            return web.Response(status=302, headers={"Location": elsewhere, "Cache-Control": "no-cache"})
        shipped = ", ".join(self.clients.builds) or "none"
        text = f"sockjs-client {version} is not installed here (installed: {shipped}); see SOCKJS_CLIENT_URL\n"
        return web.Response(status=404, text=text, headers={"Cache-Control": "no-cache"})


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or ``*``); weak forms compare equal, as for a GET they may."""
    if not header:
        return False
    candidates = [part.strip() for part in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)


def _etag(body: bytes) -> str:
    """A strong ETag derived from the content, quoted."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _release_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))
