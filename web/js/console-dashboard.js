// The console's dashboard and monitoring pages: tiles, health per instance, charts of
// activity (7 days, from the database) and traffic (per minute, from each instance's
// samples), backups and firing alerts. One call, GET /admin/monitoring, feeds the charts;
// Grafana is not needed to see whether the service is well.

import { api } from "./api.js";
import { chart } from "./console-charts.js";
import { formatBytes, formatTime, h } from "./dom.js";
import { extendMessages, lang, t } from "./i18n.js";

extendMessages({
  en: {
    tileUsers: "users (active / all)", tileOnline: "online", onlineHere: "{n} on this instance", tileRooms: "rooms",
    roomsArchived: "{n} archived", tileMessagesToday: "messages today", tileStorage: "storage",
    auditOk: "OK", auditBroken: "BROKEN", tileAudit: "audit chain: {checked} newest events checked, head #{head}",
    tileLastPurge: "last purge", never: "never", tileBackups: "last full backup",
    noBackup: "none yet", drillOk: "restore drill OK, {when}", drillFailed: "restore drill FAILED, {when}",
    noDrill: "no restore drill yet", unavailable: "unavailable: {reason}",
    tileAlerts: "firing alerts", tileInstances: "instances ready",
    alertsNotConfigured: "Alertmanager is not configured (CMSCHAT_MONITORING__ALERTMANAGER_URL).",
    alertsUnreachable: "Alertmanager does not answer: {detail}", noAlerts: "No alert is firing.",
    notConfigured: "not configured", unreachable: "unreachable",
    activity: "Activity, last 7 days", lastHours: "Last {n} hours", lastHour: "Last hour",
    chartMessages: "Messages per hour", chartUsers: "Active users per day (sent a message)",
    chartRequests: "Requests and server errors per minute", chartLatency: "Request time, p95 (slowest instance)",
    chartWebsockets: "Open WebSocket connections",
    seriesMessages: "messages", seriesUsers: "active users", seriesRequests: "requests",
    seriesErrors: "5xx errors", seriesLatency: "p95", seriesWebsockets: "connections",
    unitPerHour: "msg/h", unitUsers: "users", unitPerMinute: "req/min", unitMs: "ms", unitConnections: "conn.",
    emptyActivity: "No messages in the last 7 days.",
    emptySamples: "No samples yet: every instance writes one per minute.",
    instances: "Instances", noInstances: "No instance has written a sample in this period.",
    colInstance: "instance", colState: "state", colChecks: "checks", colVersion: "version",
    colStarted: "started", colLastSeen: "last sample",
    stateReady: "ready", stateNotReady: "not ready", stateSilent: "silent", stateStopped: "stopped",
    instancesStopped: "{n} stopped",
    alerts: "Alerts", colAlert: "alert", colSeverity: "severity", colSince: "since", colSummary: "summary",
    chartTime: "Time", period: "Period", hoursOption: "{n} h", details: "Instances, alerts and longer periods: Monitoring",
  },
  ko: {
    tileUsers: "사용자 (활성 / 전체)", tileOnline: "접속 중", onlineHere: "이 인스턴스 {n}", tileRooms: "대화방",
    roomsArchived: "보관 {n}", tileMessagesToday: "오늘 메시지", tileStorage: "저장 공간",
    auditOk: "정상", auditBroken: "손상", tileAudit: "감사 체인: 최근 {checked}건 확인, 헤드 #{head}",
    tileLastPurge: "마지막 정리", never: "없음", tileBackups: "마지막 전체 백업",
    noBackup: "아직 없음", drillOk: "복구 훈련 정상, {when}", drillFailed: "복구 훈련 실패, {when}",
    noDrill: "복구 훈련 기록 없음", unavailable: "확인 불가: {reason}",
    tileAlerts: "발생 중인 알림", tileInstances: "준비된 인스턴스",
    alertsNotConfigured: "Alertmanager가 설정되지 않았습니다 (CMSCHAT_MONITORING__ALERTMANAGER_URL).",
    alertsUnreachable: "Alertmanager가 응답하지 않습니다: {detail}", noAlerts: "발생 중인 알림이 없습니다.",
    notConfigured: "미설정", unreachable: "연결 안 됨",
    activity: "최근 7일 활동", lastHours: "최근 {n}시간", lastHour: "최근 1시간",
    chartMessages: "시간당 메시지", chartUsers: "일별 활성 사용자 (메시지를 보낸 사람)",
    chartRequests: "분당 요청과 서버 오류", chartLatency: "요청 처리 시간 p95 (가장 느린 인스턴스)",
    chartWebsockets: "열린 WebSocket 연결",
    seriesMessages: "메시지", seriesUsers: "활성 사용자", seriesRequests: "요청",
    seriesErrors: "5xx 오류", seriesLatency: "p95", seriesWebsockets: "연결",
    unitPerHour: "건/시", unitUsers: "명", unitPerMinute: "요청/분", unitMs: "ms", unitConnections: "개",
    emptyActivity: "최근 7일 동안 메시지가 없습니다.",
    emptySamples: "아직 표본이 없습니다. 인스턴스마다 1분에 한 번 기록합니다.",
    instances: "인스턴스", noInstances: "이 기간에 표본을 기록한 인스턴스가 없습니다.",
    colInstance: "인스턴스", colState: "상태", colChecks: "점검", colVersion: "버전",
    colStarted: "시작", colLastSeen: "마지막 표본",
    stateReady: "준비됨", stateNotReady: "준비 안 됨", stateSilent: "응답 없음", stateStopped: "정상 종료",
    instancesStopped: "종료 {n}",
    alerts: "알림", colAlert: "알림", colSeverity: "심각도", colSince: "시작", colSummary: "요약",
    chartTime: "시각", period: "기간", hoursOption: "{n}시간", details: "인스턴스, 알림, 더 긴 기간: 모니터링",
  },
});

const MINUTE = 60;
const REFRESH_MS = 60_000;
const seconds = (iso) => Math.floor(new Date(iso).getTime() / 1000);

function load(hours) {
  return api("GET", "/admin/monitoring", {
    query: { hours, utc_offset_minutes: -new Date().getTimezoneOffset() },
  });
}

function ago(iso) {
  const minutes = Math.round((seconds(iso) - Date.now() / 1000) / MINUTE);
  const format = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
  if (Math.abs(minutes) < 60) return format.format(minutes, "minute");
  if (Math.abs(minutes) < 48 * 60) return format.format(Math.round(minutes / 60), "hour");
  return format.format(Math.round(minutes / 1440), "day");
}

// `words`: the value is a phrase ("none yet"), set smaller than a number.
function tile(label, value, { status, detail, name, words = false } = {}) {
  const classes = [status ? `status-${status}` : "", words ? "tile-text" : ""].join(" ").trim();
  return h("div", { class: "card tile", dataset: { tile: name } },
    h("strong", { class: classes || false }, value), label,
    detail ? h("small", { class: "muted tile-detail" }, detail) : null);
}

function backupsTile(result) {
  if (result.status === "rejected") {
    return tile(t("tileBackups"), "—", { status: "bad", detail: t("unavailable", { reason: result.reason.message }), name: "backups" });
  }
  const page = result.value;
  const full = page.items.find((b) => b.kind === "full" && b.status === "complete" && b.created_at);
  const drill = page.last_drill;
  const drillText = !drill ? t("noDrill") : t(drill.ok ? "drillOk" : "drillFailed", { when: ago(drill.ran_at) });
  return tile(t("tileBackups"), full ? ago(full.created_at) : t("noBackup"), {
    status: !full || (drill && !drill.ok) ? "bad" : "ok", detail: drillText, name: "backups", words: true,
  });
}

function alertsTile(alerts) {
  if (alerts.state === "ok") {
    return tile(t("tileAlerts"), alerts.total, { status: alerts.total ? "bad" : "ok", name: "alerts",
      detail: alerts.items.slice(0, 3).map((a) => a.name).join(", ") || t("noAlerts") });
  }
  return tile(t("tileAlerts"), t(alerts.state === "unreachable" ? "unreachable" : "notConfigured"), {
    status: alerts.state === "unreachable" ? "bad" : false, name: "alerts", words: true });
}

// Minutes without a sample stay gaps (null), so a stopped instance is not drawn as calm.
function perMinute(data) {
  const end = Math.floor(seconds(data.now) / MINUTE) * MINUTE;
  const start = end - data.hours * 3600;
  const byMinute = new Map(data.traffic.map((p) => [seconds(p.at), p]));
  const times = [];
  for (let at = start; at <= end; at += MINUTE) times.push(at);
  const pick = (key) => times.map((at) => (byMinute.has(at) ? byMinute.get(at)[key] : null));
  return { times, pick };
}

const periodTitle = (hours) => (hours === 1 ? t("lastHour") : t("lastHours", { n: hours }));

function trafficCharts(data) {
  const { times, pick } = perMinute(data);
  const empty = t("emptySamples");
  return h("div", { class: "charts" },
    chart({ name: "requests", title: t("chartRequests"), unit: t("unitPerMinute"), times, empty,
      series: [{ label: t("seriesRequests"), values: pick("requests") }, { label: t("seriesErrors"), values: pick("errors") }] }),
    chart({ name: "latency", title: t("chartLatency"), unit: t("unitMs"), times, empty, digits: 1,
      series: [{ label: t("seriesLatency"), values: pick("p95_ms") }] }),
    chart({ name: "websockets", title: t("chartWebsockets"), unit: t("unitConnections"), times, empty,
      series: [{ label: t("seriesWebsockets"), values: pick("websockets") }] }));
}

function activityCharts(data) {
  const anyPositive = (s) => s.values.some((v) => v > 0);
  return h("div", { class: "charts" },
    chart({ name: "messages", title: t("chartMessages"), unit: t("unitPerHour"), bars: true,
      empty: t("emptyActivity"), hasData: anyPositive,
      times: data.messages_per_hour.map((p) => seconds(p.at)),
      series: [{ label: t("seriesMessages"), values: data.messages_per_hour.map((p) => p.messages) }] }),
    chart({ name: "users", title: t("chartUsers"), unit: t("unitUsers"), bars: true, daily: true,
      empty: t("emptyActivity"), hasData: anyPositive,
      times: data.days.map((d) => seconds(d.day)),
      series: [{ label: t("seriesUsers"), values: data.days.map((d) => d.active_users) }] }));
}

// Shown pages are redrawn every minute (when a new sample is in); a page left for another
// stops, and a failed refresh keeps what is shown and tries again next time.
async function live(main, build) {
  const nodes = await build();
  main.replaceChildren(main.firstChild, ...nodes);
  const again = () => setTimeout(async () => {
    if (!nodes[0].isConnected) return;
    if (document.hidden) { again(); return; }
    try { await live(main, build); } catch { again(); }
  }, REFRESH_MS);
  again();
}

export function dashboard(main) {
  return live(main, buildDashboard);
}

async function buildDashboard() {
  const [d, data, backups] = await Promise.all([
    api("GET", "/admin/dashboard"), load(6), Promise.allSettled([api("GET", "/admin/backups")]),
  ]);
  // A gracefully stopped instance (a release, a scale-down) is neither up nor a fault.
  const running = data.instances.filter((i) => i.state !== "stopped");
  const ready = running.filter((i) => i.state === "ready").length;
  const stopped = data.instances.length - running.length;
  return [
    h("div", { class: "tiles" },
      tile(t("tileUsers"), `${d.users_active} / ${d.users_total}`, { name: "users" }),
      tile(t("tileOnline"), d.online, { detail: t("onlineHere", { n: d.online_here }), name: "online" }),
      tile(t("tileRooms"), d.rooms_total, { detail: t("roomsArchived", { n: d.rooms_archived }), name: "rooms" }),
      tile(t("tileMessagesToday"), d.messages_today, { name: "messages" }),
      tile(t("tileStorage"), formatBytes(d.storage_bytes), { name: "storage" }),
      tile(t("tileAudit", { checked: d.audit.checked, head: d.audit.head_id }), t(d.audit.ok ? "auditOk" : "auditBroken"),
        { status: d.audit.ok ? "ok" : "bad", name: "audit" }),
      tile(t("tileLastPurge"), d.retention_last_completed_at ? formatTime(d.retention_last_completed_at, lang) : t("never"), { name: "purge", words: true }),
      backupsTile(backups[0]),
      alertsTile(data.alerts),
      tile(t("tileInstances"), `${ready} / ${running.length}`,
        { status: running.length && ready === running.length ? "ok" : "bad", name: "instances",
          detail: stopped ? t("instancesStopped", { n: stopped }) : undefined })),
    h("h2", {}, t("activity")), activityCharts(data),
    h("h2", {}, periodTitle(data.hours)), trafficCharts(data),
    h("p", {}, h("a", { href: "#monitoring" }, t("details")))];
}

function instancesTable(instances) {
  if (!instances.length) return h("p", { class: "muted" }, t("noInstances"));
  const label = { ready: "stateReady", not_ready: "stateNotReady", silent: "stateSilent", stopped: "stateStopped" };
  const look = { ready: "status-ok", stopped: "muted" };
  return h("div", { class: "table-scroll" }, h("table", { class: "instances" },
    h("thead", {}, h("tr", {}, ["colInstance", "colState", "colChecks", "colVersion", "colStarted", "colLastSeen"]
      .map((key) => h("th", {}, t(key))))),
    h("tbody", {}, instances.map((i) => h("tr", {},
      h("td", {}, h("code", {}, i.instance)),
      h("td", {}, h("strong", { class: look[i.state] || "status-bad" }, t(label[i.state]))),
      h("td", {}, Object.entries(i.checks).map(([name, state]) =>
        h("span", { class: state === "ok" ? "check status-ok" : "check status-bad" }, `${name}: ${state}`))),
      h("td", {}, i.version), h("td", {}, formatTime(i.started_at, lang)), h("td", {}, ago(i.last_seen)))))));
}

function alertsSection(alerts) {
  if (alerts.state === "not_configured") return h("p", { class: "muted" }, t("alertsNotConfigured"));
  if (alerts.state === "unreachable") return h("p", { class: "status-bad", role: "alert" }, t("alertsUnreachable", { detail: alerts.detail || "" }));
  if (!alerts.items.length) return h("p", { class: "status-ok" }, t("noAlerts"));
  return h("div", { class: "table-scroll" }, h("table", { class: "alerts" },
    h("thead", {}, h("tr", {}, ["colAlert", "colSeverity", "colSince", "colSummary"].map((key) => h("th", {}, t(key))))),
    h("tbody", {}, alerts.items.map((a) => h("tr", {},
      h("td", {}, h("strong", {}, a.name)),
      h("td", {}, h("span", { class: a.severity === "critical" ? "status-bad" : "" }, a.severity)),
      h("td", {}, a.since ? ago(a.since) : "—"), h("td", {}, a.summary))))));
}

export function monitoring(main, hours = 6) {
  return live(main, () => buildMonitoring(main, hours));
}

async function buildMonitoring(main, hours) {
  const data = await load(hours);
  const error = h("p", { class: "form-error", role: "alert" });
  const choice = h("select", { "aria-label": t("period"), onchange: (e) => {
    monitoring(main, Number(e.target.value)).catch((failure) => { error.textContent = failure.message; });
  } }, [1, 6, 24, 48].map((n) => h("option", { value: n, selected: n === hours }, t("hoursOption", { n }))));
  return [
    h("div", { class: "filters" }, h("label", {}, t("period"), choice)), error,
    h("h2", {}, t("instances")), instancesTable(data.instances),
    h("h2", {}, t("alerts")), alertsSection(data.alerts),
    h("h2", {}, periodTitle(data.hours)), trafficCharts(data)];
}
