"""The live hub: one room per live session, participants behind one small interface, routing.

Nothing here knows gRPC or WebRTC. A transport is an adapter that implements `Participant`
(usually on top of `BufferedParticipant`) and hands what its client sends to `Room.receive`; the
stored session is reached only through `SessionPort`. See docs/architecture.md.
"""

from parleyd.domain.session import TransitionObserver
from parleyd.live.agent_link import AgentFactory, AgentLink, BuiltinParticipant
from parleyd.live.buffered import ALL_KINDS, BufferedParticipant
from parleyd.live.hub import Hub
from parleyd.live.participant import Participant
from parleyd.live.room import Room
from parleyd.live.session_port import SessionPort
from parleyd.live.settings import LiveSettings

__all__ = [
    "ALL_KINDS",
    "AgentFactory",
    "AgentLink",
    "BufferedParticipant",
    "BuiltinParticipant",
    "Hub",
    "LiveSettings",
    "Participant",
    "Room",
    "SessionPort",
    "TransitionObserver",
]
