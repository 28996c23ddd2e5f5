// The console's content pages: notices (rich text, for everyone or chosen rooms) and
// canned replies (the agents' /shortcuts).

import { api } from "./api.js";
import { clear, h, trustedHtml } from "./dom.js";
import { t } from "./i18n.js";
import { actionButton, dataTable, errorLine, field, guarded, roomNames } from "./console-ui.js";

export async function notices(main) {
  const error = errorLine();
  const names = await roomNames();
  const title = h("input", { id: "notice-title", required: true, maxlength: 200 });
  const editor = h("div", {
    class: "editor", id: "notice-text", contenteditable: "true", role: "textbox",
    "aria-multiline": "true", "aria-labelledby": "notice-text-label",
  });
  const rooms = h("select", { id: "notice-rooms", multiple: true, size: 4 },
    names.rooms.filter((r) => r.kind !== "direct").map((r) => h("option", { value: r.id }, r.name)));
  // execCommand is deprecated but still the only undo-friendly way to format a
  // contenteditable without a library; the server sanitises whatever comes out.
  const format = (command, label) => h("button", {
    type: "button", class: "button", onmousedown: (e) => e.preventDefault(),
    onclick: () => { editor.focus(); document.execCommand(command); },
  }, label);
  const list = dataTable([t("col_title"), t("col_state"), t("col_audience"), t("col_text"), t("actions")], t("noNotices"));
  const act = (label, method, path, extra) => actionButton(label, () => guarded(error, async () => {
    await api(method, path); await reload();
  }), extra);
  const reload = async () => {
    const page = await api("GET", "/admin/notices");
    list.fill(page.items.map((n) => h("tr", {},
      h("td", {}, n.title), h("td", {}, t("state_" + n.state)),
      h("td", {}, n.room_ids ? n.room_ids.map(names.name).join(", ") : t("everyone")),
      h("td", {}, h("div", { class: "message-body" }, trustedHtml(n.body_html))), // sanitised by the server
      h("td", { class: "actions" },
        n.state === "published"
          ? act(t("unpublish"), "POST", `/admin/notices/${n.id}/unpublish`)
          : act(t("publish"), "POST", `/admin/notices/${n.id}/publish`),
        act(t("delete"), "DELETE", `/admin/notices/${n.id}`, "danger")))));
  };
  const form = h("form", { class: "card stack", "aria-labelledby": "new-notice-title" },
    h("h2", { id: "new-notice-title" }, t("newNotice")),
    field(t("title"), title),
    h("span", { id: "notice-text-label", class: "field-label" }, t("noticeText")),
    h("div", { class: "row start", role: "toolbar", "aria-label": t("formatting") },
      format("bold", t("bold")), format("italic", t("italic")), format("insertUnorderedList", t("bulletList"))),
    editor, field(t("audienceRooms"), rooms),
    h("div", { class: "row start" }, h("button", { class: "primary" }, t("save"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(error, async () => {
      const ids = [...rooms.selectedOptions].map((option) => Number(option.value));
      await api("POST", "/admin/notices", { body: { title: title.value, body_html: editor.innerHTML, room_ids: ids.length ? ids : null } });
      form.reset(); clear(editor); await reload();
    });
  });
  main.append(form, error, list.el);
  await reload();
}

export async function cannedReplies(main) {
  const error = errorLine();
  // The v flag (which browsers use for pattern=) wants "-" escaped inside a class.
  const shortcut = h("input", { id: "canned-shortcut", required: true, maxlength: 32, pattern: "[a-z0-9][a-z0-9_\\-]*" });
  const title = h("input", { id: "canned-title", required: true });
  const body = h("textarea", { id: "canned-text", required: true, rows: 3 });
  const list = dataTable([t("col_shortcut"), t("col_title"), t("col_text"), t("actions")], t("noCannedReplies"));
  const reload = async () => {
    const page = await api("GET", "/admin/canned-replies");
    list.fill(page.items.map((r) => h("tr", {},
      h("td", {}, h("code", {}, "/" + r.shortcut)), h("td", {}, r.title), h("td", {}, r.body),
      h("td", { class: "actions" }, actionButton(t("delete"), () => guarded(error, async () => {
        await api("DELETE", `/admin/canned-replies/${r.id}`); await reload();
      }), "danger")))));
  };
  const form = h("form", { class: "card stack", "aria-labelledby": "new-canned-title" },
    h("h2", { id: "new-canned-title" }, t("newCannedReply")),
    h("div", { class: "filters" }, field(t("shortcut"), shortcut, t("shortcutHint")), field(t("title"), title)),
    field(t("noticeText"), body),
    h("div", { class: "row start" }, h("button", { class: "primary" }, t("create"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(error, async () => {
      await api("POST", "/admin/canned-replies", { body: { shortcut: shortcut.value, title: title.value, body: body.value } });
      form.reset(); await reload();
    });
  });
  main.append(form, error, list.el);
  await reload();
}
