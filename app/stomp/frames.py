"""STOMP 1.0–1.2 frame codec.

``FrameParser`` turns a stream of text (SockJS messages) into frames: several frames in one message and one frame
split across messages both work; end-of-line heart-beats between frames are reported, not parsed as frames.
Bodies are delimited by ``content-length`` when present, otherwise by the NUL octet. Header values are unescaped
per STOMP 1.2 (``\\r \\n \\c \\\\``; 1.1 lacks ``\\r``) except in CONNECT/CONNECTED frames and in 1.0, which has no
escaping. Every buffer is bounded: a frame whose headers or body exceed the parser's limits raises
``FrameError`` before more is buffered.

Linear time: the parser keeps its place between feeds (the header lines read so far, where the search for the
next line end or NUL stopped), so every byte is searched a bounded number of times however the input is cut
into messages. A client that sends a 128 KiB header block one byte per message costs 128 Ki small steps, not
128 Ki rescans of a growing buffer. ``append`` and ``next_frame`` let the caller take frames one at a time (and
yield to the event loop between them); ``feed`` does both at once.
"""

from __future__ import annotations

import re
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
    #: Bytes of the whole header block (command line included); 0: a full line for each header and the command.
    max_head: int = 0

    @property
    def head_bound(self) -> int:
        return self.max_head or self.max_header_line * (self.max_headers + 1)


_UNESCAPE_12 = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_NO_ESCAPE_COMMANDS = frozenset({"CONNECT", "CONNECTED", "STOMP"})


#: A backslash that does not start a defined escape, once ``\\\\`` pairs are out of the way.
_BAD_ESCAPE_12 = re.compile(r"\\(?![rnc])(.?)", re.DOTALL)
_BAD_ESCAPE_11 = re.compile(r"\\(?![nc])(.?)", re.DOTALL)


def unescape(value: str, version: str) -> str:
    if "\\" not in value:
        return value
    # C-speed replaces rather than a loop per character: a header block is up to 132 KiB of escapes. ``\\\\`` pairs
    # go first (left to right, as the escapes are read) through NUL, which a parsed header never contains.
    pending = value.replace("\\\\", "\x00")
    bad = (_BAD_ESCAPE_12 if version == "1.2" else _BAD_ESCAPE_11).search(pending)
    if bad is not None:
        raise FrameError(f"undefined escape sequence \\{bad.group(1)} in a header")
    pending = pending.replace("\\n", "\n").replace("\\c", ":")
    if version == "1.2":
        pending = pending.replace("\\r", "\r")
    return pending.replace("\x00", "\\")


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




#: End-of-line heart-beats (and the EOLs some clients put after NUL) between frames.
_EOLS = re.compile(rb"[\r\n]*")
# Where the parser is in the current frame.
_BETWEEN, _HEAD, _BODY = 0, 1, 2


class FrameParser:
    """Incremental parser; feed it bytes, get whole frames.

    Positions are offsets into ``_buffer``, which holds only the unfinished frame (and what follows it): the
    consumed prefix is dropped whenever the parser runs out of input.
    """

    # One per connection: no instance dictionary.
    __slots__ = (
        "_body_start",
        "_buffer",
        "_command",
        "_escaped",
        "_headers",
        "_length",
        "_line_start",
        "_lines",
        "_scan",
        "_start",
        "_state",
        "heartbeats",
        "limits",
        "version",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.version = "1.0"
        self.heartbeats = 0
        self._buffer = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._state = _BETWEEN
        #: Where the current frame (or the gap before it) starts.
        self._start = 0
        #: Where the current header line starts, and where the search for its end (and for NUL) resumes.
        self._line_start = 0
        self._scan = 0
        self._command = ""
        self._headers: dict[str, str] = {}
        #: Header lines read so far in this frame.
        self._lines = 0
        self._escaped = False
        self._body_start = 0
        #: The body length from ``content-length``, or -1: the body ends at the first NUL.
        self._length = -1

    def feed(self, data: bytes) -> list[Frame]:
        self.append(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def append(self, data: bytes) -> None:
        """Add input; nothing is parsed until ``next_frame``."""
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes held: the unfinished frame and input not parsed yet."""
        return len(self._buffer) - self._start

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None once the input so far is used up. A ``FrameError`` drops all input held."""
        try:
            frame = self._parse()
        except FrameError:
            self._buffer.clear()
            self._reset()
            raise
        if frame is None:
            self._compact()
        return frame

    def _compact(self) -> None:
        start = self._start
        if not start:
            return
        del self._buffer[:start]
        self._start = 0
        self._line_start -= start
        self._scan -= start
        self._body_start -= start

    def _parse(self) -> Frame | None:
        buf = self._buffer
        if self._state == _BETWEEN:
            end = _EOLS.match(buf, self._start).end()  # type: ignore[union-attr]  # always matches
            if end > self._start:
                self.heartbeats += buf.count(b"\n", self._start, end)
                self._start = end
            if end == len(buf):
                return None
            self._state = _HEAD
            self._line_start = self._scan = end
        if self._state == _HEAD and not self._read_head():
            return None
        return self._read_body()

    def _read_head(self) -> bool:
        """Read the header lines that are complete; True once the blank line ending them was read."""
        buf = self._buffer
        limits = self.limits
        head_bound = limits.head_bound
        while True:
            line_end = buf.find(b"\n", self._scan)
            searched_to = len(buf) if line_end == -1 else line_end
            if buf.find(NUL, self._scan, searched_to) != -1:
                raise FrameError("frame ended before its headers did (missing blank line)")
            if line_end == -1:
                self._scan = len(buf)
                if len(buf) - self._start > head_bound:
                    raise FrameError(f"frame headers longer than {head_bound} bytes")
                if len(buf) - self._line_start > limits.max_header_line + 1:
                    raise FrameError(f"a header line is longer than {limits.max_header_line} bytes")
                return False
            if line_end - self._start > head_bound:
                raise FrameError(f"frame headers longer than {head_bound} bytes")
            line = bytes(buf[self._line_start : line_end])
            self._line_start = self._scan = line_end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._end_of_head(line_end + 1)
                return True
            self._header_line(line)

    def _header_line(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("frame headers are not valid UTF-8") from None
        if not self._command:
            if not line.isalpha() or not line.isupper():
                raise FrameError(f"malformed command line {line[:40]!r}")
            self._command = line
            self._escaped = line not in _NO_ESCAPE_COMMANDS and self.version != "1.0"
            return
        self._lines += 1
        if self._lines > self.limits.max_headers:
            raise FrameError(f"more than {self.limits.max_headers} headers")
        if len(raw) > self.limits.max_header_line:
            raise FrameError(f"a header line is longer than {self.limits.max_header_line} bytes")
        name, colon, value = line.partition(":")
        if not colon:
            raise FrameError(f"malformed header line {line[:40]!r}")
        if self._escaped:
            name, value = unescape(name, self.version), unescape(value, self.version)
        # STOMP 1.2: when a header repeats, the first value counts.
        self._headers.setdefault(name, value)

    def _end_of_head(self, body_start: int) -> None:
        length_header = self._headers.get("content-length")
        max_body = self.limits.max_body
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                raise FrameError(f"content-length {length_header[:20]!r} is not a number") from None
            if length < 0 or length > max_body:
                raise FrameError(f"frame body of {length} bytes exceeds the limit of {max_body}")
            self._length = length
        self._state = _BODY
        self._body_start = self._scan = body_start

    def _read_body(self) -> Frame | None:
        buf = self._buffer
        body_start = self._body_start
        max_body = self.limits.max_body
        if self._length >= 0:
            end = body_start + self._length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise FrameError("frame body is longer than its content-length")
        else:
            end = buf.find(NUL, self._scan)
            if end == -1:
                self._scan = len(buf)
                if len(buf) - body_start > max_body:
                    raise FrameError(f"frame body exceeds the limit of {max_body} bytes")
                return None
            if end - body_start > max_body:
                raise FrameError(f"frame body exceeds the limit of {max_body} bytes")
        frame = Frame(self._command, self._headers, bytes(buf[body_start:end]))
        self._reset()
        self._start = self._line_start = self._scan = end + 1
        return frame
