// Activity: notifications newest first with filters, and one notification's deliveries as a timeline.

import {
  CANCELLABLE,
  CHANNELS,
  NOTIFICATION_STATUSES,
  channelLabel,
  get,
  may,
  outcomeLabel,
  post,
  seconds,
  statusLabel,
} from "./api.js";
import { badge, errorNotice, field, fill, h, notice, select, time } from "./dom.js";
import { renderedView } from "./templates.js";

const PAGE_SIZE = 25;
const REFRESH_MS = 2000;
// Notification statuses that will change without anyone acting (SCHEDULED waits for its time: not followed).
const UNDER_WAY = new Set(["NOTIFICATION_STATUS_ACCEPTED", "NOTIFICATION_STATUS_IN_PROGRESS"]);

/** A datetime-local value ("2026-12-08T09:30") as a Date in the reader's time zone, or null. */
function localDate(value) {
  const date = value ? new Date(value) : null;
  return date && !Number.isNaN(date.getTime()) ? date : null;
}

/** The Activity page: ListNotifications by user, status, channel and the time accepted. */
export async function renderActivity(main, params) {
  const filters = {
    user_id: params.get("user_id") || "",
    status: params.get("status") || "",
    channel: params.get("channel") || "",
  };
  const since = params.get("since") || "";
  const until = params.get("until") || "";
  const form = h(
    "form",
    { class: "filters", onsubmit: (event) => applyFilters(event, form) },
    field("User id", h("input", { name: "user_id", value: filters.user_id, autocomplete: "off" })),
    field(
      "Status",
      select("status", NOTIFICATION_STATUSES.map((x) => [x, statusLabel(x)]), filters.status, { any: "Any status" }),
    ),
    field("Channel", select("channel", CHANNELS.map((x) => [x, channelLabel(x)]), filters.channel, { any: "Any channel" })),
    field("Created from", h("input", { type: "datetime-local", name: "since", value: since })),
    field("Created before", h("input", { type: "datetime-local", name: "until", value: until })),
    h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Filter"), h("a", { href: "#/activity" }, "Clear")),
  );
  const results = h("div", { id: "activity-results" });
  fill(main, 
    h("h1", {}, "Activity"),
    h("p", { class: "lede" }, "Every notification, newest first. Open one to see each channel's delivery attempts."),
    form,
    results,
  );
  const window_ = { since: localDate(since), until: localDate(until) };
  const rows = [];
  const body = h("tbody");
  const list = h(
    "table",
    { class: "activity" },
    h("caption", {}, "Notifications"),
    h(
      "thead",
      {},
      h("tr", {}, ["Notification", "User", "Channels", "Status", "Created"].map((x) => h("th", { scope: "col" }, x))),
    ),
    body,
  );
  const more = h("button", { type: "button", class: "secondary" }, "Load more");
  const status = h("p", { role: "status", class: "count" });
  fill(results, status, list, more);

  let token = "";
  async function load() {
    more.disabled = true;
    try {
      const page = await get("/v1/notifications", {
        ...filters,
        create_time_start: window_.since ? window_.since.toISOString() : "",
        create_time_end: window_.until ? window_.until.toISOString() : "",
        page_size: PAGE_SIZE,
        page_token: token,
      });
      token = page.next_page_token || "";
      for (const n of page.notifications || []) {
        rows.push(n);
        body.append(activityRow(n));
      }
      status.textContent = rows.length
        ? `${rows.length} notification${rows.length === 1 ? "" : "s"}${token ? " so far" : ""}`
        : "No notifications match.";
      more.hidden = !token;
    } catch (error) {
      results.append(errorNotice(error));
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);
  await load();
}

function applyFilters(event, form) {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (String(value).trim()) query.set(name, String(value).trim());
  }
  const search = query.toString();
  location.hash = `#/activity${search ? `?${search}` : ""}`;
}

function activityRow(n) {
  const channels = (n.deliveries || []).map((d) => channelLabel(d.channel)).join(", ") || "—";
  return h(
    "tr",
    {},
    h(
      "td",
      {},
      h("a", { href: `#/notifications/${encodeURIComponent(n.notification_id)}` }, `${n.template_key} v${n.template_version}`),
      h("span", { class: "id" }, n.notification_id),
    ),
    h("td", {}, h("a", { href: `#/users/${encodeURIComponent(n.user_id)}` }, n.user_id)),
    h("td", {}, channels),
    h("td", {}, badge(n.status, statusLabel(n.status))),
    h("td", {}, time(n.create_time)),
  );
}

/** One notification: its summary, each delivery's attempts as a timeline, and its content. */
export async function renderNotification(main, id) {
  const n = await get(`/v1/notifications/${encodeURIComponent(id)}`);
  const actions = h("div", { class: "actions" });
  const outcome = h("div", { class: "outcome" });
  fill(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/activity" }, "Activity"), " › ", "Notification"),
    h("h1", {}, `${n.template_key} to ${n.user_id}`),
    summary(n),
    actions,
    outcome,
    h("h2", {}, "Deliveries"),
    (n.deliveries || []).length
      ? n.deliveries.map(deliveryTimeline)
      : h("p", {}, "No deliveries yet: the notification has not been dispatched."),
    h("h2", {}, "Message data"),
    h("pre", { class: "data" }, JSON.stringify(n.message_data || {}, null, 2)),
    h("section", { "aria-labelledby": "rendered-heading" }, h("h2", { id: "rendered-heading" }, "Rendered content"), renderedSlot(n)),
  );
  actions.append(h("button", { type: "button", class: "secondary", onclick: () => renderNotification(main, id) }, "Refresh"));
  // While deliveries are under way, follow them: read the notification again every few seconds, as long as this
  // page is the one shown.
  if (UNDER_WAY.has(n.status)) {
    const shown = location.hash;
    actions.append(h("span", { class: "hint" }, "Deliveries are under way; this page updates itself."));
    setTimeout(() => {
      if (location.hash === shown && main.contains(actions)) renderNotification(main, id).catch(() => {});
    }, REFRESH_MS);
  }
  if (may("NotificationService/CancelNotification") && CANCELLABLE.has(n.status)) {
    actions.append(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: async (event) => {
            event.target.disabled = true;
            try {
              await post(`/v1/notifications/${encodeURIComponent(id)}:cancel`, {});
              await renderNotification(main, id);
              main.querySelector(".outcome")?.append(notice("Cancelled what had not been sent yet."));
            } catch (error) {
              fill(outcome, errorNotice(error));
              event.target.disabled = false;
            }
          },
        },
        "Cancel notification",
      ),
    );
  }
}

function summary(n) {
  const rows = [
    ["Status", badge(n.status, statusLabel(n.status))],
    ["Notification id", h("code", {}, n.notification_id)],
    ["User", h("a", { href: `#/users/${encodeURIComponent(n.user_id)}` }, n.user_id)],
    [
      "Template",
      h("a", { href: `#/templates/${encodeURIComponent(n.template_key)}?version=${n.template_version}` }, `${n.template_key} version ${n.template_version}`),
    ],
    ["Priority", (n.priority || "").replace("PRIORITY_", "").toLowerCase() || "normal"],
    ["Channels asked for", (n.channels || []).map(channelLabel).join(", ") || "every channel of the template"],
    ["Locale asked for", n.locale || "the user's language"],
    ["Accepted", time(n.create_time)],
    ["Send at", time(n.send_at)],
    ["Last change", time(n.update_time)],
    ["Idempotency key", n.request_id || "—"],
  ];
  return h("dl", { class: "summary" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

const capitalised = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function milliseconds(duration) {
  const value = seconds(duration);
  return value === null ? "—" : `${Math.round(value * 1000)} ms`;
}

function deliveryTimeline(d) {
  const attempts = d.attempts || [];
  const headingId = `delivery-${d.delivery_id}`;
  return h(
    "section",
    { class: "delivery", "aria-labelledby": headingId },
    h("h3", { id: headingId }, `${capitalised(channelLabel(d.channel))} delivery `, badge(d.status, statusLabel(d.status))),
    h(
      "dl",
      { class: "summary" },
      [
        ["Delivery id", h("code", {}, d.delivery_id)],
        ["Provider", d.provider || "—"],
        ["Provider's message id", d.provider_message_id || "—"],
        ["Reason", d.status_reason || "—"],
        ["Due", time(d.due_time)],
        ["Sent", time(d.sent_time)],
      ].map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    ),
    h("h4", {}, "Attempts"),
    attempts.length
      ? h(
          "ol",
          { class: "timeline", "aria-label": `Attempts of the ${channelLabel(d.channel)} delivery` },
          attempts.map((a) =>
            h(
              "li",
              { class: `attempt attempt-${(a.outcome || "").toLowerCase()}` },
              h("p", { class: "attempt-head" }, h("strong", {}, `Attempt ${a.attempt_number}`), " ", time(a.start_time)),
              h(
                "dl",
                { class: "attempt-facts" },
                h("dt", {}, "Provider"),
                h("dd", {}, a.provider || "—"),
                h("dt", {}, "Outcome"),
                h("dd", {}, badge(a.outcome, outcomeLabel(a.outcome))),
                h("dt", {}, "Duration"),
                h("dd", {}, milliseconds(a.duration)),
                a.error ? [h("dt", {}, "Error"), h("dd", {}, h("code", { class: "error-text" }, a.error))] : null,
              ),
            ),
          ),
        )
      : h("p", {}, d.due_time ? "No attempt yet; due at " : "No attempt yet.", d.due_time ? time(d.due_time) : null),
  );
}

/** The notification's content: what its deliveries send, as rendered when it was accepted (GetNotification gives
 * each delivery's email or push). A notification without any (every channel skipped before rendering) is rendered
 * again from its template version, locale and data. */
function renderedSlot(n) {
  const sent = { email: n.deliveries?.find((d) => d.email)?.email, push: n.deliveries?.find((d) => d.push)?.push };
  if (sent.email || sent.push) {
    return h("div", {}, h("p", { class: "hint" }, "As rendered when the notification was accepted."), renderedView(sent));
  }
  const slot = h("div", {}, h("p", {}, "Rendering…"));
  if (!may("TemplateService/RenderTemplate")) {
    fill(slot, h("p", {}, "This key may not render templates."));
    return slot;
  }
  (async () => {
    let locale = n.locale;
    if (!locale && may("UserService/GetUser")) {
      locale = await get(`/v1/users/${encodeURIComponent(n.user_id)}`).then(
        (user) => user.preferred_language,
        () => "",
      );
    }
    try {
      const rendered = await post(`/v1/templates/${encodeURIComponent(n.template_key)}:render`, {
        version: n.template_version,
        locale: locale || "",
        data: n.message_data || {},
      });
      fill(
        slot,
        h("p", { class: "hint" }, `Version ${rendered.version} in locale ${rendered.locale}, rendered again now with the notification's data.`),
        renderedView(rendered, n.deliveries?.map((d) => d.channel)),
      );
    } catch (error) {
      fill(slot, errorNotice(error));
    }
  })();
  return slot;
}

