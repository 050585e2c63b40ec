// Dead letters (list, replay), users (look-up, preferences, devices, recent notifications) and delivery stats.

import { CHANNELS, channelLabel, get, may, post, seconds, statusLabel } from "./api.js";
import { add, badge, errorNotice, field, fill, h, notice, select, table, time } from "./dom.js";
import { barChart } from "./charts.js";

// --- Dead letters ---

export async function renderDeadLetters(main, params) {
  const filters = { channel: params.get("channel") || "", user_id: params.get("user_id") || "" };
  const canReplay = may("NotificationService/ReplayDeadLetters");
  const form = h(
    "form",
    { class: "filters", onsubmit: (event) => submitQuery(event, form, "#/dead-letters") },
    field("Channel", select("channel", CHANNELS.map((x) => [x, channelLabel(x)]), filters.channel, { any: "Any channel" })),
    field("User id", h("input", { name: "user_id", value: filters.user_id, autocomplete: "off" })),
    h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Filter"), h("a", { href: "#/dead-letters" }, "Clear")),
  );
  const outcome = h("div", { class: "outcome" });
  fill(main, 
    h("h1", {}, "Dead letters"),
    h("p", { class: "lede" }, "Deliveries that failed for good. A replay sends one again under its delivery id with fresh attempts."),
    form,
    outcome,
  );
  const page = await get("/v1/dead-letters", { ...filters, page_size: 200 });
  const letters = page.dead_letters || [];
  if (!letters.length) {
    add(main, h("p", { role: "status" }, "No dead letters."));
    return;
  }
  const boxes = new Map();
  async function replay(ids) {
    try {
      const answer = await post("/v1/dead-letters:replay", { delivery_ids: ids });
      const queued = answer.delivery_ids || [];
      const refused = answer.not_replayed_ids || [];
      fill(
        outcome,
        notice(
          `Replayed ${queued.length} of ${ids.length}: queued again with fresh attempts.` +
            (refused.length ? ` Not replayed (no longer dead letters): ${refused.join(", ")}.` : ""),
          { error: refused.length > 0 && queued.length === 0 },
        ),
        queued.length
          ? h(
              "ul",
              {},
              queued.map((id) => {
                const letter = letters.find((l) => l.delivery_id === id);
                return h("li", {}, letter
                  ? h("a", { href: `#/notifications/${encodeURIComponent(letter.notification_id)}` }, `Follow delivery ${id}`)
                  : id);
              }),
            )
          : null,
      );
      for (const id of queued) {
        const row = boxes.get(id)?.closest("tr");
        row?.classList.add("replayed");
        row?.querySelectorAll("button, input").forEach((control) => (control.disabled = true));
      }
    } catch (error) {
      fill(outcome, errorNotice(error));
    }
  }
  const headers = ["Failed", "User", "Template", "Channel", "Reason", "Attempts", "Provider", "Notification"];
  const rows = letters.map((l) => {
    const cells = [
      time(l.fail_time),
      h("a", { href: `#/users/${encodeURIComponent(l.user_id)}` }, l.user_id),
      l.template_key,
      channelLabel(l.channel),
      h("code", { class: "error-text" }, l.reason),
      String(l.attempt_count),
      l.provider || "—",
      h("a", { href: `#/notifications/${encodeURIComponent(l.notification_id)}` }, "Timeline"),
    ];
    if (!canReplay) return cells;
    const box = h("input", { type: "checkbox", name: "delivery", value: l.delivery_id, "aria-label": `Select the ${channelLabel(l.channel)} delivery to ${l.user_id}` });
    boxes.set(l.delivery_id, box);
    return [
      box,
      ...cells,
      h("button", { type: "button", class: "secondary", onclick: () => replay([l.delivery_id]), "aria-label": `Replay the ${channelLabel(l.channel)} delivery to ${l.user_id}` }, "Replay"),
    ];
  });
  add(main, 
    table(`${letters.length} dead letter${letters.length === 1 ? "" : "s"}`, canReplay ? ["Select", ...headers, "Replay"] : headers, rows),
    canReplay
      ? h("div", { class: "form-actions" }, h("button", {
          type: "button",
          onclick: () => {
            const ids = [...boxes].filter(([, box]) => box.checked && !box.disabled).map(([id]) => id);
            if (ids.length) replay(ids);
            else fill(outcome, notice("Select the dead letters to replay first.", { error: true }));
          },
        }, "Replay selected"))
      : h("p", { class: "hint" }, "This key may not replay dead letters."),
  );
}

function submitQuery(event, form, base) {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (String(value).trim()) query.set(name, String(value).trim());
  }
  const search = query.toString();
  location.hash = `${base}${search ? `?${search}` : ""}`;
}

// --- Users ---

export async function renderUsers(main, params) {
  const query = (params.get("q") || "").trim();
  const input = h("input", { name: "q", value: query, autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "filters", onsubmit: (event) => submitQuery(event, form, "#/users") },
    field("User id or email address", input),
    h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Look up")),
  );
  fill(main, h("h1", {}, "Users"), form);
  if (!query) {
    input.focus();
    return;
  }
  // An address is looked up with ListUsers' email filter, anything else as an id.
  if (query.includes("@")) {
    const found = (await get("/v1/users", { email_address: query, page_size: 1 })).users || [];
    if (found.length) location.replace(`#/users/${encodeURIComponent(found[0].user_id)}`);
    else add(main, notice(`No user has the address ${query}.`, { error: true }));
    return;
  }
  location.replace(`#/users/${encodeURIComponent(query)}`);
}

export async function renderUser(main, id) {
  let user;
  try {
    user = await get(`/v1/users/${encodeURIComponent(id)}`);
  } catch (error) {
    await renderUsers(main, new URLSearchParams());
    add(main, errorNotice(error));
    return;
  }
  const p = user.preferences || {};
  const enabled = (value) => (value === false ? "off" : "on");
  const quiet = p.quiet_hours_start ? `${p.quiet_hours_start} to ${p.quiet_hours_end} (${user.timezone})` : "none";
  const recent = h("div", {}, h("p", {}, "Loading…"));
  fill(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/users" }, "Users"), " › ", user.user_id),
    h("h1", {}, `User ${user.display_name || user.user_id}`),
    h(
      "dl",
      { class: "summary" },
      [
        ["User id", h("code", {}, user.user_id)],
        ["Email address", user.email_address || "—"],
        ["Phone number", user.phone_number || "—"],
        ["Language", user.preferred_language || "—"],
        ["Time zone", user.timezone || "—"],
        ["Email", enabled(p.email_enabled)],
        ["Push", enabled(p.push_enabled)],
        ["Quiet hours", quiet],
        ["Created", time(user.create_time)],
        ["Changed", time(user.update_time)],
      ].map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    ),
    h("h2", {}, "Devices"),
    (user.devices || []).length
      ? table(
          "Push devices",
          ["Device id", "Platform", "Token", "Registered"],
          user.devices.map((d) => [
            h("code", {}, d.device_id),
            (d.platform || "").replace("DEVICE_PLATFORM_", "").toLowerCase(),
            // Only the token's end: enough to tell devices apart, not to push to them.
            `…${(d.token || "").slice(-6)}`,
            time(d.create_time),
          ]),
        )
      : h("p", {}, "No push devices."),
    h("h2", {}, "Recent notifications"),
    recent,
    h("p", {}, h("a", { href: `#/activity?user_id=${encodeURIComponent(user.user_id)}` }, "All of this user's notifications")),
  );
  try {
    const page = await get("/v1/notifications", { user_id: user.user_id, page_size: 10 });
    const list = page.notifications || [];
    fill(
      recent,
      list.length
        ? table(
            "The user's last 10 notifications",
            ["Notification", "Status", "Created"],
            list.map((n) => [
              h("a", { href: `#/notifications/${encodeURIComponent(n.notification_id)}` }, `${n.template_key} v${n.template_version}`),
              badge(n.status, statusLabel(n.status)),
              time(n.create_time),
            ]),
          )
        : h("p", {}, "None yet."),
    );
  } catch (error) {
    fill(recent, errorNotice(error));
  }
}

// --- Stats ---

const WINDOWS = [
  ["1h", "Last hour", 3600],
  ["24h", "Last 24 hours", 86400],
  ["7d", "Last 7 days", 7 * 86400],
  ["30d", "Last 30 days", 30 * 86400],
];

export async function renderStats(main, params) {
  const chosen = WINDOWS.find(([name]) => name === params.get("window")) || WINDOWS[1];
  const form = h(
    "form",
    { class: "filters", onsubmit: (event) => submitQuery(event, form, "#/stats") },
    field("Window", select("window", WINDOWS.map(([name, label]) => [name, label]), chosen[0])),
    h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Show")),
  );
  fill(main, h("h1", {}, "Delivery stats"), form);
  const end = new Date();
  const start = new Date(end.getTime() - chosen[2] * 1000);
  const stats = await get("/v1/deliveries:stats", { start_time: start.toISOString(), end_time: end.toISOString() });
  const totals = stats.totals || {};
  const count = (group, name) => Number(group[name] || 0);
  const rate = (group) => (count(group, "sent") + count(group, "failed") ? `${(group.success_rate * 100).toFixed(1)} %` : "—");
  const ms = (duration) => {
    const value = seconds(duration);
    return value === null ? null : value * 1000;
  };
  const groups = [
    ["By channel", (stats.channels || []).map((g) => [channelLabel(g.channel), g])],
    ["By provider", (stats.providers || []).map((g) => [g.provider || "none", g])],
  ];
  add(main, 
    h("p", { class: "lede" }, "Deliveries created from ", time(stats.start_time), " to ", time(stats.end_time), "."),
    h(
      "dl",
      { class: "totals" },
      [
        ["Deliveries", count(totals, "total")],
        ["Sent", count(totals, "sent")],
        ["Failed", count(totals, "failed")],
        ["Waiting", count(totals, "queued") + count(totals, "sending") + count(totals, "retrying")],
        ["Skipped or cancelled", count(totals, "skipped") + count(totals, "cancelled")],
        ["Success rate", rate(totals)],
      ].map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, String(value)))),
    ),
    groups.map(([title, rows]) =>
      h(
        "section",
        { class: "chart-group" },
        h("h2", {}, title),
        rows.length
          ? [
              barChart(`Sent and failed deliveries, ${title.toLowerCase()}`, rows.map(([label, g]) => ({
                label,
                values: [count(g, "sent"), count(g, "failed")],
              })), { series: ["sent", "failed"], unit: "" }),
              barChart(`Success rate, ${title.toLowerCase()}`, rows.map(([label, g]) => ({
                label,
                values: [count(g, "sent") + count(g, "failed") ? g.success_rate * 100 : null],
              })), { series: ["success rate"], unit: " %", max: 100 }),
              barChart(`Time to send, ${title.toLowerCase()}`, rows.map(([label, g]) => ({
                label,
                values: [ms(g.time_to_send_p50), ms(g.time_to_send_p95)],
              })), { series: ["p50", "p95"], unit: " ms" }),
            ]
          : h("p", {}, "No deliveries in this window."),
      ),
    ),
  );
}
