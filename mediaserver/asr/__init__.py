"""Speech recognition sinks: the server's per-participant audio cut into speech segments.

The media clock hands every participant's 20 ms frame to ``AsrHub.on_frame``; the hub
picks the configured feed (raw, enhanced or a mix), decimates it to 16 kHz, cuts speech
segments with a VAD and hands them to sinks (local recogniser, WebSocket, Redis, WAV).
Transcripts come back to the hub, which keeps them per room and tells the server.
Heavy imports (faster-whisper, redis, aiohttp) live in the sink modules, loaded on use.
"""
