// Live calls: every running stream of this server with its caller info, net speech, backlog and verdict
// timeline, pushed by GET /api/v2/streams/live (server-sent events); the last streams that ended below.
import { errorText, fmt, h, s, statusLine, table, verdictBadge, watchEvents } from "../lib.js";

/** The verdicts of a stream as a small LLR-over-time chart, one dot per verification, coloured and titled. */
function timeline(points) {
  if (!points.length) return h("span", { className: "empty" }, "no verification yet");
  const w = 256, ht = 36, pad = 4;
  const t0 = points[0].at_s, t1 = Math.max(points[points.length - 1].at_s, t0 + 1);
  const scores = points.map((p) => p.score);
  const lo = Math.min(0, ...scores), hi = Math.max(0, ...scores, 1);
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (v) => ht - pad - ((v - lo) / (hi - lo || 1)) * (ht - 2 * pad);
  const last = points[points.length - 1];
  const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, class: "timeline", role: "img",
    "aria-label": `${points.length} verifications from ${t0.toFixed(0)} s to ${last.at_s.toFixed(0)} s; last ${last.verdict.replaceAll("_", " ")}, LLR ${last.score.toFixed(2)}` });
  svg.append(s("line", { x1: pad, x2: w - pad, y1: y(0), y2: y(0), class: "threshold" }));
  svg.append(s("polyline", { points: points.map((p) => `${x(p.at_s)},${y(p.score)}`).join(" "), class: "llr-line" }));
  for (const p of points) {
    const dot = s("circle", { cx: x(p.at_s), cy: y(p.score), r: 2.6, class: `v-${p.verdict}` });
    dot.append(s("title", { text: `${p.at_s.toFixed(1)} s: ${p.verdict.replaceAll("_", " ")}, LLR ${p.score.toFixed(2)}, ${p.speech_length.toFixed(1)} s speech` }));
    svg.append(dot);
  }
  return svg;
}

function caller(info) {
  const entries = Object.entries(info || {});
  if (!entries.length) return "–";
  return entries.map(([k, v]) => `${k}: ${v}`).join(", ");
}

const COLUMNS = [
  { label: "Type", value: (x) => x.type },
  { label: "Stream", value: (x) => h("code", { title: x.uuid, className: "id" }, x.uuid.slice(0, 8)) },
  { label: "Node", value: (x) => x.node ?? "–" },
  { label: "Caller info", value: (x) => caller(x.info) },
  { label: "Started", value: (x) => fmt.clock(x.started) },
  { label: "Audio", value: (x) => fmt.seconds(x.duration_s), className: "num" },
  { label: "Net speech", value: (x) => `${fmt.seconds(x.speech_length)}${x.capped ? " (cap)" : ""}`, className: "num" },
  { label: "Backlog", value: (x) => fmt.seconds(x.backlog_s), className: "num" },
  { label: "Verdict", value: (x) => h("span", { "data-verdict": x.last_verdict ?? "" }, verdictBadge(x.last_verdict)) },
  { label: "LLR", value: (x) => fmt.llr(x.last_score), className: "num" },
  { label: "Timeline", value: (x) => timeline(x.verdicts) },
];

export async function render(root) {
  const status = statusLine();
  const running = h("div", { id: "live-running" });
  const ended = h("div", { id: "live-ended" });
  const updated = h("p", { className: "hint", id: "live-updated" });
  const stop = new AbortController();
  status.set("Connecting…", "busy");
  root.append(
    h("p", { className: "hint" }, "Streams of this server, or of every node of a cluster (HTTP, WebSocket, SIP), updated as they run. A verdict appears once the caller's system asks for a verification; the timeline is kept by the node that runs the stream."),
    status, updated,
    h("h2", {}, "Running"), running,
    h("h2", {}, "Recently ended"), ended,
  );
  watchEvents("/api/v2/streams/live?interval_s=0.5&duration_s=30", (name, data) => {
    if (name !== "streams") return;
    // the status line is announced to screen readers: only when the number of calls changes
    const count = `${data.running.length} running`;
    if (status.textContent !== count) status.set(count);
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    running.replaceChildren(table(COLUMNS, data.running, { empty: "No stream is running." }));
    ended.replaceChildren(table(
      [...COLUMNS.slice(0, 4), { label: "Ended", value: (x) => `${fmt.clock(x.ended)} (${x.reason})` }, ...COLUMNS.slice(5, 7), ...COLUMNS.slice(8)],
      data.ended, { empty: "None since the server started." }));
  }, stop.signal, (error) => status.set(`Disconnected (${errorText(error)}); retrying…`, "error"));
  return () => stop.abort();
}
