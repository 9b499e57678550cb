"""The WebSocket door: Voice Verify's WebSocket protocol (Twilio Media Streams' wire format).

:mod:`.protocol` holds the typed wire messages, :mod:`.connection` the handling of one connection and its
streams; the endpoint and its authentication are in :mod:`voxgate.api.routers.websocket`.
"""
