"""Pure media core: jitter buffer, libopus wrappers, the per-peer receive path, impairment.

Nothing here imports aiohttp or aiortc: the hooks that apply ``impair`` and ``rtpfault`` to an
aiortc peer live in ``mediaserver/patches.py``.
"""
