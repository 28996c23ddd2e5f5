// Building the page safely. Untrusted text only ever goes in through textContent
// (h() and text()); the one way to insert HTML is trustedHtml(), used only for the
// server's sanitised content_html / body_html.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// HTML the server sanitised (nh3). Parsed inertly, then moved into place.
export function trustedHtml(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content;
}

// The text a reader sees in server-sanitised HTML (no markup, no markdown signs), on one
// line. Parsed in an inert template: nothing in it runs or loads.
export function plainText(html) {
  const content = trustedHtml(html || "");
  // Line and block breaks become spaces, so "one<br>two" does not read "onetwo".
  for (const el of content.querySelectorAll("br, p, li, div, blockquote, pre, tr, h1, h2, h3, h4, h5, h6")) {
    el.after(" ");
  }
  return content.textContent.replace(/\s+/g, " ").trim();
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function formatTime(iso, lang) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return date.toLocaleString(lang, today
    ? { hour: "2-digit", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
