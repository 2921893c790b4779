"""Which origin a request came in through: the queue, the storage/CDN, or the backup host.

fal serves its queue (queue.fal.run), its REST API (rest.fal.ai) and its storage/CDN
(v3.fal.media, or whatever ``base_url`` the CDN token names) from different hosts, and
names a backup queue host (queue.falrun.com). The emulator serves each on its own socket
and tells them apart by the local address a request arrived at (ASGI ``scope["server"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Role = Literal["queue", "storage", "backup", "any"]


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "", parts.port or 80)


@dataclass(frozen=True)
class Origins:
    """The emulator's origins (``http://host:port``), known once its sockets are bound."""

    queue: str
    storage: str
    backup: str | None = None

    def role(self, server: tuple[str, int] | None) -> Role:
        """The origin a connection's local address belongs to ("any" if none matches)."""
        if server is None:
            return "any"
        address = (str(server[0]), int(server[1]))
        for role, url in (("queue", self.queue), ("storage", self.storage)):
            if address == _address(url):
                return role  # type: ignore[return-value]
        if self.backup is not None and address == _address(self.backup):
            return "backup"
        return "any"


#: The roles each kind of route answers on. "any": a bare app with no origins (one origin
#: serves everything, as the emulator did before storage had its own).
QUEUE_ROLES: frozenset[Role] = frozenset({"queue", "backup", "any"})
STORAGE_ROLES: frozenset[Role] = frozenset({"storage", "any"})
EVERY_ROLE: frozenset[Role] = frozenset({"queue", "storage", "backup", "any"})
