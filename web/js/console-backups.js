// The console's backups page: backups (newest first), the last restore drill with its
// measured RTO/RPO against the targets, and buttons to back up or drill now. Restores
// and keys stay on the command line: nothing here can fetch a key.

import { api } from "./api.js";
import { dataTable, word } from "./console-ui.js";
import { formatBytes, formatTime, h } from "./dom.js";
import { errorText, lang, t } from "./i18n.js";

const seconds = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 60 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`);

function drillCard(drill, page) {
  if (!drill) return h("div", { class: "card" }, h("p", { class: "muted" }, t("noDrill")));
  const verdict = (ok) => h("strong", { class: ok ? "status-ok" : "status-bad" }, ok ? "OK" : t("failed"));
  return h("div", { class: "card" },
    h("h2", {}, t("lastDrill"), " ", verdict(drill.ok)),
    h("p", {}, t("drillOf", { time: formatTime(drill.ran_at, lang), backup: drill.backup_id })),
    h("p", {}, `RTO ${seconds(drill.rto_seconds)} (${t("target")} ${seconds(page.rto_target_seconds)}), `
      + `RPO ${seconds(drill.rpo_seconds)} (${t("target")} ${seconds(page.rpo_target_seconds)})`),
    h("ul", {}, drill.checks.map((c) => h("li", {}, verdict(c.ok), ` ${c.name}: ${c.detail}`))));
}

export async function backups(main) {
  const page = await api("GET", "/admin/backups");
  const status = h("p", { role: "status" });
  const error = h("p", { class: "form-error", role: "alert" });
  const act = (label, path, body) => h("button", {
    class: "button", type: "button",
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      error.textContent = "";
      status.textContent = `${label}…`;
      try {
        await api("POST", path, { body });
        main.replaceChildren(main.firstChild);
        await backups(main);
      } catch (e) {
        error.textContent = errorText(e);
        status.textContent = "";
        button.disabled = false;
      }
    },
  }, label);
  const s = page.schedule;
  const list = dataTable([t("col_backup"), t("col_kind"), t("col_made"), t("col_size"), t("col_files"), t("col_status")],
    t("noBackups"));
  list.fill(page.items.map((b) => h("tr", {},
    h("td", {}, h("code", {}, b.id)), h("td", {}, word("backupKind_", b.kind)),
    h("td", {}, b.created_at ? formatTime(b.created_at, lang) : t("none")),
    h("td", {}, b.size == null ? t("none") : formatBytes(b.size)),
    h("td", {}, b.files ?? t("none")), h("td", {}, word("backupStatus_", b.status)))));
  main.append(
    h("p", { class: "muted" }, t("backupTarget", { target: page.target, days: page.keep_days }) + " "
      + (s.enabled ? t("backupSchedule", { full: s.full_at, drill: s.drill_at, zone: s.timezone })
        : t("backupScheduleOff"))),
    h("div", { class: "actions" }, act(t("backUpNow"), "/admin/backups", { kind: "full" }),
      act(t("runDrill"), "/admin/backups/drill")),
    status, error, drillCard(page.last_drill, page), list.el);
}
