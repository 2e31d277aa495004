"""mediaserver: a WebRTC media server that cleans up every speaker's voice in real time."""

__version__ = "0.1.0"
