"""The audit context of a staff request: who acts, from where, doing what.

Attaching audit to a staff route is one line in its decorator::

    @router.patch("/sensors/{sensor_id}", dependencies=[audited("sensor.update")])

From then on every row the request inserts, changes or deletes in an audited table
(models/audit.py) is recorded in ``audit_events`` by a database trigger, in the same
transaction as the write, with the values before and after. How it gets there: ``audited``
opens an ``AuditContext`` on the request; the authentication dependency (api/security.py)
names the actor; each database connection the request takes (api/deps.py) carries the
context in its session setting ``iot.audit`` while the request holds it, and is cleared
when it goes back to the pool. The trigger refuses a staff-role write without a context,
so a write route without ``audited`` fails loudly instead of writing unrecorded.

Reads worth recording (exports of private data) use ``audited(action, record_read=True)``:
one event per successful request, with the query string as its ``after``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from psycopg import AsyncConnection, Connection

AUDIT_SETTING = "iot.audit"
_SET = "SELECT set_config('iot.audit', %s, false)"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an API key (kind "key", id its number, name its owner) or a signed-in
    person (kind "person", id provider:subject, name as the provider gives it)."""

    kind: str
    id: str
    name: str
    municipality_id: int


@dataclass
class AuditContext:
    action: str
    method: str
    path: str
    request_id: str
    client: str | None = None
    actor: Actor | None = None
    async_connections: list[AsyncConnection] = field(default_factory=list)
    sync_connections: list[Connection] = field(default_factory=list)

    def setting(self) -> str:
        """The value of ``iot.audit`` the trigger reads ('' until the actor is known)."""
        if self.actor is None:
            return ""
        return json.dumps(
            {
                "municipality_id": self.actor.municipality_id,
                "actor_kind": self.actor.kind,
                "actor_id": self.actor.id,
                "actor_name": self.actor.name,
                "client": self.client,
                "method": self.method,
                "path": self.path,
                "request_id": self.request_id,
                "action": self.action,
            }
        )


def audited(action: str, *, record_read: bool = False) -> DependsParam:
    """A route dependency recording the route's writes under `action` (e.g.
    "sensor.update"); with `record_read`, also one event for each successful call."""

    async def open_audit_context(request: Request) -> AsyncIterator[None]:
        context = AuditContext(
            action=action,
            method=request.method,
            path=request.url.path,
            request_id=uuid.uuid4().hex,
        )
        request.state.audit = context
        yield
        if record_read and context.actor is not None:
            await record_event(request, context, dict(request.query_params))

    open_audit_context.audit_action = action  # type: ignore[attr-defined]
    return Depends(open_audit_context)


def audit_action(dependency: Any) -> str | None:
    """The action a dependency function records, when it is an `audited` one."""
    return getattr(dependency, "audit_action", None)


def context_of(request: Request) -> AuditContext | None:
    return getattr(request.state, "audit", None)


async def bind_actor(request: Request, actor: Actor, client: str | None) -> None:
    """Name the request's actor; connections taken so far carry it from now on."""
    context = context_of(request)
    if context is None:
        return
    context.actor = actor
    context.client = client
    value = context.setting()
    for conn in context.async_connections:
        await conn.execute(_SET, (value,))
    for sync_conn in context.sync_connections:
        await asyncio.to_thread(sync_conn.execute, _SET, (value,))


async def attach_async(request: Request, conn: AsyncConnection) -> bool:
    """Give `conn` the request's audit context (if any); True when it must be cleared."""
    context = context_of(request)
    if context is None:
        return False
    context.async_connections.append(conn)
    await conn.execute(_SET, (context.setting(),))
    return True


async def detach_async(request: Request, conn: AsyncConnection) -> None:
    """Clear the context before `conn` goes back to the pool; a connection that cannot be
    cleared is closed (the pool replaces it), so no actor outlives its request."""
    context = context_of(request)
    if context is not None and conn in context.async_connections:
        context.async_connections.remove(conn)
    try:
        await conn.execute(_SET, ("",))
    except psycopg.Error:
        await conn.close()


def attach_sync(request: Request, conn: Connection) -> bool:
    context = context_of(request)
    if context is None:
        return False
    context.sync_connections.append(conn)
    conn.execute(_SET, (context.setting(),))
    return True


def detach_sync(request: Request, conn: Connection) -> None:
    context = context_of(request)
    if context is not None and conn in context.sync_connections:
        context.sync_connections.remove(conn)
    try:
        conn.execute(_SET, ("",))
    except psycopg.Error:
        conn.close()


async def record_event(
    request: Request,
    context: AuditContext,
    details: dict[str, Any],
    target_table: str | None = None,
    target_id: str | None = None,
) -> None:
    """Record one event that is no row change (an export of private data, a refused
    sign-in), on a connection of the staff pool."""
    actor = context.actor
    assert actor is not None
    pool = request.app.state.staff_pool
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO audit_events (municipality_id, actor_kind, actor_id, actor_name, "
            "client_address, request_method, request_path, request_id, action, target_table, "
            "target_id, operation, after) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'read', %s)",
            (
                actor.municipality_id,
                actor.kind,
                actor.id,
                actor.name,
                context.client,
                context.method,
                context.path,
                context.request_id,
                context.action,
                target_table,
                target_id,
                json.dumps(details),
            ),
        )
