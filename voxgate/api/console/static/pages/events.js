// Events & billing: the event log with filters, pages and CSV export; billing aggregates per day as a chart.
import { api, barChart, busy, download, errorText, field, fmt, h, statusLine, table } from "../lib.js";

const TYPES = ["stream_start", "stream_stop", "enroll", "verify", "import", "voiceprint_delete", "login",
  "logout", "password_change", "password_reset", "maintenance", "error", "webhook"];

const isoDay = (date) => date.toISOString().slice(0, 10);

export async function render(root) {
  const type = h("select", { name: "type" }, h("option", { value: "" }, "any"), TYPES.map((t) => h("option", { value: t }, t)));
  const externalId = h("input", { name: "external_id", maxlength: 256 });
  const stream = h("input", { name: "stream", maxlength: 64, placeholder: "uuid" });
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const order = h("select", { name: "order" }, h("option", { value: "desc" }, "newest first"), h("option", { value: "asc" }, "oldest first"));
  const status = statusLine();
  const results = h("div", { id: "events-table" });
  let page = 1;
  const pageSize = 50;

  function query(extra = {}) {
    const q = new URLSearchParams({ page: String(page), page_size: String(pageSize), order: order.value, ...extra });
    if (type.value) q.append("type", type.value);
    if (externalId.value) q.set("external_id", externalId.value);
    if (stream.value) q.set("stream", stream.value.trim());
    if (from.value) q.set("from", `${from.value}T00:00:00Z`);
    if (to.value) q.set("to", `${to.value}T23:59:59.999Z`);
    return q;
  }

  async function load() {
    try {
      const answer = await api(`/api/v2/logging?${query()}`);
      const pages = Math.max(1, Math.ceil(answer.total / pageSize));
      const prev = h("button", { type: "button", className: "secondary", disabled: page <= 1, onclick: () => { page -= 1; load(); } }, "Previous page");
      const next = h("button", { type: "button", className: "secondary", disabled: page >= pages, onclick: () => { page += 1; load(); } }, "Next page");
      results.replaceChildren(
        table(
          [
            { label: "Time", value: (e) => fmt.time(e.time) },
            { label: "Type", value: (e) => e.type },
            { label: "Outcome", value: (e) => e.outcome },
            { label: "External id", value: (e) => e.external_id ?? "–" },
            { label: "Stream", value: (e) => (e.stream ? h("code", { title: e.stream, className: "id" }, e.stream.slice(0, 8)) : "–") },
            { label: "Detail", value: (e) => h("code", {}, JSON.stringify(e.detail)) },
          ],
          answer.events, { caption: `Events: ${answer.total} match, page ${page} of ${pages}`, empty: "No event matches." }),
        h("p", { className: "row" }, prev, next));
      status.set("");
    } catch (error) {
      status.set(errorText(error), "error");
    }
  }

  const csvButton = h("button", { type: "button", className: "secondary" }, "Export CSV (this page's filters, up to 1000)");
  csvButton.addEventListener("click", () => {
    const q = query({ format: "csv", page: "1", page_size: "1000" });
    return busy(csvButton, status, () => download(`/api/v2/logging?${q}`, "voxgate-events.csv"), (name) => `Saved ${name}.`);
  });
  const filters = h("form", { className: "panel", "aria-label": "Event filters", onsubmit: (e) => { e.preventDefault(); page = 1; load(); } },
    h("div", { className: "row" }, field("Type", type), field("External id", externalId), field("Stream", stream), field("From (UTC day)", from), field("To (UTC day)", to), field("Order", order),
      h("button", { type: "submit" }, "Filter"), csvButton));

  // billing
  const now = new Date();
  const billFrom = h("input", { type: "date", value: isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1))) });
  const billTo = h("input", { type: "date", value: isoDay(now) });
  const billing = h("div", { id: "billing" });
  const billStatus = statusLine();
  async function loadBilling() {
    try {
      const end = new Date(`${billTo.value}T00:00:00Z`);
      end.setUTCDate(end.getUTCDate() + 1);
      const report = await api(`/api/v2/logging_aggregate?from=${billFrom.value}T00:00:00Z&to=${end.toISOString()}`);
      const days = [];
      for (let d = new Date(`${billFrom.value}T00:00:00Z`); d < end; d.setUTCDate(d.getUTCDate() + 1)) days.push(isoDay(d));
      const byDay = Object.fromEntries(report.days.map((d) => [d.day, d]));
      const value = (day, key) => byDay[day]?.[key] ?? 0;
      const minutes = (day) => Object.values(byDay[day]?.stream_minutes ?? {}).reduce((a, b) => a + b, 0);
      const t = report.totals;
      billing.replaceChildren(
        h("p", {}, `Totals: ${t.enrollments} enrollments, ${t.verifications} verifications, ${t.imports} imports, ` +
          `stream minutes ${Object.entries(t.stream_minutes).map(([k, v]) => `${k} ${v}`).join(", ") || "0"}.`),
        barChart(days, [
          { name: "enrollments", className: "s-enroll", values: days.map((d) => value(d, "enrollments")) },
          { name: "verifications", className: "s-verify", values: days.map((d) => value(d, "verifications")) },
          { name: "imports", className: "s-import", values: days.map((d) => value(d, "imports")) },
        ], { title: "Invoiceable actions per UTC day" }),
        barChart(days, [{ name: "stream minutes", className: "s-minutes", values: days.map((d) => +minutes(d).toFixed(2)) }], { title: "Stream minutes per UTC day" }),
      );
      billStatus.set("");
    } catch (error) {
      billStatus.set(errorText(error), "error");
    }
  }
  const billForm = h("form", { onsubmit: (e) => { e.preventDefault(); loadBilling(); } },
    h("div", { className: "row" }, field("From (UTC day)", billFrom), field("To (UTC day, inclusive)", billTo), h("button", { type: "submit" }, "Show")));

  root.append(filters, status, results, h("div", { className: "panel" }, h("h2", {}, "Billing per day"), billForm, billStatus, billing));
  await Promise.all([load(), loadBilling()]);
}
