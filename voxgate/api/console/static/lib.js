// Shared pieces of the console: the token, calls to the REST API, DOM and chart helpers.
// Plain ES modules, no build step: what is here is what the browser runs.

const TOKEN_KEY = "voxgate.token";

/** The login token of this tab (sessionStorage: gone when the tab closes, never sent to another site). */
export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  },
  onLogout: () => {},
};

/** An answer of the API that is not 2xx: its status and the server's `detail`. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

/**
 * Call the REST API with the token. `json` sends a JSON body, `form` a FormData (multipart);
 * `as` picks how the answer is read: "json" (default), "blob", "text" or "response".
 */
export async function api(path, { method = "GET", json, form, as = "json", signal } = {}) {
  const headers = {};
  if (session.token) headers.Authorization = `Token ${session.token}`;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  else if (form !== undefined) body = form;
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
    if (response.status === 401 && path !== "/rest-auth/login/") {
      session.token = null;
      session.onLogout(detail);
    }
    throw new ApiError(response.status, detail);
  }
  if (as === "response") return response;
  if (response.status === 204) return null;
  if (as === "blob") return response.blob();
  if (as === "text") return response.text();
  return response.json();
}

/** The text of an error for a person: the API's detail, else the exception's message. */
export function errorText(error) {
  if (error instanceof ApiError) {
    const detail = Array.isArray(error.detail)
      ? error.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : error.message;
    return `${error.status}: ${detail}`;
  }
  return String(error?.message ?? error);
}

/**
 * Read a server-sent-event stream with fetch (EventSource cannot send the token header); calls
 * onEvent(name, data) per event and reconnects when the response ends, until `signal` aborts.
 */
export async function watchEvents(path, onEvent, signal, onError = () => {}) {
  while (!signal.aborted) {
    try {
      const response = await api(path, { as: "response", signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (data.length) onEvent(name, JSON.parse(data.join("\n")));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      onError(error);
      if (error instanceof ApiError && error.status === 401) return;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

/** Make an element: h("button", {type: "button", onclick}, "Text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "className") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element (charts are drawn as inline SVG: crisp, styled by CSS, readable by screen readers). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") el.textContent = value; else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

/** A labelled form field: <label>text <input ...></label> with an id, for screen readers and clicks. */
let fieldCount = 0;
export function field(label, input, hint) {
  const id = input.id || `f${++fieldCount}`;
  input.id = id;
  const hintEl = hint ? h("small", { id: `${id}-hint`, className: "hint" }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { className: "field" }, h("label", { for: id }, label), input, hintEl);
}

/** A status line announced to screen readers; set(text, kind) with kind "ok" | "error" | "busy". */
export function statusLine() {
  const el = h("p", { className: "status", role: "status", "aria-live": "polite" });
  el.set = (text, kind = "ok") => { el.textContent = text; el.dataset.kind = kind; };
  return el;
}

/** Run an async action from a button: disabled while it runs, the outcome on a status line. */
export async function busy(button, status, action, doneText) {
  button.disabled = true;
  status.set("Working…", "busy");
  try {
    const result = await action();
    status.set(typeof doneText === "function" ? doneText(result) : (doneText ?? "Done."), "ok");
    return result;
  } catch (error) {
    status.set(errorText(error), "error");
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** Save a Blob as a file, named by the server's Content-Disposition when there is one. */
export async function download(path, fallbackName) {
  const response = await api(path, { as: "response" });
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return name;
}

export const fmt = {
  seconds: (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} s`),
  llr: (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(2)),
  time: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
  clock: (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–"),
};

/** A verdict as a badge whose colour is backed by its word (never colour alone). */
export function verdictBadge(verdict) {
  if (!verdict) return h("span", { className: "badge" }, "–");
  return h("span", { className: `badge verdict-${verdict}` }, verdict.replaceAll("_", " "));
}

/** A table from column specs [{label, value: row => node|text, className}]. */
export function table(columns, rows, { caption, empty = "Nothing here." } = {}) {
  if (!rows.length) return h("p", { className: "empty" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", className: c.className }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { className: c.className }, c.value(row)))))),
  );
}

/**
 * A bar chart of per-day series as inline SVG: one group of bars per day, a legend, axis labels;
 * `series` is [{name, className, values}] with one value per label.
 */
export function barChart(labels, series, { title, unit = "" } = {}) {
  const width = 760, height = 260, left = 48, bottom = 42, top = 16, right = 12;
  const max = Math.max(1, ...series.flatMap((x) => x.values));
  const plotW = width - left - right, plotH = height - top - bottom;
  const groupW = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, Math.min(28, (groupW - 6) / series.length));
  const y = (v) => top + plotH - (v / max) * plotH;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  svg.append(s("title", { text: title }));
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end", text: `${+v.toFixed(2)}${unit}` }));
  }
  labels.forEach((label, i) => {
    const x0 = left + i * groupW + (groupW - barW * series.length) / 2;
    series.forEach((serie, j) => {
      const v = serie.values[i];
      const rect = s("rect", { x: x0 + j * barW, y: y(v), width: barW - 1, height: top + plotH - y(v), class: serie.className });
      rect.append(s("title", { text: `${label} ${serie.name}: ${v}${unit}` }));
      svg.append(rect);
    });
    if (labels.length <= 16 || i % Math.ceil(labels.length / 16) === 0) {
      svg.append(s("text", { x: left + (i + 0.5) * groupW, y: height - bottom + 16, class: "axis", "text-anchor": "middle", text: label.slice(5) }));
    }
  });
  series.forEach((serie, j) => {
    const x = left + j * 150;
    svg.append(s("rect", { x, y: height - 16, width: 12, height: 12, class: serie.className }));
    svg.append(s("text", { x: x + 16, y: height - 6, class: "legend", text: serie.name }));
  });
  return svg;
}
