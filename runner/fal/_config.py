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

    def __post_init__(self) -> None:
        for name in ("queue_url", "rest_url", "cdn_url"):
            url = getattr(self, name)
            if not url.startswith(("http://", "https://")):
                raise ManifestError(f"{name} must be an http(s) URL, not {url!r}")
            object.__setattr__(self, name, url.rstrip("/"))

    @classmethod
    def from_env(cls, fal_url: str | None = None) -> FalConfig:
        """The key from ``FAL_KEY`` (or ``FAL_KEY_ID:FAL_KEY_SECRET``), as fal's clients read it.

        ``fal_url`` (a running emulator) replaces all three base URLs. Raises
        ``AuthError`` when no key is set.
        """
        key = os.environ.get("FAL_KEY", "").strip()
        if not key:
            key_id = os.environ.get("FAL_KEY_ID", "").strip()
            secret = os.environ.get("FAL_KEY_SECRET", "").strip()
            key = f"{key_id}:{secret}" if key_id and secret else ""
        if not key:
            raise AuthError("no fal API key: set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)")
        return cls.single_origin(fal_url, key) if fal_url else cls(key)

    @classmethod
    def single_origin(cls, url: str, key: str) -> FalConfig:
        """Queue, REST and CDN all at ``url`` (how the emulator serves them)."""
        return cls(key, queue_url=url, rest_url=url, cdn_url=url)
