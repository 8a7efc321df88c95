"""The WebRTC bridge: browsers join a session's room as live peers (aiortc).

A browser peer is a room `Participant` like a gRPC stream: `peer.py` adapts it (mic in, AI voice,
avatar video and JSON events out), `tracks.py` turns hub frames into paced media tracks,
`signalling.py` serves the SDP offer/answer exchange and the demo page over HTTP (aiohttp, on the
server's own event loop), and `ice.py` holds the ICE configuration.
"""

from parleyd.webrtc.signalling import Bridge, HttpServer

__all__ = ["Bridge", "HttpServer"]
