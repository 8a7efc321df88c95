"""The live hub: one room per live session, participants behind one small interface, routing.

Nothing here knows gRPC or WebRTC. A transport is an adapter that implements `Participant`.
"""
