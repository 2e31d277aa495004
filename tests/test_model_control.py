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


WALL, WALL_ISO = 1764637323.456, "2025-12-02T01:02:03.456Z"   # a wall-clock time (epoch s) and its ISO 8601


@pytest.mark.parametrize("how", ["manual", "automatic"])
def test_rolled_back_at_is_the_wall_clock_time_in_iso_8601(how: str) -> None:
    """A fresh user's trial: ``rolled_back_at`` was the loop's monotonic time (seconds since
    boot: no moment anyone can read). It is the wall-clock time the caller gives (``wall``,
    epoch s), in ISO 8601 UTC; the monotonic ``now`` only drives the window."""
    from mediaserver.enhance.telemetry import Counts

    stage = _Stage(open=[_Handle("r1", "cand")])
    stage.sli = lambda: {"cand": Counts(speech_frames=1000, checked_frames=1000, distorted_frames=900)}  # type: ignore[attr-defined]
    c = control(stage, Canary(stable="stable", candidate="cand", share=1.0))
    assert c.router.canary.describe()["rolled_back_at"] is None
    if how == "manual":
        c.rollback_request(b"", now=12.0, wall=WALL)
    else:
        stage.sli, counts = (lambda: {}), stage.sli  # type: ignore[attr-defined]
        assert c.observe(now=11.0, wall=WALL - 1.0) is None
        stage.sli = counts  # type: ignore[attr-defined]
        assert c.observe(now=12.0, wall=WALL).startswith("over-suppression")
    described = c.router.canary.describe()
    assert described["state"] == "rolled-back" and described["rolled_back_at"] == WALL_ISO, described


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
        control(stage).model_to_load(body, room="r1", live=True)
    assert refused.value.status == status and refused.value.text.startswith(text), refused.value.text


class _Models:
    def __contains__(self, name: object) -> bool:
        return name in ("stable", "cand")

    def names(self) -> list[str]:
        return ["cand", "stable"]


@pytest.mark.parametrize("body, live, answer", [
    (b'{"model": "cand"}', True, "cand"),                        # a live room: switched
    (b'{"model": "cand", "preset": true}', True, "cand"),        # (preset changes nothing then)
    (b'{"model": "cand"}', False, (404, "room 'nowhere' is not live (no participant); to choose the "
                                        'model of its next call, send {"model": "cand", "preset": true}')),
    (b'{"model": "cand", "preset": false}', False, (404, "room 'nowhere' is not live")),
    (b'{"model": "cand", "preset": true}', False, "cand"),       # the operator's explicit choice
    (b'{"model": "cand", "preset": "yes"}', False, (400, "preset must be true or false, got 'yes'")),
    (b'{"model": "nope", "preset": true}', False, (400, "unknown model 'nope'")),
])
def test_a_room_that_is_not_live_is_404_unless_the_switch_is_a_preset(body, live, answer) -> None:
    """A fresh user's trial: switching a room that does not exist answered 200 ``{"streams":
    0}`` and kept the override for good (a typo in a room name looked like a switch). The
    caller says whether the room is live (one process: it has participants; ``--workers N``:
    the front placed it on a worker); a room that is not is 404 unless the body says
    ``"preset": true``, and nothing is loaded for a refusal."""
    stage = _Stage()
    stage.models = _Models()  # type: ignore[attr-defined]
    c = control(stage)
    if isinstance(answer, str):
        assert c.model_to_load(body, room="nowhere", live=live) == answer
        return
    with pytest.raises(AdminError) as refused:
        c.model_to_load(body, room="nowhere", live=live)
    assert (refused.value.status, refused.value.text[:len(answer[1])]) == answer, refused.value.text
    assert c.router.overrides == {}


def test_an_override_is_taken_back_and_the_room_gets_the_routers_pick_again() -> None:
    """``DELETE /admin/rooms/{room}/model``: a switch or a preset made by mistake can be undone.
    The room's live streams move to what the router picks without the override (the canary's
    share while it is active, else the default), later joins too; no override is 404."""
    stage = _Stage(loaded_models=["stable", "cand", "other"], open=[_Handle("r1", "other"), _Handle("r2", "other")])
    c = control(stage, Canary(stable="stable", candidate="cand", share=1.0))
    c.router.overrides.update({"r1": "other", "r2": "other", "later": "other"})
    assert c.room_reset("r1") == {"room": "r1", "model": "cand", "streams": 1}   # the share's pick
    c.rollback_request(b"", now=1.0, wall=WALL)
    assert c.room_reset("r2") == {"room": "r2", "model": "stable", "streams": 1}  # canary gone: the default
    assert c.room_reset("later") == {"room": "later", "model": "stable", "streams": 0}
    assert stage.switches == [("r1", "cand"), ("r1", "stable"), ("r2", "stable")]   # (the rollback moved r1)
    assert c.router.overrides == {}
    with pytest.raises(AdminError) as refused:
        c.room_reset("r1")
    assert (refused.value.status, refused.value.text) == (404, "room 'r1' has no model override")


def test_a_rollback_moves_back_what_the_canary_placed_and_keeps_rooms_switched_to_it_by_hand() -> None:
    """A room switched to the candidate by hand (an override, or a preset) is an operator's
    explicit choice: a rollback moves back the streams the canary's share put on the
    candidate and leaves those rooms on it, override and streams, naming them; rooms switched
    to another model are not touched."""
    stage = _Stage(loaded_models=["stable", "cand", "other"],
                   open=[_Handle("share1", "cand"), _Handle("share2", "cand"), _Handle("byhand", "cand"),
                         _Handle("byhand", "cand"), _Handle("elsewhere", "other")])
    c = control(stage, Canary(stable="stable", candidate="cand", share=1.0))
    c.router.overrides.update({"byhand": "cand", "elsewhere": "other", "preset": "cand"})
    answer = c.rollback_request(b'{"reason": "test"}', now=1.0, wall=WALL)
    assert answer["state"] == "rolled-back" and answer["rooms_kept"] == ["byhand", "preset"], answer
    assert sorted(stage.switches) == [("share1", "stable"), ("share2", "stable")]
    assert [(h.room, h.model) for h in stage.open] == [("share1", "stable"), ("share2", "stable"), ("byhand", "cand"),
                                                        ("byhand", "cand"), ("elsewhere", "other")]
    assert c.router.overrides == {"byhand": "cand", "elsewhere": "other", "preset": "cand"}
    assert c.router.model_for("byhand") == "cand" and c.router.model_for("new-room") == "stable"


def test_the_state_comes_back_after_a_restart_and_a_rollback_stays_rolled_back() -> None:
    stage = _Stage(open=[_Handle("r1", "cand")])
    first = control(stage, Canary(stable="stable", candidate="cand", share=1.0))
    first.room_switched("r9", "cand")
    first.rollback_request(json.dumps({"reason": "bad"}), now=5.0, wall=WALL)
    assert stage.switches[-1] == ("r1", "stable")
    saved = json.loads(json.dumps(first.state()))   # (through the file's JSON)
    assert saved == {"overrides": {"r9": "cand"}, "canary": {"candidate": "cand", "state": "rolled-back",
                                                 "reason": "manual: bad", "rolled_back_at": WALL}}
    # the successor starts with the canary active again, until it takes the state back
    second = control(_Stage(), Canary(stable="stable", candidate="cand", share=1.0))
    assert second.router.model_for("new") == "cand"
    assert second.restore(saved, now=0.0) == []
    assert second.router.model_for("new") == "stable" and second.router.model_for("r9") == "cand"
    assert second.router.canary.state == "rolled-back" and second.router.canary.reason == "manual: bad"
    assert second.router.canary.describe()["rolled_back_at"] == WALL_ISO   # the rollback's time, not the restart's
    with pytest.raises(AdminError) as again:
        second.rollback_request(b"", now=1.0, wall=WALL + 60.0)
    assert (again.value.status, again.value.text) == (409, "canary is rolled-back")


def test_an_override_whose_model_is_not_loaded_is_skipped_on_restore() -> None:
    c = control(_Stage(loaded_models=["stable"]))
    skipped = c.restore({"overrides": {"r1": "gone", "r2": "stable"}, "canary": None}, now=0.0)
    assert c.router.overrides == {"r2": "stable"} and len(skipped) == 1 and "gone" in skipped[0]


def test_the_fronts_debug_view_merges_the_workers_rooms_with_their_worker_index() -> None:
    views = {1: {"rooms": {"rb": [{"identity": "b1", "model": "m"}]}},
             0: {"rooms": {"ra": [{"identity": "a1", "model": "m"}], "moved": [{"identity": "x", "model": None}]}},
             2: {"rooms": {"moved": [{"identity": "y", "model": "m"}]}}}
    assert merge_rooms(views) == {"rooms": {
        "ra": [{"identity": "a1", "model": "m", "worker_index": 0}],
        "moved": [{"identity": "x", "model": None, "worker_index": 0}, {"identity": "y", "model": "m", "worker_index": 2}],
        "rb": [{"identity": "b1", "model": "m", "worker_index": 1}]}}
