// The WebSocket: authenticate with the token, resume every room from the last seq seen,
// reconnect with backoff on any close (but 4001: the session ended, back to sign-in),
// ping so idle connections stay open, and take a ping left unanswered for a dead link.
// Listeners get every server frame; "state" events say connecting/connected/reconnecting.

import { api, token, wsUrl } from "./api.js";

const PING_MS = 30000;
// A link that dies without a close (the server's host cut off from the network, a laptop
// that slept) says nothing: the socket would look open, and stay silent, for as long as
// TCP or a proxy keeps it (an hour behind deploy/nginx). A ping unanswered this long
// means the socket is gone: reconnect, and resume, on whichever server answers.
const PONG_WAIT_MS = 10000;
const MAX_BACKOFF_MS = 15000;
// Close codes of docs/realtime.md: the session is over (sign in again; this token will
// never work again, so do not reconnect with it), or the account changed (reconnect now).
const CLOSE_SESSION_ENDED = 4001;
const CLOSE_RECONNECT = 4002;

export class Realtime extends EventTarget {
  constructor() {
    super();
    this.lastSeq = new Map(); // room id -> last seq handled
    this.socket = null;
    this.attempt = 0;
    this.stopped = false;
    this.pending = new Map(); // client_id -> {resolve, reject}
  }

  start() {
    this.stopped = false;
    if (!this.watching) {
      // Back online, or back to the tab: check the link now rather than at the next ping.
      this.watching = true;
      window.addEventListener("online", () => this.ping());
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.ping();
      });
    }
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    if (this.socket) this.socket.close(1000);
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  connect() {
    this.setState(this.attempt ? "reconnecting" : "connecting");
    clearTimeout(this.retry);
    clearTimeout(this.deadline);
    this.deadline = null;
    if (this.socket) this.socket.close(); // never two at once: its events are no longer ours
    const socket = new WebSocket(wsUrl());
    this.socket = socket;
    this.expectFrame(socket); // `ready` answers the auth frame; a server gone silent does not
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({
        type: "auth", token: token.get(), resume: Object.fromEntries(this.lastSeq),
      }));
    });
    socket.addEventListener("message", (event) => {
      if (this.socket === socket) this.receive(JSON.parse(event.data)); // not a given-up one's
    });
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.lost(event.code, event.reason);
    });
  }

  // The socket is gone (closed with `code`, or given up as dead): reconnect unless stopped.
  lost(code, reason = "") {
    this.socket = null;
    clearInterval(this.pinger);
    clearTimeout(this.deadline);
    this.deadline = null;
    for (const { reject } of this.pending.values()) reject(new Error("disconnected"));
    this.pending.clear();
    if (this.stopped) return;
    if (code === CLOSE_SESSION_ENDED) {
      this.stopped = true;
      token.clear();
      this.setState("signed-out");
      window.dispatchEvent(new CustomEvent("cmschat:signed-out", { detail: reason }));
      return;
    }
    if (code === CLOSE_RECONNECT) {
      this.attempt = 0;
      this.setState("reconnecting");
      this.retry = setTimeout(() => this.connect(), 100 + Math.random() * 400);
      return;
    }
    if (code === 1008) {
      // Refused: if the token has ended, api() says so (and the page signs in again);
      // otherwise (a foreign origin, say) keep retrying with backoff, never reload.
      api("GET", "/me").catch(() => {});
    }
    this.attempt += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.attempt, 5));
    this.setState("reconnecting");
    this.retry = setTimeout(() => this.connect(), delay * (0.5 + Math.random() / 2));
  }

  ping() {
    if (!this.deadline && this.send({ type: "ping" })) this.expectFrame(this.socket);
  }

  // Nothing at all from `socket` within PONG_WAIT_MS (of a ping, or of its opening): gone.
  expectFrame(socket) {
    if (this.deadline) return;
    this.deadline = setTimeout(() => {
      this.deadline = null;
      if (this.socket !== socket) return;
      socket.close(); // its close event, if one ever comes, is no longer ours
      this.lost(1006);
    }, PONG_WAIT_MS);
  }

  receive(frame) {
    clearTimeout(this.deadline); // anything heard says the link is alive
    this.deadline = null;
    if (frame.type === "ready") {
      this.attempt = 0;
      for (const [room, seq] of Object.entries(frame.rooms)) {
        if (!this.lastSeq.has(Number(room))) this.lastSeq.set(Number(room), seq);
      }
      this.pinger = setInterval(() => this.ping(), PING_MS);
      this.setState("connected");
    } else if (frame.type === "ack" && this.pending.has(frame.client_id)) {
      this.pending.get(frame.client_id).resolve(frame.message);
      this.pending.delete(frame.client_id);
    } else if (frame.type === "error" && frame.client_id && this.pending.has(frame.client_id)) {
      const error = Object.assign(new Error(frame.message), {
        code: frame.code, retryAfter: frame.retry_after,
      });
      this.pending.get(frame.client_id).reject(error);
      this.pending.delete(frame.client_id);
    }
    if (frame.room_id && frame.seq) {
      this.lastSeq.set(frame.room_id, Math.max(this.lastSeq.get(frame.room_id) || 0, frame.seq));
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // message.send with an ack; a client_id makes a retry after a reconnect safe.
  sendMessage(roomId, fields) {
    const clientId = fields.client_id || crypto.randomUUID();
    return new Promise((resolve, reject) => {
      this.pending.set(clientId, { resolve, reject });
      if (!this.send({ type: "message.send", room_id: roomId, client_id: clientId, ...fields })) {
        this.pending.delete(clientId);
        reject(new Error("not connected"));
      }
    });
  }
}
