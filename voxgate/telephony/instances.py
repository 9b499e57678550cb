"""The running PBX instances of this process: one :class:`SipAgent` per started instance, by id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voxgate.telephony.agent import AgentOptions, PbxConfig, Registration, SipAgent
from voxgate.telephony.calls import StreamOpener

log = logging.getLogger(__name__)


class PbxInstances:
    """Start, stop and look at SIP agents; all on the event loop."""

    def __init__(
        self, streams: StreamOpener, options: AgentOptions, admit: Callable[[], bool] | None = None
    ) -> None:
        self.streams = streams
        self.options = options
        self.admit = admit
        self.agents: dict[str, SipAgent] = {}
        self._lock = asyncio.Lock()

    async def start(self, config: PbxConfig) -> SipAgent:
        """Bind and start registering (a running instance is left as it is)."""
        async with self._lock:
            agent = self.agents.get(config.id)
            if agent is not None:
                return agent
            agent = SipAgent(config, self.streams, self.options, admit=self.admit)
            await agent.start()
            self.agents[config.id] = agent
            return agent

    async def stop(self, pbx_id: str) -> bool:
        """Hang up its calls and unregister; False when it was not running."""
        async with self._lock:
            agent = self.agents.pop(pbx_id, None)
        if agent is None:
            return False
        await agent.stop()
        return True

    async def stop_all(self) -> None:
        async with self._lock:
            agents, self.agents = list(self.agents.values()), {}
        results = await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)
        for agent, result in zip(agents, results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping PBX instance failed", exc_info=result, extra={"pbx": agent.config.id})

    def registration(self, pbx_id: str) -> Registration:
        agent = self.agents.get(pbx_id)
        return agent.registration if agent is not None else Registration()

    def calls(self, pbx_id: str) -> int:
        agent = self.agents.get(pbx_id)
        return agent.calls if agent is not None else 0
