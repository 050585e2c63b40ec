// The console's only way to Clarion: the public REST edge on the same origin, with the key the user pasted.
// The key lives in sessionStorage (gone when the tab closes), travels only in the authorization header, and is
// never put in a URL or logged.

const KEY_ITEM = "clarion.console.apiKey";

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
  caller = null;
}

/** An error answer of the edge: a google.rpc.Status, with its HTTP status and the details picked apart. */
export class ApiError extends Error {
  constructor(httpStatus, body) {
    super(body?.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.code = body?.code ?? 2;
    const details = Array.isArray(body?.details) ? body.details : [];
    const info = details.find((d) => d["@type"]?.endsWith("google.rpc.ErrorInfo"));
    this.reason = info?.reason || "";
    this.requestId = details.find((d) => d["@type"]?.endsWith("google.rpc.RequestInfo"))?.request_id || "";
    // BadRequest field violations: [{field: "template.body", description: "does not compile (line 3): ..."}].
    this.violations = details
      .filter((d) => d["@type"]?.endsWith("google.rpc.BadRequest"))
      .flatMap((d) => d.field_violations || []);
  }
}

/** Calls the REST edge; resolves to the JSON answer, rejects with ApiError. `query` values that are empty are left
 * out (the edge refuses unknown parameters, and an empty filter means "any"). */
export async function call(method, path, { query = {}, body } = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.append(name, String(value));
  }
  const search = params.toString();
  const url = search ? `${path}?${search}` : path;
  const headers = { authorization: `Bearer ${storedKey()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { code: 14, message: "Clarion could not be reached" });
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { message: text.slice(0, 200) };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, json);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("clarion:unauthenticated"));
    throw error;
  }
  return json;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body, query) => call("POST", path, { body, query });
export const patch = (path, body, query) => call("PATCH", path, { body, query });

// --- What the key may do ---

let caller = null;

/** GET /v1/caller: the key's name, project, scopes and allowed_methods. Cached for the session of the page. */
export async function loadCaller() {
  caller = await get("/v1/caller");
  return caller;
}

export function currentCaller() {
  return caller;
}

/** Whether the key may call a method, e.g. "NotificationService/ReplayDeadLetters". */
export function may(method) {
  const allowed = caller?.allowed_methods;
  return Array.isArray(allowed) && allowed.includes(`clarion.v1.${method}`);
}

// --- The contracts' enums, as the console shows them ---

export const CHANNELS = ["CHANNEL_EMAIL", "CHANNEL_PUSH"];
export const NOTIFICATION_STATUSES = [
  "NOTIFICATION_STATUS_ACCEPTED",
  "NOTIFICATION_STATUS_SCHEDULED",
  "NOTIFICATION_STATUS_IN_PROGRESS",
  "NOTIFICATION_STATUS_SENT",
  "NOTIFICATION_STATUS_PARTIALLY_SENT",
  "NOTIFICATION_STATUS_FAILED",
  "NOTIFICATION_STATUS_SKIPPED",
  "NOTIFICATION_STATUS_CANCELLED",
];
// Statuses a cancel can still change (CancelNotification: nothing handed to a provider yet).
export const CANCELLABLE = new Set([
  "NOTIFICATION_STATUS_ACCEPTED",
  "NOTIFICATION_STATUS_SCHEDULED",
  "NOTIFICATION_STATUS_IN_PROGRESS",
]);

/** "NOTIFICATION_STATUS_PARTIALLY_SENT" → "partially sent"; "CHANNEL_EMAIL" → "email". */
export function enumLabel(value, prefix) {
  if (!value) return "";
  const short = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  return short.toLowerCase().replaceAll("_", " ");
}

export const channelLabel = (value) => enumLabel(value, "CHANNEL_");
export const statusLabel = (value) =>
  enumLabel(value, value?.startsWith("DELIVERY_") ? "DELIVERY_STATUS_" : "NOTIFICATION_STATUS_");
export const outcomeLabel = (value) => enumLabel(value, "ATTEMPT_OUTCOME_");

/** A protobuf JSON Duration ("0.412s") in seconds, or null. */
export function seconds(duration) {
  if (typeof duration !== "string" || !duration.endsWith("s")) return null;
  const value = Number(duration.slice(0, -1));
  return Number.isFinite(value) ? value : null;
}
