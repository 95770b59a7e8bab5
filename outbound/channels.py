"""Sending one delivery to one receiver: webhook, e-mail, Teams / Slack, HTTP JSON batch,
MQTT republish, NGSI-LD upsert.

Each sender returns a `SendResult` with the receiver's answer (an HTTP status and body,
an SMTP reply, an MQTT reason code), so staff see why a delivery failed. A sender raises
nothing for a receiver's failure; the worker (outbound/worker.py) decides what to retry.

Every message carries the delivery's idempotency key (HTTP header `Idempotency-Key`,
e-mail `Message-ID` and `X-Kommune-IoT-Idempotency-Key`, a JSON field): a receiver that
sees a key again has seen that delivery already. Webhooks, Teams, Slack and data targets
are delivered at least once; e-mail at most once past SMTP's final dot (send_email,
docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from models.settings import Settings
from outbound.templates import Notice

SIGNATURE_HEADER = "X-Kommune-IoT-Signature"
TIMESTAMP_HEADER = "X-Kommune-IoT-Timestamp"
KEY_HEADER = "Idempotency-Key"
MAX_RESPONSE_CHARS = 2000
USER_AGENT = "kommune-iot-outbound/1"

_SEVERITY_COLOUR = {"info": "Accent", "warning": "Warning", "critical": "Attention"}
_SLACK_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status_code: int | None
    response: str
    # The receiver may have it, and sending again could repeat it: an e-mail whose final
    # dot was written and never answered. The worker marks it `unconfirmed`, not retried.
    in_doubt: bool = False

    @classmethod
    def failed(cls, error: BaseException, status_code: int | None = None) -> SendResult:
        return cls(False, status_code, f"{type(error).__name__}: {error}"[:MAX_RESPONSE_CHARS])


@dataclass(frozen=True)
class Destination:
    """A channel or data target as the worker loaded it."""

    kind: str
    name: str
    municipality: str
    url: str | None = None
    recipients: tuple[str, ...] = ()
    secret: str | None = None
    language: str = "da"
    topic: str | None = None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over "<timestamp>.<body>", hex."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300
) -> bool:
    """What a receiver does (docs/notifications.md): the signature matches and the
    timestamp is recent, so a captured request cannot be replayed later."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def post_json(
    client: httpx.Client,
    url: str,
    document: Any,
    key: str,
    secret: str | None = None,
    content_type: str = "application/json",
) -> SendResult:
    """POST `document` as JSON, signed when there is a secret; 2xx (but 207) is success."""
    body = _json(document)
    headers = {"Content-Type": content_type, KEY_HEADER: key, "User-Agent": USER_AGENT}
    if secret:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return SendResult.failed(exc)
    # 207 Multi-Status: an NGSI-LD broker refused some entities of the batch.
    ok = 200 <= response.status_code < 300 and response.status_code != 207
    return SendResult(ok, response.status_code, response.text[:MAX_RESPONSE_CHARS])


# --- alert notices ---------------------------------------------------------------------


def webhook_document(key: str, event: str, payload: dict[str, Any], notice: Notice) -> dict:
    return {
        "idempotency_key": key,
        "event": event,
        "subject": notice.subject,
        "text": notice.text,
        "link": notice.link,
        "severity": notice.severity,
        "data": payload,
    }


def teams_document(notice: Notice) -> dict:
    """A message with an Adaptive Card, as Teams Workflows and incoming webhooks take it."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": notice.subject,
                            "weight": "Bolder",
                            "wrap": True,
                            "color": _SEVERITY_COLOUR.get(notice.severity, "Default"),
                        },
                        {"type": "TextBlock", "text": notice.text, "wrap": True},
                    ],
                    "actions": [
                        {"type": "Action.OpenUrl", "title": "Dashboard", "url": notice.link}
                    ],
                },
            }
        ],
    }


def slack_document(notice: Notice) -> dict:
    """A Slack incoming-webhook message (text for notifications, blocks for the layout)."""
    emoji = _SLACK_EMOJI.get(notice.severity, "")
    return {
        "text": f"{emoji} {notice.subject}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": notice.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": notice.text[:3000]}},
        ],
    }


def message_id(key: str) -> str:
    """The e-mail Message-ID of a delivery: the same for every attempt, so a mail system
    that drops repeated Message-IDs keeps one copy."""
    local = uuid.uuid5(uuid.NAMESPACE_URL, "kommune-iot:" + key).hex
    return f"<{local}@kommune-iot>"


def email_message(destination: Destination, notice: Notice, key: str, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(destination.recipients)
    message["Subject"] = notice.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(key)
    message["X-Kommune-IoT-Idempotency-Key"] = key
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(notice.text)
    return message


def _message_bytes(message: EmailMessage, international: bool) -> bytes:
    """The message as SMTP carries it: CRLF line ends (as smtplib's send_message writes it)."""
    with io.BytesIO() as out:
        policy = message.policy.clone(utf8=True) if international else None
        generator = BytesGenerator(out, policy=policy) if policy else BytesGenerator(out)
        generator.flatten(message, linesep="\r\n")
        return out.getvalue()


def data_without_final_dot(message: bytes) -> bytes:
    """The DATA section up to, not including, its terminating ".<CRLF>": lines that start
    with a dot get a second one (RFC 5321 4.5.2) and the last line ends in CRLF, as
    smtplib.SMTP.data does it. The server takes the message only when the final dot
    follows; a connection closed before it delivers nothing."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


FINAL_DOT = b".\r\n"


def send_email(
    settings: Settings,
    destination: Destination,
    notice: Notice,
    key: str,
    before_final_dot: Callable[[], None] | None = None,
) -> SendResult:
    """Submit over SMTP: STARTTLS (verified certificate) and AUTH when configured.

    MAIL, RCPT, DATA and the message are sent; then `before_final_dot` is called (the
    worker commits that the message is past the point of no return) and only when it
    returns is the final dot written. An exception from it closes the connection without
    the dot, so the server discards the message, and is raised. No reply to the dot
    (timeout, connection lost) is `in_doubt`: the server may have taken the message."""
    if not destination.recipients:
        return SendResult(False, None, "the channel has no recipients")
    message = email_message(destination, notice, key, settings.smtp_from)
    sender, recipients = settings.smtp_from, list(destination.recipients)
    international = not "".join([sender, *recipients]).isascii()
    smtp = None
    try:
        smtp = smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.deliver_timeout_s
        )
        smtp.ehlo()
        if settings.smtp_starttls:
            context = ssl.create_default_context(cafile=settings.smtp_ca_file)
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        if international and not smtp.has_extn("smtputf8"):
            return SendResult(False, None, "the SMTP server does not take non-ASCII addresses")
        body = _message_bytes(message, international)
        options = ["SMTPUTF8", "BODY=8BITMIME"] if international else []
        if smtp.has_extn("size"):
            options.append(f"size={len(body)}")
        code, reply = smtp.mail(sender, options)
        if code != 250:
            return _refused("MAIL FROM", code, reply)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            refusals = f"every recipient refused: {refused}"
            return SendResult(False, code, refusals[:MAX_RESPONSE_CHARS])
        code, reply = smtp.docmd("DATA")
        if code != 354:
            return _refused("DATA", code, reply)
        smtp.send(data_without_final_dot(body))
        if before_final_dot is not None:
            before_final_dot()
        try:  # past the point of no return: whatever fails now, the server may have it
            smtp.send(FINAL_DOT)
            code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            return SendResult(False, None, _no_reply(exc), in_doubt=True)
    except smtplib.SMTPResponseException as exc:
        return SendResult.failed(exc, exc.smtp_code)
    except (smtplib.SMTPException, OSError) as exc:
        return SendResult.failed(exc)
    finally:
        # Closed without waiting for QUIT's reply: the message's fate is decided by the
        # reply to the final dot (or by the missing dot, when the worker stopped before it).
        if smtp is not None:
            smtp.close()
    if code != 250:
        # Refused after the dot: the server did not take it (a 4xx may pass on a retry).
        return _refused("the final dot", code, reply)
    if refused:
        # Some recipients took it: sending again would repeat it to them. Reported, not retried.
        return SendResult(True, 250, f"refused recipients: {refused}"[:MAX_RESPONSE_CHARS])
    return SendResult(True, 250, "accepted")


def _refused(step: str, code: int, reply: bytes) -> SendResult:
    text = reply.decode(errors="replace")
    return SendResult(False, code, f"{step}: {code} {text}"[:MAX_RESPONSE_CHARS])


def _no_reply(exc: BaseException) -> str:
    return (
        "unconfirmed: the final dot was written and the SMTP server did not answer "
        f"({type(exc).__name__}: {exc}); the message may have been delivered"
    )[:MAX_RESPONSE_CHARS]


def send_notice(
    settings: Settings,
    client: httpx.Client,
    destination: Destination,
    key: str,
    event: str,
    payload: dict[str, Any],
    notice: Notice,
    before_final_dot: Callable[[], None] | None = None,
) -> SendResult:
    """An alert notice to its channel; `before_final_dot` is e-mail's (send_email)."""
    if destination.kind == "email":
        return send_email(settings, destination, notice, key, before_final_dot)
    if not destination.url:
        return SendResult(False, None, "the channel has no URL")
    if destination.kind == "webhook":
        document = webhook_document(key, event, payload, notice)
        return post_json(client, destination.url, document, key, destination.secret)
    if destination.kind == "teams":
        return post_json(client, destination.url, teams_document(notice), key)
    if destination.kind == "slack":
        return post_json(client, destination.url, slack_document(notice), key)
    return SendResult(False, None, f"unknown channel kind {destination.kind!r}")


# --- data targets ----------------------------------------------------------------------


def publish_mqtt(
    settings: Settings, destination: Destination, document: Any, key: str
) -> SendResult:
    """Publish at QoS 1 and wait for the broker's PUBACK. URL: mqtt[s]://[user:pass@]host[:port]."""
    parts = urlsplit(destination.url or "")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not destination.topic:
        return SendResult(False, None, "an MQTT target needs mqtt[s]://host[:port] and a topic")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"kommune-iot-out-{uuid.uuid4().hex[:12]}"
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set()
    topic = destination.topic.replace("{municipality}", destination.municipality)
    try:
        client.connect(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883))
        client.loop_start()
        info = client.publish(topic, _json(document), qos=1)
        info.wait_for_publish(timeout=settings.deliver_timeout_s)
        published = info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        return SendResult.failed(exc)
    finally:
        client.loop_stop()
        client.disconnect()
    if not published:
        return SendResult(False, info.rc, f"no PUBACK within {settings.deliver_timeout_s:g} s")
    return SendResult(True, 0, f"published to {topic}")
