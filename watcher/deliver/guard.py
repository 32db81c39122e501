"""The private-address guard of ``delivery.deny_private_addresses``.

It checks the address a connection actually reached, not the name it was given, so DNS cannot
smuggle a private address in between a lookup and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import requests


class PrivateAddressError(OSError):
    """The connection reached an address that delivery.deny_private_addresses refuses."""


def _check_peer(sock: socket.socket | None) -> None:
    """Close the socket and refuse when its peer is not a public address."""
    if sock is None:
        return
    peer = ipaddress.ip_address(sock.getpeername()[0])
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if (
        peer.is_private
        or peer.is_loopback
        or peer.is_link_local
        or peer.is_reserved
        or peer.is_multicast
        or peer.is_unspecified
    ):
        sock.close()
        raise PrivateAddressError(f"refused to deliver to private address {peer}")


def _guarded_pools() -> dict[str, type[Any]]:
    """urllib3 pools whose connections check the address they actually connected to.

    Checking the socket, not the name, means DNS cannot smuggle in a private address (no
    TOCTOU between a lookup and the connect).
    """
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            _check_peer(self.sock)

    class GuardedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            _check_peer(self.sock)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose pools refuse private peers."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools()


def refused_address(exc: BaseException) -> str | None:
    """The guard's refusal inside a requests exception, wherever urllib3 wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PrivateAddressError):
            return str(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                found = refused_address(arg)
                if found:
                    return found
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            found = refused_address(reason)
            if found:
                return found
        current = current.__cause__ or current.__context__
    return None
