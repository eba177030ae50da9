"""Who the other replicas are (RECEIVER_PEERS): parsed once, looked up at each relay.

Two forms:
  * `dns:NAME:PORT`: every A and AAAA address NAME resolves to (a headless Service's
    name resolves to the addresses of its ready pods), looked up at each relay, so
    replicas that come and go are followed without a restart. Our own addresses are left
    out. An address is ours when this process can bind a socket to it: the kernel
    answers that for the pod's own IPs and loopback, and for nothing else (unless
    `net.ipv4.ip_nonlocal_bind` is on, which no pod has by default).
  * a comma-separated list of http(s) URLs: each peer's push endpoint (a URL with no
    path gets `/push`). A URL whose host is one of our addresses and whose port is the
    one we listen on is ourselves and left out, so every replica can be given one list.

Imports nothing of the receiver but its errors: config.py parses the setting with it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from receiver.errors import ConfigError

PUSH_PATH = "/push"
_DNS_PREFIX = "dns:"


@dataclass(frozen=True)
class Peers:
    """The parsed setting: `dns_name`/`dns_port`, or `urls` (one of the two)."""

    dns_name: str = ""
    dns_port: int = 0
    urls: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"dns:{self.dns_name}:{self.dns_port}" if self.dns_name else ",".join(self.urls)

    def resolve(self, own_port: int) -> list[str]:
        """The push URLs of every peer now, ourselves left out; [] if the name is unknown."""
        if self.dns_name:
            return [
                _push_url(address, self.dns_port)
                for address in addresses(self.dns_name, self.dns_port)
                if not is_own_address(address)
            ]
        return [url for url in self.urls if not _is_own_url(url, own_port)]


def parse_peers(value: str) -> Peers | None:
    """RECEIVER_PEERS as written; None when empty. Raises ConfigError naming the problem."""
    value = value.strip()
    if not value:
        return None
    if value.startswith(_DNS_PREFIX):
        name, _, port = value[len(_DNS_PREFIX) :].rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"RECEIVER_PEERS has value {value!r}: expected dns:NAME:PORT (a headless "
                "Service's name and the receiver's port, e.g. dns:tf-serving-peers:8080)"
            )
        return Peers(dns_name=name.strip("[]"), dns_port=int(port))
    urls = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"RECEIVER_PEERS has value {value!r}: {item!r} is not an http(s) URL; "
                "expected dns:NAME:PORT or a comma-separated list of peers' URLs"
            )
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ConfigError(
                f"RECEIVER_PEERS has value {value!r}: {item!r} has a bad port"
            ) from None
        path = parts.path if parts.path not in ("", "/") else PUSH_PATH
        urls.append(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
    return Peers(urls=tuple(urls)) if urls else None


def addresses(name: str, port: int) -> list[str]:
    """Every distinct address `name` resolves to (A and AAAA), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:  # unknown name, or no resolver: no peers this time, sync heals
        return []
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def is_own_address(address: str) -> bool:
    """True if this host can bind a socket to `address`: it is one of our interfaces'."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _is_own_url(url: str, own_port: int) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port != own_port or parts.hostname is None:
        return False
    return any(is_own_address(address) for address in addresses(parts.hostname, port))


def _push_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}{PUSH_PATH}"
