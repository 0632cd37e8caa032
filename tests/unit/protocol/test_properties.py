"""Property tests: whatever the peer sends, and however the transport cuts it up.

1. Any bytes fed to a Connection (fresh, or after a valid Hello) produce events
   or a ProtocolError, nothing else; after the error the connection is closed,
   has queued a Goodbye with the error's code, and ignores further input. The
   outcome does not depend on how the bytes were split into reads.
2. A valid stream produced by a real endpoint gives the same events, replies
   and state whether delivered in one piece, byte at a time, or cut anywhere.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.connection import Connection, ConnectionState
from protocol.errors import ProtocolError, UsageError
from protocol.events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelOpened,
    ChannelRejected,
    ConnectionClosed,
    CreditAvailable,
)
from protocol.frames import MAX_CHANNEL_ID, FrameKind, encode_frame
from protocol.limits import Limits
from protocol.messages import (
    MAX_WINDOW,
    ChannelAccept,
    ChannelClose,
    ChannelOpen,
    ChannelReject,
    DeviceStatus,
    Goodbye,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Inventory,
    Message,
    Role,
    WindowAdjust,
    message_types,
)

from .protocol_helpers import FakeClock, connected, control, data, hello, last_goodbye, pump

EVENT_TYPES = (
    Message,
    ChannelOpened,
    ChannelAccepted,
    ChannelRejected,
    ChannelData,
    CreditAvailable,
    ChannelClosed,
    ConnectionClosed,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Outcome = tuple[list[Any], list[bytes], tuple[type, int, str] | None, ConnectionState, list[int]]


def run(conn: Connection, chunks: list[bytes]) -> Outcome:
    """Feed every chunk (also after an error, which must be ignored); sum up what happened."""
    error: tuple[type, int, str] | None = None
    for chunk in chunks:
        try:
            conn.receive_data(chunk)
        except ProtocolError as exc:
            assert error is None, "a closed connection raised again"
            error = (type(exc), int(exc.code), str(exc))
    return (
        conn.events_received(),
        conn.data_to_send(),
        error,
        conn.state,
        sorted(conn.open_channels()),
    )


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points)]


def byte_at_a_time(wire: bytes) -> list[bytes]:
    return [wire[i : i + 1] for i in range(len(wire))]


# -- (1) arbitrary input --------------------------------------------------------------------

TIGHT = Limits(
    max_frame_size=1024,
    max_control_size=256,
    max_string=16,
    max_list=2,
    max_channels=1,
    control_burst=8,
    channel_window=32,
)

small_text = st.text(max_size=6)
codes = st.integers(1000, 4999)
windows = st.one_of(st.integers(0, 64), st.just(MAX_WINDOW))

connection_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        version=st.integers(1, 2),
        role=st.sampled_from([r.value for r in Role]),
        max_frame_size=st.integers(1024, 4096),
    ),
    st.builds(Goodbye, code=codes, message=small_text),
    st.builds(Heartbeat, seq=st.integers(0, 2**53)),
    st.builds(HeartbeatAck, seq=st.integers(0, 9)),
    st.builds(
        Inventory, hostname=small_text, os=small_text, user=small_text, agent_version=small_text
    ),
    st.builds(DeviceStatus, device_id=small_text, name=small_text, online=st.booleans()),
)

channel_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(ChannelOpen, kind=st.sampled_from(["shell", "files"]), window=windows),
    st.builds(ChannelAccept, window=windows),
    st.builds(ChannelReject, code=codes, message=small_text),
    st.builds(WindowAdjust, increment=st.one_of(st.integers(1, 64), st.just(MAX_WINDOW))),
    st.builds(ChannelClose, code=codes),
)

FIELD_NAMES = sorted(
    {name for cls in message_types().values() for name in cls.__dataclass_fields__}
)

wire_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def random_map_body(draw: st.DrawFn) -> bytes:
    """A msgpack map shaped like a message, with anything in its fields."""
    body: dict[str, Any] = {"t": draw(st.sampled_from([*message_types(), "nope"]) | wire_values)}
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=6)):
        body[name] = draw(wire_values)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


#: Mostly the channels that exist at stage 2 (1 and 2), sometimes others.
channels = st.sampled_from([1, 1, 1, 2, 2, 0, 3, MAX_CHANNEL_ID])


@st.composite
def frame_bytes(draw: st.DrawFn, well_formed: bool) -> bytes:
    """One frame, valid or not, or plain junk; only valid messages if ``well_formed``.

    Well-formed frames may still break the rules (wrong channel, wrong sender,
    beyond the window...) but get deeper into the connection's state.
    """
    choices = [1, 2, 3, 3] if well_formed else [0, 1, 2, 3, 3, 4, 5, 6]
    choice = draw(st.sampled_from(choices))
    if choice == 0:
        return draw(st.binary(max_size=24))
    if choice == 1:
        return data(draw(channels), draw(st.binary(max_size=80)))
    if choice == 2:
        return control(draw(connection_messages), draw(st.sampled_from([0, 0, 0, 1])))
    if choice == 3:
        return control(draw(channel_messages), draw(channels))
    if choice == 4:
        return encode_frame(FrameKind.CONTROL, draw(channels), draw(random_map_body()))
    if choice == 5:
        return encode_frame(FrameKind.CONTROL, draw(channels), draw(st.binary(max_size=24)))
    # a header that lies about its kind or length
    kind = draw(st.sampled_from([1, 2, 0, 3, 255]))
    length = draw(
        st.one_of(
            st.integers(0, 64),
            # just over TIGHT's and the default max_frame_size, and the largest
            st.sampled_from([1025, 256 * 1024 + 1, 2**32 - 1]),
            st.integers(0, 2**32 - 1),
        )
    )
    return bytes([kind]) + draw(channels).to_bytes(4, "big") + length.to_bytes(4, "big")


roles = st.sampled_from(list(Role))
limits = st.sampled_from([Limits(), TIGHT])


def prepared(role: Role, lim: Limits, stage: int, peer_pick: int) -> Connection:
    """A connection at ``stage`` 0 (fresh), 1 (after Hello) or 2 (with channels), drained.

    At stage 2 channel 1 is open and channel 2 is opening (relay) or offered
    (agent, console; unless the limits allow a single channel).
    """
    conn = Connection(role, limits=lim, clock=FakeClock())
    if stage >= 1:
        peer = [Role.AGENT, Role.CONSOLE][peer_pick] if role is Role.RELAY else Role.RELAY
        conn.receive_data(hello(peer))
    if stage >= 2:
        if role is Role.RELAY:
            conn.open_channel(1, "shell")
            conn.open_channel(2, "files")
            conn.receive_data(control(ChannelAccept(window=64), 1))
        else:
            conn.receive_data(
                control(ChannelOpen(kind="shell", window=64), 1)
                + control(ChannelOpen(kind="files", window=64), 2)
            )
            conn.accept_channel(1)
    conn.events_received()
    conn.data_to_send()
    return conn


def check_outcome(outcome: Outcome) -> None:
    events, out, error, state, _ = outcome
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    if error is not None:
        _, code, message = error
        assert state is ConnectionState.CLOSED
        bye = last_goodbye(out)
        assert bye.code == code
        assert bye.message == message[:1024]


stages = st.integers(0, 2)


@SETTINGS
@given(
    role=roles,
    lim=limits,
    stage=stages,
    peer_pick=st.integers(0, 1),
    junk=st.binary(max_size=200),
)
def test_any_bytes_give_events_or_a_protocol_error(
    role: Role, lim: Limits, stage: int, peer_pick: int, junk: bytes
) -> None:
    check_outcome(run(prepared(role, lim, stage, peer_pick), [junk]))


@SETTINGS
@given(
    role=roles,
    lim=limits,
    stage=stages,
    peer_pick=st.integers(0, 1),
    frames=st.booleans().flatmap(lambda ok: st.lists(frame_bytes(ok), max_size=12)),
    cuts=st.lists(st.integers(0, 2**16), max_size=12),
)
def test_any_frames_give_the_same_outcome_however_they_are_cut(
    role: Role,
    lim: Limits,
    stage: int,
    peer_pick: int,
    frames: list[bytes],
    cuts: list[int],
) -> None:
    wire = b"".join(frames)

    def fresh() -> Connection:
        return prepared(role, lim, stage, peer_pick)

    whole = run(fresh(), [wire])
    check_outcome(whole)
    assert run(fresh(), byte_at_a_time(wire)) == whole
    assert run(fresh(), split(wire, cuts)) == whole


# -- (2) valid streams from a real endpoint ------------------------------------------------

STREAM_LIMITS = Limits(
    max_frame_size=2048, max_control_size=2048, channel_window=4096, control_burst=100_000
)


def setup(peer_role: Role) -> tuple[Connection, Connection]:
    """A relay and a peer with channels 1 and 2 open, 3 offered, and some data received."""
    relay, peer = connected(
        peer_role, relay_limits=STREAM_LIMITS, peer_limits=STREAM_LIMITS, clock=FakeClock()
    )
    for channel in (1, 2, 3):
        relay.open_channel(channel, "shell")
    pump((relay, peer))
    peer.accept_channel(1)
    peer.accept_channel(2)
    pump((relay, peer))
    relay.send_data(1, b"r" * 3000)
    peer.send_data(2, b"p" * 3000)
    pump((relay, peer))
    relay.events_received()
    peer.events_received()
    return relay, peer


operations = st.lists(
    st.one_of(
        st.tuples(st.just("ping"), st.integers(0, 2**53)),
        st.tuples(st.just("data"), st.sampled_from([1, 2, 3]), st.integers(0, 1500)),
        st.tuples(st.just("ack"), st.sampled_from([1, 2]), st.integers(0, 1600)),
        st.tuples(st.just("close_channel"), st.sampled_from([1, 2, 3]), codes),
        st.tuples(st.just("open"), st.integers(1, 6)),
        st.tuples(st.just("accept"), st.just(3)),
        st.tuples(st.just("reject"), st.just(3), codes),
        st.tuples(st.just("report")),
        st.tuples(st.just("close"), codes),
    ),
    max_size=15,
)


def perform(conn: Connection, ops: list[tuple[Any, ...]]) -> None:
    """Do what an application might; skip what the core refuses as misuse."""
    for op in ops:
        try:
            match op:
                case ("ping", seq):
                    conn.send(Heartbeat(seq=seq))
                case ("data", channel, size):
                    conn.send_data(channel, bytes(i % 251 for i in range(size)))
                case ("ack", channel, size):
                    conn.acknowledge(channel, size)
                case ("close_channel", channel, code):
                    conn.close_channel(channel, code, "done")
                case ("open", channel):
                    conn.open_channel(channel, "files", {"path": "/"})
                case ("accept", channel):
                    conn.accept_channel(channel)
                case ("reject", channel, code):
                    conn.reject_channel(channel, code, "no")
                case ("report",):
                    if conn.role is Role.RELAY:
                        conn.send(DeviceStatus(device_id="d", name="n", online=True))
                    else:
                        conn.send(Inventory(hostname="h", os="o", user="u", agent_version="1"))
                case ("close", code):
                    conn.close(code, "bye")
        except UsageError:
            pass


@SETTINGS
@given(
    peer_role=st.sampled_from([Role.AGENT, Role.CONSOLE]),
    relay_sends=st.booleans(),
    ops=operations,
    cuts=st.lists(st.integers(0, 2**16), max_size=20),
)
def test_a_valid_stream_gives_the_same_events_however_it_is_cut(
    peer_role: Role, relay_sends: bool, ops: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    index = 0 if relay_sends else 1
    sender = setup(peer_role)[index]
    perform(sender, ops)
    wire = b"".join(sender.data_to_send())

    def receiver() -> Connection:
        return setup(peer_role)[1 - index]

    whole = run(receiver(), [wire])
    events, _, error, _, _ = whole
    assert error is None, error
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    assert run(receiver(), byte_at_a_time(wire)) == whole
    assert run(receiver(), split(wire, cuts)) == whole
