// Signing in, and the forced first password change.

import { api, ApiError, deviceTokens, token } from "./api.js";
import { h, clear } from "./dom.js";
import { errorText, t } from "./i18n.js";

function errorLine() {
  return h("p", { class: "form-error", role: "alert" });
}

function showError(line, error) {
  line.textContent = error instanceof ApiError ? errorText(error) : String(error);
}

// The rules a new password must meet, from the server (the ones it enforces), as one
// translated sentence; empty if the server cannot say.
export async function passwordRules() {
  try {
    const p = await api("GET", "/auth/password-policy");
    return t("passwordRules", { min: p.min_length, max: p.max_length, distinct: p.min_distinct_characters });
  } catch { return ""; }
}

// Resolves with the signed-in user once they may use the app.
export function signIn(root) {
  return new Promise((resolve) => {
    const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
    const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
    const error = errorLine();
    const form = h("form", { class: "card auth", "aria-labelledby": "sign-in-title" },
      h("h1", { id: "sign-in-title" }, t("appName")),
      h("label", { for: "username" }, t("username")), username,
      h("label", { for: "password" }, t("password")), password,
      error,
      h("button", { type: "submit", class: "primary" }, t("signIn")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const name = username.value.trim();
        const body = { username: name, password: password.value };
        const device = deviceTokens.get(name);
        if (device) body.device_token = device;
        const result = await api("POST", "/auth/login", { body });
        token.set(result.access_token);
        if (result.device_token) deviceTokens.set(name, result.device_token);
        resolve(await ensurePasswordChanged(root, result.user, password.value));
      } catch (e) { showError(error, e); }
    });
    clear(root, form);
    username.focus();
  });
}

export async function ensurePasswordChanged(root, user, current = "") {
  if (!user.must_change_password) return user;
  return new Promise((resolve) => {
    const currentInput = h("input", { id: "current", type: "password", autocomplete: "current-password", value: current, required: true });
    const fresh = h("input", { id: "fresh", type: "password", autocomplete: "new-password", required: true, "aria-describedby": "password-rules" });
    const rules = h("p", { id: "password-rules", class: "muted hint" });
    passwordRules().then((text) => { rules.textContent = text; });
    const error = errorLine();
    const form = h("form", { class: "card auth" },
      h("h1", {}, t("changePassword")),
      h("p", {}, t(user.must_change_reason === "first_start" ? "changePasswordFirstStart" : "changePasswordHint")),
      h("label", { for: "current" }, t("currentPassword")), currentInput,
      h("label", { for: "fresh" }, t("newPassword")), fresh, rules,
      error,
      h("button", { type: "submit", class: "primary" }, t("save")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        resolve(await api("POST", "/me/password", {
          body: { current_password: currentInput.value, new_password: fresh.value },
        }));
      } catch (e) { showError(error, e); }
    });
    clear(root, form);
    fresh.focus();
  });
}

export async function currentUser(root) {
  if (token.get()) {
    try {
      return await ensurePasswordChanged(root, await api("GET", "/me"));
    } catch { token.clear(); }
  }
  return signIn(root);
}

export async function signOut() {
  try { await api("POST", "/auth/logout"); } catch { /* already gone */ }
  token.clear();
  window.location.reload();
}
