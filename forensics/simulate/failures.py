"""How deliveries fail: the platform errors the simulator injects, written as Chat4All writes them.

Each :class:`FailureKind` fixes what every table shows for one failure: the platform's
error body (Graph API envelope for WhatsApp/Instagram, Bot API envelope for Telegram, see
``platform-errors.md``), the string Chat4All stores in ``error_message``, the HTTP status
on the connector's client span, the Java exception in the DLQ headers, and whether the
router retries it.

Stored ``error_message`` forms (deployed code and runbook):
- API errors: ``Connector returned error: status=429, body={"error":{...}}``; Telegram's
  connector error ``Telegram API client error: {"ok":false,...}``;
- transport: ``Error calling connector: I/O error on POST request for "http://...": Read timed out``;
- webhook status callbacks (WhatsApp 131026): ``WhatsApp delivery failed: {"errors":[...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from forensics import catalog
from forensics.schema import CHANNELS
from forensics.simulate.columns import fill, token_ids
from forensics.simulate.population import IG, TG, WA

API, CALLBACK, TRANSPORT = "api", "callback", "transport"
CONNECTOR_PORTS = {WA: 8091, TG: 8092, IG: 8093}
PLATFORM_URLS = {
    WA: "https://graph.facebook.com/v18.0/109876543210987/messages",
    TG: "https://api.telegram.org/bot****/sendMessage",
    IG: "https://graph.facebook.com/v18.0/me/messages",
}
PLATFORM_HOSTS = {WA: "graph.facebook.com", TG: "api.telegram.org", IG: "graph.facebook.com"}
PLATFORM_NAMES = {c: catalog.PLATFORM_NAMES[CHANNELS[c]] for c in (WA, TG, IG)}


@dataclass(frozen=True)
class FailureKind:
    name: str
    channel: int | None
    """Channel code the kind belongs to; None for any connector channel (transport errors)."""
    stage: str
    """api: the platform API answered with an error; callback: a webhook status reported
    the failure after the platform accepted the message; transport: the router never got an answer."""
    http_status: int | None
    code: int | None
    """Platform error code (Graph API ``code`` or Telegram ``error_code``)."""
    retryable: bool
    body: str
    """Platform error body; ``{fbtrace}`` and ``{retry_after}`` are filled per failure."""
    exception: str
    """Java exception the failure surfaces as (DLQ ``kafka_dlt-exception-cause-fqcn``)."""
    attempt_s: float = 0.35
    """How long one failed attempt takes, seconds."""
    backoff_s: float = 2.0
    """Wait before the next attempt, seconds (the Retry-After value for rate limits)."""
    rate_limited: bool = False
    """Connector logs carry X-RateLimit-* and Retry-After values for this kind."""


def _graph(code: int, message: str, details: str | None = None, subcode: int | None = None) -> str:
    data = f',"error_data":{{"messaging_product":"whatsapp","details":"{details}"}}' if details else ""
    sub = f',"error_subcode":{subcode}' if subcode else ""
    return (f'{{"error":{{"message":"{message}","type":"OAuthException","code":{code}{data}{sub},'
            f'"fbtrace_id":"{{fbtrace}}"}}}}')


def _telegram(code: int, description: str, retry_after: bool = False) -> str:
    params = ',"parameters":{"retry_after":{retry_after}}' if retry_after else ""
    return f'{{"ok":false,"error_code":{code},"description":"{description}"{params}}}'


_HTTP = "org.springframework.web.client.HttpClientErrorException"
_HTTP5 = "org.springframework.web.client.HttpServerErrorException"

KINDS: tuple[FailureKind, ...] = (
    FailureKind("wa_rate_limit", WA, API, 429, 130429, True,
                _graph(130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
                f"{_HTTP}$TooManyRequests", backoff_s=15.0, rate_limited=True),
    FailureKind("wa_token_expired", WA, API, 401, 190, False,
                _graph(190, "Error validating access token: Session has expired on Wednesday, 03-Dec-25 "
                            "04:00:00 PST.", subcode=463), f"{_HTTP}$Unauthorized"),
    FailureKind("ig_token_expired", IG, API, 401, 190, False,
                _graph(190, "Error validating access token: Session has expired on Wednesday, 03-Dec-25 "
                            "04:00:00 PST.", subcode=463), f"{_HTTP}$Unauthorized"),
    FailureKind("wa_undeliverable", WA, CALLBACK, None, 131026, False,
                '{"errors":[{"code":131026,"title":"Message undeliverable","message":"Message undeliverable",'
                '"error_data":{"details":"Message Undeliverable."}}]}',
                "com.chat4all.connector.whatsapp.exception.WhatsAppDeliveryException"),
    FailureKind("wa_text_too_long", WA, API, 400, 100, False,
                _graph(100, "(#100) Invalid parameter", "Param text['body'] must be at most 4096 characters long."),
                f"{_HTTP}$BadRequest"),
    FailureKind("wa_media_too_large", WA, API, 400, 131053, False,
                _graph(131053, "(#131053) Media upload error", "Uploaded media exceeds the 100MB size limit."),
                f"{_HTTP}$BadRequest"),
    FailureKind("tg_text_too_long", TG, API, 400, 400, False,
                _telegram(400, "Bad Request: message is too long"), f"{_HTTP}$BadRequest"),
    FailureKind("ig_text_too_long", IG, API, 400, 100, False,
                _graph(100, "(#100) Length of message exceeds the 1000 character limit"), f"{_HTTP}$BadRequest"),
    FailureKind("ig_image_too_large", IG, API, 400, 100, False,
                _graph(100, "(#100) Image size exceeds the 8MB limit"), f"{_HTTP}$BadRequest"),
    FailureKind("tg_bot_blocked", TG, API, 403, 403, False,
                _telegram(403, "Forbidden: bot was blocked by the user"), f"{_HTTP}$Forbidden"),
    FailureKind("wa_service_unavailable", WA, API, 503, 131016, True,
                _graph(131016, "(#131016) Service unavailable", "A service is temporarily unavailable."),
                f"{_HTTP5}$ServiceUnavailable", attempt_s=1.5, backoff_s=4.0),
    FailureKind("wa_bad_gateway", WA, API, 502, None, True,
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
                "</center></body></html>", f"{_HTTP5}$BadGateway", attempt_s=1.0, backoff_s=4.0),
    FailureKind("tg_rate_limit", TG, API, 429, 429, True,
                _telegram(429, "Too Many Requests: retry after {retry_after}", retry_after=True),
                f"{_HTTP}$TooManyRequests", backoff_s=10.0, rate_limited=True),
    FailureKind("connector_timeout", None, TRANSPORT, None, None, True, "",
                "org.springframework.web.client.ResourceAccessException", attempt_s=5.0, backoff_s=2.0),
    FailureKind("wa_generic_error", WA, API, 500, 131000, True,
                _graph(131000, "(#131000) Something went wrong", "Something went wrong"),
                f"{_HTTP5}$InternalServerError", attempt_s=0.8, backoff_s=2.0),
    FailureKind("wa_re_engagement", WA, API, 400, 131047, False,
                _graph(131047, "(#131047) Re-engagement message",
                       "Message failed to send because more than 24 hours have passed since the customer last "
                       "replied to this number."), f"{_HTTP}$BadRequest"),
    FailureKind("ig_user_unavailable", IG, API, 400, 551, False,
                _graph(551, "This person isn't available right now."), f"{_HTTP}$BadRequest"),
    FailureKind("ig_rate_limit", IG, API, 429, 613, True,
                _graph(613, "(#613) Calls to this api have exceeded the rate limit."),
                f"{_HTTP}$TooManyRequests", backoff_s=20.0, rate_limited=True),
    FailureKind("tg_chat_not_found", TG, API, 400, 400, False,
                _telegram(400, "Bad Request: chat not found"), f"{_HTTP}$BadRequest"),
    FailureKind("wa_pair_rate_limit", WA, API, 400, 131056, False,
                _graph(131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                       "Too many messages sent from the sender phone number to the same recipient phone number "
                       "in a short period of time."), f"{_HTTP}$BadRequest"),
    FailureKind("wa_not_delivered_by_meta", WA, API, 400, 131049, False,
                _graph(131049, "(#131049) This message was not delivered to maintain healthy ecosystem engagement.",
                       "In order to maintain a healthy ecosystem engagement, the message failed to be delivered."),
                f"{_HTTP}$BadRequest"),
    FailureKind("tg_user_deactivated", TG, API, 403, 403, False,
                _telegram(403, "Forbidden: user is deactivated"), f"{_HTTP}$Forbidden"),
    FailureKind("ig_policy_block", IG, API, 400, 368, False,
                _graph(368, "The action attempted has been deemed abusive or is otherwise disallowed"),
                f"{_HTTP}$BadRequest"),
)
KIND = {k.name: i for i, k in enumerate(KINDS)}
# Per-kind lookups, indexed by kind code.
IS_CALLBACK = np.array([k.stage == CALLBACK for k in KINDS])
IS_TRANSPORT = np.array([k.stage == TRANSPORT for k in KINDS])
IS_API = np.array([k.stage == API for k in KINDS])
RETRYABLE = np.array([k.retryable for k in KINDS])
RATE_LIMITED = np.array([k.rate_limited for k in KINDS])
RETRY_AFTER_IN_BODY = np.array(["{retry_after}" in k.body for k in KINDS])
"""The error body itself says how long to wait (Telegram's ``retry after N`` / ``retry_after``)."""
HTTP_STATUS = np.array([k.http_status or -1 for k in KINDS])
ATTEMPT_S = np.array([k.attempt_s for k in KINDS])
BACKOFF_S = np.array([k.backoff_s for k in KINDS])
EXCEPTION = np.array([k.exception for k in KINDS], dtype=object)

NOISE = {
    WA: {"wa_rate_limit": 0.2, "wa_undeliverable": 0.25, "wa_re_engagement": 0.2, "wa_generic_error": 0.2,
         "connector_timeout": 0.15},
    TG: {"tg_bot_blocked": 0.35, "tg_chat_not_found": 0.25, "tg_rate_limit": 0.25, "connector_timeout": 0.15},
    IG: {"ig_user_unavailable": 0.4, "ig_rate_limit": 0.3, "connector_timeout": 0.3},
}
"""Sporadic failures every scenario carries, by channel: kind -> share."""
CHRONIC = {
    WA: {"wa_rate_limit": 0.1, "wa_undeliverable": 0.15, "wa_re_engagement": 0.2, "wa_generic_error": 0.1,
         "wa_pair_rate_limit": 0.15, "wa_not_delivered_by_meta": 0.1, "wa_service_unavailable": 0.05,
         "connector_timeout": 0.15},
    TG: {"tg_bot_blocked": 0.25, "tg_user_deactivated": 0.2, "tg_chat_not_found": 0.2, "tg_rate_limit": 0.2,
         "connector_timeout": 0.15},
    IG: {"ig_user_unavailable": 0.3, "ig_rate_limit": 0.2, "ig_policy_block": 0.2, "connector_timeout": 0.3},
}
"""Background failures of the deployed code's everyday life (the ``noise`` variant), by channel:
a wider mix than ``NOISE``, none of it dominant, at a rate within ``traffic.CHRONIC_RATE``."""


def connector_url(connector: str, channel: int) -> str:
    return f"http://{connector}:{CONNECTOR_PORTS[channel]}/api/v1/messages"


def bodies(rng: np.random.Generator, kind: FailureKind, n: int) -> pa.Array:
    """The platform error body of ``n`` failures of ``kind`` (fresh fbtrace ids)."""
    return fill(kind.body, n, fbtrace=token_ids(rng, n, 27), retry_after=str(int(kind.backoff_s)))


def stored_errors(kind: FailureKind, body: pa.Array, connector_urls: np.ndarray) -> pa.Array:
    """``error_message`` as Chat4All stores it for failures of ``kind``."""
    if kind.stage == TRANSPORT:
        return fill('Error calling connector: I/O error on POST request for "{url}": Read timed out',
                    len(body), url=connector_urls)
    if kind.stage == CALLBACK:
        return fill("WhatsApp delivery failed: {body}", body=body)
    if kind.channel == TG:
        return fill("Telegram API client error: {body}", body=body)
    return fill(f"Connector returned error: status={kind.http_status}, body={{body}}", body=body)
