"""Staff endpoints of outbound deliveries: notification channels and rules, data targets,
test deliveries, and the delivery log (docs/notifications.md).

Like every staff route: the caller's key decides the municipality, and another
municipality's ids answer 404, as if they did not exist. Reading takes `read-private`;
channels, rules, retries and resends `manage-alerts`; data targets (data leaving the system)
`admin`. Every write is recorded in the audit trail (api/audit.py).
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field, field_validator, model_validator

from api.audit import audited
from api.auth import Principal
from api.deps import Conn
from api.queries import outbound
from api.security import Admin, ManageAlerts, ReadPrivate
from models.schemas import ErrorOut

_ERROR = {"model": ErrorOut}
router = APIRouter(
    prefix="/api/v1/staff",
    tags=["staff: outbound"],
    responses={code: _ERROR for code in (400, 401, 403, 404, 409, 422, 429, 503)},
)

Id = Annotated[int, Path(ge=1, le=2**62)]


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what} with that id in your municipality")


_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")
_RULE = re.compile(r"^[a-z_]+(\.[a-z0-9_]*)?$")
_METRIC = re.compile(r"^[a-z0-9_]{1,40}$")


def _check_url(url: str | None, schemes: tuple[str, ...], what: str) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{what} must be a {' or '.join(schemes)} URL with a host, got {url!r}")
    return url


class ChannelIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "email", "teams", "slack"]
    url: str | None = Field(None, max_length=2000)
    recipients: list[str] = Field(default_factory=list, max_length=50)
    language: Literal["da", "en"] = "da"
    enabled: bool = True

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, recipients: list[str]) -> list[str]:
        for address in recipients:
            if not _EMAIL.match(address):
                raise ValueError(f"recipients: {address!r} is not an e-mail address")
        return recipients

    @model_validator(mode="after")
    def _complete(self) -> ChannelIn:
        if self.kind == "email":
            if not self.recipients:
                raise ValueError("recipients: an e-mail channel needs at least one address")
        else:
            if self.url is None:
                raise ValueError(f"url: a {self.kind} channel needs the receiver's URL")
            _check_url(self.url, ("https", "http"), "url")
        return self


class ChannelPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    url: str | None = Field(None, max_length=2000)
    recipients: list[str] | None = Field(None, max_length=50)
    language: Literal["da", "en"] | None = None
    enabled: bool | None = None

    _url = field_validator("url")(lambda url: _check_url(url, ("https", "http"), "url"))
    _addresses = field_validator("recipients")(
        lambda r: r if r is None else ChannelIn._addresses(r)
    )


class RuleIn(BaseModel):
    channel_id: int = Field(ge=1, le=2**62)
    alert_rule: str | None = Field(
        None,
        max_length=60,
        description='An alert rule ("climate.co2_limit") or a family ending in a dot '
        '("climate."); empty: every rule.',
    )
    site_id: int | None = Field(None, ge=1, le=2**31 - 1)
    zone_id: int | None = Field(None, ge=1, le=2**31 - 1)
    min_severity: Literal["info", "warning", "critical"] = "warning"
    quiet_from: time | None = Field(None, description="Europe/Copenhagen local time")
    quiet_until: time | None = None
    escalate_after_min: int | None = Field(None, ge=1, le=7 * 24 * 60)
    escalate_channel_id: int | None = Field(None, ge=1, le=2**62)
    notify_resolved: bool = True
    enabled: bool = True

    @field_validator("alert_rule")
    @classmethod
    def _rule(cls, rule: str | None) -> str | None:
        if rule is not None and not _RULE.match(rule):
            raise ValueError("alert_rule: a rule such as climate.co2_limit or a family climate.")
        return rule

    @model_validator(mode="after")
    def _quiet(self) -> RuleIn:
        if (self.quiet_from is None) != (self.quiet_until is None):
            raise ValueError("quiet_from and quiet_until: give both or neither")
        if self.quiet_from is not None and self.quiet_from == self.quiet_until:
            raise ValueError("quiet_from and quiet_until: the same time makes no quiet hours")
        return self


class TargetIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["http", "mqtt", "ngsi_ld"]
    url: str = Field(max_length=2000)
    topic: str | None = Field(None, max_length=200)
    sensor_kinds: list[Literal["climate", "bin", "parking", "other"]] | None = None
    sensor_ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(None, max_length=1000)
    metrics: list[str] | None = Field(None, max_length=100)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str] | None) -> list[str] | None:
        for name in metrics or ():
            if not _METRIC.match(name):
                raise ValueError(f"metrics: {name!r} is not a metric name")
        return metrics

    @model_validator(mode="after")
    def _complete(self) -> TargetIn:
        if self.kind == "mqtt":
            _check_url(self.url, ("mqtt", "mqtts"), "url")
            if not self.topic or "#" in self.topic or "+" in self.topic:
                raise ValueError("topic: an MQTT target needs a topic without wildcards")
        else:
            _check_url(self.url, ("https", "http"), "url")
        return self


class TargetPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    url: str | None = Field(None, max_length=2000)
    topic: str | None = Field(None, max_length=200)
    sensor_kinds: list[Literal["climate", "bin", "parking", "other"]] | None = None
    sensor_ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(None, max_length=1000)
    metrics: list[str] | None = Field(None, max_length=100)
    enabled: bool | None = None

    _metrics = field_validator("metrics")(lambda m: TargetIn._metrics(m))


def _taken(what: str, name: str) -> HTTPException:
    return HTTPException(409, f"your municipality has a {what} named {name!r} already")


# --- channels ---------------------------------------------------------------------------


def _url_shown(
    items: list[dict[str, Any]], principal: Principal, scope: str
) -> list[dict[str, Any]]:
    """Items as a caller without `scope` may see them: a webhook URL (Teams, Slack) is
    itself the credential, and others carry keys in their path, query or user part, so
    readers see where it points (scheme, host, port) and only managers the whole URL."""
    if principal.has(scope):
        return items
    return [{**item, "url": _where(item["url"])} for item in items]


def _where(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


@router.get("/notification-channels", summary="Where alert notices go")
async def list_channels(principal: ReadPrivate, conn: Conn) -> list[dict[str, Any]]:
    """Webhook URLs in full to `manage-alerts` only; to readers as scheme://host/…."""
    items = await outbound.list_channels(conn, principal.municipality_id)
    return _url_shown(items, principal, "manage-alerts")


@router.post(
    "/notification-channels",
    status_code=201,
    dependencies=[audited("notification_channel.create")],
    summary="Add a channel; a webhook's signing secret is shown only now",
)
async def create_channel(principal: ManageAlerts, conn: Conn, channel: ChannelIn) -> dict[str, Any]:
    try:
        return await outbound.create_channel(conn, principal.municipality_id, channel.model_dump())
    except psycopg.errors.UniqueViolation:
        raise _taken("channel", channel.name) from None


def _refuse_nulls(changes: dict[str, Any], keys: tuple[str, ...]) -> None:
    """A PATCH may leave a field out but not set one of `keys` to null (422 naming it)."""
    for key in keys:
        if key in changes and changes[key] is None:
            raise HTTPException(422, f"{key} may not be null; leave it out to keep it")


@router.patch(
    "/notification-channels/{channel_id}",
    summary="Edit or switch a channel",
    dependencies=[audited("notification_channel.update")],
)
async def patch_channel(
    principal: ManageAlerts, conn: Conn, channel_id: Id, patch: ChannelPatch
) -> dict[str, Any]:
    changes = patch.model_dump(exclude_unset=True)
    _refuse_nulls(changes, ("name", "recipients", "language", "enabled"))
    try:
        row = await outbound.update_channel(conn, principal.municipality_id, channel_id, changes)
    except psycopg.errors.UniqueViolation:
        raise _taken("channel", str(changes.get("name"))) from None
    if row is None:
        raise _not_found("notification channel")
    return row


@router.delete(
    "/notification-channels/{channel_id}",
    status_code=204,
    summary="Delete a channel",
    dependencies=[audited("notification_channel.delete")],
)
async def delete_channel(principal: ManageAlerts, conn: Conn, channel_id: Id) -> None:
    if not await outbound.delete_channel(conn, principal.municipality_id, channel_id):
        raise _not_found("notification channel")


@router.post(
    "/notification-channels/{channel_id}/test",
    status_code=202,
    dependencies=[audited("notification_channel.test")],
    summary="Send a test notice; follow it in the delivery log",
)
async def test_channel(principal: ManageAlerts, conn: Conn, channel_id: Id) -> dict[str, Any]:
    row = await outbound.enqueue_channel_test(conn, principal.municipality_id, channel_id)
    if row is None:
        raise _not_found("notification channel")
    return row


# --- rules ------------------------------------------------------------------------------


@router.get("/notification-rules", summary="Which alerts go where, and when")
async def list_rules(principal: ReadPrivate, conn: Conn) -> list[dict[str, Any]]:
    return await outbound.list_rules(conn, principal.municipality_id)


@router.post(
    "/notification-rules",
    status_code=201,
    summary="Add a rule",
    dependencies=[audited("notification_rule.create")],
)
async def create_rule(principal: ManageAlerts, conn: Conn, rule: RuleIn) -> dict[str, Any]:
    row = await outbound.create_rule(conn, principal.municipality_id, rule.model_dump())
    if row is None:
        raise _not_found("channel, escalation channel, site or zone")
    return row


@router.delete(
    "/notification-rules/{rule_id}",
    status_code=204,
    summary="Delete a rule",
    dependencies=[audited("notification_rule.delete")],
)
async def delete_rule(principal: ManageAlerts, conn: Conn, rule_id: Id) -> None:
    if not await outbound.delete_rule(conn, principal.municipality_id, rule_id):
        raise _not_found("notification rule")


# --- data targets -----------------------------------------------------------------------


@router.get("/data-targets", summary="Systems readings are forwarded to")
async def list_targets(principal: ReadPrivate, conn: Conn) -> list[dict[str, Any]]:
    """URLs in full to `admin` only; to readers as scheme://host/…."""
    items = await outbound.list_targets(conn, principal.municipality_id)
    return _url_shown(items, principal, "admin")


@router.post(
    "/data-targets",
    status_code=201,
    dependencies=[audited("data_target.create")],
    summary="Add a data target (switched off; its signing secret is shown only now)",
)
async def create_target(principal: Admin, conn: Conn, target: TargetIn) -> dict[str, Any]:
    try:
        return await outbound.create_target(conn, principal.municipality_id, target.model_dump())
    except psycopg.errors.UniqueViolation:
        raise _taken("data target", target.name) from None


@router.patch(
    "/data-targets/{target_id}",
    summary="Edit a data target or switch it on",
    dependencies=[audited("data_target.update")],
)
async def patch_target(
    principal: Admin, conn: Conn, target_id: Id, patch: TargetPatch
) -> dict[str, Any]:
    changes = patch.model_dump(exclude_unset=True)
    _refuse_nulls(changes, ("name", "url", "enabled"))
    try:
        row = await outbound.update_target(conn, principal.municipality_id, target_id, changes)
    except psycopg.errors.UniqueViolation:
        raise _taken("data target", str(changes.get("name"))) from None
    if row is None:
        raise _not_found("data target")
    return row


@router.delete(
    "/data-targets/{target_id}",
    status_code=204,
    summary="Delete a data target",
    dependencies=[audited("data_target.delete")],
)
async def delete_target(principal: Admin, conn: Conn, target_id: Id) -> None:
    if not await outbound.delete_target(conn, principal.municipality_id, target_id):
        raise _not_found("data target")


@router.post(
    "/data-targets/{target_id}/test",
    status_code=202,
    dependencies=[audited("data_target.test")],
    summary="Send the latest values the target's filter passes; follow it in the log",
)
async def test_target(principal: Admin, conn: Conn, target_id: Id) -> dict[str, Any]:
    row = await outbound.enqueue_target_test(conn, principal.municipality_id, target_id)
    if row is None:
        raise _not_found("data target")
    return row


# --- the delivery log -------------------------------------------------------------------


@router.get("/deliveries", summary="The delivery log, newest first")
async def list_deliveries(
    principal: ReadPrivate,
    conn: Conn,
    status: Literal["pending", "held", "delivered", "dead", "digested", "confirming", "unconfirmed"]
    | None = None,
    channel_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    target_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    return await outbound.list_deliveries(
        conn, principal.municipality_id, status, channel_id, target_id, before_id, limit
    )


@router.get("/deliveries/{delivery_id}", summary="One delivery with every attempt")
async def get_delivery(principal: ReadPrivate, conn: Conn, delivery_id: Id) -> dict[str, Any]:
    row = await outbound.get_delivery(conn, principal.municipality_id, delivery_id)
    if row is None:
        raise _not_found("delivery")
    return row


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Send a dead delivery again",
    dependencies=[audited("delivery.retry")],
)
async def retry_delivery(principal: ManageAlerts, conn: Conn, delivery_id: Id) -> dict[str, Any]:
    row = await outbound.retry_delivery(conn, principal.municipality_id, delivery_id)
    if row is None:
        raise _not_found("delivery")
    return row


@router.post(
    "/deliveries/{delivery_id}/resend",
    summary="Send an unconfirmed e-mail again, on purpose (the recipient may have it)",
    dependencies=[audited("delivery.resend")],
)
async def resend_delivery(principal: ManageAlerts, conn: Conn, delivery_id: Id) -> dict[str, Any]:
    row = await outbound.resend_delivery(conn, principal.municipality_id, delivery_id)
    if row is None:
        raise _not_found("delivery")
    return row
