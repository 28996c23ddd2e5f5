// The composer: text with the markdown subset, Enter to send, replies, edits,
// @mention and /canned-reply suggestions, and attachments with an upload progress bar.

import { api, upload } from "./api.js";
import { h, clear, plainText } from "./dom.js";
import { t } from "./i18n.js";

const TYPING_EVERY_MS = 2000;
// A send over the size limit: refused as a WebSocket frame, or as an HTTP body (an edit,
// or a send while the socket is down).
const TOO_LARGE = new Set(["frame_too_large", "too_large"]);

export class Composer {
  constructor({ onSend, onTyping, members, cannedReplies }) {
    this.onSend = onSend;
    this.onTyping = onTyping;
    this.members = members; // () => [{id, username, display_name}]
    this.cannedReplies = cannedReplies; // () => [{shortcut, title, body}]
    this.roomId = null;
    this.replyTo = null;
    this.editing = null;
    this.files = [];
    this.lastTyping = 0;

    this.input = h("textarea", {
      id: "composer-input", rows: 1, placeholder: t("writeMessage"), "aria-label": t("writeMessage"),
      "aria-autocomplete": "list", "aria-controls": "suggestions",
    });
    this.suggestions = h("ul", { id: "suggestions", class: "suggestions", role: "listbox", hidden: true });
    this.context = h("div", { class: "composer-context", hidden: true });
    this.progress = h("progress", { class: "upload-progress", max: 1, value: 0, hidden: true });
    this.pendingFiles = h("ul", { class: "pending-files" });
    this.fileInput = h("input", { type: "file", id: "file-input", class: "visually-hidden", multiple: true });
    this.error = h("p", { class: "form-error", role: "alert" });
    this.attachLabel = h("label", { for: "file-input", class: "button", title: t("attach") }, t("attachShort"));
    this.sendButton = h("button", { type: "submit", class: "primary" }, t("send"));
    this.el = h("form", { class: "composer", "aria-label": t("send") },
      this.context, this.pendingFiles, this.progress, this.error, this.suggestions,
      h("div", { class: "composer-row" }, this.attachLabel, this.fileInput, this.input, this.sendButton));

    this.el.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    this.input.addEventListener("keydown", (e) => this.keydown(e));
    this.input.addEventListener("input", () => this.changed());
    this.fileInput.addEventListener("change", () => this.attach([...this.fileInput.files]));
    this.setRoom(null);
  }

  // Without a room there is nowhere to send or upload to: everything is disabled, and the
  // placeholder says why (instead of a request to /rooms/null and a raw validation error).
  setRoom(roomId) {
    this.roomId = roomId;
    this.cancelContext();
    this.files = [];
    this.renderFiles();
    this.input.value = "";
    this.error.textContent = "";
    const none = roomId === null || roomId === undefined;
    for (const el of [this.input, this.sendButton, this.fileInput]) el.disabled = none;
    this.attachLabel.setAttribute("aria-disabled", String(none));
    this.input.placeholder = none ? t("noRoomToSend") : t("writeMessage");
  }

  focus() { this.input.focus(); }

  replyingTo(message) {
    this.editing = null;
    this.replyTo = message;
    this.showContext(`${t("replyingTo")} ${message.author ? message.author.display_name : ""}: ${plainText(message.content_html).slice(0, 80)}`);
    this.focus();
  }

  edit(message) {
    this.replyTo = null;
    this.editing = message;
    this.input.value = message.content;
    this.showContext(t("edit"));
    this.focus();
  }

  showContext(text) {
    clear(this.context, h("span", {}, text),
      h("button", { type: "button", class: "link", onclick: () => this.cancelContext() }, t("cancel")));
    this.context.hidden = false;
  }

  cancelContext() {
    if (this.editing) this.input.value = "";
    this.replyTo = null;
    this.editing = null;
    this.context.hidden = true;
  }

  async attach(files) {
    if (!this.roomId) return;
    this.error.textContent = "";
    for (const file of files) {
      this.progress.hidden = false;
      this.progress.value = 0;
      try {
        const stored = await upload(this.roomId, file, (share) => { this.progress.value = share; });
        this.files.push(stored);
      } catch (e) {
        this.error.textContent = t("uploadFailed", { reason: e.message });
      }
    }
    this.progress.hidden = true;
    this.fileInput.value = "";
    this.renderFiles();
  }

  renderFiles() {
    clear(this.pendingFiles, this.files.map((file) => h("li", {},
      h("span", {}, file.filename),
      h("button", {
        type: "button", class: "link", "aria-label": `${t("delete")} ${file.filename}`,
        onclick: () => { this.files = this.files.filter((f) => f !== file); this.renderFiles(); },
      }, "×"))));
  }

  async submit() {
    const content = this.input.value.trim();
    if (!this.roomId || (!content && !this.files.length)) return;
    this.error.textContent = "";
    try {
      if (this.editing) {
        await api("PATCH", `/messages/${this.editing.id}`, { body: { content } });
      } else {
        await this.onSend({
          content, reply_to: this.replyTo ? this.replyTo.id : undefined,
          attachment_ids: this.files.map((f) => f.id),
        });
        this.files = [];
        this.renderFiles();
      }
      this.input.value = "";
      this.cancelContext();
      this.hideSuggestions();
    } catch (e) {
      // The text stays in the box, so nothing is lost: the user sends it again.
      this.error.textContent = e.code === "rate_limited"
        ? t("sendingTooFast", { seconds: e.retryAfter || 1 })
        : TOO_LARGE.has(e.code) ? t("messageTooLong") : e.message;
    }
  }

  keydown(event) {
    if (!this.suggestions.hidden) {
      const items = [...this.suggestions.children];
      const active = items.findIndex((li) => li.getAttribute("aria-selected") === "true");
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const next = (active + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
        items.forEach((li, i) => li.setAttribute("aria-selected", String(i === next)));
        return;
      }
      if ((event.key === "Enter" || event.key === "Tab") && active >= 0) {
        event.preventDefault();
        items[active].click();
        return;
      }
      if (event.key === "Escape") { this.hideSuggestions(); return; }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.submit();
    } else if (event.key === "Escape") {
      this.cancelContext();
    }
  }

  changed() {
    const now = Date.now();
    if (now - this.lastTyping > TYPING_EVERY_MS && this.input.value) {
      this.lastTyping = now;
      this.onTyping();
    }
    this.suggest();
  }

  // "@pre" before the caret suggests members; "/pre" at the start suggests canned replies.
  suggest() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const mention = before.match(/(?:^|\s)@([\w.-]*)$/);
    const canned = before.match(/^\/([\w-]*)$/);
    if (mention) {
      const prefix = mention[1].toLowerCase();
      const found = this.members().filter((m) => m.username.startsWith(prefix)
        || m.display_name.toLowerCase().startsWith(prefix)).slice(0, 8);
      this.showSuggestions(found.map((m) => ({
        label: `@${m.username}`, detail: m.display_name,
        apply: () => this.replaceBeforeCaret(mention[1].length + 1, `@${m.username} `),
      })));
    } else if (canned && this.cannedReplies().length) {
      const prefix = canned[1].toLowerCase();
      const found = this.cannedReplies().filter((r) => r.shortcut.startsWith(prefix)).slice(0, 8);
      this.showSuggestions(found.map((r) => ({
        label: `/${r.shortcut}`, detail: r.title,
        apply: () => { this.input.value = r.body; },
      })));
    } else {
      this.hideSuggestions();
    }
  }

  replaceBeforeCaret(length, text) {
    const caret = this.input.selectionStart;
    const value = this.input.value;
    this.input.value = value.slice(0, caret - length) + text + value.slice(caret);
    const at = caret - length + text.length;
    this.input.setSelectionRange(at, at);
  }

  showSuggestions(items) {
    if (!items.length) { this.hideSuggestions(); return; }
    clear(this.suggestions, items.map((item, i) => h("li", {
      role: "option", "aria-selected": String(i === 0),
      onmousedown: (e) => e.preventDefault(),
      onclick: () => { item.apply(); this.hideSuggestions(); this.focus(); },
    }, h("strong", {}, item.label), " ", h("span", { class: "muted" }, item.detail))));
    this.suggestions.hidden = false;
  }

  hideSuggestions() {
    this.suggestions.hidden = true;
    clear(this.suggestions);
  }
}
