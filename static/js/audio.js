// WebAudio helpers: a level meter on any stream, and playback of one remote participant with
// its own volume. Chrome only feeds remote WebRTC audio into WebAudio while the stream is also
// attached to a media element, so each remote stream gets a muted <audio> element as well.

export class LevelMeter {
  /** @param {AudioContext} ctx @param {MediaStream} stream */
  constructor(ctx, stream) {
    this.source = ctx.createMediaStreamSource(stream);
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    this.peakRms = 0;
  }

  /** RMS of the last ~20 ms (linear, 0..1). */
  rms() {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (let i = 0; i < this.buffer.length; i++) sum += this.buffer[i] * this.buffer[i];
    const rms = Math.sqrt(sum / this.buffer.length);
    if (rms > this.peakRms) this.peakRms = rms;
    return rms;
  }

  disconnect() {
    this.source.disconnect();
    this.analyser.disconnect();
  }
}

/** Map a linear RMS to a 0..1 meter position on a -60..0 dBFS scale. */
export function meterPosition(rms) {
  if (rms <= 1e-6) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db + 60) / 60));
}

export class RemoteAudio {
  /** @param {AudioContext} ctx @param {MediaStreamTrack} track */
  constructor(ctx, track) {
    this.track = track;
    this.stream = new MediaStream([track]);
    this.element = new Audio();
    this.element.autoplay = true;
    this.element.muted = true; // sound goes through WebAudio so the gain can exceed 100 %
    // (see setContextRunning for the fallback while the AudioContext is suspended)
    this.element.srcObject = this.stream;
    this.element.play().catch(() => {});
    this.meter = new LevelMeter(ctx, this.stream);
    this.gain = ctx.createGain();
    this.meter.source.connect(this.gain);
    this.gain.connect(ctx.destination);
    this.volume = 1;
    this.viaWebAudio = true;
    this.setContextRunning(ctx.state === "running");
  }

  /** @param {number} volume 0..2 (1 = unchanged) */
  setVolume(volume) {
    this.volume = volume;
    this.applyOutput();
  }

  /**
   * Play through WebAudio while the context runs (volume up to 200 %), else through the
   * element (up to 100 %): a suspended context (autoplay policy, no output device yet)
   * must not make the call silent.
   */
  setContextRunning(running) {
    if (this.viaWebAudio === running) return;
    this.viaWebAudio = running;
    this.applyOutput();
  }

  applyOutput() {
    const volume = this.volume ?? 1;
    this.gain.gain.value = this.viaWebAudio ? volume : 0;
    this.element.muted = this.viaWebAudio;
    this.element.volume = Math.min(1, volume);
  }

  close() {
    this.meter.disconnect();
    this.gain.disconnect();
    this.element.srcObject = null;
  }
}
