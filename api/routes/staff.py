"""Staff endpoints: one municipality's sensors, network-server applications, places,
alerts, dead letters and keys.

Every route takes the caller's Principal from its API key and touches only that
municipality's rows; another municipality's ids answer 404, as if they did not exist.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import date, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from analytics import alerts as alert_lifecycle
from analytics import collection_service
from analytics.collection_service import CollectionSetupError
from api.audit import audited
from api.auth import create_key, revoke_key
from api.deps import AppSettings, Conn, SyncConn, staff_write_connection
from api.queries import dashboard, keys, places, staff
from api.security import Admin, ManageAlerts, ReadPrivate, WriteSensors
from domain.applications import (
    ApplicationError,
    ApplicationTakenError,
    list_applications,
    map_application,
    unmap_application,
)
from domain.registry import RegistryError, import_sensors_csv, upsert_sensor
from ingest.replay import replay
from models.schemas import ErrorOut, SensorCreate, SensorImportResult

_ERROR = {"model": ErrorOut}
# Every staff route may refuse the key (401, 403, 429), not find the id in the caller's
# municipality (404), refuse the input (400, 409, 413, 422) or find the database away (503).
router = APIRouter(
    prefix="/api/v1/staff",
    tags=["staff"],
    responses={code: _ERROR for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)},
)

Id = Annotated[int, Path(ge=1, le=2**62)]


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what} with that id in your municipality")


# --- who am I, dashboard -------------------------------------------------------------------


@router.get("/me", summary="The calling key's municipality and scopes")
async def me(principal: ReadPrivate, conn: Conn, settings: AppSettings) -> dict[str, Any]:
    return {
        "municipality_id": principal.municipality_id,
        "municipality_slug": principal.municipality_slug,
        "municipality_name": await staff.municipality_name(conn, principal.municipality_id),
        "scopes": sorted(principal.scopes),
        # the zone the dashboard shows times in (IOT_LOCAL_TIMEZONE)
        "timezone": settings.local_timezone,
    }


@router.get("/dashboard", summary="Latest values, parking by zone and open alerts")
async def dashboard_summary(principal: ReadPrivate, conn: Conn) -> dict[str, Any]:
    return await dashboard.dashboard_summary(conn, principal.municipality_id)


@router.get("/sensors/{sensor_id}/history", summary="A sensor's raw readings, recent hours")
async def sensor_history(
    principal: ReadPrivate,
    conn: Conn,
    sensor_id: Id,
    metric: Annotated[str, Query(pattern=r"^[a-z0-9_]{1,40}$")],
    hours: Annotated[int, Query(ge=1, le=24 * 7)] = 48,
) -> list[dict[str, Any]]:
    points = await dashboard.sensor_history(
        conn, principal.municipality_id, sensor_id, metric, hours
    )
    if points is None:
        raise _not_found("sensor")
    return [{"time": t, "value": v} for t, v in points]


# --- sensors -------------------------------------------------------------------------------


def _not_null(value: Any) -> Any:
    """For PATCH fields the database requires: null would not keep the stored value."""
    if value is None:
        raise ValueError("may not be null; leave it out to keep the stored value")
    return value


class SensorPatch(BaseModel):
    name: str | None = Field(None, max_length=200)
    is_public: bool | None = None
    status: Literal["active", "pending", "retired"] | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    bin_depth_mm: float | None = Field(None, gt=0, le=20000)
    mount_offset_mm: float | None = Field(None, ge=0, le=20000)
    expected_interval_s: int | None = Field(None, ge=1, le=7 * 86400)

    _required_when_given = field_validator("is_public", "status")(_not_null)


@router.get("/sensors", summary="The municipality's sensors, public and private")
async def list_sensors(
    principal: ReadPrivate,
    conn: Conn,
    after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    rows = await staff.list_sensors(conn, principal.municipality_id, after_id, limit)
    return {"items": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/sensors/{sensor_id}", summary="One sensor")
async def get_sensor(principal: ReadPrivate, conn: Conn, sensor_id: Id) -> dict[str, Any]:
    row = await staff.get_sensor(conn, principal.municipality_id, sensor_id)
    if row is None:
        raise _not_found("sensor")
    return row


@router.post(
    "/sensors",
    status_code=201,
    summary="Register, or update by external_id the fields given (the others are kept)",
    dependencies=[audited("sensor.register")],
)
def create_sensor(principal: WriteSensors, conn: SyncConn, sensor: SensorCreate) -> dict:
    try:
        done = upsert_sensor(conn, principal.municipality_id, sensor)
    except RegistryError as exc:
        raise HTTPException(422, str(exc)) from None
    return {
        "id": done.sensor_id,
        "action": done.action,
        "is_public": done.is_public,
        "was_public": done.was_public,
        "visibility_changed": done.visibility_changed,
    }


@router.patch(
    "/sensors/{sensor_id}", summary="Edit a sensor", dependencies=[audited("sensor.update")]
)
async def patch_sensor(
    principal: WriteSensors, conn: Conn, sensor_id: Id, patch: SensorPatch
) -> dict[str, Any]:
    changes = patch.model_dump(exclude_unset=True)
    if not await staff.update_sensor(conn, principal.municipality_id, sensor_id, changes):
        raise _not_found("sensor")
    row = await staff.get_sensor(conn, principal.municipality_id, sensor_id)
    assert row is not None
    return row


@router.post(
    "/sensor-imports",
    summary="Register sensors from CSV (all rows or none)",
    dependencies=[audited("sensor.import")],
    response_model=SensorImportResult,
    responses={422: {"model": SensorImportResult, "description": "Nothing stored; see errors"}},
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_sensors(principal: WriteSensors, request: Request) -> JSONResponse:
    body = await request.body()
    if len(body) > 5_000_000:
        raise HTTPException(413, "the CSV is larger than 5 MB; split it")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(400, "the CSV must be UTF-8 encoded") from None

    def run() -> Any:
        with staff_write_connection(request) as conn:
            return import_sensors_csv(conn, principal.municipality_id, text)

    result = await asyncio.to_thread(run)
    return JSONResponse(
        result.model_dump(mode="json"), status_code=200 if result.committed else 422
    )


# --- network-server applications ----------------------------------------------------------

Network = Literal["chirpstack", "thethings"]
ApplicationId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/applications", summary="Network-server applications mapped to the municipality")
def list_network_applications(principal: ReadPrivate, conn: SyncConn) -> list[dict[str, Any]]:
    return [
        {"network": a.network, "application_id": a.application_id, "created_at": a.created_at}
        for a in list_applications(conn, principal.municipality_id)
    ]


@router.put(
    "/applications/{network}/{application_id}",
    status_code=201,
    summary="Map an application to the municipality: its uplinks are taken for its sensors",
    dependencies=[audited("application.map")],
    responses={200: {"description": "the application was the municipality's already"}},
)
def put_network_application(
    principal: WriteSensors, conn: SyncConn, network: Network, application_id: ApplicationId
) -> JSONResponse:
    try:
        created = map_application(conn, principal.municipality_id, network, application_id)
    except ApplicationTakenError as exc:
        raise HTTPException(409, str(exc)) from None
    except ApplicationError as exc:
        raise HTTPException(422, f"application_id: {exc}") from None
    body = {"network": network, "application_id": application_id}
    return JSONResponse(body, status_code=201 if created else 200)


@router.delete(
    "/applications/{network}/{application_id}",
    status_code=204,
    summary="Unmap an application: its uplinks become dead letters",
    dependencies=[audited("application.unmap")],
)
def delete_network_application(
    principal: WriteSensors, conn: SyncConn, network: Network, application_id: ApplicationId
) -> None:
    if not unmap_application(conn, network, application_id, principal.municipality_id):
        raise _not_found("application")


# --- sites and zones -----------------------------------------------------------------------


class SiteIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field("other", max_length=40)
    address: str | None = Field(None, max_length=300)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class SitePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    kind: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=300)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)

    _required_when_given = field_validator("name", "kind")(_not_null)


class ZoneIn(BaseModel):
    site_id: int = Field(ge=1, le=2**31 - 1)
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field("room", max_length=40)
    floor: str | None = Field(None, max_length=40)
    capacity: int | None = Field(None, ge=0, le=100000)


@router.get("/sites", summary="Sites (schools, depots, parking areas)")
async def list_sites(principal: ReadPrivate, conn: Conn) -> list[dict[str, Any]]:
    return await places.list_sites(conn, principal.municipality_id)


@router.post("/sites", status_code=201, summary="Add a site", dependencies=[audited("site.create")])
async def create_site(principal: WriteSensors, conn: Conn, site: SiteIn) -> dict[str, Any]:
    try:
        return await places.create_site(conn, principal.municipality_id, site.model_dump())
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"a site named {site.name!r} exists already") from None


@router.patch("/sites/{site_id}", summary="Edit a site", dependencies=[audited("site.update")])
async def patch_site(
    principal: WriteSensors, conn: Conn, site_id: Id, patch: SitePatch
) -> dict[str, Any]:
    try:
        row = await places.update_site(
            conn, principal.municipality_id, site_id, patch.model_dump(exclude_unset=True)
        )
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, "another site has that name") from None
    if row is None:
        raise _not_found("site")
    return row


@router.get("/zones", summary="Zones (rooms, parking zones)")
async def list_zones(
    principal: ReadPrivate,
    conn: Conn,
    site_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[dict[str, Any]]:
    return await places.list_zones(conn, principal.municipality_id, site_id)


@router.post(
    "/zones",
    status_code=201,
    summary="Add a zone to one of your sites",
    dependencies=[audited("zone.create")],
)
async def create_zone(principal: WriteSensors, conn: Conn, zone: ZoneIn) -> dict[str, Any]:
    try:
        row = await places.create_zone(conn, principal.municipality_id, zone.model_dump())
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"the site has a zone named {zone.name!r} already") from None
    if row is None:
        raise _not_found("site")
    return row


# --- alerts --------------------------------------------------------------------------------


@router.get("/alerts", summary="Alerts, newest first")
async def list_alerts(
    principal: ReadPrivate,
    conn: Conn,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    return await staff.list_alerts(conn, principal.municipality_id, status, limit)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an open alert",
    dependencies=[audited("alert.acknowledge")],
)
def acknowledge_alert(principal: ManageAlerts, conn: SyncConn, alert_id: Id) -> dict[str, Any]:
    row = alert_lifecycle.acknowledge(conn, alert_id, principal.municipality_id, principal.label)
    if row is None:
        raise _not_found("alert")
    return row


@router.post(
    "/alerts/{alert_id}/resolve",
    summary="Resolve an alert by hand",
    dependencies=[audited("alert.resolve")],
)
def resolve_alert(principal: ManageAlerts, conn: SyncConn, alert_id: Id) -> dict[str, Any]:
    row = alert_lifecycle.resolve(conn, alert_id, principal.municipality_id, principal.label)
    if row is None:
        raise _not_found("alert")
    return row


# --- dead letters --------------------------------------------------------------------------


@router.get("/dead-letters", summary="Messages that could not be stored")
async def list_dead_letters(
    principal: ReadPrivate,
    conn: Conn,
    reason: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    return await staff.list_dead_letters(conn, principal.municipality_id, reason, limit)


@router.get("/dead-letters/{dead_letter_id}", summary="One dead letter with its raw bytes")
async def get_dead_letter(principal: ReadPrivate, conn: Conn, dead_letter_id: Id) -> dict[str, Any]:
    row = await staff.get_dead_letter(conn, principal.municipality_id, dead_letter_id)
    if row is None:
        raise _not_found("dead letter")
    payload = bytes(row.pop("payload"))
    row["payload_base64"] = base64.b64encode(payload).decode()
    row["payload_hex"] = payload.hex()
    row["payload_text"] = payload.decode("utf-8", "replace")[:4000]
    return row


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    summary="Run it through ingest again",
    dependencies=[audited("dead_letter.replay")],
)
async def replay_dead_letter(
    principal: ManageAlerts,
    conn: Conn,
    settings: AppSettings,
    request: Request,
    dead_letter_id: Id,
) -> dict[str, Any]:
    if await staff.get_dead_letter(conn, principal.municipality_id, dead_letter_id) is None:
        raise _not_found("dead letter")

    def run() -> list:
        with staff_write_connection(request) as sync_conn:
            return replay(sync_conn, [dead_letter_id], settings)

    results = await asyncio.to_thread(run)
    if not results:
        raise HTTPException(409, "this dead letter was replayed already")
    result = results[0]
    return {
        "id": dead_letter_id,
        "stored": result.stored,
        "readings": result.readings,
        "reason": result.reason,
        "detail": result.detail,
    }


# --- API keys (admin) ----------------------------------------------------------------------


class KeyIn(BaseModel):
    scopes: list[Literal["read-private", "write-sensors", "manage-alerts", "admin"]] = Field(
        min_length=1
    )
    name: str = Field("", max_length=200)
    # The person or system answering for the key; without one, whoever issues it.
    owner: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    expires_at: datetime | None = None


@router.get("/keys", summary="The municipality's API keys (never their secrets)")
async def list_keys(principal: Admin, conn: Conn) -> list[dict[str, Any]]:
    return await keys.list_keys(conn, principal.municipality_id)


@router.post(
    "/keys",
    status_code=201,
    summary="Issue a key; its token is shown only now",
    dependencies=[audited("key.create")],
)
def create_api_key(principal: Admin, conn: SyncConn, key: KeyIn) -> dict[str, Any]:
    owner = key.owner or principal.actor_name
    new = create_key(
        conn, principal.municipality_id, list(key.scopes), key.name, key.expires_at, owner
    )
    return {
        "id": new.key_id,
        "token": new.token,
        "scopes": sorted(set(key.scopes)),
        "owner": owner,
    }


@router.delete(
    "/keys/{key_id}", status_code=204, summary="Revoke a key", dependencies=[audited("key.revoke")]
)
def delete_api_key(principal: Admin, conn: SyncConn, key_id: Id) -> None:
    if not revoke_key(conn, key_id, principal.municipality_id):
        raise _not_found("active key")


# --- waste collection ----------------------------------------------------------------------


# Collection days are planned from readings around them: days near the ends of the
# calendar overflowed date arithmetic (found by tests/staff/test_staff_fuzz.py).
FIRST_COLLECTION_DAY, LAST_COLLECTION_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _check_collection_day(day: date) -> None:
    if not FIRST_COLLECTION_DAY <= day <= LAST_COLLECTION_DAY:
        raise HTTPException(
            422,
            f"query parameter 'date': must be between {FIRST_COLLECTION_DAY} and "
            f"{LAST_COLLECTION_DAY}",
        )


@router.get("/collection/list", summary="Bins to empty on a day, most urgent first")
async def collection_list(
    principal: ReadPrivate, conn: Conn, day: Annotated[date, Query(alias="date")]
) -> dict[str, Any]:
    _check_collection_day(day)
    try:
        return await collection_service.collection_list(conn, principal.municipality_id, day)
    except CollectionSetupError as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/collection/route", summary="The day's routes (JSON, GeoJSON or VROOM input)")
async def collection_route(
    principal: ReadPrivate,
    conn: Conn,
    day: Annotated[date, Query(alias="date")],
    fmt: Annotated[Literal["json", "geojson", "vroom"], Query(alias="format")] = "json",
) -> JSONResponse:
    _check_collection_day(day)
    try:
        listing, plan, problem = await collection_service.collection_route(
            conn, principal.municipality_id, day
        )
        # "vroom": the problem as VROOM's JSON input, for an external solver.
        document = (
            problem if fmt == "vroom" else collection_service.route_document(listing, plan, fmt)
        )
    except CollectionSetupError as exc:
        raise HTTPException(409, str(exc)) from None
    media = "application/geo+json" if fmt == "geojson" else "application/json"
    return JSONResponse(document, media_type=media)
