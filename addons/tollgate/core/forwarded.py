"""The client's address behind a load balancer: X-Forwarded-For, believed only from configured balancer addresses.

mitmproxy 12.2 has no PROXY-protocol listener, so a balancer in HTTP mode (HAProxy `mode http` with `option
forwardfor`) adds X-Forwarded-For to the CONNECT request of each tunnel and to each plain request. The balancer
appends the address it saw, so the last address listed is the one to believe; anything before it came from the
client and proves nothing."""

from __future__ import annotations

import ipaddress

from .schema import ConfigError, list_of, string

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(node, path: str = "gateway.trusted_proxies") -> tuple[Network, ...]:
    networks = []
    for i, item in enumerate(list_of(node, path)):
        text = string(item, f"{path}[{i}]")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{path}[{i}]: expected an address or network (10.0.0.0/8), got {text!r}") from None
    return tuple(networks)


def is_trusted(peer: str, trusted: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def forwarded_client(values: list[str]) -> str | None:
    """The address the balancer added: the last one of every X-Forwarded-For value, if it is an address."""
    addresses = [a.strip() for value in values for a in value.split(",") if a.strip()]
    if not addresses:
        return None
    try:
        return str(ipaddress.ip_address(addresses[-1]))
    except ValueError:
        return None
