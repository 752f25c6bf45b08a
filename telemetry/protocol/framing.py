"""Length-prefixed framing, sans-I/O: bytes in, frames out.

How this works: a frame is a 10-byte header, the payload's length in bytes as space-padded
ASCII decimal (exactly ``f"{len(payload):<10}"``), followed by the payload. Each
:meth:`FrameDecoder.feed` cuts every complete frame straight out of the new bytes (one copy
per payload) and keeps only an incomplete last frame in a ``bytearray``. Bytes for a held frame
are appended without copying until it is complete, so a frame split across many reads costs
linear time.

The announced length is checked against ``max_frame_bytes`` as soon as the 10 header bytes are
there, before any payload is buffered. Every error is a :class:`ProtocolError` subclass and is
final: the decoder raises it again on any later call.
"""

from __future__ import annotations

from telemetry.protocol.errors import BadHeader, FrameTooLarge, ProtocolError, TruncatedFrame

HEADER_SIZE = 10
#: The largest length a 10-digit header can announce.
MAX_ENCODABLE = 10**HEADER_SIZE - 1
DEFAULT_MAX_FRAME_BYTES = 1_048_576


#: Valid headers seen, and the length each announces. A stream's frames mostly come in a few
#: sizes, and a dict lookup costs less than parsing; bounded, shared by every decoder.
_SIZES: dict[bytes, int] = {}
SIZE_CACHE = 4096


def parse_header(header: bytes) -> int:
    """Return the payload length announced by a 10-byte header, or raise :class:`BadHeader`.

    Leading and trailing spaces and leading zeros are accepted; anything else (letters,
    signs, tabs, NUL, inner spaces, an all-space header) is not.
    """
    digits = header.strip(b" ")
    # bytes.isdigit() is ASCII-only and False when empty: no signs, "_", tabs or inner spaces,
    # all of which int() alone would take.
    if not digits.isdigit() or len(header) != HEADER_SIZE:
        raise BadHeader(f"header {bytes(header)!r} is not a space-padded decimal length")
    return int(digits)


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` behind its 10-byte length header."""
    size = len(payload)
    if size > MAX_ENCODABLE:
        raise ValueError(f"payload of {size} bytes does not fit a {HEADER_SIZE}-byte header")
    return f"{size:<10}".encode("ascii") + payload


#: An empty frame: a heartbeat, valid and ignored.
HEARTBEAT = encode_frame(b"")


class FrameDecoder:
    """Cut a byte stream into frame payloads.

    ``feed(data)`` returns the payloads completed by ``data`` (heartbeats as ``b""``).
    When the stream is broken it raises a :class:`ProtocolError` whose ``frames`` attribute
    holds the payloads completed before the broken point, so nothing sent before it is lost.
    ``feed_eof()`` raises :class:`TruncatedFrame` if the stream ended inside a frame.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._payload_size: int | None = None  # set once the current frame's header is read
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: a partial header, or the part of the current payload received so far."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True when part of a frame (header or payload) has been received."""
        return bool(self._buffer) or self._payload_size is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data`` to the stream and return every payload it completes."""
        if self._error is not None:
            raise type(self._error)(self._error.detail)
        buffer = self._buffer
        size = self._payload_size
        if buffer:
            buffer += data
            if len(buffer) < (HEADER_SIZE if size is None else size):
                return []  # the held frame is still incomplete: no copy
            view = bytes(buffer)
        else:  # nothing held back: cut frames straight out of data
            view = bytes(data)
        frames: list[bytes] = []
        append = frames.append
        pos = 0
        end = len(view)
        limit = self.max_frame_bytes
        try:
            while True:
                if size is None:
                    if end - pos < HEADER_SIZE:
                        break
                    header = view[pos : pos + HEADER_SIZE]
                    size = _SIZES.get(header)
                    if size is None:
                        size = parse_header(header)
                        if len(_SIZES) < SIZE_CACHE:
                            _SIZES[header] = size
                    if size > limit:
                        raise FrameTooLarge(
                            f"frame of {size} bytes exceeds max_frame_bytes {self.max_frame_bytes}"
                        )
                    pos += HEADER_SIZE
                if end - pos < size:
                    break
                append(view[pos : pos + size])
                pos += size
                size = None
        except ProtocolError as exc:
            exc.frames = frames
            self._error = exc
            self._payload_size = None
            buffer.clear()
            raise
        self._payload_size = size
        if pos < end:  # keep the partial frame
            if buffer:
                del buffer[:pos]
            else:
                buffer += view[pos:]
        else:
            buffer.clear()
        return frames

    def feed_eof(self) -> None:
        """Signal the end of the stream; raise :class:`TruncatedFrame` inside a frame."""
        if self._error is not None:
            raise type(self._error)(self._error.detail)
        if self._payload_size is not None:
            error: ProtocolError = TruncatedFrame(
                f"stream ended after {len(self._buffer)} of {self._payload_size} payload bytes"
            )
        elif self._buffer:
            error = TruncatedFrame(
                f"stream ended after {len(self._buffer)} of {HEADER_SIZE} header bytes"
            )
        else:
            return
        self._error = error
        self._buffer.clear()
        self._payload_size = None
        raise error
