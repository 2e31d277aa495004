// WebSocket signalling: JSON messages on /ws (docs/ARCHITECTURE.md, "Signalling protocol").
// One job: turn the socket into typed events and a send() that refuses to write to a dead socket.

export class Signalling extends EventTarget {
  /** @param {string} url ws:// or wss:// address of the server's /ws endpoint */
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
  }

  /** Open the socket; resolves once it is open, rejects if it cannot be opened. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot reach ${this.url}`));
      ws.onclose = (ev) => {
        this.dispatchEvent(new CustomEvent("close", { detail: { code: ev.code, reason: ev.reason } }));
      };
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (err) {
          console.warn("ignoring non-JSON signalling message", err);
          return;
        }
        if (msg && typeof msg.type === "string") {
          this.dispatchEvent(new CustomEvent("message", { detail: msg }));
        }
      };
    });
  }

  /** Send one JSON message; returns false when the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
  }
}

/** The /ws address on the server that served this page. */
export function defaultSignallingUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}
