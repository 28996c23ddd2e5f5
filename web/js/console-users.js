// The console's users page: create accounts (with a generated one-time password and a
// forced change by default, the password rules shown up front), change roles, disable,
// reset passwords.

import { api } from "./api.js";
import { passwordRules } from "./auth.js";
import { clear, h } from "./dom.js";
import { t } from "./i18n.js";
import { actionButton, dataTable, errorLine, field, guarded, statusLine } from "./console-ui.js";

const ROLES = ["member", "agent", "admin"];

export async function users(main) {
  const error = errorLine();
  const notice = statusLine();
  const secret = h("p", { class: "card one-time", role: "status", hidden: true });
  const showSecret = (username, password) => {
    secret.hidden = false;
    // The password in its own <code> so it can be selected whole.
    clear(secret, ...t("oneTimePassword", { username, password: "\u0000" }).split("\u0000")
      .flatMap((part, i) => (i ? [h("code", {}, password), part] : [part])));
  };
  const list = dataTable(
    [t("col_username"), t("col_name"), t("col_role"), t("col_state"), t("actions")], t("noUsers"));
  const row = (u) => h("tr", { dataset: { username: u.username } },
    h("td", {}, u.username),
    h("td", {}, u.display_name),
    h("td", {}, h("select", {
      "aria-label": `${t("col_role")}: ${u.username}`,
      onchange: async (e) => {
        const select = e.target;
        const ok = await guarded(error, async () => {
          await api("PATCH", `/admin/users/${u.id}`, { body: { role: select.value } });
          notice.textContent = t("roleChanged", { username: u.username, role: t("role_" + select.value) });
          await reload();
        });
        if (!ok) select.value = u.role; // refused (e.g. your own account): show what is true
      },
    }, ROLES.map((r) => h("option", { value: r, selected: r === u.role }, t("role_" + r))))),
    h("td", {}, u.is_active ? t("active") : t("disabled"),
      u.must_change_password ? h("small", { class: "muted block" }, t("mustChangeBadge")) : null),
    h("td", { class: "actions" },
      actionButton(u.is_active ? t("disable") : t("enable"), () => guarded(error, async () => {
        await api("PATCH", `/admin/users/${u.id}`, { body: { is_active: !u.is_active } });
        await reload();
      })),
      actionButton(t("resetPassword"), () => guarded(error, async () => {
        const result = await api("POST", `/admin/users/${u.id}/password`, { body: {} });
        showSecret(u.username, result.temporary_password);
        await reload();
      }))));
  const reload = async () => {
    const page = await api("GET", "/admin/users", { query: { limit: 200 } });
    list.fill(page.items.map(row));
  };

  const username = h("input", { id: "new-username", required: true, autocomplete: "off", minlength: 3, maxlength: 32 });
  const displayName = h("input", { id: "new-display-name", autocomplete: "off", maxlength: 100 });
  const generate = h("input", { type: "checkbox", id: "generate-password", checked: true });
  const password = h("input", { id: "new-password", type: "password", autocomplete: "new-password", disabled: true, "aria-describedby": "password-rules" });
  const mustChange = h("input", { type: "checkbox", id: "must-change", checked: true });
  const role = h("select", { id: "new-role" }, ROLES.map((r) => h("option", { value: r }, t("role_" + r))));
  const rules = h("p", { id: "password-rules", class: "muted hint" });
  passwordRules().then((text) => { rules.textContent = text; });
  generate.addEventListener("change", () => {
    password.disabled = generate.checked;
    password.required = !generate.checked;
    if (generate.checked) password.value = "";
  });
  const form = h("form", { class: "card stack new-user", "aria-labelledby": "new-user-title" },
    h("h2", { id: "new-user-title" }, t("newUser")),
    h("div", { class: "filters" },
      field(t("col_username"), username), field(t("displayName"), displayName), field(t("role"), role)),
    h("label", { class: "check" }, generate, t("generatePassword")),
    h("div", { class: "filters" }, field(t("password"), password)),
    rules,
    h("label", { class: "check" }, mustChange, t("mustChange")),
    h("div", { class: "row start" }, h("button", { type: "submit", class: "primary" }, t("create"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(error, async () => {
      const body = {
        username: username.value.trim(), role: role.value,
        display_name: displayName.value.trim() || undefined,
        password: generate.checked ? undefined : password.value,
        must_change_password: mustChange.checked,
      };
      const created = await api("POST", "/admin/users", { body });
      notice.textContent = t("userCreated", { username: created.username });
      secret.hidden = true;
      if (created.temporary_password) showSecret(created.username, created.temporary_password);
      form.reset();
      password.disabled = true;
      await reload();
    });
  });
  main.append(form, error, notice, secret, list.el);
  await reload();
}
