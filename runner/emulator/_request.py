"""A render request's arguments, read the way the renderers need them.

The app has already checked the arguments against its rules table; this still refuses
values it cannot draw (an unparsable size, an undecodable clip) with a ``RenderError``
naming the field, instead of crashing or allocating something absurd.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._canvas import Image, Rect, Size, contain
from ._looks import Grade, choose_look, compile_grade, strength
from ._media import FPS, ImageFormat, RenderError, VideoSource, decode_image, open_video

_RESOLUTION = re.compile(r"(\d{3,4})p")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s?")
_RATIO = re.compile(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)")
# Bounds that keep a mistaken value from asking for gigabytes of pixels.
_SHORT_SIDES = range(144, 2161)
_MAX_SECONDS = 60.0
_MAX_RATIO = 10.0
_MAX_PLACEMENT = 4.0
_PLACEMENT_KEYS = ("x_norm", "y_norm", "w_norm", "h_norm")


def refuse(field: str, value: Any, expected: str) -> RenderError:
    """The error for an argument the renderer cannot use."""
    return RenderError(f"{field}: cannot render {value!r}; expected {expected}")


def _number(value: Any) -> float:
    """``value`` as a float if it is a real JSON number (not a bool), else NaN.

    NaN fails every range check, so callers refuse missing and non-numeric values
    with the same comparison that refuses out-of-range ones.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


@dataclass(frozen=True)
class Request:
    """One job's endpoint, arguments, seed and input-fetching function."""

    endpoint: str
    arguments: Mapping[str, Any]
    fetch: Callable[[str], bytes]
    seed: int
    max_frames: int  # 0: no cap
    v2v_long: str = "first"
    v2v_short: str = "pad"
    realistic_sizes: bool = False

    def text(self, name: str) -> str:
        """A string argument, "" when absent."""
        value = self.arguments.get(name)
        return "" if value is None else str(value)

    def flag(self, name: str) -> bool:
        """Whether a boolean argument is set to true."""
        return self.arguments.get(name) is True

    def _url(self, field: str) -> str | None:
        """The input URL in ``field``, None when absent."""
        value = self.arguments.get(field)
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise refuse(field, value, "a URL")
        return value

    def video(self, field: str) -> VideoSource:
        """The clip behind the (required) URL in ``field``."""
        url = self._url(field)
        if url is None:
            raise refuse(field, None, "a video URL")
        return open_video(self.fetch(url), field)

    def image(self, field: str) -> Image | None:
        """The picture behind the URL in ``field``, None when the field is absent."""
        url = self._url(field)
        return None if url is None else decode_image(self.fetch(url), field)

    def seconds(self, default: float) -> float:
        """The requested ``duration`` ("5s", "10s") in seconds, ``default`` when absent."""
        value = self.arguments.get("duration")
        if value is None:
            return default
        number = _number(value)
        if isinstance(value, str) and (found := _DURATION.fullmatch(value)):
            number = float(found[1])
        if not 0 < number <= _MAX_SECONDS:
            raise refuse("duration", value, 'a duration such as "5s"')
        return number

    def frame_count(self, seconds: float) -> int:
        """How many 24 fps frames to render for ``seconds``, after the frame cap."""
        count = max(1, round(seconds * FPS))
        return min(count, self.max_frames) if self.max_frames > 0 else count

    def short_side(self) -> int:
        """The ``resolution`` ("540p", "720p", "1080p") as the short side in pixels."""
        value = self.arguments.get("resolution") or "540p"
        found = _RESOLUTION.fullmatch(value) if isinstance(value, str) else None
        if found is None or int(found.group(1)) not in _SHORT_SIDES:
            raise refuse("resolution", value, 'a resolution such as "720p"')
        return int(found.group(1))

    def ratio(self, default: float) -> float:
        """The ``aspect_ratio`` ("16:9") as width / height, ``default`` when absent."""
        value = self.arguments.get("aspect_ratio")
        if value is None:
            return default
        found = _RATIO.fullmatch(value) if isinstance(value, str) else None
        ratio = float(found[1]) / float(found[2]) if found and float(found[2]) else math.nan
        if not 1 / _MAX_RATIO <= ratio <= _MAX_RATIO:
            raise refuse("aspect_ratio", value, 'a ratio such as "16:9"')
        return ratio

    def placement(self, canvas: Size, source: Size) -> Rect:
        """Where the source goes on the canvas: ``source_position``, else centred to fit."""
        value = self.arguments.get("source_position")
        if value is None:
            return contain(source, canvas)
        fields = value if isinstance(value, Mapping) else {}
        x, y, w, h = (_number(fields.get(key)) for key in _PLACEMENT_KEYS)
        if not (
            0 < w <= _MAX_PLACEMENT and 0 < h <= _MAX_PLACEMENT and -2 <= x <= 2 and -2 <= y <= 2
        ):
            expected = "x_norm, y_norm, w_norm and h_norm as fractions of the canvas"
            raise refuse("source_position", value, expected)
        width, height = canvas
        return Rect(
            round(x * width), round(y * height), max(1, round(w * width)), max(1, round(h * height))
        )

    def grade(self, width: int, amount: float | None = None, *, soften: bool = True) -> Grade:
        """The prompt's restyle for pictures this wide, at ``amount`` or else as strong
        as ``edit_strength`` asks; ``soften=False`` keeps it a per-pixel colour transform."""
        if amount is None:
            edit_strength = self.arguments.get("edit_strength")
            amount = strength(edit_strength if isinstance(edit_strength, str) else None)
        return compile_grade(choose_look(self.text("prompt")), amount, width, soften=soften)

    def image_format(self) -> ImageFormat:
        """The ``output_format`` of an image endpoint: PNG unless JPEG is asked for."""
        value = self.text("output_format").lower()
        if value in ("", "png"):
            return "png"
        if value in ("jpeg", "jpg"):
            return "jpeg"
        raise refuse("output_format", value, '"png" or "jpeg"')
