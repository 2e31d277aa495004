"""``mediaserver cluster --redis-url URL``: the cluster as Redis sees it (same JSON as
``GET /cluster``: live nodes with their load and rooms, and every room's claim)."""

from __future__ import annotations

import argparse
import asyncio
import json

from redis.exceptions import RedisError

from ..config import UsageError, add_option, print_problem, redis_url
from .node import snapshot
from .registry import RedisRegistry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--redis-url", default=None, type=redis_url,
               help="the Redis the cluster's nodes share")


async def view(url: str) -> dict:
    registry = RedisRegistry(url, timeout_s=2.0)
    try:
        return await snapshot(registry)
    finally:
        await registry.close()


def main(args: argparse.Namespace) -> int:
    if not args.redis_url:
        raise UsageError("--redis-url is required")
    try:
        print(json.dumps(asyncio.run(view(args.redis_url)), indent=2))
    except (RedisError, OSError, ValueError) as exc:
        print_problem(args, f"cannot read the cluster from {args.redis_url}: {exc}")
        return 1
    return 0
