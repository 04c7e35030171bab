"""Property-based: whatever a page or a staff socket sends, the answer is a defined frame (one
``reply``, state or ``error`` with a stable code), the consumer never crashes, and no other
session is touched (issue 9, property tests over the socket commands)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import protocol
from patient_data.models import CleanupEvent
from tests.live_support import Socket, session_key, signed_in

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND_TYPES = sorted(protocol.SESSION_COMMANDS | protocol.STAFF_COMMANDS | {"end_session"})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
#: Bodies close to real commands (so every branch of the parser is reached) and anything else.
command_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(COMMAND_TYPES) | json_values,
        "id": st.integers() | st.text(max_size=80) | json_values,
        "session": st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | json_values,
    },
).map(json.dumps)
texts = command_like | st.text(max_size=300) | json_values.map(json.dumps)
#: Channels' test communicator cannot send an empty frame: every other frame can be sent.
frames = st.one_of(
    texts.filter(bool),
    st.binary(min_size=1, max_size=300),
    st.just("x" * (protocol.MAX_FRAME_BYTES + 1)),
)


@given(text=texts, staff=st.booleans())
def test_parsing_any_text_gives_a_command_or_a_stable_error(text, staff):
    allowed = protocol.STAFF_COMMANDS if staff else protocol.SESSION_COMMANDS
    try:
        command = protocol.parse(text, None, allowed, staff=staff)
    except protocol.ProtocolError as error:
        assert error.code in protocol.ERRORS
        assert json.loads(protocol.error_frame(error.code, error.command_id))["error"] == error.code
        return
    assert command.type in allowed
    assert command.session is None or protocol.REF_PATTERN.match(command.session)
    if staff and command.type in protocol.TARGETED:
        assert command.session is not None


@given(data=st.binary(max_size=protocol.MAX_FRAME_BYTES * 2))
def test_binary_frames_are_always_refused_with_a_code(data):
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse(None, data, protocol.SESSION_COMMANDS)
    assert refused.value.code in {"binary_not_supported", "too_large"}


ANSWERS = {"reply", "error", "session.state", "session.cleared", "session.ended"}
#: Frames the server pushes by itself meanwhile (announcements, not answers).
PUSHED = {"presence.changed", "session.activity", "session.stored", "session.timeout_warning"}


async def _answer(socket: Socket) -> dict:
    while (frame := await socket.next()).get("type") in PUSHED:
        pass
    return frame


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=st.lists(frames, min_size=1, max_size=4))
async def test_any_frames_on_a_page_socket_get_defined_answers_and_touch_no_other_session(
    clinician, django_user_model, sent
):
    other_user = await django_user_model.objects.aget_or_create(username="other-clinician")
    other = await signed_in(other_user[0])
    other_before = dict(await _stored(other))
    mine = await signed_in(clinician)
    socket = Socket("/ws/patient-session/", session_key(mine))
    assert await socket.connect()
    await socket.expect("session.state")
    try:
        for payload in sent:
            await socket.send(payload)
            answer = await _answer(socket)
            if "closed" in answer:
                # A flood of bad frames (4008) or this session's own end (4001): never 1011.
                assert answer["closed"] in {4001, 4008}
                break
            assert answer["type"] in ANSWERS
            if answer["type"] == "error":
                assert answer["error"] in protocol.ERRORS
    finally:
        await socket.close()
    assert dict(await _stored(other)) == other_before
    assert not await CleanupEvent.objects.filter(session_ref=socket_ref(other)).aexists()


async def _stored(client):
    from patient_data import index

    return await index.store(session_key(client)).aitems()


def socket_ref(client) -> str:
    from patient_data.refs import session_ref

    return session_ref(session_key(client))
