"""STOMP 1.0–1.2 frame codec.

``FrameParser`` turns a stream of text (SockJS messages) into frames: several frames in one message and one frame
split across messages both work; end-of-line heart-beats between frames are reported, not parsed as frames.
Bodies are delimited by ``content-length`` when present, otherwise by the NUL octet. Header values are unescaped
per STOMP 1.2 (``\\r \\n \\c \\\\``; 1.1 lacks ``\\r``) except in CONNECT/CONNECTED frames and in 1.0, which has no
escaping. Every buffer is bounded: a frame whose headers or body exceed the parser's limits raises
``FrameError`` before more is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUL = b"\x00"


class FrameError(Exception):
    """A frame Warren cannot parse; the message says what is wrong (sent in the STOMP ERROR frame)."""


@dataclass(slots=True)
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass(frozen=True, slots=True)
class Limits:
    max_headers: int = 32
    max_header_line: int = 4096
    max_body: int = 512 * 1024


_UNESCAPE_12 = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_NO_ESCAPE_COMMANDS = frozenset({"CONNECT", "CONNECTED", "STOMP"})


def unescape(value: str, version: str) -> str:
    if "\\" not in value:
        return value
    table = _UNESCAPE_12 if version == "1.2" else _UNESCAPE_11
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        try:
            out.append(table[following])
        except KeyError:
            raise FrameError(f"undefined escape sequence \\{following} in a header") from None
    return "".join(out)


def escape(value: str, version: str) -> str:
    if version == "1.0":
        # 1.0 has no escaping: drop what would break the frame rather than send an invalid one.
        return value.replace("\n", " ").replace("\r", " ")
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    if version == "1.2":
        value = value.replace("\r", "\\r")
    return value


def encode(command: str, headers: dict[str, str], body: bytes = b"", *, version: str = "1.2") -> str:
    """Serialise one frame as text. Adds ``content-length`` whenever there is a body."""
    lines = [command]
    plain = command in _NO_ESCAPE_COMMANDS
    for name, value in headers.items():
        if plain:
            lines.append(f"{name}:{value}")
        else:
            lines.append(f"{escape(name, version)}:{escape(value, version)}")
    if body:
        lines.append(f"content-length:{len(body)}")
    return "\n".join(lines) + "\n\n" + body.decode("utf-8") + "\x00"


class FrameParser:
    """Incremental parser; feed it bytes, get whole frames."""

    # One per connection: no instance dictionary.
    __slots__ = ("_buffer", "heartbeats", "limits", "version")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.version = "1.0"
        self._buffer = bytearray()
        self.heartbeats = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                break
            frames.append(frame)
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _next(self) -> Frame | None:
        buf = self._buffer
        # Heart-beats (and the EOLs some clients put after NUL) between frames.
        start = 0
        while start < len(buf) and buf[start] in (0x0A, 0x0D):
            if buf[start] == 0x0A:
                self.heartbeats += 1
            start += 1
        if start:
            del buf[:start]
        if not buf:
            return None
        head_end = buf.find(b"\n\n")
        crlf_end = buf.find(b"\r\n\r\n")
        if crlf_end != -1 and (head_end == -1 or crlf_end < head_end):
            head_end, separator = crlf_end, 4
        else:
            separator = 2
        max_head = self.limits.max_header_line * (self.limits.max_headers + 1)
        if head_end == -1:
            if len(buf) > max_head:
                raise FrameError(f"frame headers longer than {max_head} bytes")
            if buf.find(NUL) != -1:
                raise FrameError("frame ended before its headers did (missing blank line)")
            return None
        if head_end > max_head:
            raise FrameError(f"frame headers longer than {max_head} bytes")
        try:
            head = bytes(buf[:head_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("frame headers are not valid UTF-8") from None
        lines = head.replace("\r\n", "\n").split("\n")
        command = lines[0]
        if not command or not command.isalpha() or not command.isupper():
            raise FrameError(f"malformed command line {command[:40]!r}")
        if len(lines) - 1 > self.limits.max_headers:
            raise FrameError(f"more than {self.limits.max_headers} headers")
        escaped = command not in _NO_ESCAPE_COMMANDS and self.version != "1.0"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if len(line) > self.limits.max_header_line:
                raise FrameError(f"a header line is longer than {self.limits.max_header_line} bytes")
            name, colon, value = line.partition(":")
            if not colon:
                raise FrameError(f"malformed header line {line[:40]!r}")
            if escaped:
                name, value = unescape(name, self.version), unescape(value, self.version)
            # STOMP 1.2: when a header repeats, the first value counts.
            headers.setdefault(name, value)
        body_start = head_end + separator
        length_header = headers.get("content-length")
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                raise FrameError(f"content-length {length_header[:20]!r} is not a number") from None
            if length < 0 or length > self.limits.max_body:
                raise FrameError(f"frame body of {length} bytes exceeds the limit of {self.limits.max_body}")
            if len(buf) < body_start + length + 1:
                return None
            if buf[body_start + length] != 0:
                raise FrameError("frame body is longer than its content-length")
            body = bytes(buf[body_start : body_start + length])
            end = body_start + length + 1
        else:
            nul = buf.find(NUL, body_start)
            if nul == -1:
                if len(buf) - body_start > self.limits.max_body:
                    raise FrameError(f"frame body exceeds the limit of {self.limits.max_body} bytes")
                return None
            body = bytes(buf[body_start:nul])
            if len(body) > self.limits.max_body:
                raise FrameError(f"frame body exceeds the limit of {self.limits.max_body} bytes")
            end = nul + 1
        del buf[:end]
        return Frame(command, headers, body)
