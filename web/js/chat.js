// The chat client: rooms, history, live events, search, notices, presence.

import { api, fileUrl, loadConfig } from "./api.js";
import { currentUser, signOut } from "./auth.js";
import { Composer } from "./composer.js";
import { $, clear, formatBytes, formatTime, h, plainText, trustedHtml } from "./dom.js";
import { LANGUAGES, lang, setLanguage, t } from "./i18n.js";
import { Realtime } from "./realtime.js";

const PAGE = 50;
const TYPING_SHOWN_MS = 5000;
const DISMISSED_KEY = "cmschat.dismissedNotices";

const state = {
  me: null,
  rooms: new Map(), // id -> room (as GET /rooms gives it)
  current: null,
  searching: false, // the message list shows search results, not the room
  history: new Map(), // room id -> {items: [ascending by seq], complete, loaded}
  online: new Set(),
  typing: new Map(), // room id -> Map(user id -> {name, timer})
  notices: [],
  canned: [],
};

const realtime = new Realtime();
const ui = {};

async function main() {
  await loadConfig();
  const root = $("#app");
  window.addEventListener("cmschat:signed-out", () => window.location.reload());
  state.me = await currentUser(root);
  buildLayout(root);
  await Promise.all([loadRooms(), loadNotices(), loadCannedReplies()]);
  realtime.addEventListener("state", (e) => showConnection(e.detail));
  realtime.addEventListener("frame", (e) => handleFrame(e.detail));
  realtime.start();
  const first = [...state.rooms.keys()][0];
  if (first) await openRoom(first);
}

// -- layout ------------------------------------------------------------------------

function buildLayout(root) {
  ui.connection = h("span", { class: "connection", role: "status", "aria-live": "polite" }, t("connecting"));
  ui.search = h("input", { type: "search", id: "search", placeholder: t("search"), "aria-label": t("search") });
  const langSelect = h("select", { "aria-label": t("language"), onchange: (e) => setLanguage(e.target.value) },
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: code === lang }, name)));
  const header = h("header", { class: "topbar" },
    h("button", { class: "icon menu-toggle", "aria-label": t("rooms"), onclick: () => root.classList.toggle("show-rooms") }, "☰"),
    h("strong", { class: "brand" }, t("appName")),
    h("form", { class: "search-form", role: "search", onsubmit: (e) => { e.preventDefault(); search(ui.search.value); } }, ui.search),
    ui.connection,
    langSelect,
    state.me.role === "admin" ? h("a", { href: "console.html", class: "button" }, t("console")) : null,
    h("span", { class: "me" }, state.me.display_name),
    h("button", { class: "link", onclick: signOut }, t("signOut")));
  ui.notice = h("div", { class: "notice-banner", role: "region", "aria-label": t("notices"), hidden: true });
  ui.roomList = h("ul", { class: "room-list", "aria-label": t("rooms") });
  const sidebar = h("nav", { class: "sidebar", "aria-label": t("rooms") },
    h("div", { class: "sidebar-head" }, h("h2", {}, t("rooms")),
      h("div", { class: "row" },
        h("button", { class: "button", onclick: openChannelsDialog }, t("channels")),
        h("button", { class: "button", onclick: openNewRoomDialog }, "+ " + t("newRoom")))),
    ui.roomList);
  ui.roomTitle = h("h2", { class: "room-title" });
  ui.roomMeta = h("p", { class: "room-meta muted" });
  ui.messages = h("ol", { class: "messages", "aria-live": "polite", tabindex: 0 });
  ui.typing = h("p", { class: "typing muted", "aria-live": "polite" });
  ui.composer = new Composer({
    onSend: (fields) => {
      // One client_id for both tries: if the frame reached the server before the socket
      // dropped, the HTTP retry gets that same message back instead of storing a second.
      const room = state.current;
      if (!room) return Promise.reject(new Error(t("noRoomToSend"))); // the composer is disabled then
      const message = { ...fields, client_id: crypto.randomUUID() };
      const attempt = (tries) => realtime.sendMessage(room, message).catch(async (e) => {
        // HTTP shares the send budget and has the same size limit: it would refuse too.
        if (e.code === "rate_limited" || e.code === "frame_too_large") throw e;
        if (e.code === "busy" && tries > 0) {
          // The server is at capacity and stored nothing: wait as it says, then try again.
          await new Promise((done) => setTimeout(done, (e.retryAfter || 1) * 1000));
          return attempt(tries - 1);
        }
        return api("POST", `/rooms/${room}/messages`, { body: message });
      });
      return attempt(3);
    },
    onTyping: () => realtime.send({ type: "typing", room_id: state.current }),
    members: () => (state.rooms.get(state.current) || { members: [] }).members.map((m) => m.user),
    cannedReplies: () => state.canned,
  });
  ui.main = h("section", { class: "room", "aria-labelledby": "room-title" },
    h("div", { class: "room-head" }, ui.roomTitle, ui.roomMeta),
    ui.messages, ui.typing, ui.composer.el);
  ui.roomTitle.id = "room-title";
  ui.messages.addEventListener("scroll", () => {
    if (ui.messages.scrollTop < 80) loadOlder(state.current);
  });
  clear(root, header, ui.notice, h("div", { class: "layout" }, sidebar, ui.main));
  root.classList.add("chat");
  renderEmptyState();
}

// No room open: with rooms, say to pick one; with none at all, offer the two ways in.
function renderEmptyState() {
  if (state.current || state.searching) return;
  ui.composer.setRoom(null);
  ui.roomTitle.textContent = "";
  ui.roomMeta.textContent = "";
  if (state.rooms.size) {
    clear(ui.messages, h("li", { class: "empty muted" }, t("noRoom")));
    return;
  }
  clear(ui.messages, h("li", { class: "empty no-rooms" },
    h("p", { class: "empty-title" }, t("noRoomsYet")),
    h("p", { class: "muted" }, t("noRoomsHint")),
    h("div", { class: "row empty-actions" },
      h("button", { class: "primary", onclick: openNewRoomDialog }, t("startConversation")),
      h("button", { class: "button", onclick: openChannelsDialog }, t("browseChannels")))));
}

function showConnection(status) {
  ui.connection.textContent = t(status === "signed-out" ? "connecting" : status);
  ui.connection.dataset.state = status;
}

// -- rooms -------------------------------------------------------------------------

async function loadRooms() {
  const page = await api("GET", "/rooms");
  state.rooms = new Map(page.items.map((room) => [room.id, room]));
  renderRooms();
  renderEmptyState();
}

function roomName(room) {
  if (room.kind !== "direct") return room.name;
  const other = room.members.find((m) => m.user.id !== state.me.id);
  return other ? other.user.display_name : room.name || "—";
}

function renderRooms() {
  const rooms = [...state.rooms.values()].sort((a, b) =>
    (b.last_message ? b.last_message.id : 0) - (a.last_message ? a.last_message.id : 0) || a.id - b.id);
  clear(ui.roomList, rooms.map((room) => {
    const other = room.kind === "direct" && room.members.find((m) => m.user.id !== state.me.id);
    const dot = other ? h("span", { class: "presence", dataset: { online: String(state.online.has(other.user.id)) },
      title: state.online.has(other.user.id) ? t("online") : t("offline") }) : null;
    return h("li", {},
      h("button", {
        class: "room-entry", "aria-current": room.id === state.current ? "true" : "false",
        dataset: { roomId: room.id }, onclick: () => openRoom(room.id),
      },
      dot,
      h("span", { class: "room-name" }, roomName(room)),
      room.unread_count ? h("span", { class: "badge", "aria-label": t("unread", { n: room.unread_count }) }, room.unread_count) : null,
      h("span", { class: "last-message muted" }, room.last_message ? preview(room.last_message) : "")));
  }));
}

// The room list shows what a message reads as, not its markdown: the text of the server's
// sanitised HTML (the same renderer as the message itself), or the name of its file.
function preview(message) {
  if (message.deleted) return t("deleted");
  const text = plainText(message.content_html);
  if (text) return text.slice(0, 60);
  return message.attachments && message.attachments.length ? `📎 ${message.attachments[0].filename}` : "";
}

async function refreshRoom(roomId) {
  try {
    state.rooms.set(roomId, await api("GET", `/rooms/${roomId}`));
  } catch {
    state.rooms.delete(roomId);
    if (state.current === roomId) state.current = null;
  }
  renderRooms();
  if (state.current === roomId) renderRoomHead();
  renderEmptyState();
}

async function openRoom(roomId) {
  state.current = roomId;
  state.searching = false;
  $("#app").classList.remove("show-rooms");
  ui.composer.setRoom(roomId);
  renderRooms();
  renderRoomHead();
  renderMessages(); // from the cache at once
  if (!history(roomId).loaded) await loadNewest(roomId);
  markRead();
  ui.composer.focus();
}

function renderRoomHead() {
  const room = state.rooms.get(state.current);
  if (!room) return;
  ui.roomTitle.textContent = roomName(room);
  const online = room.members.filter((m) => m.user.id === state.me.id || state.online.has(m.user.id)).length;
  ui.roomMeta.textContent = [room.topic, `${room.members.length} · ${online} ${t("online")}`]
    .filter(Boolean).join(" — ");
}

// -- history -----------------------------------------------------------------------

function history(roomId) {
  if (!state.history.has(roomId)) state.history.set(roomId, { items: [], complete: false, loaded: false, loading: false });
  return state.history.get(roomId);
}

function merge(roomId, messages) {
  const entry = history(roomId);
  const byId = new Map(entry.items.map((m) => [m.id, m]));
  for (const message of messages) byId.set(message.id, message);
  entry.items = [...byId.values()].sort((a, b) => a.seq - b.seq);
}

async function loadNewest(roomId) {
  const entry = history(roomId);
  const page = await api("GET", `/rooms/${roomId}/messages`, { query: { limit: PAGE } });
  merge(roomId, page.items);
  entry.loaded = true;
  entry.complete = page.next_cursor === null;
  if (roomId === state.current) renderMessages({ toBottom: true });
}

async function loadOlder(roomId) {
  const entry = history(roomId);
  if (!roomId || entry.complete || entry.loading || !entry.items.length) return;
  entry.loading = true;
  const height = ui.messages.scrollHeight;
  try {
    const page = await api("GET", `/rooms/${roomId}/messages`, { query: { before: entry.items[0].seq, limit: PAGE } });
    merge(roomId, page.items);
    entry.complete = page.next_cursor === null;
    if (roomId === state.current) {
      renderMessages();
      ui.messages.scrollTop = ui.messages.scrollHeight - height;
    }
  } finally { entry.loading = false; }
}

function renderMessages({ toBottom = true } = {}) {
  const entry = history(state.current);
  clear(ui.messages, entry.items.map(messageItem));
  if (toBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// One new or changed message: replace or append its item instead of redrawing the room.
function renderOne(message) {
  const item = messageItem(message);
  const existing = ui.messages.querySelector(`.message[data-id="${message.id}"]`);
  if (existing) { existing.replaceWith(item); return; }
  const last = ui.messages.querySelector(".message:last-child");
  if (last && Number(last.dataset.seq) > message.seq) { renderMessages({ toBottom: false }); return; }
  const placeholder = ui.messages.querySelector(".empty");
  if (placeholder) placeholder.remove();
  ui.messages.append(item);
}

function messageItem(message) {
  const mine = message.author && message.author.id === state.me.id;
  const body = h("div", { class: "message-body" });
  if (message.deleted) body.append(h("em", { class: "muted" }, t("deleted")));
  else body.append(trustedHtml(message.content_html)); // sanitised by the server (nh3)
  const parent = message.reply_to && history(message.room_id).items.find((m) => m.id === message.reply_to);
  return h("li", { class: "message", dataset: { id: message.id, seq: message.seq } },
    h("div", { class: "message-head" },
      h("strong", {}, message.author ? message.author.display_name : "—"), " ",
      h("time", { datetime: message.created_at, class: "muted" }, formatTime(message.created_at, lang)),
      message.edited && !message.deleted ? h("span", { class: "muted" }, ` (${t("edited")})`) : null),
    parent ? h("blockquote", { class: "reply-quote muted" }, parent.deleted ? t("deleted") : plainText(parent.content_html).slice(0, 120)) : null,
    body,
    message.deleted ? null : h("ul", { class: "attachments" }, message.attachments.map(attachmentItem)),
    message.deleted ? null : h("div", { class: "message-actions" },
      h("button", { class: "link", onclick: () => ui.composer.replyingTo(message) }, t("reply")),
      mine ? h("button", { class: "link", onclick: () => ui.composer.edit(message) }, t("edit")) : null,
      mine ? h("button", { class: "link", onclick: (e) => confirmThen(e.currentTarget, () =>
        api("DELETE", `/messages/${message.id}`)) }, t("delete")) : null));
}

function attachmentItem(file) {
  const download = h("button", { class: "button download", onclick: () => downloadFile(file) },
    `${t("download")} ${file.filename} (${formatBytes(file.size)})`);
  const item = h("li", { class: "attachment" }, download);
  if (file.is_image) {
    const img = h("img", { alt: file.filename, class: "preview", loading: "lazy" });
    item.prepend(img);
    fileUrl(file.id, true).then((url) => { img.src = url; }).catch(() => img.remove());
  }
  return item;
}

async function downloadFile(file) {
  const url = await fileUrl(file.id);
  const link = h("a", { href: url, download: file.filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// A destructive button asks once more in place (no blocking confirm() dialog).
function confirmThen(button, action) {
  if (button.dataset.armed) { action(); return; }
  button.dataset.armed = "true";
  button.textContent = t("confirmDelete");
  button.classList.add("danger");
}

function markRead() {
  const entry = history(state.current);
  const newest = entry.items[entry.items.length - 1];
  const room = state.rooms.get(state.current);
  if (!newest || !room || document.hidden) return;
  if (room.unread_count) {
    room.unread_count = 0;
    renderRooms();
  }
  if (!realtime.send({ type: "read", room_id: state.current, message_id: newest.id })) {
    api("POST", `/rooms/${state.current}/read`, { body: { message_id: newest.id } }).catch(() => {});
  }
}

document.addEventListener("visibilitychange", () => { if (state.current) markRead(); });

// -- live events -------------------------------------------------------------------

function handleFrame(frame) {
  switch (frame.type) {
    case "ready":
      state.online = new Set(frame.online);
      for (const roomId of Object.keys(frame.rooms).map(Number)) {
        if (!state.rooms.has(roomId)) refreshRoom(roomId);
      }
      renderRooms();
      renderRoomHead(); // drawn before this first presence list arrived: count again
      break;
    case "message.created":
    case "message.updated":
    case "message.deleted":
      onMessage(frame);
      break;
    case "member.joined":
    case "member.left":
    case "room.updated":
      refreshRoom(frame.room_id);
      break;
    case "read": {
      const room = state.rooms.get(frame.room_id);
      if (room) { room.unread_count = 0; renderRooms(); }
      break;
    }
    case "typing":
      onTyping(frame);
      break;
    case "presence":
      if (frame.status === "online") state.online.add(frame.user_id);
      else state.online.delete(frame.user_id);
      renderRooms();
      renderRoomHead();
      break;
    case "resync_required":
      state.history.delete(frame.room_id);
      if (frame.room_id === state.current) loadNewest(frame.room_id);
      refreshRoom(frame.room_id);
      break;
    case "notice.published":
      state.notices = [frame.notice, ...state.notices.filter((n) => n.id !== frame.notice.id)];
      renderNotice();
      break;
    case "notice.unpublished":
      state.notices = state.notices.filter((n) => n.id !== frame.notice_id);
      renderNotice();
      break;
    default:
  }
}

function onMessage(frame) {
  const message = frame.message;
  const entry = history(frame.room_id);
  if (entry.loaded) merge(frame.room_id, [message]);
  const room = state.rooms.get(frame.room_id);
  if (!room) { refreshRoom(frame.room_id); return; }
  if (frame.type === "message.created") {
    room.last_message = message;
    const mine = message.author && message.author.id === state.me.id;
    if (!mine && (frame.room_id !== state.current || document.hidden)) room.unread_count += 1;
    clearTyping(frame.room_id, message.author && message.author.id);
  }
  renderRooms();
  if (frame.room_id === state.current && !state.searching) {
    const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 120;
    renderOne(message);
    if (atBottom || frame.type === "message.created") ui.messages.scrollTop = ui.messages.scrollHeight;
    markRead();
  }
}

function onTyping(frame) {
  if (frame.user.id === state.me.id) return;
  const room = state.typing.get(frame.room_id) || new Map();
  state.typing.set(frame.room_id, room);
  clearTimeout((room.get(frame.user.id) || {}).timer);
  room.set(frame.user.id, {
    name: frame.user.display_name,
    timer: setTimeout(() => clearTyping(frame.room_id, frame.user.id), TYPING_SHOWN_MS),
  });
  renderTyping();
}

function clearTyping(roomId, userId) {
  const room = state.typing.get(roomId);
  if (room && room.has(userId)) {
    clearTimeout(room.get(userId).timer);
    room.delete(userId);
    renderTyping();
  }
}

function renderTyping() {
  const room = state.typing.get(state.current);
  const names = room ? [...room.values()].map((x) => x.name) : [];
  ui.typing.textContent = names.length ? t("typing", { names: names.join(", ") }) : "";
}

// -- notices, canned replies, search ------------------------------------------------

async function loadNotices() {
  state.notices = (await api("GET", "/notices")).items;
  renderNotice();
}

function dismissed() {
  try { return JSON.parse(localStorage.getItem(DISMISSED_KEY) || "[]"); } catch { return []; }
}

function renderNotice() {
  const notice = state.notices.find((n) => !dismissed().includes(n.id));
  if (!notice) { ui.notice.hidden = true; clear(ui.notice); return; }
  clear(ui.notice,
    h("strong", {}, notice.title),
    h("div", { class: "notice-body" }, trustedHtml(notice.body_html)), // sanitised by the server
    h("button", { class: "link", "aria-label": t("cancel"), onclick: () => {
      localStorage.setItem(DISMISSED_KEY, JSON.stringify([...dismissed(), notice.id].slice(-100)));
      renderNotice();
    } }, "×"));
  ui.notice.dataset.noticeId = notice.id;
  ui.notice.hidden = false;
}

async function loadCannedReplies() {
  if (state.me.role === "member") return;
  state.canned = (await api("GET", "/admin/canned-replies")).items;
}

async function search(query) {
  if (!query.trim()) {
    state.searching = false;
    if (!state.current) { renderEmptyState(); return; }
    renderRoomHead();
    renderMessages();
    return;
  }
  const results = await api("GET", "/search", { query: { q: query } });
  state.searching = true;
  ui.roomTitle.textContent = t("searchResults");
  ui.roomMeta.textContent = query;
  clear(ui.messages, results.items.length ? results.items.map((message) => {
    const item = messageItem(message);
    item.classList.add("search-hit");
    const room = state.rooms.get(message.room_id);
    item.prepend(h("button", { class: "link", onclick: () => openRoom(message.room_id) }, room ? roomName(room) : "#" + message.room_id));
    return item;
  }) : h("li", { class: "empty muted" }, t("noResults")));
}

// -- new rooms ---------------------------------------------------------------------

function openNewRoomDialog() {
  const kind = h("select", { id: "room-kind" },
    ["group", "channel", "direct"].map((k) => h("option", { value: k }, t(k))));
  const name = h("input", { id: "room-name" });
  const members = h("input", { id: "room-members", placeholder: "alice, bob" });
  const error = h("p", { class: "form-error", role: "alert" });
  const dialog = h("dialog", { class: "card" },
    h("form", { method: "dialog", class: "stack" },
      h("h2", {}, t("newRoom")),
      h("label", { for: "room-kind" }, t("group") + " / " + t("channel") + " / " + t("direct")), kind,
      h("label", { for: "room-name" }, t("roomName")), name,
      h("label", { for: "room-members" }, t("members")), members,
      error,
      h("div", { class: "row" },
        h("button", { value: "cancel", class: "button" }, t("cancel")),
        h("button", { value: "create", class: "primary", onclick: async (e) => {
          e.preventDefault();
          try {
            const ids = await userIds(members.value);
            const room = await api("POST", "/rooms", { body: {
              kind: kind.value, name: kind.value === "direct" ? undefined : name.value.trim(), member_ids: ids,
            } });
            dialog.close();
            dialog.remove();
            state.rooms.set(room.id, room);
            await openRoom(room.id);
          } catch (err) { error.textContent = err.message; }
        } }, t("create")))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

async function openChannelsDialog() {
  const channels = (await api("GET", "/channels")).items;
  const dialog = h("dialog", { class: "card" },
    h("form", { method: "dialog", class: "stack" },
      h("h2", {}, t("channels")),
      h("ul", { class: "channel-list" }, channels.length ? channels.map((channel) => h("li", {},
        h("strong", {}, channel.name), " ", h("span", { class: "muted" }, channel.topic || ""), " ",
        state.rooms.has(channel.id)
          ? h("span", { class: "muted" }, "✓")
          : h("button", { class: "primary", onclick: async (e) => {
            e.preventDefault();
            await api("POST", `/rooms/${channel.id}/members`, { body: { user_ids: [state.me.id] } });
            dialog.close();
            await refreshRoom(channel.id);
            await openRoom(channel.id);
          } }, t("join")))) : h("li", { class: "muted" }, t("noChannels"))),
      h("div", { class: "row" }, h("button", { value: "close", class: "button" }, t("cancel")))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

async function userIds(text) {
  const names = text.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  const ids = [];
  for (const name of names) {
    const found = (await api("GET", "/users", { query: { q: name } })).items.find((u) => u.username === name);
    if (!found) throw new Error(`? ${name}`);
    ids.push(found.id);
  }
  return ids;
}

main();
