"""The SFU: aiohttp signalling, rooms, one media clock, encode-once fan-out."""
