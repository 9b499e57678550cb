// Voiceprints: list and search by external id, details, delete; enroll from uploaded recordings;
// snapshot export and import. Every action is one REST call of /api/v2.
import { api, busy, download, errorText, field, fmt, h, statusLine, table } from "../lib.js";

function sourceText(source) {
  if (!source) return "–";
  if (source.type === "recordings") return `recordings (${(source.files || []).map((f) => f.filename ?? f).join(", ")})`;
  if (source.type === "stream") return `${source.stream_type ?? ""} stream ${source.stream_uuid ?? ""}`.trim();
  return source.type ?? source.kind ?? JSON.stringify(source);
}

export async function render(root) {
  const status = statusLine();
  const prefix = h("input", { type: "search", name: "prefix", placeholder: "customer-" });
  const listBox = h("div", { id: "voiceprint-list" });
  const details = h("div", { id: "voiceprint-details", "aria-live": "polite" });

  async function refresh() {
    try {
      const answer = await api(`/api/v2/voiceprints?prefix=${encodeURIComponent(prefix.value)}&limit=100`);
      listBox.replaceChildren(
        h("p", {}, `${answer.total} voiceprint${answer.total === 1 ? "" : "s"}${prefix.value ? ` starting with “${prefix.value}”` : ""}${answer.total > answer.voiceprints.length ? `; the newest ${answer.voiceprints.length} shown` : ""}.`),
        table(
          [
            { label: "External id", value: (v) => h("button", { type: "button", className: "secondary", onclick: () => show(v.external_id) }, v.external_id) },
            { label: "Created", value: (v) => fmt.time(v.created) },
            { label: "Net speech", value: (v) => fmt.seconds(v.speech_length), className: "num" },
            { label: "Source", value: (v) => sourceText(v.source) },
          ],
          answer.voiceprints,
          { caption: "Voiceprints, newest first", empty: "No voiceprint matches." },
        ),
      );
    } catch (error) {
      status.set(errorText(error), "error");
    }
  }

  async function show(externalId) {
    const info = await api("/api/v2/voiceprint", { method: "POST", json: { external_id: externalId } });
    if (!info.exists) {
      details.replaceChildren(h("p", { className: "status", "data-kind": "error" }, `No voiceprint for “${externalId}”.`));
      return;
    }
    const remove = h("button", { type: "button", className: "danger" }, `Delete ${externalId}`);
    const removed = statusLine();
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete the voiceprint of “${externalId}”? This cannot be undone.`)) return;
      const done = await busy(remove, removed, () => api("/api/v2/leave", { method: "DELETE", json: { external_id: externalId } }), `Deleted ${externalId}.`);
      if (done) { details.replaceChildren(removed); refresh(); }
    });
    details.replaceChildren(
      h("div", { className: "panel" },
        h("h2", {}, `Voiceprint “${info.external_id}”`),
        h("dl", { className: "facts" },
          h("dt", {}, "Created"), h("dd", {}, fmt.time(info.created)),
          h("dt", {}, "Net speech"), h("dd", {}, fmt.seconds(info.speech_length)),
          h("dt", {}, "Models"), h("dd", {}, info.models.map((m) => `${m.model_id} (${m.model_version}, ${m.dimension} dims)`).join("; ")),
          h("dt", {}, "Source"), h("dd", {}, sourceText(info.source)),
        ),
        h("p", {}, remove), removed));
  }

  const search = h("form", { role: "search", onsubmit: async (e) => { e.preventDefault(); await refresh(); } },
    h("div", { className: "row" }, field("External id starts with", prefix), h("button", { type: "submit" }, "Search")));

  // enroll from recordings
  const enrollId = h("input", { name: "external_id", required: true, maxlength: 256 });
  const files = h("input", { type: "file", name: "files", multiple: true, required: true, accept: "audio/*,.wav,.flac,.ogg,.opus,.mp3" });
  const overwrite = h("input", { type: "checkbox", name: "overwrite" });
  const enrollStatus = statusLine();
  const enrollButton = h("button", { type: "submit" }, "Enroll");
  const enrollForm = h("form", { className: "panel", "aria-labelledby": "h-enroll" },
    h("h2", { id: "h-enroll" }, "Enroll from recordings"),
    h("p", { className: "hint" }, "One or more recordings of the customer alone; each needs the minimum net speech (20 s by default)."),
    field("External id", enrollId),
    field("Recordings", files, "WAV, FLAC, Ogg, MP3…, mono"),
    h("div", { className: "field" }, h("label", {}, overwrite, " Replace an existing voiceprint")),
    enrollButton, enrollStatus);
  enrollForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("external_id", enrollId.value);
    for (const file of files.files) form.append("files", file);
    if (overwrite.checked) form.append("overwrite", "true");
    const done = await busy(enrollButton, enrollStatus, () => api("/api/v2/import", { method: "POST", form }),
      (r) => `Enrolled ${r.external_id}: ${fmt.seconds(r.speech_length)} of net speech from ${r.recordings.length} recording(s) (${r.model}).`);
    if (done) { prefix.value = ""; await refresh(); await show(done.external_id); }
  });

  // snapshots
  const snapStatus = statusLine();
  const exportButton = h("button", { type: "button" }, "Download snapshot");
  exportButton.addEventListener("click", () => busy(exportButton, snapStatus, () => download("/api/v2/snapshot/generate?compressed=true", "voxgate-snapshot.json.gz"), (name) => `Saved ${name}.`));
  const snapFile = h("input", { type: "file", required: true, accept: ".json,.gz,application/json,application/gzip" });
  const mode = h("select", {}, h("option", { value: "skip" }, "skip existing"), h("option", { value: "overwrite" }, "overwrite existing"));
  const importButton = h("button", { type: "submit" }, "Import snapshot");
  const importForm = h("form", {}, field("Snapshot file", snapFile), field("Existing voiceprints", mode), importButton);
  importForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("file", snapFile.files[0]);
    form.append("mode", mode.value);
    const done = await busy(importButton, snapStatus, () => api("/api/v2/snapshot/import", { method: "POST", form }),
      (r) => `Imported ${r.imported}, overwritten ${r.overwritten}, skipped ${r.skipped}.`);
    if (done) refresh();
  });

  root.append(
    search, status, listBox, details,
    h("div", { className: "grid2" },
      enrollForm,
      h("div", { className: "panel" }, h("h2", {}, "Snapshots"), h("p", { className: "hint" }, "Every voiceprint with its vectors, to move them to another voxgate."), exportButton, importForm, snapStatus)),
  );
  await refresh();
}
