// Calibration: the stored profiles, which one is active, each one's report (thresholds, verdict bands,
// fusion, what it was fitted on); activate or unset one; upload a profile made by `voxgate calibrate`.
import { api, busy, errorText, field, fmt, h, s, statusLine, table } from "../lib.js";

/** The LLR axis with the three verdict bands the profile's thresholds make. */
function verdictBands(th) {
  const w = 760, ht = 86, left = 20, right = 20;
  const lo = Math.min(-10, th.reject_llr - 4), hi = Math.max(10, th.accept_llr + 4);
  const x = (v) => left + ((v - lo) / (hi - lo)) * (w - left - right);
  const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, class: "chart", role: "img",
    "aria-label": `Verdicts by LLR: not verified below ${th.reject_llr}, not sure up to ${th.accept_llr}, verified from ${th.accept_llr}` });
  const band = (a, b, cls, label) => {
    svg.append(s("rect", { x: x(a), y: 14, width: x(b) - x(a), height: 30, class: cls, opacity: 0.85 }));
    svg.append(s("text", { x: (x(a) + x(b)) / 2, y: 34, "text-anchor": "middle", fill: "#fff", "font-weight": 600, "font-size": 13, text: label }));
  };
  band(lo, th.reject_llr, "v-not_verified", "not verified");
  band(th.reject_llr, th.accept_llr, "v-not_sure", "not sure");
  band(th.accept_llr, hi, "v-verified", "verified");
  for (let v = Math.ceil(lo / 5) * 5; v <= hi; v += 5) {
    svg.append(s("line", { x1: x(v), x2: x(v), y1: 44, y2: 50, class: "grid", stroke: "#8a94a3" }));
    svg.append(s("text", { x: x(v), y: 64, "text-anchor": "middle", class: "axis", text: String(v) }));
  }
  for (const [v, label] of [[th.reject_llr, `reject ${th.reject_llr}`], [th.accept_llr, `accept ${th.accept_llr}`]]) {
    svg.append(s("text", { x: x(v), y: 80, "text-anchor": "middle", class: "legend", text: label }));
  }
  return svg;
}

function report(p) {
  const d = p.document;
  const th = d.thresholds;
  const sets = d.fitted_on?.sets ?? [];
  return h("div", { className: "panel", id: "profile-report" },
    h("h2", {}, `Report: ${p.name}${p.active ? " (active)" : ""}`),
    h("dl", { className: "facts" },
      h("dt", {}, "Description"), h("dd", {}, d.description ?? "–"),
      h("dt", {}, "Channel"), h("dd", {}, p.channel),
      h("dt", {}, "Models"), h("dd", {}, d.models.map((m) => `${m.model_id} (${m.model_version}) × ${Number(m.weight).toFixed(3)}, normalisation ${m.normalisation}${m.top_k ? ` top-${m.top_k}` : ""}`).join("; ")),
      h("dt", {}, "Calibration"), h("dd", {}, `${d.calibration?.kind ?? "–"}, offset ${Number(d.calibration?.offset ?? 0).toFixed(3)}${d.quality ? `; speech-length term ${d.quality.kind} (${d.quality.min_s}–${d.quality.max_s} s)` : ""}`),
      h("dt", {}, "Thresholds"), h("dd", {}, `verified at LLR ≥ ${th.accept_llr} (chosen for a false-accept rate of ${(th.accept_far * 100).toFixed(2)} %); not verified below ${th.reject_llr} (false-reject rate ${(th.reject_frr * 100).toFixed(1)} %)`),
      h("dt", {}, "Fitted"), h("dd", {}, `${fmt.time(d.created)}; ${d.fitted_on?.trials ?? ""}`),
      h("dt", {}, "Hash"), h("dd", {}, h("code", {}, p.hash)),
      h("dt", {}, "Parent"), h("dd", {}, d.parent_hash ? h("code", {}, d.parent_hash) : "–"),
    ),
    h("h3", {}, "Verdict bands"),
    verdictBands(th),
    table(
      [
        { label: "Fitted on", value: (x) => x.name },
        { label: "Channel", value: (x) => x.channel ?? "–" },
        { label: "Recordings", value: (x) => String(x.recordings ?? "–"), className: "num" },
        { label: "Speakers", value: (x) => String(x.speakers ?? "–"), className: "num" },
        { label: "Target trials", value: (x) => String(x.target_trials ?? "–"), className: "num" },
        { label: "Non-target trials", value: (x) => String(x.nontarget_trials ?? "–"), className: "num" },
      ],
      sets, { caption: "Data the profile was fitted on", empty: "The profile names no fitting data." }),
    h("p", { className: "hint" }, "A profile document holds its fitted parameters, not its trial scores: the DET curve and score histograms of a fit are in the report folder `voxgate calibrate --report` writes."),
  );
}

export async function render(root) {
  const status = statusLine();
  const list = h("div", { id: "profile-list" });
  const detail = h("div", { "aria-live": "polite" });

  async function refresh() {
    const [profiles, active] = await Promise.all([api("/api/v2/maintenance/asp/"), api("/api/v2/maintenance/asp/active")]);
    list.replaceChildren(
      h("p", {}, active.active ? `Active: ${active.active.name} (scores every verification).` : `No profile is set active: scoring is automatic (${active.automatic}: the shipped telephone profile at ≤ 8 kHz, wideband above).`),
      table(
        [
          { label: "Name", value: (p) => p.name },
          { label: "Channel", value: (p) => p.channel },
          { label: "Model", value: (p) => p.model },
          { label: "Fitted", value: (p) => fmt.time(p.created) },
          { label: "State", value: (p) => [p.active ? "active" : "", p.shipped ? "shipped" : "uploaded"].filter(Boolean).join(", ") },
          { label: "Actions", value: (p) => {
            const view = h("button", { type: "button", className: "secondary", "aria-label": `Report of ${p.name}` }, "Report");
            view.addEventListener("click", () => showReport(p.uuid));
            const toggle = h("button", { type: "button", "aria-label": `${p.active ? "Unset" : "Activate"} ${p.name}` }, p.active ? "Unset" : "Activate");
            toggle.addEventListener("click", async () => {
              await busy(toggle, status, () => api(`/api/v2/maintenance/asp/${p.uuid}/active`, { method: "POST", json: { active: !p.active } }),
                p.active ? `${p.name} unset: scoring is automatic.` : `${p.name} is active.`);
              await refresh();
            });
            return h("span", { className: "row" }, view, toggle);
          } },
        ],
        profiles, { caption: "Calibration profiles" }));
  }

  async function showReport(uuid) {
    try {
      detail.replaceChildren(report(await api(`/api/v2/maintenance/asp/${uuid}`)));
      detail.querySelector("h2").scrollIntoView({ block: "start" });
    } catch (error) {
      status.set(errorText(error), "error");
    }
  }

  const file = h("input", { type: "file", accept: ".json,application/json", required: true });
  const upload = h("button", { type: "submit" }, "Upload profile");
  const uploadForm = h("form", { className: "panel" }, h("h2", {}, "Upload a profile"),
    field("Profile JSON", file, "As `voxgate calibrate DATASET --out profile.json` writes it; stored, not yet active."), upload);
  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("file", file.files[0]);
    const info = await busy(upload, status, () => api("/api/v2/maintenance/asp/", { method: "POST", form }), (r) => `Stored ${r.name}; see its report below before activating it.`);
    if (info) { await refresh(); await showReport(info.uuid); }
  });

  root.append(status, list, detail, uploadForm);
  await refresh();
}
