// The API reference at /docs/: the vendored Swagger UI (web/vendor/swagger-ui) drawing this
// server's OpenAPI document. A file rather than an inline script, so the strict CSP holds;
// config.json's apiBase names the API when these files are hosted elsewhere.

async function apiBase() {
  try {
    const response = await fetch("../config.json", { cache: "no-cache" });
    if (response.ok) return ((await response.json()).apiBase || "").replace(/\/$/, "");
  } catch { /* no config: same origin */ }
  return "";
}

apiBase().then((base) => {
  window.ui = window.SwaggerUIBundle({
    url: `${base}/api/v1/openapi.json`,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
