// The console's shell: sign-in, the hash router (#/activity, #/notifications/<id>, ...) and the header.
// Hash routes keep the console a folder of static files: the server never sees a console path but /console/.

import { ApiError, currentCaller, forgetKey, loadCaller, storedKey, storeKey } from "./api.js";
import { add, errorText, field, fill, h, notice } from "./dom.js";
import { renderActivity, renderNotification } from "./activity.js";
import { renderDeadLetters, renderStats, renderUser, renderUsers } from "./pages.js";
import { renderTemplate, renderTemplates } from "./templates.js";

const main = document.getElementById("main");

// Route patterns, first match wins; each page gets the route's captures and the query after "?".
const ROUTES = [
  [/^\/activity$/, "activity", (p) => renderActivity(main, p)],
  [/^\/notifications\/([^/]+)$/, "activity", (p, id) => renderNotification(main, id)],
  [/^\/dead-letters$/, "dead-letters", (p) => renderDeadLetters(main, p)],
  [/^\/templates$/, "templates", () => renderTemplates(main)],
  [/^\/templates\/([^/]+)$/, "templates", (p, key) => renderTemplate(main, key, p)],
  [/^\/users$/, "users", (p) => renderUsers(main, p)],
  [/^\/users\/([^/]+)$/, "users", (p, id) => renderUser(main, id)],
  [/^\/stats$/, "stats", (p) => renderStats(main, p)],
];

/** Splits "#/activity?status=X" into ["/activity", URLSearchParams]. */
function currentRoute() {
  const hash = location.hash.replace(/^#/, "") || "/activity";
  const [path, search = ""] = hash.split("?", 2);
  return [path, new URLSearchParams(search)];
}

let rendering = 0;

async function route() {
  const ticket = ++rendering;
  if (!storedKey()) return renderLogin();
  if (!currentCaller()) {
    try {
      await loadCaller();
    } catch (error) {
      if (error instanceof ApiError && error.httpStatus === 401) return renderLogin(errorText(error));
      fill(main, h("h1", { tabindex: "-1" }, "Clarion console"), notice(errorText(error), { error: true }));
      return;
    }
  }
  showHeader(true);
  const [path, params] = currentRoute();
  for (const [pattern, section, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    markSection(section);
    main.setAttribute("aria-busy", "true");
    try {
      await render(params, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      add(main, notice(errorText(error), { error: true }));
    } finally {
      main.removeAttribute("aria-busy");
    }
    // A newer navigation started meanwhile: it owns the focus.
    if (ticket === rendering) focusHeading();
    return;
  }
  markSection("");
  fill(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/activity" }, "Activity")));
  focusHeading();
}

/** After a navigation, focus the page's heading, so that a screen reader announces the new page. */
function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading && !main.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function markSection(section) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = section ? `${linkText(section)} · Clarion console` : "Clarion console";
}

function linkText(section) {
  return document.querySelector(`#nav a[data-section="${section}"]`)?.textContent || "";
}

function showHeader(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  const caller = currentCaller();
  document.getElementById("who-text").textContent = caller
    ? `Key ${caller.name || caller.key_id} · project ${caller.project_id || "—"} · ${(caller.scopes || []).join(", ")}`
    : "";
}

function renderLogin(message = "") {
  showHeader(false);
  markSection("");
  const input = h("input", {
    type: "password",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "clr_…",
  });
  const form = h(
    "form",
    { class: "login", onsubmit: (event) => signIn(event, input) },
    field("API key", input, {
      hint: "Paste a key: clarion up saved an admin key in .clarion/api-key; a key with the read scope is enough to look. It stays in this tab only.",
    }),
    h("button", { type: "submit" }, "Sign in"),
  );
  fill(main, 
    h("h1", { tabindex: "-1" }, "Sign in"),
    message ? notice(message, { error: true }) : null,
    form,
  );
  input.focus();
}

async function signIn(event, input) {
  event.preventDefault();
  const key = input.value.trim();
  if (!key) return;
  storeKey(key);
  input.value = "";
  try {
    await loadCaller();
  } catch (error) {
    forgetKey();
    return renderLogin(errorText(error));
  }
  const [path] = currentRoute();
  if (path === "/login" || path === "/activity") route();
  else location.hash = "#/activity";
}

function signOut() {
  forgetKey();
  location.hash = "#/activity";
  renderLogin();
}

document.getElementById("sign-out").addEventListener("click", signOut);
// With hash routing, href="#main" would be a route: move the focus instead.
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});
window.addEventListener("hashchange", route);
// A 401 on any call (the key was revoked, say): back to sign-in.
window.addEventListener("clarion:unauthenticated", () => {
  forgetKey();
  renderLogin("The key was refused (revoked or unknown). Sign in again.");
});
route();
