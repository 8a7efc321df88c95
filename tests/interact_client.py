"""Moved to tests/support/interact.py; this name stays only for bench/webrtc.py, which imports it.

Tests import tests.support.interact. (bench/webrtc.py can switch to that and this file can go.)
"""

from tests.support.interact import Peer, has, is_event, join

__all__ = ["Peer", "has", "is_event", "join"]
