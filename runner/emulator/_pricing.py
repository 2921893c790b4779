"""fal's pricing API, ``GET /v1/models/pricing?endpoint_id=…`` (api.fal.ai), from the
emulator's own price table.

The shape is fal's documented one (fal.ai/docs/platform-apis/v1/models/pricing, OpenAPI
``/api-reference/platform-apis/openapi/v1.json`` get ``/models/pricing``, read 2026-12-05
through the tryAGI/Fal mirror of that file, commit 00188cce): ``endpoint_id`` is required
(1-50 ids, comma-separated or repeated); the answer is ``{"prices": [{"endpoint_id",
"unit_price", "unit", "currency"}], "next_cursor": null, "has_more": false}``, where
``unit_price`` is the "base price per billing unit", ``unit`` "'image', 'video', or
provider-specific", ``currency`` ISO 4217. Errors are ``{"error": {"type", "message"}}``
with types authorization_error (401), validation_error (400), not_found (404). A key is
required ("custom pricing or discounts may be applied based on account status").

Unknown ids are left out of ``prices``; if none is known the answer is 404 not_found
(the docs do not say which: the emulator's choice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._origins import QUEUE_ROLES
from .faults import Fault

if TYPE_CHECKING:
    from .app import Emulator

MAX_IDS = 50


class Price(NamedTuple):
    """One row of the table: the base (540p, SDR) price per unit, and where it is from."""

    unit_price: float
    unit: str
    source: str


#: Base prices per unit. Per-second units are fal's per-second rate at 540p SDR; fal
#: adjusts for resolution and length proportionally, which this shape cannot express.
PRICES: dict[str, Price] = {
    "luma/agent/ray/v3.2/video-to-video": Price(
        0.144, "second", "fal v2v page: $0.72 per 5 s at 540p (luma.md §5a, 2026-10-08)"
    ),
    "luma/agent/ray/v3.2/image-to-video": Price(
        0.10, "second", "fal i2v llms.txt: $0.50 per 5 s at 540p (luma.md update 2026-12-04)"
    ),
    "luma/agent/ray/v3.2/text-to-video": Price(
        0.10, "second", "no static fal card; resellers quote ~$0.50 per 5 s (luma.md §5a)"
    ),
    "luma/agent/ray/v3.2/reframe": Price(
        0.06, "second", "fal reframe page: $0.06 per source second at 540p (luma.md §5a)"
    ),
    "luma/agent/uni-1/v1/text-to-image": Price(
        0.042, "image", "fal uni-1 page: $0.042 per image (luma.md §5a)"
    ),
    "luma/agent/uni-1/v1/edit": Price(
        0.042, "image", "fal uni-1 edit: $0.042 + $0.003 per reference image (luma.md §5a)"
    ),
}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class PricingApi:
    """The pricing route of one :class:`~.app.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def routes(self) -> list[Route]:
        """``GET /v1/models/pricing`` on the queue origin (standing in for api.fal.ai)."""
        return [
            self.emulator.route(
                "/v1/models/pricing", "pricing", "none", self.pricing, ["GET"], QUEUE_ROLES
            )
        ]

    async def pricing(self, request: Request, fault: Fault | None) -> Response:
        """The prices of the requested endpoint ids, in fal's shape."""
        if not self.emulator.authorized(request, "key"):
            return _error(401, "authorization_error", "Authentication required")
        ids = [
            part.strip()
            for value in request.query_params.getlist("endpoint_id")
            for part in value.split(",")
            if part.strip()
        ]
        if not 1 <= len(ids) <= MAX_IDS:
            return _error(400, "validation_error", f"endpoint_id: give 1 to {MAX_IDS} ids")
        prices = [
            {
                "endpoint_id": endpoint,
                "unit_price": PRICES[endpoint].unit_price,
                "unit": PRICES[endpoint].unit,
                "currency": "USD",
            }
            for endpoint in dict.fromkeys(ids)
            if endpoint in PRICES
        ]
        if not prices:
            return _error(404, "not_found", "No pricing found for the requested endpoint ids")
        return JSONResponse({"prices": prices, "next_cursor": None, "has_more": False})
