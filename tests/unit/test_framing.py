"""Unit tests of the sans-I/O framing layer (docs/protocol.md#framing).

Every decoder case goes through :func:`check_three_ways`: the input is fed whole, one byte at
a time, and followed by the first bytes of another frame that the decoder must keep.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry.protocol.errors import (
    ERROR_CODES,
    BadHeader,
    FrameTooLarge,
    ProtocolError,
    TruncatedFrame,
)
from telemetry.protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_SIZE,
    HEARTBEAT,
    MAX_ENCODABLE,
    FrameDecoder,
    encode_frame,
    parse_header,
)
from tests.support import examples

# The frame that follows the input in the "trailing bytes" way of feeding it.
NEXT_PAYLOAD = b'{"sensor":"next","value":1}'
NEXT_FRAME = encode_frame(NEXT_PAYLOAD)
# Cut points inside NEXT_FRAME: inside the header, at its end, inside the payload.
NEXT_CUTS = (1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, len(NEXT_FRAME) - 1)

Outcome = tuple[list[bytes], type[ProtocolError] | None]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def decode(
    chunks: list[bytes], *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, eof: bool = True
) -> Outcome:
    """Feed ``chunks`` to a fresh decoder; return every frame delivered and the error class."""
    decoder = FrameDecoder(max_frame_bytes)
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            frames += decoder.feed(chunk)
        if eof:
            decoder.feed_eof()
    except ProtocolError as exc:
        error = exc
    else:
        return frames, None
    assert error.code in ERROR_CODES
    return frames + error.frames, type(error)


def assert_stays_failed(decoder: FrameDecoder, error: type[ProtocolError]) -> None:
    """A failed decoder raises the same error class on every later call."""
    for data in (b"", HEARTBEAT, NEXT_FRAME):
        with pytest.raises(error):
            decoder.feed(data)
    with pytest.raises(error):
        decoder.feed_eof()


def feed_then_eof(decoder: FrameDecoder, data: bytes, delivered: list[bytes]) -> None:
    delivered += decoder.feed(data)
    decoder.feed_eof()


def check_three_ways(
    data: bytes,
    expected: list[bytes],
    error: type[ProtocolError] | None = None,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> None:
    """Assert ``data`` decodes to ``expected`` (then ``error``, if any) however it is fed.

    1. whole, in one ``feed``; 2. one byte per ``feed``; 3. followed by part of another
    frame, which the decoder must keep (``in_frame``) and complete on the next ``feed``.
    When ``error`` is raised by ``feed`` (not by EOF), trailing bytes must not change it.
    """
    for chunks in (whole(data), bytewise(data)):
        assert decode(chunks, max_frame_bytes=max_frame_bytes) == (expected, error)

    if error is None:
        for cut in NEXT_CUTS:
            for chunks in (whole(data + NEXT_FRAME[:cut]), bytewise(data + NEXT_FRAME[:cut])):
                decoder = FrameDecoder(max_frame_bytes)
                frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
                assert frames == expected
                assert decoder.in_frame
                assert decoder.buffered <= cut
                assert decoder.feed(NEXT_FRAME[cut:]) == [NEXT_PAYLOAD]
                assert not decoder.in_frame
                assert decoder.buffered == 0
                decoder.feed_eof()
        return

    # Whole: when feed() fails, the frames before the broken point travel on the exception.
    decoder = FrameDecoder(max_frame_bytes)
    delivered: list[bytes] = []
    with pytest.raises(error) as info:
        feed_then_eof(decoder, data, delivered)
    if info.value.code == "truncated_frame":
        assert (delivered, info.value.frames) == (expected, [])
    else:
        assert (delivered, info.value.frames) == ([], expected)
    assert_stays_failed(decoder, error)

    # Trailing bytes change nothing when the error is raised before EOF.
    if decode(whole(data), max_frame_bytes=max_frame_bytes, eof=False)[1] is not None:
        for cut in NEXT_CUTS:
            tail = data + NEXT_FRAME[:cut]
            for chunks in (whole(tail), bytewise(tail)):
                outcome = decode(chunks, max_frame_bytes=max_frame_bytes, eof=False)
                assert outcome == (expected, error)


# --- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"x",
        b"123456789",
        b"1234567890",
        b'{"sensor":"a","value":1}',
        "°C".encode(),
        "🌡️ 21.5 °C".encode(),
        bytes(range(256)) * 40,
    ],
    ids=["empty", "1", "9", "10", "json", "degree", "emoji", "10240"],
)
def test_encode_frame_matches_the_normative_header(payload: bytes) -> None:
    """encode_frame is exactly the byte-length, space-padded, left-aligned header plus payload."""
    assert encode_frame(payload) == f"{len(payload):<10}".encode("ascii") + payload
    assert encode_frame(payload)[:HEADER_SIZE].rstrip(b" ") == str(len(payload)).encode()


def test_encode_frame_counts_bytes_not_characters() -> None:
    """The header of a multi-byte UTF-8 payload announces its byte count."""
    text = '{"unit":"°C","sensor":"🌡"}'  # 26 characters, 30 bytes
    assert len(text) == 26
    assert encode_frame(text.encode()) == b"30        " + text.encode()


def test_heartbeat_is_an_empty_frame() -> None:
    """HEARTBEAT is the zero-length frame `0` followed by nine spaces."""
    assert HEARTBEAT == b"0         "
    assert encode_frame(b"") == HEARTBEAT


def test_encode_frame_refuses_a_payload_that_does_not_fit_the_header() -> None:
    """A payload longer than 9_999_999_999 bytes cannot be framed and raises ValueError."""

    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_ENCODABLE + 1

    with pytest.raises(ValueError, match="10000000000"):
        encode_frame(Huge(b"x"))


# --- parse_header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size"),
    [
        (b"42        ", 42),
        (b"0000000042", 42),
        (b"        42", 42),
        (b"    42    ", 42),
        (b"   0042   ", 42),
        (b"0         ", 0),
        (b"0000000000", 0),
        (b"         0", 0),
        (b"9999999999", 9_999_999_999),
    ],
)
def test_parse_header_accepts_padded_decimal(header: bytes, size: int) -> None:
    """Leading/trailing spaces and leading zeros around an ASCII decimal are accepted."""
    assert parse_header(header) == size


BAD_HEADERS = [
    pytest.param(b"abcdefghij", id="letters"),
    pytest.param(b"4a        ", id="digit-letter"),
    pytest.param(b"0x10      ", id="hex"),
    pytest.param(b"+5        ", id="plus"),
    pytest.param(b"-5        ", id="minus"),
    pytest.param(b"5\t        ", id="tab"),
    pytest.param(b"\t5        ", id="leading-tab"),
    pytest.param(b"5\x00        ", id="nul"),
    pytest.param(b"\x00" * 10, id="all-nul"),
    pytest.param(b"4 2       ", id="inner-space"),
    pytest.param(b"          ", id="all-space"),
    pytest.param(b"5\n       \n", id="newline"),
    pytest.param(b"5\r\n      \n", id="crlf"),
    pytest.param(b"1_000     ", id="underscore"),
    pytest.param(b"1.5       ", id="decimal-point"),
    pytest.param(b"1e3       ", id="exponent"),
    pytest.param("٤٢        ".encode()[:10], id="arabic-indic-digits"),
    pytest.param(b"\xef\xbc\x94\xef\xbc\x92    ", id="fullwidth-digits"),
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_parse_header_rejects_anything_else(header: bytes) -> None:
    """Letters, signs, tabs, NUL, inner spaces and all-space headers are BadHeader."""
    assert len(header) == HEADER_SIZE
    with pytest.raises(BadHeader) as info:
        parse_header(header)
    assert info.value.code == "bad_header"


@pytest.mark.parametrize("header", [b"42", b"42         ", b""])
def test_parse_header_rejects_a_header_of_the_wrong_width(header: bytes) -> None:
    """A header shorter or longer than 10 bytes is BadHeader."""
    with pytest.raises(BadHeader):
        parse_header(header)


# --- decoding: well-formed streams ---------------------------------------------------------


def test_empty_stream_decodes_to_nothing() -> None:
    """No bytes then EOF is a clean end with no frames."""
    check_three_ways(b"", [])


@pytest.mark.parametrize(
    "payloads",
    [
        [b"x"],
        [b'{"sensor":"a","value":1}'],
        [b"a", b"bc"],
        [b'{"a":1}', b'{"b":2}', b'{"c":3}'],
        [b"0123456789"],
        [b"0123456789" * 100],
    ],
    ids=["one-byte", "one-json", "two", "three", "payload-looks-like-header", "1000-bytes"],
)
def test_frames_decode_in_order(payloads: list[bytes]) -> None:
    """Consecutive frames, including several in one read, decode to their payloads in order."""
    check_three_ways(b"".join(encode_frame(p) for p in payloads), payloads)


def test_two_frames_in_one_read_come_out_of_one_feed() -> None:
    """A single feed holding two complete frames returns both."""
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"first") + encode_frame(b"second")) == [b"first", b"second"]
    assert decoder.buffered == 0
    assert not decoder.in_frame


@pytest.mark.parametrize("split", range(1, HEADER_SIZE))
def test_header_split_at_every_position(split: int) -> None:
    """A header cut anywhere yields nothing until the frame is complete, then the payload."""
    frame = encode_frame(b'{"sensor":"a","value":1}')
    decoder = FrameDecoder()
    assert decoder.feed(frame[:split]) == []
    assert decoder.in_frame
    assert decoder.buffered == split
    assert decoder.feed(frame[split:]) == [b'{"sensor":"a","value":1}']
    assert not decoder.in_frame
    decoder.feed_eof()


@pytest.mark.parametrize("split", range(HEADER_SIZE, HEADER_SIZE + 24))
def test_payload_split_at_every_position(split: int) -> None:
    """A payload cut anywhere yields nothing until its last byte arrives."""
    payload = b'{"sensor":"a","value":1}'
    frame = encode_frame(payload)
    decoder = FrameDecoder()
    assert decoder.feed(frame[:split]) == []
    assert decoder.in_frame
    assert decoder.feed(frame[split:]) == [payload]
    assert not decoder.in_frame
    decoder.feed_eof()


def test_frame_spread_over_many_reads() -> None:
    """Two frames cut into uneven reads across both headers and payloads decode correctly."""
    data = encode_frame(b"a" * 50) + encode_frame(b"b" * 7)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start, end in [(0, 3), (3, 13), (13, 14), (14, 59), (59, 61), (61, 70), (70, len(data))]:
        out += decoder.feed(data[start:end])
    assert out == [b"a" * 50, b"b" * 7]


@pytest.mark.parametrize(
    "data",
    [bytearray(encode_frame(b"xyz")), memoryview(encode_frame(b"xyz"))],
    ids=["bytearray", "memoryview"],
)
def test_feed_accepts_bytearray_and_memoryview(data: bytearray | memoryview) -> None:
    """feed takes any bytes-like read buffer and returns bytes payloads."""
    frames = FrameDecoder().feed(data)
    assert frames == [b"xyz"]
    assert type(frames[0]) is bytes


def test_returned_payload_is_not_a_view_of_the_buffer() -> None:
    """A delivered payload is unaffected by later feeds."""
    decoder = FrameDecoder()
    (first,) = decoder.feed(encode_frame(b"first") + b"5    ")
    decoder.feed(b"     other")
    assert first == b"first"


@pytest.mark.parametrize(
    "data",
    [HEARTBEAT, HEARTBEAT * 3, b"0000000000", b"         0", b"    0     "],
    ids=["one", "three", "zeros", "right-aligned", "centered"],
)
def test_heartbeats_decode_to_empty_payloads(data: bytes) -> None:
    """Every zero-length header is a heartbeat, delivered as b""."""
    check_three_ways(data, [b""] * (len(data) // HEADER_SIZE))


def test_heartbeats_between_frames_keep_their_place() -> None:
    """Heartbeats interleaved with frames come out in stream order."""
    data = HEARTBEAT + encode_frame(b"a") + HEARTBEAT + HEARTBEAT + encode_frame(b"b")
    check_three_ways(data, [b"", b"a", b"", b"", b"b"])


@pytest.mark.parametrize(
    "header",
    [b"0000000003", b"         3", b"3         ", b"    3     ", b"  0003    "],
)
def test_padded_headers_decode(header: bytes) -> None:
    """Leading zeros, leading and trailing spaces are accepted by the decoder."""
    check_three_ways(header + b"abc", [b"abc"])


def test_header_with_leading_zeros_42() -> None:
    """The example `0000000042` of docs/protocol.md#framing announces 42 bytes."""
    payload = b"x" * 42
    check_three_ways(b"0000000042" + payload, [payload])
    check_three_ways(b"        42" + payload, [payload])


@pytest.mark.parametrize(
    "text",
    ['{"unit":"°C"}', '{"sensor":"🌡️","value":1}', "日本語のセンサー", "é" * 300],
    ids=["degree", "emoji", "cjk", "many-2-byte"],
)
def test_multibyte_payloads_are_counted_in_bytes(text: str) -> None:
    """A multi-byte UTF-8 payload decodes whole because the header counts bytes."""
    payload = text.encode()
    assert len(payload) > len(text)
    check_three_ways(encode_frame(payload), [payload])


@pytest.mark.parametrize("text", ['{"unit":"°C"}', '{"sensor":"🌡️","value":1}'])
def test_frame_is_not_delivered_after_only_character_count_bytes(text: str) -> None:
    """After the header and len(text) payload bytes, a multi-byte frame is still incomplete."""
    payload = text.encode()
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(payload)[: HEADER_SIZE + len(text)]) == []
    assert decoder.in_frame
    assert decoder.feed(payload[len(text) :]) == [payload]


@pytest.mark.parametrize("text", ['{"unit":"°C"}', '{"sensor":"🌡️","value":1}'])
def test_sender_counting_characters_does_not_yield_the_whole_payload(text: str) -> None:
    """A header announcing characters cuts the payload short; the rest is left as a new frame."""
    payload = text.encode()
    wrong = f"{len(text):<10}".encode() + payload
    decoder = FrameDecoder()
    frames = decoder.feed(wrong)
    assert frames == [payload[: len(text)]]
    assert payload not in frames
    assert decoder.in_frame
    with pytest.raises(TruncatedFrame):
        decoder.feed_eof()


# --- decoding: broken streams --------------------------------------------------------------


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_bad_header_is_fatal(header: bytes) -> None:
    """A bad header raises BadHeader, however the stream is fed, and the decoder stays failed."""
    check_three_ways(header + b"payload", [], BadHeader)


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_frames_before_a_bad_header_are_kept(header: bytes) -> None:
    """Frames completed in the same input before a bad header are delivered, on exc.frames."""
    data = encode_frame(b"one") + HEARTBEAT + encode_frame(b"two") + header
    check_three_ways(data, [b"one", b"", b"two"], BadHeader)


def test_bad_header_error_carries_its_code_and_the_header() -> None:
    """BadHeader has the wire code bad_header and names the offending bytes."""
    with pytest.raises(BadHeader) as info:
        FrameDecoder().feed(b"-5        xxxxx")
    assert info.value.code == "bad_header"
    assert "-5" in str(info.value)


def test_frame_too_large_is_raised_as_soon_as_the_header_arrives() -> None:
    """The 10 header bytes alone announcing 2_000_000_000 exceed 1 MiB: FrameTooLarge at once."""
    decoder = FrameDecoder(max_frame_bytes=1_048_576)
    assert decoder.feed(b"200000000") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"0")
    assert info.value.code == "frame_too_large"
    assert "2000000000" in str(info.value)
    assert "1048576" in str(info.value)
    assert decoder.buffered == 0
    assert_stays_failed(decoder, FrameTooLarge)


def test_frame_too_large_three_ways() -> None:
    """An oversized header fails the same way whole, byte by byte, and with trailing bytes."""
    check_three_ways(b"2000000000", [], FrameTooLarge, max_frame_bytes=1_048_576)
    check_three_ways(
        encode_frame(b"ok") + b"2000000000" + b"x" * 100,
        [b"ok"],
        FrameTooLarge,
        max_frame_bytes=1_048_576,
    )


@pytest.mark.parametrize(
    ("limit", "size", "too_large"),
    [(100, 100, False), (100, 101, True), (len(NEXT_PAYLOAD), len(NEXT_PAYLOAD), False)],
)
def test_max_frame_bytes_is_inclusive(limit: int, size: int, too_large: bool) -> None:
    """A payload of exactly max_frame_bytes is accepted; one byte more is FrameTooLarge."""
    payload = b"p" * size
    if too_large:
        check_three_ways(encode_frame(payload), [], FrameTooLarge, max_frame_bytes=limit)
    else:
        check_three_ways(encode_frame(payload), [payload], max_frame_bytes=limit)


def test_a_header_seen_before_is_still_checked_against_each_limit() -> None:
    """Header lengths are remembered across decoders, but each checks its own limit."""
    frame = encode_frame(b"p" * 300)
    assert FrameDecoder(1000).feed(frame) == [b"p" * 300]
    with pytest.raises(FrameTooLarge):
        FrameDecoder(299).feed(frame)
    with pytest.raises(BadHeader):  # a bad header is never remembered as a good one
        FrameDecoder().feed(b"+300      ")
    with pytest.raises(BadHeader):
        FrameDecoder().feed(b"+300      ")


def test_zero_limit_allows_only_heartbeats() -> None:
    """With max_frame_bytes 0, heartbeats pass and a one-byte frame is FrameTooLarge."""
    assert decode(whole(HEARTBEAT * 2), max_frame_bytes=0) == ([b"", b""], None)
    assert decode(bytewise(HEARTBEAT + encode_frame(b"x")), max_frame_bytes=0) == (
        [b""],
        FrameTooLarge,
    )


def test_default_limit_is_one_mebibyte() -> None:
    """A fresh decoder's limit is 1 MiB: 1_048_577 announced bytes are refused."""
    assert FrameDecoder().max_frame_bytes == 1_048_576
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(b"1048577   ")


def test_negative_limit_is_refused() -> None:
    """A negative max_frame_bytes is a programming error."""
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameDecoder(max_frame_bytes=-1)


@pytest.mark.parametrize("cut", range(1, HEADER_SIZE))
def test_eof_mid_header_is_truncated(cut: int) -> None:
    """A stream ending inside a header raises TruncatedFrame at EOF."""
    check_three_ways(encode_frame(b"hello")[:cut], [], TruncatedFrame)


@pytest.mark.parametrize("cut", range(HEADER_SIZE, HEADER_SIZE + 5))
def test_eof_mid_payload_is_truncated(cut: int) -> None:
    """A stream ending after the header but before the payload's end raises TruncatedFrame."""
    check_three_ways(encode_frame(b"hello")[:cut], [], TruncatedFrame)


def test_eof_mid_frame_keeps_earlier_frames() -> None:
    """Frames completed before a truncated one are delivered; the partial one never is."""
    check_three_ways(encode_frame(b"one") + encode_frame(b"two")[:-1], [b"one"], TruncatedFrame)


def test_eof_at_a_frame_boundary_is_clean() -> None:
    """EOF right after a complete frame or heartbeat raises nothing."""
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"one") + HEARTBEAT) == [b"one", b""]
    assert not decoder.in_frame
    decoder.feed_eof()


def test_truncated_frame_message_and_failed_state() -> None:
    """TruncatedFrame has code truncated_frame, and the decoder refuses input afterwards."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"hello")[:12])
    with pytest.raises(TruncatedFrame) as info:
        decoder.feed_eof()
    assert info.value.code == "truncated_frame"
    assert decoder.buffered == 0
    assert_stays_failed(decoder, TruncatedFrame)


def test_error_frames_are_only_those_of_the_failing_feed() -> None:
    """exc.frames holds the frames of the failing feed, not those returned by earlier feeds."""
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"early")) == [b"early"]
    with pytest.raises(BadHeader) as info:
        decoder.feed(encode_frame(b"late") + b"xxxxxxxxxx")
    assert info.value.frames == [b"late"]


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_random_payloads(seed: int) -> None:
    """Random payloads encoded and concatenated decode back to the same list, in random reads."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.choice([0, 1, 9, 10, 11, rng.randrange(2000)])) for _ in range(8)]
    data = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(rng.sample(range(len(data) + 1), k=min(10, len(data) + 1)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert decode(chunks) == (payloads, None)
    assert decode(whole(data)) == (payloads, None)


# --- properties ----------------------------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# Streams that reach every decoder path: valid frames, heartbeats, padded and bad headers,
# oversized headers, and raw noise.
stream_pieces = st.one_of(
    st.binary(max_size=30).map(encode_frame),
    st.just(HEARTBEAT),
    st.integers(0, 40).map(lambda n: f"{n:0>10}".encode()),
    st.integers(0, 40).map(lambda n: f"{n:>10}".encode()),
    st.sampled_from([b"4 2       ", b"-5        ", b"abcdefghij", b"          ", b"5\t        "]),
    st.binary(max_size=20),
)
streams = st.lists(stream_pieces, max_size=8).map(b"".join)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(st.binary(max_size=200), streams),
    cuts=st.lists(st.integers(0, 400), max_size=12),
    limit=st.sampled_from([0, 5, 20, DEFAULT_MAX_FRAME_BYTES]),
)
def test_any_bytes_yield_frames_or_a_protocol_error(
    data: bytes, cuts: list[int], limit: int
) -> None:
    """Any byte string gives frames or a documented ProtocolError, the same for any chunking."""
    reference = decode(whole(data), max_frame_bytes=limit)
    # decode() lets any non-ProtocolError escape, which fails the test.
    assert decode(chunked(data, cuts), max_frame_bytes=limit) == reference
    frames, error = reference
    assert all(type(frame) is bytes and len(frame) <= limit for frame in frames)
    if error is not None:
        assert issubclass(error, ProtocolError)
        assert error.code in ERROR_CODES


@settings(max_examples=examples(300), deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=64), max_size=10),
    cuts=st.lists(st.integers(0, 800), max_size=16),
)
def test_encoded_payloads_decode_exactly_under_any_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """Encoded payloads concatenated and split at arbitrary points decode to the same list."""
    data = b"".join(encode_frame(p) for p in payloads)
    assert decode(chunked(data, cuts)) == (payloads, None)
