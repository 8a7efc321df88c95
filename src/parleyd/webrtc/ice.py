"""ICE configuration of the bridge: STUN/TURN servers and the host addresses it offers.

`PARLEYD_ICE_SERVERS` is a comma-separated list of URLs; a TURN URL may carry its credentials as
`turn:USER:PASSWORD@HOST:PORT` (the `?transport=` query is kept). With no servers the bridge
offers host candidates only (and never falls back to aiortc's built-in public STUN server).

`PARLEYD_WEBRTC_HOST_ADDRESSES` fixes the host addresses the bridge offers. aioice enumerates the
machine's interfaces and leaves out 127.0.0.1; tests and single-machine setups set `127.0.0.1`
so that every packet stays on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aiortc import RTCConfiguration, RTCIceServer

_TURN_CREDS = re.compile(r"^(turns?):([^:@/]+):([^@/]+)@(.+)$")


def parse_ice_servers(value: str) -> list[RTCIceServer]:
    """`stun:h:3478,turn:user:pass@h:3478?transport=udp` -> RTCIceServer list; '' -> []."""
    servers: list[RTCIceServer] = []
    for raw in (v.strip() for v in value.split(",")):
        if not raw:
            continue
        if not raw.startswith(("stun:", "turn:", "turns:")):
            raise ValueError(f"ICE server {raw!r} must start with stun:, turn: or turns:")
        m = _TURN_CREDS.match(raw)
        if m:
            scheme, user, password, rest = m.groups()
            servers.append(
                RTCIceServer(urls=f"{scheme}:{rest}", username=user, credential=password)
            )
        else:
            servers.append(RTCIceServer(urls=raw))
    return servers


def parse_host_addresses(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def rtc_configuration(ice_servers: Sequence[RTCIceServer]) -> RTCConfiguration:
    # An explicit list, even empty: aiortc's default is a public STUN server.
    return RTCConfiguration(iceServers=list(ice_servers))


_host_addresses: list[str] | None = None
_installed = False


def set_host_addresses(addresses: Sequence[str]) -> None:
    """Makes every aioice connection of this process offer exactly `addresses` ([]: the default).

    aioice has no per-connection option for this; it asks `aioice.ice.get_host_addresses`, so the
    bridge replaces that function once. One process serves one bridge, so this is process-wide.
    """
    global _host_addresses, _installed
    _host_addresses = list(addresses) or None
    if _installed:
        return
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if _host_addresses is None:
            result: list[str] = original(use_ipv4, use_ipv6)
            return result
        return [
            a for a in _host_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)
        ]

    aioice.ice.get_host_addresses = host_addresses
    _installed = True
