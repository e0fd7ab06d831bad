"""Weighted budgets that keep the transformer's worst allowed load inside its pod's memory limit.

Two things grow with what callers send: request bodies held in memory (bytes) and full-size images
being decoded or post-processed (pixels). Each is drawn from a fixed budget before the memory is
used and given back after; a request that cannot get its share in time is answered 503 (retry),
never by the kernel's OOM killer. Waiting happens on the event loop, before work is handed to
the thread pool, so no pool thread ever sits blocked while small images queue behind it. The
arithmetic behind the defaults is in docs/SERVING.md.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BudgetExhausted(Exception):
    """The budget stayed full for longer than the caller may wait."""


class Budget:
    """`capacity` units, taken and returned in amounts (event loop only); waiters are served in order."""

    def __init__(self, capacity: int, name: str) -> None:
        if capacity < 1:
            raise ValueError(f"{name} budget must be >= 1, got {capacity}")
        self.capacity, self.name = capacity, name
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    def try_take(self, amount: int) -> bool:
        """Take `amount` now if it fits; never waits. What fits goes ahead of larger amounts
        queued for more room, so a small image never waits behind a 40-megapixel one."""
        amount = min(amount, self.capacity)
        if self.used + amount > self.capacity:
            return False
        self.used += amount
        return True

    async def take(self, amount: int, timeout_s: float) -> int:
        """Wait until `amount` fits (an item larger than the whole budget runs alone); returns it."""
        amount = min(amount, self.capacity)
        if self.try_take(amount):
            return amount
        waiter = asyncio.get_running_loop().create_future()
        entry = (amount, waiter)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            if waiter.done():  # granted at the last moment: keep it
                return amount
            self._waiting.remove(entry)
            self._wake()
            raise BudgetExhausted(f"the transformer's {self.name} budget stayed full for {timeout_s:g}s") from None
        except BaseException:
            if waiter.done():
                self.give(amount)
            else:
                self._waiting.remove(entry)
                self._wake()
            raise
        return amount

    def give(self, amount: int) -> None:
        self.used -= amount
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            amount, waiter = self._waiting.popleft()
            self.used += amount
            waiter.set_result(None)

    @asynccontextmanager
    async def hold(self, amount: int, timeout_s: float) -> AsyncIterator[None]:
        taken = await self.take(amount, timeout_s)
        try:
            yield
        finally:
            self.give(taken)
