"""Pure webhook rules: which topics an endpoint may name, which URLs it may have, which
addresses a delivery may connect to, what a signing secret looks like, and when a failed
delivery is tried again."""
from __future__ import annotations

import base64
import ipaddress
import random
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from wallets.errors import WalletValidationError

# The events written to the outbox, by family; a topic is one of them, `family.*` or `*` (an event
# the family does not have is refused: a misspelt one subscribed to nothing)
EVENTS = {"balance": ("low",), "wallet": ("blocked", "unblocked"), "reservation": ("expired",),
          "grant": ("expired", "reversed"), "credit": ("refunded",), "invoice": ("finalized", "paid"),
          "budget": ("threshold_crossed", "exceeded"),
          "webhook_endpoint": ("disabled",)}
FAMILIES = tuple(EVENTS)
TOPICS = tuple(f"{family}.{event}" for family, events in EVENTS.items() for event in events)
# the language check_topics takes, published as the OpenAPI pattern of a topic (no \d, no lookarounds)
TOPIC_PATTERN = (r"^(?:\*|(?:" + "|".join(FAMILIES) + r")\.\*|"
                 + "|".join(re.escape(t) for t in TOPICS) + ")$")
_TOPIC = re.compile(TOPIC_PATTERN)
MAX_TOPICS = 64
MAX_URL = 2048
# Characters no URL here has: controls (C0, C1, DEL) and whitespace, spelled out rather than \s
# (which means other sets in Python and in ECMA-262)
_NOT_IN_URL = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# http(s):// (lower case, as the table's CHECK wants), a host (a name or a bracketed IPv6 address)
# without credentials, a port up to 65535, then a path or query, no fragment: published as the
# OpenAPI pattern of an endpoint's URL; check_url also wants a host IDNA can encode
_HOST = rf"(?:[^{_NOT_IN_URL}/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])"
# (1 to 65535, leading zeros allowed; an empty port is the scheme's; port 0 is nowhere to connect to)
_PORT = r"(?::(?:0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)?"
URL_PATTERN = rf"^https?://{_HOST}{_PORT}(?:[/?][^{_NOT_IN_URL}#]*)?$"
_URL = re.compile(URL_PATTERN)
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
        if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:  # fullmatch: no trailing newline
            raise WalletValidationError(f"{field}[{i}]", "a topic is \"*\", \"<family>.*\" (a family among "
                                        f"{', '.join(FAMILIES)}) or an event: {', '.join(TOPICS)}")
    return list(dict.fromkeys(topics))


def check_url(url: str, field: str = "url") -> str:
    """An absolute http:// or https:// URL (lower case) with a host, no credentials, no fragment,
    no control character and no whitespace."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
        (parts.hostname or "").encode("idna")  # UnicodeError (a ValueError): a name no resolver takes
    except ValueError:
        parts = None
    if (parts is None or _URL.fullmatch(url) is None or parts.scheme not in ("http", "https")
            or not parts.hostname or len(url) > MAX_URL or parts.username is not None or parts.fragment):
        raise WalletValidationError(field, f"an absolute http:// or https:// URL with a host, without "
                                           f"credentials or fragment, at most {MAX_URL} characters")
    return url


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Where deliveries may connect (the guard against server-side request forgery): public
    unicast addresses only, unless an address lies in one of the `allowed` networks that the
    operator named (TOKENTILL_WEBHOOK_ALLOWED_NETWORKS). Loopback, private (RFC 1918, unique
    local), link-local (cloud metadata at 169.254.169.254 included), carrier-grade NAT,
    multicast, unspecified, reserved and documentation ranges are refused, also when written as
    an IPv4-mapped or NAT64 IPv6 address."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why a delivery may not connect to `address`, or None when it may."""
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return self.refusal(embedded)
        if address.is_multicast:
            return f"{address} is a multicast address"
        if not address.is_global or address.is_reserved or any(address in net for net in _NOT_PUBLIC):
            kind = next((name for name, test in _KINDS if test(address)), "non-public")
            article = "an" if kind[0] in "aeiou" else "a"
            return (f"{address} is {article} {kind} address; name its network in TOKENTILL_WEBHOOK_ALLOWED_NETWORKS"
                    " to allow it")
        return None


_KINDS = (("unspecified", lambda a: a.is_unspecified), ("loopback", lambda a: a.is_loopback),
          ("link-local", lambda a: a.is_link_local), ("reserved", lambda a: a.is_reserved),
          ("site-local", lambda a: getattr(a, "is_site_local", False)), ("private", lambda a: a.is_private))
# Python 3.11's is_global lets these through: IETF protocol assignments (but for the two relays
# IANA lists as global), local-use NAT64 (RFC 8215) and the deprecated site-local range
_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/29", "192.0.0.8/32", "192.0.0.11/32", "192.0.0.12/30", "192.0.0.16/28", "192.0.0.32/27",
    "192.0.0.64/26", "192.0.0.128/25", "64:ff9b:1::/48", "fec0::/10"))
# IPv6 spellings of an IPv4 address, its last 32 bits: IPv4-translated (SIIT) and NAT64 (RFC 6052);
# IPv4-compatible (::/96, deprecated) is checked as the IPv4 address it names too
_EMBEDDING = (ipaddress.IPv6Network("::ffff:0:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"),
              ipaddress.IPv6Network("::/96"))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002::/16, 6to4: bits 16 to 48
        return address.sixtofour
    if int(address) > 1 and any(address in net for net in _EMBEDDING):  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """A comma-separated list of networks (`10.0.0.0/8, 127.0.0.1`, a bare address is one host);
    ValueError naming the first that is not one."""
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (such as 10.0.0.0/8) or an address") from None
    return tuple(networks)


def check_destination(url: str, policy: AddressPolicy, field: str = "url") -> str:
    """Refuse at once a URL whose host is an address the policy refuses, or `localhost`. A host
    name is resolved, and its addresses checked, when each delivery connects."""
    named = (urlsplit(url).hostname or "").rstrip(".").lower()
    host = "127.0.0.1" if named == "localhost" or named.endswith(".localhost") else named
    address = _literal(host)
    if address is None:
        return url
    reason = policy.refusal(address)
    if reason is not None:
        raise WalletValidationError(field, f"deliveries may not go to {named}: {reason}")
    return url


_IPV4_SHORTHAND = re.compile(r"[0-9a-fx.]+")  # what inet_aton may read: 2130706433, 0x7f000001, 127.1


def _literal(host: str) -> IPAddress | None:
    """The address `host` is as the resolver reads it, without looking a name up (None: a name):
    a literal, or an IPv4 shorthand inet_aton takes (2130706433 and 0x7f000001 are 127.0.0.1,
    10.1 is 10.0.0.1), after IDNA mapping (a full-width dot is a dot)."""
    try:
        host = host.encode("idna").decode("ascii").rstrip(".")
    except UnicodeError:
        pass  # check_url has refused what IDNA cannot encode; an IPv6 literal is not a name
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _IPV4_SHORTHAND.fullmatch(host) is None:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


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
