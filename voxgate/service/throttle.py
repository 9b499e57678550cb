"""Slowing down repeated failed logins, per client address and per username.

Each key (``ip:<address>``, ``user:<name>``) counts failed attempts. The first ``free_failures`` cost
nothing; after that the key is blocked for ``base_delay_s * 2**(failures - free_failures)`` seconds
after its last failure, capped at ``max_delay_s``. A blocked attempt is answered 429 with
``Retry-After`` *without* checking the password (so it costs no Argon2 time and tells nothing), and
does not count as a failure. A key is forgotten after ``forget_after_s`` without failures.

- An attempt is counted as a failure *before* its password is checked and un-counted by a success, so
  a burst of parallel guesses cannot all slip in before the first one fails.
- A success clears the client address's count, not the username's: otherwise a legitimate client
  logging in regularly would reset the count of an attacker guessing from elsewhere. The username
  policy is therefore gentler (more free failures, a shorter cap): under a sustained distributed guess
  the real user may have to wait up to ``max_delay_s`` (its token, valid for days, keeps working), while
  the guesser gets about one try per ``max_delay_s``.
- State is in memory, per process (a restart forgets it), unless the shared live state counts it: with
  ``VOXGATE_REDIS_URL`` every node and worker counts the same failures
  (:class:`voxgate.service.shared_redis.RedisThrottle`, same policy, wall-clock times). Behind a reverse proxy the client address is the proxy's
  unless uvicorn's ``--proxy-headers``/``--forwarded-allow-ips`` name it (by default uvicorn trusts
  ``X-Forwarded-For`` from 127.0.0.1).
- Memory is bounded: at most ``max_keys`` keys, the least recently failed dropped first (a username
  under attack keeps failing, so it is never the oldest).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    free_failures: int
    base_delay_s: float
    max_delay_s: float
    forget_after_s: float = 900.0

    def delay_s(self, failures: int) -> float:
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(failures - self.free_failures, 64))


# TODO settings VOXGATE_LOGIN_FREE_FAILURES / VOXGATE_LOGIN_MAX_DELAY_S if operators ask for them
PER_ADDRESS = Policy(free_failures=5, base_delay_s=1.0, max_delay_s=900.0)
PER_USERNAME = Policy(free_failures=10, base_delay_s=1.0, max_delay_s=60.0)


@dataclass
class _Count:
    failures: int
    last_failure: float


class LoginThrottle:
    """In-memory failure counts; ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        per_address: Policy = PER_ADDRESS,
        per_username: Policy = PER_USERNAME,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.per_username = per_username
        self.max_keys = max_keys
        self.clock = clock
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str]:
        return f"ip:{address}", f"user:{username}"

    def _policy(self, key: str) -> Policy:
        return self.per_address if key.startswith("ip:") else self.per_username

    def _live(self, key: str, now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and now - count.last_failure > self._policy(key).forget_after_s:
            del self._counts[key]
            return None
        return count

    def retry_after_s(self, address: str, username: str) -> float:
        """Seconds until an attempt for this address and username is allowed; 0 if it is now."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(address, username):
            count = self._live(key, now)
            if count is not None:
                wait = max(wait, count.last_failure + self._policy(key).delay_s(count.failures) - now)
        return max(wait, 0.0)

    def retry_after_header(self, address: str, username: str) -> int:
        """Whole seconds for a ``Retry-After`` header (at least 1 when blocked, 0 when not)."""
        wait = self.retry_after_s(address, username)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failure(self, address: str, username: str) -> None:
        """Count one failed (or not yet checked) attempt."""
        now = self.clock()
        for key in self._keys(address, username):
            count = self._live(key, now)
            if count is None:
                self._counts[key] = _Count(1, now)
            else:
                count.failures += 1
                count.last_failure = now
                self._counts.move_to_end(key)
        self._trim()

    def success(self, address: str, username: str) -> None:
        """Undo the pessimistic count of this attempt; forget the address's failures."""
        address_key, user_key = self._keys(address, username)
        self._counts.pop(address_key, None)
        count = self._counts.get(user_key)
        if count is not None:
            count.failures = max(0, count.failures - 1)

    def clear(self) -> None:
        """Forget every count (after a password reset)."""
        self._counts.clear()

    def _trim(self) -> None:
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._counts)
