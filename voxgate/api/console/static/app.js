// The console's shell: login with the API's token, navigation between pages (hash routes), logout.
import { api, errorText, h, session } from "./lib.js";

const PAGES = {
  try: ["Try it", () => import("./pages/try.js")],
  live: ["Live calls", () => import("./pages/live.js")],
  voiceprints: ["Voiceprints", () => import("./pages/voiceprints.js")],
  events: ["Events & billing", () => import("./pages/events.js")],
  calibration: ["Calibration", () => import("./pages/calibration.js")],
  system: ["System", () => import("./pages/system.js")],
};
const HOME = "live";

const $ = (id) => document.getElementById(id);
let leave = null; // the open page's cleanup (stops its live feeds, microphone, timers)

function showLogin(message = "") {
  leave?.();
  leave = null;
  $("page").replaceChildren();
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("login").hidden = false;
  $("login-status").textContent = message;
  $("password").focus();
}

async function route() {
  if (!session.token) return showLogin();
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  const name = location.hash.replace(/^#\/?/, "").split("?")[0] || HOME;
  if (!PAGES[name]) { location.hash = `#/${HOME}`; return; }
  const [title, load] = PAGES[name];
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  leave?.();
  leave = null;
  document.title = `${title} · voxgate console`;
  const page = $("page");
  page.replaceChildren(h("p", { className: "empty" }, "Loading…"));
  try {
    const module = await load();
    const container = h("section", { className: "page", "data-page": name, "aria-labelledby": `h-${name}` });
    const heading = h("h1", { id: `h-${name}`, tabindex: "-1" }, title);
    container.append(heading);
    page.replaceChildren(container);
    leave = (await module.render(container)) || null;
    heading.focus({ preventScroll: true });
  } catch (error) {
    page.replaceChildren(h("p", { className: "status", "data-kind": "error" }, errorText(error)));
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter;
  button.disabled = true;
  $("login-status").textContent = "Logging in…";
  try {
    const answer = await api("/rest-auth/login/", {
      method: "POST",
      json: { username: $("username").value, password: $("password").value },
    });
    session.token = answer.key;
    $("password").value = "";
    $("whoami").textContent = $("username").value;
    sessionStorage.setItem("voxgate.user", $("username").value);
    await route();
  } catch (error) {
    $("login-status").textContent = errorText(error);
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/rest-auth/logout/", { method: "POST" }); } catch { /* the token is gone either way */ }
  session.token = null;
  showLogin("Logged out.");
});

session.onLogout = (detail) => showLogin(`Please log in again (${detail}).`);
window.addEventListener("hashchange", route);
$("whoami").textContent = sessionStorage.getItem("voxgate.user") || "";
route();
