"""The front's ``/metrics``: every worker's series with a ``worker`` label, plus its own.

Each worker keeps its own prometheus-client registry (counters stay per process, as with
several nodes); the front scrapes them over loopback at each scrape and merges the families
(``prometheus_client.parser``), so one scrape of the front shows the machine. A series that
already has a ``worker`` label (the enhancer's) keeps it: the front starts each worker with
``--worker-id HOST-wN``, the same name it adds to the others. A worker that is down at
scrape time is missing from that scrape (and ``mediaserver_front_worker_up`` says so).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families


class FrontMetrics:
    """The front's own ``mediaserver_front_*`` series. A series about one worker carries its
    ``worker`` label (``LABEL-wN``, :func:`.front.worker_name`), as that worker's own series do
    once merged: one label names a worker in every series of the scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker_up = Gauge("mediaserver_front_worker_up", "1 while the media worker runs",
                               ["worker"], registry=self.registry)
        self.worker_restarts = Counter("mediaserver_front_worker_restarts",
                                       "media workers that exited unasked (crash, kill) and were restarted",
                                       ["worker"], registry=self.registry)
        self.relayed = Counter("mediaserver_front_relayed_sockets",
                               "/ws sockets relayed to each media worker", ["worker"],
                               registry=self.registry)
        self.lost_sockets = Counter("mediaserver_front_worker_lost_sockets",
                                    "relayed sockets whose worker died under them (told to reconnect)",
                                    registry=self.registry)
        self.enhancer_restarts = Counter("mediaserver_front_enhancer_restarts",
                                         "times the shared inference process died and was restarted",
                                         registry=self.registry)
        self.refusals = Counter("mediaserver_front_refusals",
                                "/ws upgrades the front refused, by limit", ["limit"],
                                registry=self.registry)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _Merged:
    """A collector over already-parsed families (what ``generate_latest`` renders)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_worker_metrics(texts: dict[str, str]) -> str:
    """Merge worker expositions ``{worker name: text}`` into one, each sample labelled
    ``worker=<name>`` unless it has a ``worker`` label already. Raises ValueError on text
    that is not the Prometheus exposition format."""
    families: dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            for sample in family.samples:
                labels = dict(sample.labels)
                labels.setdefault("worker", worker)
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry).decode()
