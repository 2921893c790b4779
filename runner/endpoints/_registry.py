"""The endpoints raybatch knows, and how any other fal endpoint is passed through.

An ``EndpointSpec`` ties an endpoint id to its input and output models, to the field a clip
or image is placed in, and to the kind of file it produces. Ids that are not in
``ENDPOINTS`` but look like fal ids get a pass-through spec: the input is sent as written,
with no local rules and no price.
"""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from runner.endpoints._base import Media, Ruled
from runner.endpoints._issues import Issue, did_you_mean, issues_from
from runner.endpoints._luma import (
    EditImageInput,
    ImageOutput,
    ImageToVideoInput,
    ReframeInput,
    TextToImageInput,
    TextToVideoInput,
    VideoOutput,
    VideoToVideoInput,
)
from runner.job import (  # the ids are the endpoints package's too
    EDIT_IMAGE as EDIT_IMAGE,
    IMAGE_TO_VIDEO as IMAGE_TO_VIDEO,
    REFRAME as REFRAME,
    SOURCE_FIELDS,
    TEXT_TO_IMAGE as TEXT_TO_IMAGE,
    TEXT_TO_VIDEO as TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO as VIDEO_TO_VIDEO,
    endpoint_name,
)
from runner.media import MediaKind

# owner/app[/path...]: fal's ids are URL path segments; no spaces, no '.' or '..' segments.
ENDPOINT_ID = re.compile(r"(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9][\w.-]*(/[\w.-]+)+")
# By fal's convention a pass-through endpoint takes its source in one of these.
_PASS_THROUGH_SOURCE: dict[MediaKind, str] = {"video": "video_url", "image": "image_url"}

MediaField = MediaKind | Literal["any"]


def is_endpoint_id(text: str) -> bool:
    """Whether ``text`` is shaped like a fal endpoint id (``owner/app[/path]``)."""
    return ENDPOINT_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as a job kind: its models, its source field, what it produces."""

    id: str
    input_model: type[Ruled] | None = None
    output_model: type[BaseModel] | None = None
    source_field: str | None = None
    output_kind: MediaKind | None = None

    @property
    def name(self) -> str:
        """The last segment of the id, e.g. ``video-to-video``."""
        return endpoint_name(self.id)

    @property
    def known(self) -> bool:
        """Whether raybatch validates this endpoint's input (False for pass-through)."""
        return self.input_model is not None

    @cached_property
    def fields(self) -> frozenset[str] | None:
        """The input fields the endpoint accepts, or None when any is passed through.

        Fields the model declares only to refuse them (``loop`` on an edit) are not among them.
        """
        if self.input_model is None:
            return None
        fields = self.input_model.model_fields.items()
        return frozenset(name for name, info in fields if info.annotation is not type(None))

    @cached_property
    def _media_fields(self) -> dict[str, MediaKind]:
        if self.input_model is None:
            return {}
        found = {name: _media_kind(info) for name, info in self.input_model.model_fields.items()}
        return {name: kind for name, kind in found.items() if kind is not None}

    def media_kind(self, field: str) -> MediaField | None:
        """The kind of media ``field`` refers to; for pass-through any ``*_url(s)`` field."""
        if self.input_model is None:
            return "any" if field.endswith(("_url", "_urls")) else None
        return self._media_fields.get(field)

    def takes(self, field: str) -> bool:
        """Whether the endpoint accepts an input field of this name."""
        return self.fields is None or field in self.fields

    def source_field_for(self, kind: MediaKind) -> str | None:
        """The input field a clip (``video``) or image goes into, or None if it cannot."""
        if self.input_model is None:
            return _PASS_THROUGH_SOURCE[kind]
        if self.source_field is not None and self._media_fields[self.source_field] == kind:
            return self.source_field
        return None

    @property
    def source_kind(self) -> MediaKind | None:
        """What the endpoint's source field takes (None: it takes no clip or image)."""
        return None if self.source_field is None else self._media_fields[self.source_field]

    def validate(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Issue]]:
        """The arguments to send for ``data`` (defaults filled, nulls dropped), or the issues.

        Pass-through endpoints return ``data`` unchanged.
        """
        if self.input_model is None:
            return dict(data), []
        try:
            model = self.input_model.model_validate(data)
        except ValidationError as exc:
            return None, issues_from(exc, self.input_model)
        return model.model_dump(mode="json", exclude_none=True), []

    def check_field(self, name: str, value: object) -> list[Issue]:
        """The issues of one field's value on its own (no cross-field rules)."""
        if self.input_model is None or name not in self.input_model.model_fields:
            return []
        try:
            _field_adapter(self.input_model, name).validate_python(value)
        except ValidationError as exc:
            return [
                Issue((name, *issue.loc), issue.message, issue.type)
                for issue in issues_from(exc, self.input_model)
            ]
        return []

    def output_ext(self, arguments: dict[str, Any]) -> str:
        """The extension of the main output file (``.mp4``, ``.png``, ``.jpg``; ``""`` unknown)."""
        if self.output_kind == "video":
            return ".mp4"
        if self.output_kind == "image":
            return ".jpg" if arguments.get("output_format") == "jpeg" else ".png"
        return ""


@functools.lru_cache(maxsize=256)
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = typing.Annotated[(annotation, *info.metadata)]
    return TypeAdapter(annotation)


def _media_kind(info: FieldInfo) -> MediaKind | None:
    for meta in info.metadata:
        if isinstance(meta, Media):
            return meta.kind
    return _nested_media_kind(info.annotation)


def _nested_media_kind(annotation: Any) -> MediaKind | None:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        media = [meta for meta in args[1:] if isinstance(meta, Media)]
        return media[0].kind if media else _nested_media_kind(args[0])
    kinds = {kind for arg in args if (kind := _nested_media_kind(arg)) is not None}
    return kinds.pop() if len(kinds) == 1 else None


_KNOWN: tuple[tuple[str, type[Ruled], type[BaseModel], MediaKind], ...] = (
    (VIDEO_TO_VIDEO, VideoToVideoInput, VideoOutput, "video"),
    (TEXT_TO_VIDEO, TextToVideoInput, VideoOutput, "video"),
    (IMAGE_TO_VIDEO, ImageToVideoInput, VideoOutput, "video"),
    (REFRAME, ReframeInput, VideoOutput, "video"),
    (TEXT_TO_IMAGE, TextToImageInput, ImageOutput, "image"),
    (EDIT_IMAGE, EditImageInput, ImageOutput, "image"),
)
ENDPOINTS: dict[str, EndpointSpec] = {
    id: EndpointSpec(id, inputs, outputs, SOURCE_FIELDS[id], kind)
    for id, inputs, outputs, kind in _KNOWN
}


# Bounded: a manifest names a handful of endpoints, but spec_for takes any string.
@functools.lru_cache(maxsize=256)
def spec_for(endpoint: str) -> EndpointSpec:
    """The spec of a known endpoint, or a pass-through spec for any other fal id.

    Raises ``ValueError`` for a string that is not shaped like a fal endpoint id.
    """
    spec = ENDPOINTS.get(endpoint)
    if spec is not None:
        return spec
    if not is_endpoint_id(endpoint):
        raise ValueError(f"{endpoint!r} is not a fal endpoint id (owner/app[/path])")
    return EndpointSpec(endpoint)


def endpoint_problem(endpoint: str, passthrough: bool) -> str | None:
    """Why a manifest may not name ``endpoint`` with this ``passthrough:`` setting, or None.

    An endpoint raybatch does not know is sent as written, unchecked and unpriced, so the
    manifest must say it means that (``passthrough: true``); a near miss of a known id is
    most likely a typo, and the message says which id.
    """
    known = endpoint in ENDPOINTS
    if known and passthrough:
        return (
            f"{endpoint} is an endpoint raybatch knows (its input is checked before"
            " anything is sent); remove passthrough: true"
        )
    if known or passthrough:
        return None
    hint = did_you_mean(endpoint, ENDPOINTS)
    return (
        f"raybatch does not know the endpoint {endpoint!r}{hint or '.'} To send jobs to it"
        " unchecked, set passthrough: true beside it (and give it a prices: row for"
        " --max-cost)"
    )
