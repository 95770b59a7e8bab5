"""What the staff collection endpoints answer: a day's list of bins and its routes.

The work is in analytics/collection_service.py; these functions fix the response shapes.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from psycopg import AsyncConnection

from analytics.collection_service import collection_list, collection_route, route_document


async def collection_list_for_day(
    conn: AsyncConnection, municipality_id: int, day: date
) -> dict[str, Any]:
    """The bins to empty on `day`, most urgent first, and the bins with no recent data."""
    return await collection_list(conn, municipality_id, day)


async def collection_route_for_day(
    conn: AsyncConnection, municipality_id: int, day: date, fmt: Literal["json", "geojson"]
) -> dict[str, Any]:
    """`day`'s routes as JSON (stops per vehicle) or a GeoJSON FeatureCollection."""
    listing, plan, _problem = await collection_route(conn, municipality_id, day)
    return route_document(listing, plan, fmt)


async def vroom_input_for_day(
    conn: AsyncConnection, municipality_id: int, day: date
) -> dict[str, Any]:
    """`day`'s problem as VROOM's JSON input, for an external VROOM solver."""
    _listing, _plan, problem = await collection_route(conn, municipality_id, day)
    return problem
