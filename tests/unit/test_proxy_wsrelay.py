"""The websocket relay's decisions (``vastkeep.proxy.wsrelay``): what a wait's end means, table-driven; and a
client that left while a frame was written to it is told apart from the instance dropping the relay."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType

from vastkeep.proxy.metrics import ProxyMetrics
from vastkeep.proxy.wsrelay import CLOSE, PROBE, RECONNECT, ClientGone, _pump, next_step


@pytest.mark.parametrize(("client_done", "client_gone", "failover", "upstream_done", "moved", "want"), [
    # the client closed, or left while we wrote to it: the relay ends, whatever the instance did
    (True, False, True, False, False, CLOSE),
    (False, True, True, True, False, CLOSE),  # not a "ws-drop" strike against a healthy instance
    (False, True, True, False, True, CLOSE),  # moved, but nobody to tell: no reconnect
    (True, False, True, True, True, CLOSE),
    # no failover behind this socket (/pool/, or failover off): one end closing closes the other
    (False, False, False, True, False, CLOSE),
    # the instance dropped us and the lease did not move: a strike, a probe, then reconnect
    (False, False, True, True, False, PROBE),
    # the lease moved (with or without the old socket dropping): to the new instance
    (False, False, True, False, True, RECONNECT),
    (False, False, True, True, True, RECONNECT),
])
def test_next_step(client_done, client_gone, failover, upstream_done, moved, want):
    assert next_step(client_done=client_done, client_gone=client_gone, failover=failover,
                     upstream_done=upstream_done, moved=moved) == want


class _Msg:
    def __init__(self, kind: WSMsgType, data: object = None) -> None:
        self.type, self.data = kind, data


class _Src:
    close_code = 1000

    def __init__(self, *msgs: _Msg) -> None:
        self.msgs = list(msgs)

    async def receive(self) -> _Msg:
        return self.msgs.pop(0) if self.msgs else _Msg(WSMsgType.CLOSED)


class _Dst:
    def __init__(self, fail: BaseException | None) -> None:
        self.fail, self.sent = fail, []

    async def send_str(self, data: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(data)


@pytest.mark.parametrize(("direction", "fail", "want"), [
    ("down", aiohttp.ClientConnectionResetError("Cannot write to closing transport"), ClientGone),
    ("down", ConnectionResetError(), ClientGone),
    ("down", RuntimeError("websocket is closing"), ClientGone),
    ("up", aiohttp.ClientConnectionResetError("closing"), aiohttp.ClientConnectionResetError),
    ("down", None, None),
])
def test_a_frame_the_client_cannot_take_ends_the_pump_as_client_gone(direction, fail, want):
    dst = _Dst(fail)
    run = _pump(_Src(_Msg(WSMsgType.TEXT, '{"type": "status"}')), dst, ProxyMetrics(), direction)  # type: ignore[arg-type]
    if want is None:
        assert asyncio.run(run) == 1000 and dst.sent == ['{"type": "status"}']
    else:
        with pytest.raises(want):
            asyncio.run(run)
