// Pieces every console page is built from: data tables (cards on a phone), labelled
// fields, error lines that speak the reader's language, room names.

import { api } from "./api.js";
import { clear, h } from "./dom.js";
import { errorText, t } from "./i18n.js";

// A table whose rows can be refilled. On a phone the CSS turns each row into a card and
// shows every cell's header (data-label) beside it; an empty table says so in words.
export function dataTable(headers, empty) {
  const body = h("tbody");
  const el = h("div", { class: "table-wrap" },
    h("table", { class: "data" },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))), body));
  const label = (rows) => {
    for (const row of rows) {
      [...row.children].forEach((cell, i) => { if (headers[i]) cell.dataset.label = headers[i]; });
    }
    return rows;
  };
  const fill = (rows) => {
    if (rows.length) clear(body, label(rows));
    else clear(body, h("tr", { class: "empty-row" }, h("td", { colspan: headers.length, class: "muted" }, empty)));
  };
  const add = (rows) => {
    body.querySelector(".empty-row")?.remove();
    body.append(...label(rows));
  };
  return { el, fill, add };
}

// The translation of a server value (a kind, a status), or the value itself if it is new.
export function word(prefix, value) {
  const text = t(prefix + value);
  return text === prefix + value ? String(value) : text;
}

export function field(label, input, hint) {
  return h("label", {}, h("span", { class: "field-label" }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
}

export function errorLine() { return h("p", { class: "form-error", role: "alert" }); }

export function statusLine() { return h("p", { class: "status-ok", role: "status" }); }

// Runs an action; a failure shows in the line in the reader's language. Returns whether
// the action succeeded, so callers can undo what the user did (a refused role change).
export async function guarded(line, action) {
  line.textContent = "";
  try {
    await action();
    return true;
  } catch (e) {
    line.textContent = errorText(e);
    return false;
  }
}

export function actionButton(label, onclick, extra = "") {
  return h("button", { type: "button", class: ("link " + extra).trim(), onclick }, label);
}

// Room names by id, for pages that only get ids (moderation, notices). Direct rooms have
// no name of their own.
export async function roomNames() {
  const page = await api("GET", "/admin/rooms", { query: { limit: 200 } });
  const names = new Map(page.items.map((r) => [r.id, roomLabel(r)]));
  return { rooms: page.items, name: (id) => names.get(id) || `#${id}` };
}

export function roomLabel(room) {
  return room.name || `${t("directRoom")} #${room.id}`;
}
