"""The model admin's logic without I/O (enhance/model_control.py) and the front's /debug merge
(workers/debug_relay.merge_rooms): tables, no processes.

The stage here is a recording fake with the surface ``ModelControl`` uses (loaded models,
handles by model, switch); the real stage's switch is tested in test_model_switch.py and the
whole path through the front in test_workers_admin.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pytest

from mediaserver.enhance.canary import Canary, ModelRouter
from mediaserver.enhance.model_control import AdminError, ModelControl
from mediaserver.workers.debug_relay import merge_rooms


@dataclass
class _Handle:
    room: str
    model: str


@dataclass
class _Stage:
    model_version: str = "stable"
    loaded_models: list[str] = field(default_factory=lambda: ["stable", "cand"])
    open: list[_Handle] = field(default_factory=list)
    switches: list[tuple[str, str]] = field(default_factory=list)

    def handles(self, model: Optional[str] = None) -> list[_Handle]:
        return [h for h in self.open if model is None or h.model == model]

    def switch(self, handle: _Handle, model: str) -> None:
        self.switches.append((handle.room, model))
        handle.model = model


def control(stage: _Stage, canary: Optional[Canary] = None) -> ModelControl:
    return ModelControl(stage=stage, router=ModelRouter("stable", canary), registry=None,
                        room_handles=lambda room: [h for h in stage.open if h.room == room])


def test_a_room_switch_moves_only_that_rooms_streams_and_sticks_for_later_joins() -> None:
    stage = _Stage(open=[_Handle("r1", "stable"), _Handle("r1", "stable"), _Handle("r2", "stable")])
    c = control(stage)
    assert c.room_switched("r1", "cand") == {"room": "r1", "model": "cand", "streams": 2}
    assert stage.switches == [("r1", "cand"), ("r1", "cand")]
    assert c.router.model_for("r1") == "cand" and c.router.model_for("r2") == "stable"


@pytest.mark.parametrize("body, status, text", [
    (b"", 400, "body must be JSON"), (b"{oops", 400, "body must be JSON"),
    (b'{"model": 3}', 400, "unknown model 3"), (b"[]", 400, "unknown model None"),
])
def test_a_bad_room_model_request_is_refused_with_the_single_process_text(body, status, text) -> None:
    class _Models:
        def __contains__(self, name: object) -> bool:
            return name in ("stable", "cand")

        def names(self) -> list[str]:
            return ["cand", "stable"]

    stage = _Stage()
    stage.models = _Models()  # type: ignore[attr-defined]
    with pytest.raises(AdminError) as refused:
        control(stage).model_to_load(body)
    assert refused.value.status == status and refused.value.text.startswith(text), refused.value.text


def test_the_state_comes_back_after_a_restart_and_a_rollback_stays_rolled_back() -> None:
    stage = _Stage(open=[_Handle("r1", "cand")])
    first = control(stage, Canary(stable="stable", candidate="cand", share=1.0))
    first.room_switched("r9", "cand")
    first.rollback_request(json.dumps({"reason": "bad"}), now=5.0)
    assert stage.switches[-1] == ("r1", "stable")
    saved = json.loads(json.dumps(first.state()))   # (through the file's JSON)
    assert saved == {"overrides": {}, "canary": {"candidate": "cand", "state": "rolled-back",
                                                 "reason": "manual: bad"}}
    # the successor starts with the canary active again, until it takes the state back
    second = control(_Stage(), Canary(stable="stable", candidate="cand", share=1.0))
    assert second.router.model_for("new") == "cand"
    assert second.restore(saved, now=0.0) == []
    assert second.router.model_for("new") == "stable"
    assert second.router.canary.state == "rolled-back" and second.router.canary.reason == "manual: bad"
    with pytest.raises(AdminError) as again:
        second.rollback_request(b"", now=1.0)
    assert (again.value.status, again.value.text) == (409, "canary is rolled-back")


def test_an_override_whose_model_is_not_loaded_is_skipped_on_restore() -> None:
    c = control(_Stage(loaded_models=["stable"]))
    skipped = c.restore({"overrides": {"r1": "gone", "r2": "stable"}, "canary": None}, now=0.0)
    assert c.router.overrides == {"r2": "stable"} and len(skipped) == 1 and "gone" in skipped[0]


def test_the_fronts_debug_view_merges_the_workers_rooms_with_their_worker() -> None:
    views = {1: {"rooms": {"rb": [{"identity": "b1", "model": "m"}]}},
             0: {"rooms": {"ra": [{"identity": "a1", "model": "m"}], "moved": [{"identity": "x", "model": None}]}},
             2: {"rooms": {"moved": [{"identity": "y", "model": "m"}]}}}
    assert merge_rooms(views) == {"rooms": {
        "ra": [{"identity": "a1", "model": "m", "worker": 0}],
        "moved": [{"identity": "x", "model": None, "worker": 0}, {"identity": "y", "model": "m", "worker": 2}],
        "rb": [{"identity": "b1", "model": "m", "worker": 1}]}}
