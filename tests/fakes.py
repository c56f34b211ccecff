"""In-memory stand-ins for the outside systems, for fast unit tests of the shell (never instead of the
real Asterisk and Redis tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from callgate.asterisk.events import Decided, Event, Events
from callgate.core.admission import Admission, Outcome
from callgate.core.decision import Decision
from callgate.errors import StoreUnavailable
from callgate.store.memory import MemoryStore


@dataclass
class FakeChannels:
    """Records what the gate asked of Asterisk; channels in ``gone`` answer like a 404."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        self.calls.append(("set", channel_id, variable, value))
        return channel_id not in self.gone

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool:
        self.calls.append(("continue", channel_id, context, extension, label))
        return channel_id not in self.gone

    async def hangup(self, channel_id: str, *, cause: int) -> bool:
        self.calls.append(("hangup", channel_id, str(cause)))
        return channel_id not in self.gone

    def variables(self, channel_id: str) -> dict[str, str]:
        """What Asterisk would hold; an ``ARRAY(a,b)`` assignment sets each name to its value."""
        found: dict[str, str] = {}
        for c in self.calls:
            if c[0] != "set" or c[1] != channel_id:
                continue
            name, value = c[2], c[3]
            if name.startswith("ARRAY(") and name.endswith(")"):
                names = [n.strip() for n in name[6:-1].split(",")]
                found.update(zip(names, value.split(","), strict=True))
            else:
                found[name] = value
        return found

    def actions(self, channel_id: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] != "set" and c[1] == channel_id]


class FakeAudit(Events):
    """The gate's event stream, keeping every event and, as (decision, channel), every decision."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Event] = []
        self.decisions: list[tuple[Decision, str]] = []
        self.subscribe(self._keep)

    def _keep(self, event: Event) -> None:
        self.seen.append(event)
        if isinstance(event, Decided):
            self.decisions.append((event.decision, event.channel_id))


class BrokenStore(MemoryStore):
    """A store whose admissions fail (``StoreUnavailable``) or hang for ``delay`` seconds."""

    def __init__(self, *, delay: float | None = None) -> None:
        super().__init__()
        self.delay = delay

    async def admit(self, admission: Admission) -> Outcome:
        if self.delay is None:
            raise StoreUnavailable("redis: connection refused")
        await asyncio.sleep(self.delay)
        return await super().admit(admission)
