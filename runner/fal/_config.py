"""Where fal lives, the key, and how raybatch names itself to it."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field

from ..errors import (
    AuthError,
    ManifestError,
)

try:
    _VERSION = importlib.metadata.version("raybatch")
except importlib.metadata.PackageNotFoundError:  # running from a checkout
    _VERSION = "dev"
USER_AGENT = f"raybatch/{_VERSION}"


@dataclass(frozen=True)
class FalConfig:
    """Where fal lives and the key to use; the key is never part of any repr."""

    key: str = field(repr=False)
    queue_url: str = "https://queue.fal.run"
    rest_url: str = "https://rest.fal.ai"
    cdn_url: str = "https://v3.fal.media"
    #: Where a queue call goes again, once, when the queue origin cannot be connected to
    #: (the request provably never left): fal's backup host, as fal-client 1.0.3 uses it
    #: (``queue.fal.run`` → ``queue.falrun.com``, client.py ~l.88-95; read 2026-12-04).
    backup_url: str | None = "https://queue.falrun.com"

    def __post_init__(self) -> None:
        for name in ("queue_url", "rest_url", "cdn_url", "backup_url"):
            url = getattr(self, name)
            if url is None:
                continue
            if not url.startswith(("http://", "https://")):
                raise ManifestError(f"{name} must be an http(s) URL, not {url!r}")
            object.__setattr__(self, name, url.rstrip("/"))

    @classmethod
    def from_env(cls, fal_url: str | None = None, backup_url: str | None = None) -> FalConfig:
        """The key from ``FAL_KEY`` (or ``FAL_KEY_ID:FAL_KEY_SECRET``), as fal's clients read it.

        ``fal_url`` (a running emulator) replaces all three base URLs, with ``backup_url``
        (or none) as its backup host. Raises ``AuthError`` when no key is set.
        """
        key = os.environ.get("FAL_KEY", "").strip()
        if not key:
            key_id = os.environ.get("FAL_KEY_ID", "").strip()
            secret = os.environ.get("FAL_KEY_SECRET", "").strip()
            key = f"{key_id}:{secret}" if key_id and secret else ""
        if not key:
            raise AuthError("no fal API key: set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)")
        return cls.single_origin(fal_url, key, backup_url) if fal_url else cls(key)

    @classmethod
    def single_origin(cls, url: str, key: str, backup_url: str | None = None) -> FalConfig:
        """Queue, REST and CDN all at ``url`` (how the emulator serves them; its CDN token
        names its own storage origin), with ``backup_url`` as the backup host."""
        return cls(key, queue_url=url, rest_url=url, cdn_url=url, backup_url=backup_url)
