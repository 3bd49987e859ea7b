"""Pure webhook rules: which topics an endpoint may name, which URLs it may have, what a
signing secret looks like, and when a failed delivery is tried again."""
from __future__ import annotations

import base64
import random
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from wallets.errors import WalletValidationError

# Event families written to the outbox; a topic is one of their events, `family.*` or `*`.
FAMILIES = ("balance", "wallet", "reservation", "grant", "invoice", "budget", "webhook_endpoint")
_TOPIC = re.compile(r"^(\*|([a-z][a-z0-9_]*)\.(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*))$")
MAX_TOPICS = 64
MAX_URL = 2048
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 bytes
DISABLED_TOPIC = "webhook_endpoint.disabled"


def check_topics(topics: list[str], field: str = "topics") -> list[str]:
    """The topics, deduplicated in order, or a validation error naming the first bad one."""
    if not topics:
        raise WalletValidationError(field, "name at least one topic (\"*\" for every event)")
    if len(topics) > MAX_TOPICS:
        raise WalletValidationError(field, f"at most {MAX_TOPICS} topics")
    for i, topic in enumerate(topics):
        match = _TOPIC.match(topic)
        if match is None or (match.group(2) is not None and match.group(2) not in FAMILIES):
            raise WalletValidationError(f"{field}[{i}]", "a topic is \"*\", \"<family>.*\" or \"<family>.<event>\""
                                        f" (such as balance.low), with a family among {', '.join(FAMILIES)}")
    return list(dict.fromkeys(topics))


def check_url(url: str, field: str = "url") -> str:
    """An absolute http(s) URL with a host, no credentials and no fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL
            or parts.username is not None or parts.fragment or any(c.isspace() for c in url)):
        raise WalletValidationError(field, f"an absolute http:// or https:// URL with a host, without "
                                           f"credentials or fragment, at most {MAX_URL} characters")
    return url


def new_secret() -> str:
    """A Standard Webhooks signing secret: whsec_ and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n failed, the next waits between half and all of
    min(cap, base * 2**(n-1)) seconds; the last attempt falls at the end of the window (3 days
    after the event was first scheduled), and after it the delivery has failed."""

    base_s: float = 5.0
    cap_s: float = 4 * 3600.0
    window_s: float = 3 * 86400.0

    def delay(self, attempt: int, rand: random.Random | None = None) -> timedelta:
        full = min(self.cap_s, self.base_s * 2 ** min(max(attempt - 1, 0), 62))
        jitter = (rand or random).uniform(0.5, 1.0)
        return timedelta(seconds=full * jitter)

    def next_attempt(self, scheduled_at: datetime, failed_at: datetime, attempt: int,
                     rand: random.Random | None = None) -> datetime | None:
        """When to try again after attempt `attempt` failed at `failed_at`; None: give up."""
        deadline = scheduled_at + timedelta(seconds=self.window_s)
        if failed_at >= deadline:
            return None
        return min(failed_at + self.delay(attempt, rand), deadline)
