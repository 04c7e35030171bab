"""A process renews the group memberships of all its sockets (channels-redis forgets them
after ``group_expiry``): on Redis in a few pipelines (``group_add_many``, tested in
``test_channel_layer``), on any other layer one ``group_add`` at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from channels.layers import InMemoryChannelLayer

from monitor import fanout
from patient_data import events
from patient_data.conf import conf


@pytest.fixture
def sockets(monkeypatch):
    held = [
        SimpleNamespace(channel_name=f"specific.p!{n}", groups=[f"patient-session.s{n % 2}"])
        for n in range(3)
    ]
    held.append(SimpleNamespace(channel_name="specific.p!staff", groups=["staff", "other"]))
    monkeypatch.setattr(fanout, "_sockets", held)
    return held


async def test_every_socket_s_groups_and_the_process_group_are_renewed(sockets):
    layer = InMemoryChannelLayer()
    await fanout._renew(layer, "specific.p!listener")
    assert set(layer.groups[events.PROCESSES_GROUP]) == {"specific.p!listener"}
    for socket in sockets:
        for group in socket.groups:
            assert socket.channel_name in layer.groups[group]


async def test_a_layer_that_adds_many_at_once_gets_them_all_in_one_call(sockets):
    calls = []

    class Layer:
        async def group_add_many(self, memberships):
            calls.append(list(memberships))

    await fanout._renew(Layer(), "specific.p!listener")
    assert len(calls) == 1
    assert calls[0][0] == (events.PROCESSES_GROUP, "specific.p!listener")
    assert len(calls[0]) == 1 + sum(len(socket.groups) for socket in sockets)


async def test_the_monitor_group_is_renewed_while_the_process_holds_a_staff_socket(
    sockets, monkeypatch
):
    layer = InMemoryChannelLayer()
    monkeypatch.setattr(fanout, "_watching", True)
    await fanout._renew(layer, "specific.p!listener")
    assert set(layer.groups[conf.PATIENT_EVENT_GROUP]) == {"specific.p!listener"}
    monkeypatch.setattr(fanout, "_watching", False)
    other = InMemoryChannelLayer()
    await fanout._renew(other, "specific.p!listener")
    assert conf.PATIENT_EVENT_GROUP not in other.groups
