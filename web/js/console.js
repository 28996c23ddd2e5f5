// The admin console (the CMS): dashboard, users, rooms, moderation, notices, canned
// replies, retention with its preview, the audit log. Admins only: the API refuses
// everyone else, and this page does not show itself to them.

import "./console-i18n.js";
import { api, apiBase, loadConfig, token } from "./api.js";
import { backups } from "./console-backups.js";
import { dashboard, monitoring } from "./console-dashboard.js";
import { cannedReplies, notices } from "./console-content.js";
import { actionButton, dataTable, errorLine, field, guarded, roomLabel, roomNames, statusLine, word } from "./console-ui.js";
import { users } from "./console-users.js";
import { currentUser, signOut } from "./auth.js";
import { $, clear, formatBytes, formatTime, h, trustedHtml } from "./dom.js";
import { errorText, lang, t } from "./i18n.js";

const PAGES = {
  dashboard: () => dashboard(main), users: () => users(main), rooms: () => rooms(main),
  moderation: () => moderation(main), notices: () => notices(main),
  cannedReplies: () => cannedReplies(main), retention: () => retention(main),
  audit: () => audit(main), backups: () => backups(main), monitoring: () => monitoring(main),
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
  // On a phone the pages fold behind a menu button instead of wrapping over the screen.
  const toggle = h("button", {
    type: "button", class: "button menu-toggle", "aria-expanded": "false", "aria-controls": "console-pages",
    onclick: () => {
      const open = root.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", String(open));
    },
  }, t("menu"));
  const nav = h("nav", { class: "console-nav", "aria-label": t("console") },
    h("div", { class: "nav-head" }, h("strong", {}, t("console")), toggle),
    h("div", { class: "nav-pages", id: "console-pages" },
      Object.keys(PAGES).map((page) => h("a", { href: "#" + page, dataset: { page } }, t(page))),
      h("div", { class: "nav-foot" },
        h("a", { href: "index.html" }, t("backToChat")),
        h("button", { class: "link", onclick: signOut }, t("signOut")))));
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
  $("#app").classList.remove("nav-open");
  $(".menu-toggle")?.setAttribute("aria-expanded", "false");
  document.title = `${t(page)} · ${t("console")} · cmschat`;
  // Each visit gets its own element: a page left before it finished loading keeps
  // writing into its own, detached one, never into the next page.
  const view = h("section", { class: "console-main", "aria-live": "polite", dataset: { page, ready: "false" } },
    h("h1", {}, t(page)));
  main.replaceWith(view);
  main = view;
  PAGES[page]()
    .catch((e) => view.append(h("p", { class: "form-error", role: "alert" }, errorText(e))))
    .finally(() => { view.dataset.ready = "true"; });
}

// -- rooms -------------------------------------------------------------------------

async function rooms(main) {
  const error = errorLine();
  const reason = h("input", { id: "hold-reason", placeholder: t("holdReasonExample") });
  const detail = h("div", { class: "room-detail" });
  const list = dataTable([t("col_room"), t("col_kind"), t("col_members"), t("col_lastMessage"),
    t("col_status"), t("actions")], t("noRooms"));
  const reload = async () => {
    const page = await api("GET", "/admin/rooms", { query: { limit: 200 } });
    list.fill(page.items.map((r) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => guarded(error, () => showRoom(r.id, detail)) }, roomLabel(r))),
      h("td", {}, t(r.kind)), h("td", {}, r.member_count),
      h("td", {}, r.last_message_at ? formatTime(r.last_message_at, lang) : t("none")),
      h("td", {}, [r.archived && t("archived"), r.legal_hold && t("legalHold")].filter(Boolean).join(" · ") || t("active")),
      h("td", { class: "actions" },
        actionButton(r.archived ? t("unarchive") : t("archive"), () => guarded(error, async () => {
          await api("PATCH", `/rooms/${r.id}`, { body: { archived: !r.archived } }); await reload();
        })),
        actionButton(r.legal_hold ? t("liftHold") : t("placeHold"), () => guarded(error, async () => {
          if (r.legal_hold) await api("DELETE", `/admin/retention/rooms/${r.id}`);
          else await api("PUT", `/admin/retention/rooms/${r.id}`, { body: { legal_hold: true, legal_hold_reason: reason.value.trim() || undefined } });
          await reload();
        }))))));
  };
  main.append(h("div", { class: "filters" }, field(t("holdReason"), reason)), error, list.el, detail);
  await reload();
}

async function showRoom(roomId, target) {
  const room = await api("GET", `/admin/rooms/${roomId}`);
  const members = dataTable([t("col_member"), t("col_name"), t("col_roomRole")], t("none"));
  members.fill(room.members.map((m) => h("tr", {},
    h("td", {}, m.user.username), h("td", {}, m.user.display_name), h("td", {}, t("roomRole_" + m.role)))));
  clear(target, h("h2", {}, t("roomMembers", { room: roomLabel(room) })), members.el);
  target.scrollIntoView({ block: "nearest" });
}

// -- moderation --------------------------------------------------------------------

async function moderation(main) {
  const q = h("input", { type: "search", id: "moderation-search" });
  const reason = h("input", { id: "delete-reason", placeholder: t("deleteReasonExample") });
  const error = errorLine();
  const names = await roomNames();
  const results = dataTable([t("col_time"), t("col_author"), t("col_room"), t("col_message"), t("actions")],
    t("noMessagesFound"));
  const find = async () => {
    const page = await api("GET", "/admin/messages", { query: { q: q.value } });
    results.fill(page.items.map((m) => h("tr", {},
      h("td", {}, formatTime(m.created_at, lang)),
      h("td", {}, m.author ? m.author.display_name || m.author.username : t("none")),
      h("td", {}, names.name(m.room_id)),
      h("td", {}, h("div", { class: "message-body" }, trustedHtml(m.content_html))), // sanitised by the server
      h("td", { class: "actions" }, actionButton(t("delete"), () => guarded(error, async () => {
        if (reason.value.trim().length < 3) { reason.focus(); throw new Error(t("reasonFirst")); }
        await api("DELETE", `/admin/messages/${m.id}`, { query: { reason: reason.value.trim() } });
        await find();
      }), "danger")))));
  };
  const form = h("form", { class: "filters" }, field(t("textToFind"), q),
    h("button", { class: "primary" }, t("find")), field(t("deleteReason"), reason));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, find); });
  main.append(form, error, results.el);
  await find();
}

// -- retention ---------------------------------------------------------------------

async function retention(main) {
  const current = await api("GET", "/admin/retention");
  const error = errorLine();
  const saved = statusLine();
  const days = (value, id) => h("input", { id, type: "number", min: 1, max: 36500, value: value ?? "", placeholder: t("forever") });
  const messageDays = days(current.defaults.message_days, "message-days");
  const fileDays = days(current.defaults.attachment_days, "file-days");
  const summary = h("p");
  const preview = dataTable([t("col_room"), t("col_messages"), t("col_files"), t("col_size"), t("col_legalHold")],
    t("nothingToDelete"));
  const proposal = () => ({
    message_days: messageDays.value ? Number(messageDays.value) : null,
    attachment_days: fileDays.value ? Number(fileDays.value) : null,
  });
  const showPreview = (p) => {
    summary.textContent = t("previewSummary", { messages: p.messages, files: p.attachments, size: formatBytes(p.bytes) });
    preview.fill(p.rooms.map((r) => h("tr", {},
      h("td", {}, r.room_name || `${t("directRoom")} #${r.room_id}`), h("td", {}, r.messages), h("td", {}, r.attachments),
      h("td", {}, formatBytes(r.bytes)), h("td", {}, r.legal_hold ? t("yes") : t("none")))));
  };
  const form = h("form", { class: "filters card" },
    field(t("messageDays"), messageDays), field(t("fileDays"), fileDays),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, async () =>
      showPreview(await api("POST", "/admin/retention/preview", { body: { defaults: proposal() } }))) }, t("preview")),
    h("button", { class: "primary" }, t("save")));
  form.addEventListener("submit", (e) => { e.preventDefault(); saved.textContent = ""; guarded(error, async () => {
    await api("PUT", "/admin/retention/defaults", { body: proposal() });
    saved.textContent = t("defaultsSaved");
    showPreview(await api("GET", "/admin/retention/preview"));
  }); });
  const policyDays = (value) => (value === "inherit" ? t("inherit") : value == null ? t("forever") : String(value));
  const policies = dataTable([t("col_room"), t("messageDays"), t("fileDays"), t("col_legalHold")], t("noRoomPolicies"));
  policies.fill(current.rooms.map((r) => h("tr", {},
    h("td", {}, r.room_name || `${t("directRoom")} #${r.room_id}`), h("td", {}, policyDays(r.message_days)),
    h("td", {}, policyDays(r.attachment_days)), h("td", {}, r.legal_hold ? r.legal_hold_reason || t("yes") : t("none")))));
  main.append(
    h("p", { class: "muted" }, t("retentionSchedule", {
      time: current.schedule.run_at, days: current.schedule.audit_days,
      source: t("source_" + current.defaults.source) })),
    form, error, saved, h("h2", {}, t("whatWouldGo")), summary, preview.el,
    h("h2", {}, t("roomPolicies")), policies.el);
  showPreview(await api("GET", "/admin/retention/preview"));
}

// -- audit -------------------------------------------------------------------------

async function audit(main) {
  const inputs = {
    actor: h("input", { id: "audit-actor" }), action: h("input", { id: "audit-action", placeholder: "message.*" }),
    target_type: h("input", { id: "audit-target-type", placeholder: "user, room, …" }),
    target_id: h("input", { id: "audit-target-id" }),
  };
  const list = dataTable([t("col_time"), t("col_actor"), t("col_action"), t("col_target"), t("col_changes")], t("noEvents"));
  // Targets by name where the console knows them (users, rooms), else by kind and id.
  const [rooms, people] = await Promise.all([roomNames(), api("GET", "/admin/users", { query: { limit: 200 } })]);
  const usernames = new Map(people.items.map((u) => [String(u.id), u.username]));
  const target = (e) => {
    const kind = word("target_", e.target_type);
    if (e.target_id == null || e.target_id === "") return kind;
    if (e.target_type === "user" && usernames.has(e.target_id)) return `${kind} ${usernames.get(e.target_id)}`;
    if (e.target_type === "room") return `${kind} ${rooms.name(Number(e.target_id))}`;
    return `${kind} #${e.target_id}`;
  };
  const error = errorLine();
  const status = h("p", { role: "status" });
  let cursor = null;
  const query = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
  const load = async (more = false) => {
    const page = await api("GET", "/admin/audit", { query: { ...query(), cursor: more ? cursor : undefined } });
    cursor = page.next_cursor;
    const rows = page.items.map((e) => h("tr", { dataset: { id: e.id } },
      h("td", {}, formatTime(e.occurred_at, lang), h("small", { class: "muted block" }, `#${e.id}`)),
      h("td", {}, e.actor_name), h("td", {}, h("code", {}, e.action)),
      h("td", {}, target(e)),
      h("td", {}, h("code", { class: "changes" }, JSON.stringify(e.changes)))));
    if (more) list.add(rows); else list.fill(rows);
    moreButton.hidden = !cursor;
  };
  const moreButton = h("button", { type: "button", class: "button", hidden: true, onclick: () => guarded(error, () => load(true)) }, t("loadMore"));
  const form = h("form", { class: "filters" },
    Object.entries(inputs).map(([k, el]) => field(t("field_" + k), el)),
    h("button", { class: "primary" }, t("applyFilters")),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, exportCsv) }, t("exportCsv")),
    h("button", { type: "button", class: "button", onclick: () => guarded(error, async () => {
      const v = await api("GET", "/admin/audit/verify");
      status.className = v.ok ? "status-ok" : "status-bad";
      status.textContent = v.ok ? t("chainOk", { checked: v.checked, head: v.head_id })
        : t("chainBroken", { id: v.first_bad_id, problem: v.problem || v.message });
    }) }, t("verifyChain")));
  form.addEventListener("submit", (e) => { e.preventDefault(); guarded(error, () => load()); });
  const exportCsv = async () => {
    const url = new URL(apiBase() + "/api/v1/admin/audit/export", window.location.href);
    for (const [k, v] of Object.entries(query())) if (v) url.searchParams.set(k, v);
    const response = await fetch(url, { headers: { Authorization: "Bearer " + token.get() } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const link = h("a", { href: URL.createObjectURL(await response.blob()), download: "cmschat-audit.csv" });
    document.body.append(link); link.click(); link.remove();
  };
  main.append(form, status, error, list.el, moreButton);
  await load();
}

start();
