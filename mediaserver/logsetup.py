"""The one logging set-up of every ``mediaserver`` process (no heavy imports: the CLI's first lines).

``serve --workers N`` is a front, N media workers and one shared inference process writing to
the same stderr. Each child's lines carry its name, the ``worker`` label of its ``/metrics``
series (``LABEL-wN``, ``LABEL-enhancer``; ``LABEL``: ``--worker-id``, default the host name),
in brackets after the level; the front's own lines, and a single-process server's, have none::

    2026-12-02 07:12:24,452 INFO [host-w1] mediaserver.sfu.server: media clock started
    2026-12-02 07:12:24,453 INFO mediaserver.workers.process: media worker 0 (pid 29066) listening ...
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

# Set by the front in each media worker's environment (workers/process.py): worker N's index.
WORKER_INDEX_ENV = "MEDIASERVER_WORKER_INDEX"


def log_format(process_name: Optional[str] = None) -> str:
    """The ``logging`` format of every line: time, level, ``[process_name]`` when given, the
    logger's name, the message."""
    tag = f"[{process_name.replace('%', '%%')}] " if process_name else ""
    return f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"


def worker_process_name(worker_id: Optional[str]) -> Optional[str]:
    """This process's name when a front started it as a media worker (its ``--worker-id``,
    ``LABEL-wN``, or ``wN`` without one), else None (a front, a single process, a tool)."""
    index = os.environ.get(WORKER_INDEX_ENV)
    if not index:
        return None
    return worker_id or f"w{index}"


def configure_logging(level: str, *, process_name: Optional[str] = None) -> None:
    """Log to stderr at ``level`` (a level name), each line tagged with ``process_name``
    (:func:`log_format`). aioice's per-candidate-pair INFO lines are kept out unless DEBUG."""
    logging.basicConfig(level=level.upper(), format=log_format(process_name), stream=sys.stderr)
    if logging.getLogger().level > logging.DEBUG:
        # aioice logs every candidate-pair state change at INFO: noise unless debugging ICE
        logging.getLogger("aioice").setLevel(logging.WARNING)
