"""Pure media core: jitter buffer, libopus wrappers, the per-peer receive path, impairment.

Nothing here imports aiohttp or aiortc except ``impair.impair_peer_connection``'s wrapper.
"""
