// System: server status, maintenance mode (lock, unlock, force off), backup download and restore, PBX
// instances and their SIP registration.
import { api, busy, download, field, fmt, h, statusLine, table } from "../lib.js";

export async function render(root) {
  const facts = h("div", { id: "system-status" });
  const pbxBox = h("div", { id: "system-pbx" });
  const maintStatus = statusLine();
  const backupStatus = statusLine();
  const pbxStatus = statusLine();

  async function refresh() {
    const st = await api("/api/v2/status");
    const engine = st.engine;
    facts.replaceChildren(h("dl", { className: "facts" },
      h("dt", {}, "Version"), h("dd", {}, st.version),
      h("dt", {}, "Maintenance mode"), h("dd", { id: "maintenance-state" }, st.maintenance ? "on: new streams, enroll, verify and import are refused (423)" : "off"),
      h("dt", {}, "Streams running"), h("dd", {}, `${st.running} of at most ${st.max_streams} (${Object.entries(st.streams).map(([k, v]) => `${k} ${v}`).join(", ")}); at most ${st.max_at_once} at once since start`),
      h("dt", {}, "Models"), h("dd", {}, st.models.length ? st.models.map((m) => `${m.model_id} (${m.version})`).join("; ") : "not prepared"),
      h("dt", {}, "Profiles in use"), h("dd", {}, Object.entries(st.profiles).map(([channel, p]) => `${channel}: ${p ? `${p.name} (${p.model})` : "none"}`).join("; ")),
      h("dt", {}, "Inference engine"), h("dd", {}, engine ? `backlog ${fmt.seconds(engine.backlog_s)}, busy ${(engine.busy * 100).toFixed(1)} %, ${engine.chunks} chunks, imports waiting ${engine.imports_waiting}` : "not running"),
    ));
    const pbx = await api("/api/v2/pbx/");
    pbxBox.replaceChildren(table(
      [
        { label: "Name", value: (p) => p.name },
        { label: "PBX", value: (p) => `${p.username}@${p.host}:${p.port} (${p.transport})` },
        { label: "Registration", value: (p) => `${p.registration.state}${p.registration.reason ? ` – ${p.registration.reason}` : ""}` },
        { label: "Until", value: (p) => fmt.time(p.registration.registered_until) },
        { label: "Calls", value: (p) => String(p.calls), className: "num" },
        { label: "", value: (p) => {
          const button = h("button", { type: "button", className: "secondary" }, p.started ? `Stop ${p.name}` : `Start ${p.name}`);
          button.addEventListener("click", () => busy(button, pbxStatus, () => api(`/api/v2/pbx/${p.id}/${p.started ? "stop" : "start"}`, { method: "POST" }), p.started ? `Stopped ${p.name}.` : `Started ${p.name}: registering…`).then(refresh));
          return button;
        } },
      ],
      pbx.instances, { caption: "PBX instances", empty: "No PBX instance is configured (POST /api/v2/pbx/, see docs/telephony.md)." }));
  }

  const action = (label, path, text, className = "secondary") => {
    const button = h("button", { type: "button", className }, label);
    button.addEventListener("click", async () => {
      if (className === "danger" && !confirm(`${label}?`)) return;
      await busy(button, maintStatus, () => api(path, { method: "POST" }), (r) => r?.detail ?? text);
      await refresh();
    });
    return button;
  };

  const backupButton = h("button", { type: "button" }, "Download backup");
  backupButton.addEventListener("click", () => busy(backupButton, backupStatus, () => download("/api/v2/maintenance/backup", "voxgate-backup.json.gz"), (name) => `Saved ${name}. It holds webhook secrets and SIP passwords: keep it safe.`));
  const restoreFile = h("input", { type: "file", required: true, accept: ".gz,.json" });
  const restoreButton = h("button", { type: "submit", className: "danger" }, "Restore backup");
  const restoreForm = h("form", {}, field("Backup file", restoreFile, "Only in maintenance mode; replaces voiceprints, profiles, settings, subscriptions and PBX instances."), restoreButton);
  restoreForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!confirm("Replace the store's contents with this backup?")) return;
    const form = new FormData();
    form.append("file", restoreFile.files[0]);
    await busy(restoreButton, backupStatus, () => api("/api/v2/maintenance/loadbackup", { method: "POST", form }),
      (r) => `Restored ${r.voiceprints} voiceprints, ${r.profiles} profiles, ${r.subscriptions} subscriptions (backup of ${fmt.time(r.backup_created)}). Maintenance mode is still on.`);
    await refresh();
  });

  root.append(
    h("div", { className: "panel" }, h("h2", {}, "Status"), facts),
    h("div", { className: "grid2" },
      h("div", { className: "panel" }, h("h2", {}, "Maintenance"),
        h("p", { className: "row" }, action("Lock (maintenance on)", "/api/v2/lock", "Locked."), action("Unlock", "/api/v2/maintenance/unlock", "Unlocked."), action("Force off: close every stream", "/api/v2/maintenance/force_off", "Closed.", "danger")),
        maintStatus),
      h("div", { className: "panel" }, h("h2", {}, "Backup"), backupButton, restoreForm, backupStatus)),
    h("div", { className: "panel" }, h("h2", {}, "Telephony"), pbxBox, pbxStatus),
  );
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
