// The console's backups page: backups (newest first), the last restore drill with its
// measured RTO/RPO against the targets, and buttons to back up or drill now. Restores
// and keys stay on the command line: nothing here can fetch a key.

import { api } from "./api.js";
import { formatBytes, formatTime, h } from "./dom.js";
import { lang } from "./i18n.js";

const seconds = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 60 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`);

function drillCard(drill, page) {
  if (!drill) return h("div", { class: "card" }, h("p", { class: "muted" }, "No restore drill yet."));
  const verdict = (ok) => h("strong", { class: ok ? "status-ok" : "status-bad" }, ok ? "OK" : "FAILED");
  return h("div", { class: "card" },
    h("h2", {}, "Last restore drill ", verdict(drill.ok)),
    h("p", {}, `${formatTime(drill.ran_at, lang)} — backup ${drill.backup_id}`),
    h("p", {}, `RTO ${seconds(drill.rto_seconds)} (target ${seconds(page.rto_target_seconds)}), `
      + `RPO ${seconds(drill.rpo_seconds)} (target ${seconds(page.rpo_target_seconds)})`),
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
        error.textContent = e.message;
        status.textContent = "";
        button.disabled = false;
      }
    },
  }, label);
  const s = page.schedule;
  main.append(
    h("p", { class: "muted" }, `Target ${page.target}; kept ${page.keep_days} days. `
      + (s.enabled ? `Full backup daily at ${s.full_at}, drill weekly at ${s.drill_at} (${s.timezone}).`
        : "In-process schedule off (cron or systemd timers).")),
    h("div", { class: "actions" }, act("Back up now", "/admin/backups", { kind: "full" }),
      act("Run a restore drill", "/admin/backups/drill")),
    status, error, drillCard(page.last_drill, page),
    h("table", {},
      h("thead", {}, h("tr", {}, ["backup", "kind", "made", "size", "files", "status"].map((x) => h("th", {}, x)))),
      h("tbody", {}, page.items.map((b) => h("tr", {},
        h("td", {}, h("code", {}, b.id)), h("td", {}, b.kind),
        h("td", {}, b.created_at ? formatTime(b.created_at, lang) : "—"),
        h("td", {}, b.size == null ? "—" : formatBytes(b.size)),
        h("td", {}, b.files ?? "—"), h("td", {}, b.status))))));
}
