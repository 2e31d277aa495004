// The participant list: one card per person with speaking indicator, level, volume and captions.
// Holds the per-person state the UI (and the browser test, via window.mediaserver.state()) reads.

import { meterPosition, RemoteAudio } from "./audio.js";
import { fmt } from "./stats.js";

const MAX_CAPTIONS = 3;

class ParticipantCard {
  constructor(identity, { self = false, muted = false } = {}, template, onVolume) {
    this.identity = identity;
    this.self = self;
    this.muted = muted;
    this.speaking = false;
    this.serverLevel = 0;
    this.rms = 0;
    this.peakRms = 0;
    this.volume = 1;
    this.captions = [];
    this.captionLog = [];
    this.partial = false;
    this.unstable = "";
    this.inbound = null;
    this.remote = null;

    this.el = template.content.firstElementChild.cloneNode(true);
    this.el.dataset.identity = identity;
    this.el.querySelector(".name").textContent = identity;
    this.el.querySelector(".me-badge").hidden = !self;
    this.fill = this.el.querySelector(".fill");
    this.rx = this.el.querySelector(".rx");
    this.captionBox = this.el.querySelector(".captions");
    const volume = this.el.querySelector(".volume");
    if (self) {
      volume.remove();
    } else {
      const slider = volume.querySelector("input");
      const out = volume.querySelector("output");
      slider.setAttribute("aria-label", `volume of ${identity}`);
      slider.addEventListener("input", () => {
        this.volume = Number(slider.value) / 100;
        out.textContent = `${slider.value}%`;
        if (this.remote) this.remote.setVolume(this.volume);
        onVolume(identity, this.volume);
      });
    }
    this.setMuted(muted);
  }

  setMuted(muted) {
    this.muted = Boolean(muted);
    this.el.querySelector(".muted-badge").hidden = !this.muted;
  }

  setSpeaking(speaking, level) {
    this.speaking = Boolean(speaking);
    if (typeof level === "number") this.serverLevel = level;
    this.el.classList.toggle("speaking", this.speaking);
  }

  // A partial (final=false) shows the words so far in a provisional line that the next
  // partial or the final caption replaces: its stable words, then its unstable words (the
  // newest guess, which may still change) in a fainter span.
  addCaption(text, final = true, unstable = "") {
    // what arrived, in order (bounded), so a test can tell partials came before the final
    const tail = final ? "" : unstable || "";
    this.captionLog.push({ text, final: Boolean(final), unstable: tail });
    if (this.captionLog.length > 50) this.captionLog.shift();
    if (this.partial) this.captions.pop();
    this.captions.push([text, tail].filter(Boolean).join(" "));
    this.partial = !final;
    this.unstable = tail;
    if (this.captions.length > MAX_CAPTIONS) this.captions.shift();
    const last = this.captions.length - 1;
    this.captionBox.replaceChildren(
      ...this.captions.map((t, i) => {
        const p = document.createElement("p");
        if (i === last && this.partial) {
          p.className = "partial";
          if (text) p.append(text);
          if (tail) {
            const span = document.createElement("span");
            span.className = "unstable";
            span.textContent = tail;
            p.append(text ? " " : "", span);
          }
        } else {
          p.textContent = t;
        }
        return p;
      }),
    );
  }

  attach(ctx, track) {
    if (this.remote && this.remote.track === track) return;
    this.detach();
    this.remote = new RemoteAudio(ctx, track);
    this.remote.setVolume(this.volume);
  }

  detach() {
    if (this.remote) this.remote.close();
    this.remote = null;
  }

  /** Refresh the meter: local analyser level when we have one, else the server's level. */
  draw(localRms) {
    if (typeof localRms === "number") {
      this.rms = localRms;
      this.peakRms = Math.max(this.peakRms, localRms);
    }
    const pos = typeof localRms === "number" ? meterPosition(localRms) : this.serverLevel;
    this.fill.style.width = `${Math.round(pos * 100)}%`;
  }

  showInbound(inbound) {
    this.inbound = inbound;
    if (!inbound) return;
    this.rx.textContent =
      `${inbound.packetsReceived} pkts · loss ${fmt(inbound.lossPct, 1, "%")}` +
      ` · jitter ${fmt(inbound.jitterMs, 0, " ms")} · buffer ${fmt(inbound.jitterBufferMs, 0, " ms")}`;
  }

  snapshot() {
    return {
      identity: this.identity,
      self: this.self,
      muted: this.muted,
      speaking: this.speaking,
      serverLevel: this.serverLevel,
      rms: this.rms,
      peakRms: this.peakRms,
      volume: this.volume,
      hasTrack: Boolean(this.remote),
      inbound: this.inbound,
      captions: [...this.captions],
      partial: Boolean(this.partial),
      partialLine: this.captionBox.querySelector("p.partial")?.textContent ?? null,
      unstableLine: this.captionBox.querySelector("p.partial span.unstable")?.textContent ?? null,
      captionLog: [...this.captionLog],
    };
  }
}

export class ParticipantList {
  /** @param {HTMLElement} listEl @param {HTMLTemplateElement} template */
  constructor(listEl, template) {
    this.listEl = listEl;
    this.template = template;
    /** @type {Map<string, ParticipantCard>} */
    this.cards = new Map();
  }

  ensure(identity, opts = {}) {
    let card = this.cards.get(identity);
    if (!card) {
      card = new ParticipantCard(identity, opts, this.template, () => {});
      this.cards.set(identity, card);
      if (opts.self) this.listEl.prepend(card.el);
      else this.listEl.append(card.el);
    } else if ("muted" in opts) {
      card.setMuted(opts.muted);
    }
    return card;
  }

  get(identity) {
    return this.cards.get(identity);
  }

  remove(identity) {
    const card = this.cards.get(identity);
    if (!card) return;
    card.detach();
    card.el.remove();
    this.cards.delete(identity);
  }

  clear() {
    for (const identity of [...this.cards.keys()]) this.remove(identity);
  }

  snapshot() {
    return [...this.cards.values()].map((c) => c.snapshot());
  }
}
