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

/** The inverse of the standard normal CDF (Acklam's approximation): DET axes are on this scale. */
function probit(p) {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const q = Math.min(Math.max(p, 1e-4), 1 - 1e-4);
  if (q < 0.02425) {
    const r = Math.sqrt(-2 * Math.log(q));
    return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1);
  }
  if (q > 1 - 0.02425) return -probit(1 - q);
  const r = q - 0.5, t = r * r;
  return (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * r / (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1);
}

/** The DET curve (miss rate against false-accept rate, both on a probit scale) as inline SVG. */
function detChart(points, eer) {
  const size = 320, pad = 44, ticks = [0.001, 0.01, 0.05, 0.2, 0.5];
  const lo = probit(0.0005), hi = probit(0.6);
  const pos = (p) => pad + ((probit(p) - lo) / (hi - lo)) * (size - pad - 10);
  const svg = s("svg", { viewBox: `0 0 ${size} ${size}`, class: "chart det", role: "img", "aria-label": `DET curve; EER ${(eer * 100).toFixed(2)} %` });
  for (const t of ticks) {
    svg.append(s("line", { x1: pos(t), x2: pos(t), y1: size - pos(0.6), y2: size - pad, class: "grid" }));
    svg.append(s("line", { x1: pad, x2: pos(0.6), y1: size - pos(t), y2: size - pos(t), class: "grid" }));
    svg.append(s("text", { x: pos(t), y: size - pad + 14, "text-anchor": "middle", class: "axis", text: `${t * 100}%` }));
    svg.append(s("text", { x: pad - 4, y: size - pos(t) + 4, "text-anchor": "end", class: "axis", text: `${t * 100}%` }));
  }
  svg.append(s("text", { x: size / 2, y: size - 6, "text-anchor": "middle", class: "legend", text: "false accepts" }));
  svg.append(s("text", { x: 12, y: size / 2, "text-anchor": "middle", class: "legend", transform: `rotate(-90 12 ${size / 2})`, text: "misses" }));
  svg.append(s("line", { x1: pos(0.0005), y1: size - pos(0.0005), x2: pos(0.6), y2: size - pos(0.6), class: "threshold" }));
  const inside = points.filter(([fa, miss]) => fa <= 0.6 && miss <= 0.6);
  svg.append(s("polyline", { class: "curve", points: inside.map(([fa, miss]) => `${pos(fa)},${size - pos(miss)}`).join(" ") }));
  return svg;
}

/** Target and non-target LLR histograms, with the profile's thresholds. */
function histogramChart(report, thresholds) {
  const w = 640, ht = 240, left = 40, bottom = 36, top = 10;
  const edges = report.histogram_edges;
  const lo = edges[0], hi = edges[edges.length - 1];
  const norm = (counts) => { const total = counts.reduce((a, b) => a + b, 0) || 1; return counts.map((c) => c / total); };
  const tar = norm(report.target_counts), non = norm(report.nontarget_counts);
  const max = Math.max(...tar, ...non, 1e-9);
  const x = (v) => left + ((v - lo) / (hi - lo)) * (w - left - 10);
  const y = (v) => top + (1 - v / max) * (ht - top - bottom);
  const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, class: "chart", role: "img", "aria-label": "LLR histograms of target and non-target trials, with the thresholds" });
  for (const [values, cls] of [[non, "v-not_verified"], [tar, "v-verified"]]) {
    values.forEach((v, i) => {
      if (v > 0) svg.append(s("rect", { x: x(edges[i]), y: y(v), width: Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1), height: y(0) - y(v), class: cls, opacity: 0.6 }));
    });
  }
  const step = (hi - lo) / 6;
  for (let i = 0; i <= 6; i++) {
    const v = lo + i * step;
    svg.append(s("text", { x: x(v), y: ht - bottom + 14, "text-anchor": "middle", class: "axis", text: v.toFixed(0) }));
  }
  for (const [v, label, dy] of [[thresholds.reject_llr, `not verified < ${thresholds.reject_llr.toFixed(2)}`, 12], [thresholds.accept_llr, `verified ≥ ${thresholds.accept_llr.toFixed(2)}`, 26]]) {
    if (v < lo || v > hi) continue;
    svg.append(s("line", { x1: x(v), x2: x(v), y1: top, y2: ht - bottom, class: "threshold" }));
    svg.append(s("text", { x: x(v) + 3, y: top + dy, class: "legend", text: label }));
  }
  svg.append(s("rect", { x: left, y: ht - 14, width: 12, height: 12, class: "v-verified", opacity: 0.6 }));
  svg.append(s("text", { x: left + 16, y: ht - 4, class: "legend", text: "same speaker (target)" }));
  svg.append(s("rect", { x: left + 200, y: ht - 14, width: 12, height: 12, class: "v-not_verified", opacity: 0.6 }));
  svg.append(s("text", { x: left + 216, y: ht - 4, class: "legend", text: "different speakers" }));
  return svg;
}

/** The figures of a fit on the upload's own trials (kept beside a profile the server fitted). */
function fitReport(r, thresholds) {
  const pct = (v) => `${(v * 100).toFixed(2)} %`;
  return h("div", { id: "fit-report" },
    h("h3", {}, "How it scored the recordings it was fitted on"),
    h("p", {}, `Scored on the upload's own ${r.target_trials} same-speaker and ${r.nontarget_trials} different-speaker pairs${r.unscored ? ` (${r.unscored} unusable, counted as rejections)` : ""}. Figures on the data a profile was fitted on are optimistic: try it on calls it has not heard before activating it.`),
    h("dl", { className: "facts" },
      h("dt", {}, "EER"), h("dd", {}, pct(r.eer)),
      h("dt", {}, "minDCF (P_target 0.01)"), h("dd", {}, r.min_dcf.toFixed(4)),
      h("dt", {}, "Cllr / minCllr"), h("dd", {}, `${r.cllr.toFixed(4)} / ${r.min_cllr.toFixed(4)} bits`),
      h("dt", {}, "At the thresholds"), h("dd", {}, `false accepts ${pct(r.false_accept)} of different-speaker pairs, false rejects ${pct(r.false_reject)} of same-speaker pairs`),
    ),
    h("div", { className: "grid2" }, h("figure", {}, detChart(r.det, r.eer), h("figcaption", {}, "DET curve")), h("figure", {}, histogramChart(r, thresholds), h("figcaption", {}, "LLR histograms"))),
  );
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
    p.report
      ? fitReport(p.report, th)
      : h("p", { className: "hint" }, "This profile was not fitted by this server, and its document holds its fitted parameters, not its trial scores: the DET curve and score histograms of a fit are in the report folder `voxgate calibrate --report` writes (the shipped profiles' figures: docs/accuracy.md)."),
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

  // fit a profile on uploaded recordings, with progress
  const dataset = h("input", { type: "file", accept: ".zip,application/zip", required: true });
  const fitName = h("input", { name: "fit-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*", maxlength: 64 });
  const fitModel = h("select", { name: "fit-model" }, h("option", { value: "" }, "every model the engine runs"), ["ecapa+campplus", "ecapa", "campplus"].map((m) => h("option", { value: m }, m)));
  const telephone = h("input", { type: "checkbox", name: "simulate_telephone" });
  const fitButton = h("button", { type: "submit" }, "Fit profile");
  const fitStatus = statusLine();
  const bar = h("span", {});
  const progress = h("div", { className: "meter", role: "progressbar", "aria-label": "Recordings embedded", "aria-valuemin": "0", "aria-valuenow": "0", hidden: true }, bar);
  const fitForm = h("form", { className: "panel", "aria-labelledby": "h-fit" }, h("h2", { id: "h-fit" }, "Fit a profile on your recordings"),
    h("p", { className: "hint" }, "A ZIP with one folder per speaker holding their recordings (at least two speakers, one with two recordings or more), as `voxgate calibrate` reads a dataset. Every pair of recordings becomes a trial."),
    h("div", { className: "row" }, field("Dataset (ZIP)", dataset), field("Profile name", fitName), field("Models", fitModel)),
    h("div", { className: "field" }, h("label", {}, telephone, " Simulate the telephone channel (8 kHz G.711) for wideband recordings")),
    fitButton, progress, fitStatus);
  fitForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("file", dataset.files[0]);
    form.append("name", fitName.value);
    if (fitModel.value) form.append("model", fitModel.value);
    if (telephone.checked) form.append("simulate_telephone", "true");
    fitButton.disabled = true;
    try {
      fitStatus.set("Uploading…", "busy");
      let job = await api("/api/v2/maintenance/calibrate", { method: "POST", form });
      progress.hidden = false;
      while (!["done", "failed"].includes(job.stage)) {
        progress.setAttribute("aria-valuemax", String(job.total || 1));
        progress.setAttribute("aria-valuenow", String(job.done));
        bar.style.width = `${job.total ? (100 * job.done) / job.total : 0}%`;
        fitStatus.set(job.stage === "embedding" ? `Embedding recording ${job.done} of ${job.total}…` : `${job.stage[0].toUpperCase()}${job.stage.slice(1)}…`, "busy");
        await new Promise((resolve) => setTimeout(resolve, 700));
        job = await api(`/api/v2/maintenance/calibrate/${job.id}`);
      }
      bar.style.width = "100%";
      if (job.stage === "failed") { fitStatus.set(`The fit failed: ${job.detail}`, "error"); return; }
      fitStatus.set(`Stored ${job.name} (not active)${job.detail ? `; ${job.detail}` : ""}. Read its report, then activate it in the list above.`);
      await refresh();
      await showReport(job.profile_uuid);
    } catch (error) {
      fitStatus.set(errorText(error), "error");
    } finally {
      fitButton.disabled = false;
    }
  });

  root.append(status, list, detail, fitForm, uploadForm);
  await refresh();
}
