from __future__ import annotations

import uvicorn

from voxgate.service.cluster import FORWARD_KEEPALIVE_S


def test_forwarding_drops_an_idle_connection_before_the_owner_does() -> None:
    """The owner's server (uvicorn, as voxgate configures it) closes a connection idle for its keep-alive
    timeout; a forwarded request sent on it at that moment fails (ReadError, a 502 to the caller)."""
    owner = uvicorn.Config(app="voxgate.api.app:create_app")
    assert owner.timeout_keep_alive >= 2 * FORWARD_KEEPALIVE_S
