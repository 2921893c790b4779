"""The user's price and limit rows over the built-in tables, and which one wins.

A user corrects the tables without a release in two places: a manifest's ``prices:`` and
``limits:`` blocks, and a ``--prices FILE`` given to ``plan``/``run`` (the same shape).
Each is one ``Overrides`` layer, cited to its file and the file's date; layers apply in
order, the later winning **per endpoint** for prices (an endpoint's rows are replaced as a
whole, so no stale built-in cell survives beside the user's) and **per limit** for limits.
raybatch applies the manifest's layer first and the ``--prices`` file's last: the file
given for this command wins, as ``--max-cost`` wins over ``max_cost:``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runner.endpoints._cite import Cite
from runner.endpoints._limits import Limit, LimitOverrides, limits_for
from runner.endpoints._prices import DEFAULT_PRICES, PriceOverride, PriceTable


@dataclass(frozen=True)
class Overrides:
    """One user's rows: prices and limits by endpoint, and where they came from."""

    prices: Mapping[str, Sequence[PriceOverride]]
    limits: Mapping[str, LimitOverrides]
    cite: Cite

    def __bool__(self) -> bool:
        return bool(self.prices or self.limits)

    def digest(self) -> str:
        """A fingerprint of the rows' values (not of where they came from): plans priced
        with equal rows are the same plan."""
        data = {
            "prices": {
                endpoint: [row.model_dump(mode="json") for row in rows]
                for endpoint, rows in self.prices.items()
            },
            "limits": {
                endpoint: limits.model_dump(mode="json", exclude_none=True)
                for endpoint, limits in self.limits.items()
            },
        }
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class EndpointTables:
    """The price table and the limits after every user's layer, in order."""

    def __init__(self, layers: Sequence[Overrides] = ()) -> None:
        self.layers = tuple(layer for layer in layers if layer)
        prices = DEFAULT_PRICES
        for layer in self.layers:
            prices = prices.with_overrides(layer.prices, layer.cite)
        self.prices: PriceTable = prices

    def limits_for(self, endpoint: str) -> dict[str, Limit]:
        """The limits of ``endpoint`` by name, each user's overrides applied in turn."""
        mine = [
            (layer.limits[endpoint], layer.cite)
            for layer in self.layers
            if endpoint in layer.limits
        ]
        return limits_for(endpoint, mine)

    def endpoints(self) -> list[str]:
        """Every endpoint the user's layers name (known ones come first elsewhere)."""
        named: dict[str, None] = {}
        for layer in self.layers:
            named.update(dict.fromkeys(layer.prices))
            named.update(dict.fromkeys(layer.limits))
        return list(named)
