// The admin console (the CMS): dashboard, users, rooms, moderation, notices, canned
// replies, retention with its preview, the audit log. Admins only: the API refuses
// everyone else, and this page does not show itself to them.

import { api, apiBase, loadConfig, token } from "./api.js";
import { backups } from "./console-backups.js";
import { dashboard, monitoring } from "./console-dashboard.js";
import { currentUser, signOut } from "./auth.js";
import { $, clear, formatBytes, formatTime, h, trustedHtml } from "./dom.js";
import { lang, t } from "./i18n.js";

const PAGES = {
  dashboard: () => dashboard(main), users: users, rooms: rooms, moderation: moderation,
  notices: notices, cannedReplies: cannedReplies, retention: retention, audit: audit,
  backups: () => backups(main), monitoring: () => monitoring(main),
};
let main;

async function start() {
  await loadConfig();
  const root = $("#app");
  const me = await currentUser(root);
  if (me.role !== "admin") {
    clear(root, h("div", { class: "card auth", role: "alert" },
      h("h1", {}, t("console")), h("p", {}, t("adminsOnly")),
      h("a", { href: "index.html", class: "button" }, t("backToChat"))));
    return;
  }
  main = h("section", { class: "console-main", "aria-live": "polite" });
  const nav = h("nav", { class: "console-nav", "aria-label": t("console") },
    h("strong", {}, t("console")),
    Object.keys(PAGES).map((page) => h("a", { href: "#" + page, dataset: { page } }, t(page))),
    h("div", { class: "nav-foot" },
      h("a", { href: "index.html" }, t("backToChat")),
      h("button", { class: "link", onclick: signOut }, t("signOut"))));
  clear(root, nav, main);
  root.className = "console";
  window.addEventListener("hashchange", route);
  route();
}

function route() {
  const page = PAGES[window.location.hash.slice(1)] ? window.location.hash.slice(1) : "dashboard";
  for (const link of document.querySelectorAll(".console-nav a[data-page]")) {
    link.setAttribute("aria-current", link.dataset.page === page ? "page" : "false");
  }
  clear(main, h("h1", {}, t(page)));
  main.dataset.page = page;
  PAGES[page]().catch((e) => main.append(h("p", { class: "form-error", role: "alert" }, e.message)));
}

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

function field(label, input) {
  return h("label", {}, label, input);
}

function errorLine() { return h("p", { class: "form-error", role: "alert" }); }

async function guarded(line, action) {
  line.textContent = "";
  try { await action(); } catch (e) { line.textContent = e.message; }
}

// -- users -------------------------------------------------------------------------

async function users() {
  const list = h("tbody");
  const error = errorLine();
  const notice = h("p", { class: "status-ok", role: "status" });
  const reload = async () => {
    const page = await api("GET", "/admin/users", { query: { limit: 200 } });
    clear(list, page.items.map((u) => h("tr", {},
      h("td", {}, u.username), h("td", {}, u.display_name),
      h("td", {}, h("select", { "aria-label": "role", onchange: (e) => guarded(error, async () => {
        await api("PATCH", `/admin/users/${u.id}`, { body: { role: e.target.value } }); await reload();
      }) }, ["member", "agent", "admin"].map((r) => h("option", { value: r, selected: r === u.role }, r)))),
      h("td", {}, u.is_active ? "active" : "disabled"),
      h("td", {},
        h("button", { class: "link", onclick: () => guarded(error, async () => {
          await api("PATCH", `/admin/users/${u.id}`, { body: { is_active: !u.is_active } }); await reload();
        }) }, u.is_active ? "disable" : "enable"),
        h("button", { class: "link", onclick: () => guarded(error, async () => {
          const result = await api("POST", `/admin/users/${u.id}/password`, { body: {} });
          notice.textContent = `${u.username}: ${result.temporary_password} (one-time password)`;
        }) }, "reset password")))));
  };
  const username = h("input", { required: true, autocomplete: "off" });
  const password = h("input", { type: "password", required: true, autocomplete: "new-password" });
  const role = h("select", {}, ["member", "agent", "admin"].map((r) => h("option", { value: r }, r)));
  const form = h("form", { class: "filters card" },
    field(t("username"), username), field(t("password"), password), field("role", role),
    h("button", { class: "primary" }, t("create")));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, async () => {
    await api("POST", "/admin/users", { body: { username: username.value, password: password.value, role: role.value } });
    form.reset(); await reload();
  }); });
  main.append(form, error, notice, table(["username", "name", "role", "state", ""], list));
  await reload();
}

// -- rooms -------------------------------------------------------------------------

async function rooms() {
  const list = h("tbody");
  const error = errorLine();
  const reason = h("input", { id: "hold-reason", placeholder: "case 2026-17" });
  const detail = h("div");
  const reload = async () => {
    const page = await api("GET", "/admin/rooms", { query: { limit: 200 } });
    clear(list, page.items.map((r) => h("tr", {},
      h("td", {}, h("button", { class: "link", onclick: () => showRoom(r.id, detail) }, r.name || `#${r.id}`)),
      h("td", {}, r.kind), h("td", {}, r.member_count),
      h("td", {}, r.last_message_at ? formatTime(r.last_message_at, lang) : "—"),
      h("td", {}, r.legal_hold ? "legal hold" : ""),
      h("td", {},
        h("button", { class: "link", onclick: () => guarded(error, async () => {
          await api("PATCH", `/rooms/${r.id}`, { body: { archived: !r.archived } }); await reload();
        }) }, r.archived ? "unarchive" : "archive"),
        h("button", { class: "link", onclick: () => guarded(error, async () => {
          if (r.legal_hold) await api("DELETE", `/admin/retention/rooms/${r.id}`);
          else await api("PUT", `/admin/retention/rooms/${r.id}`, { body: { legal_hold: true, legal_hold_reason: reason.value.trim() || undefined } });
          await reload();
        }) }, r.legal_hold ? "lift hold" : "legal hold")))));
  };
  main.append(h("div", { class: "filters" }, field("legal hold reason", reason)), error,
    table(["room", "kind", "members", "last message", "", ""], list), detail);
  await reload();
}

async function showRoom(roomId, target) {
  const room = await api("GET", `/admin/rooms/${roomId}`);
  clear(target, h("h2", {}, room.name || `#${room.id}`),
    table(["member", "role"], room.members.map((m) => h("tr", {}, h("td", {}, m.user.username), h("td", {}, m.role)))));
}

// -- moderation --------------------------------------------------------------------

async function moderation() {
  const q = h("input", { type: "search", "aria-label": t("search") });
  const reason = h("input", { id: "delete-reason", placeholder: "spam, abuse, …" });
  const results = h("tbody");
  const error = errorLine();
  const find = async () => {
    const page = await api("GET", "/admin/messages", { query: { q: q.value } });
    clear(results, page.items.map((m) => h("tr", {},
      h("td", {}, formatTime(m.created_at, lang)),
      h("td", {}, m.author ? m.author.username : "—"),
      h("td", {}, `#${m.room_id}`),
      h("td", {}, h("div", {}, trustedHtml(m.content_html))), // sanitised by the server
      h("td", {}, h("button", { class: "link danger", onclick: () => guarded(error, async () => {
        if (reason.value.trim().length < 3) throw new Error("write the reason first (at least 3 characters)");
        await api("DELETE", `/admin/messages/${m.id}`, { query: { reason: reason.value.trim() } });
        await find();
      }) }, t("delete"))))));
  };
  const form = h("form", { class: "filters" }, field(t("search"), q), h("button", { class: "primary" }, t("search")),
    field("reason for deleting", reason));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, find); });
  main.append(form, error, table(["time", "author", "room", "message", ""], results));
  await find();
}

// -- notices -----------------------------------------------------------------------

async function notices() {
  const list = h("tbody");
  const error = errorLine();
  const title = h("input", { required: true, "aria-label": "title" });
  const editor = h("div", { class: "editor", contenteditable: "true", role: "textbox", "aria-multiline": "true", "aria-label": "notice text" });
  const rooms = h("select", { multiple: true, "aria-label": "rooms (none selected: everyone)", size: 4 },
    (await api("GET", "/admin/rooms", { query: { limit: 200 } })).items
      .filter((r) => r.kind !== "direct")
      .map((r) => h("option", { value: r.id }, r.name)));
  const format = (command) => h("button", { type: "button", class: "button", onclick: () => document.execCommand(command) }, command);
  const reload = async () => {
    const page = await api("GET", "/admin/notices");
    clear(list, page.items.map((n) => h("tr", {},
      h("td", {}, n.title), h("td", {}, n.state), h("td", {}, n.room_ids ? n.room_ids.join(", ") : "everyone"),
      h("td", {}, h("div", {}, trustedHtml(n.body_html))), // sanitised by the server
      h("td", {},
        n.state === "published"
          ? h("button", { class: "link", onclick: () => guarded(error, async () => { await api("POST", `/admin/notices/${n.id}/unpublish`); await reload(); }) }, "unpublish")
          : h("button", { class: "link", onclick: () => guarded(error, async () => { await api("POST", `/admin/notices/${n.id}/publish`); await reload(); }) }, "publish"),
        h("button", { class: "link danger", onclick: () => guarded(error, async () => { await api("DELETE", `/admin/notices/${n.id}`); await reload(); }) }, t("delete"))))));
  };
  const form = h("form", { class: "card stack" },
    field("title", title), h("div", { class: "row" }, format("bold"), format("italic"), format("insertUnorderedList")),
    editor, field("rooms (none selected: everyone)", rooms), h("button", { class: "primary" }, t("save")));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, async () => {
    const ids = [...rooms.selectedOptions].map((option) => Number(option.value));
    await api("POST", "/admin/notices", { body: { title: title.value, body_html: editor.innerHTML, room_ids: ids.length ? ids : null } });
    form.reset(); clear(editor); await reload();
  }); });
  main.append(form, error, table(["title", "state", "audience", "text", ""], list));
  await reload();
}

// -- canned replies ----------------------------------------------------------------

async function cannedReplies() {
  const list = h("tbody");
  const error = errorLine();
  const shortcut = h("input", { required: true, pattern: "[a-z0-9][a-z0-9_-]*", "aria-label": "shortcut" });
  const title = h("input", { required: true, "aria-label": "title" });
  const body = h("textarea", { required: true, "aria-label": "text" });
  const reload = async () => {
    const page = await api("GET", "/admin/canned-replies");
    clear(list, page.items.map((r) => h("tr", {},
      h("td", {}, "/" + r.shortcut), h("td", {}, r.title), h("td", {}, r.body),
      h("td", {}, h("button", { class: "link danger", onclick: () => guarded(error, async () => {
        await api("DELETE", `/admin/canned-replies/${r.id}`); await reload();
      }) }, t("delete"))))));
  };
  const form = h("form", { class: "filters card" }, field("shortcut", shortcut), field("title", title), field("text", body), h("button", { class: "primary" }, t("create")));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, async () => {
    await api("POST", "/admin/canned-replies", { body: { shortcut: shortcut.value, title: title.value, body: body.value } });
    form.reset(); await reload();
  }); });
  main.append(form, error, table(["shortcut", "title", "text", ""], list));
  await reload();
}

// -- retention ---------------------------------------------------------------------

async function retention() {
  const current = await api("GET", "/admin/retention");
  const error = errorLine();
  const days = (value, label) => h("input", { type: "number", min: 1, max: 36500, value: value ?? "", placeholder: "forever", "aria-label": label });
  const messageDays = days(current.defaults.message_days, "message days");
  const fileDays = days(current.defaults.attachment_days, "attachment days");
  const previewArea = h("div");
  const proposal = () => ({
    message_days: messageDays.value ? Number(messageDays.value) : null,
    attachment_days: fileDays.value ? Number(fileDays.value) : null,
  });
  const showPreview = (p) => clear(previewArea,
    h("p", {}, `${p.messages} messages, ${p.attachments} files, ${formatBytes(p.bytes)}`),
    table(["room", "messages", "files", "bytes", ""], p.rooms.map((r) => h("tr", {},
      h("td", {}, r.room_name || `#${r.room_id}`), h("td", {}, r.messages), h("td", {}, r.attachments),
      h("td", {}, formatBytes(r.bytes)), h("td", {}, r.legal_hold ? "legal hold" : "")))));
  const form = h("form", { class: "filters card" },
    field("messages (days)", messageDays), field("files (days)", fileDays),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, async () =>
      showPreview(await api("POST", "/admin/retention/preview", { body: { defaults: proposal() } }))) }, "preview"),
    h("button", { class: "primary" }, t("save")));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, async () => {
    await api("PUT", "/admin/retention/defaults", { body: proposal() });
    showPreview(await api("GET", "/admin/retention/preview"));
  }); });
  main.append(
    h("p", { class: "muted" }, `daily at ${current.schedule.run_at} UTC · audit events kept ${current.schedule.audit_days} days · source: ${current.defaults.source}`),
    form, error, h("h2", {}, "preview"), previewArea,
    h("h2", {}, "rooms with their own policy"),
    table(["room", "messages", "files", "legal hold"], current.rooms.map((r) => h("tr", {},
      h("td", {}, r.room_name || `#${r.room_id}`), h("td", {}, String(r.message_days)),
      h("td", {}, String(r.attachment_days)), h("td", {}, r.legal_hold ? r.legal_hold_reason || "yes" : "")))));
  showPreview(await api("GET", "/admin/retention/preview"));
}

// -- audit -------------------------------------------------------------------------

async function audit() {
  const inputs = {
    actor: h("input", { "aria-label": "actor" }), action: h("input", { placeholder: "message.*", "aria-label": "action" }),
    target_type: h("input", { "aria-label": "target type" }), target_id: h("input", { "aria-label": "target id" }),
  };
  const list = h("tbody");
  const error = errorLine();
  const status = h("p");
  let cursor = null;
  const query = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
  const load = async (more = false) => {
    const page = await api("GET", "/admin/audit", { query: { ...query(), cursor: more ? cursor : undefined } });
    cursor = page.next_cursor;
    const rows = page.items.map((e) => h("tr", {},
      h("td", {}, e.id), h("td", {}, formatTime(e.occurred_at, lang)), h("td", {}, e.actor_name),
      h("td", {}, e.action), h("td", {}, `${e.target_type} ${e.target_id ?? ""}`),
      h("td", {}, h("code", {}, JSON.stringify(e.changes)))));
    if (more) list.append(...rows); else clear(list, rows);
    moreButton.hidden = !cursor;
  };
  const moreButton = h("button", { class: "button", onclick: () => guarded(error, () => load(true)) }, "more");
  const form = h("form", { class: "filters" },
    Object.entries(inputs).map(([k, el]) => field(k, el)),
    h("button", { class: "primary" }, t("search")),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, exportCsv) }, "CSV"),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, async () => {
      const v = await api("GET", "/admin/audit/verify");
      status.className = v.ok ? "status-ok" : "status-bad";
      status.textContent = v.message;
    }) }, "verify chain"));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, () => load()); });
  const exportCsv = async () => {
    const url = new URL(apiBase() + "/api/v1/admin/audit/export", window.location.href);
    for (const [k, v] of Object.entries(query())) if (v) url.searchParams.set(k, v);
    const response = await fetch(url, { headers: { Authorization: "Bearer " + token.get() } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const link = h("a", { href: URL.createObjectURL(await response.blob()), download: "cmschat-audit.csv" });
    document.body.append(link); link.click(); link.remove();
  };
  main.append(form, status, error, table(["#", "time", "actor", "action", "target", "changes"], list), moreButton);
  await load();
}

start();
