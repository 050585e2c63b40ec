// Building the page with DOM APIs only: every value from Clarion becomes a text node, never markup.

/** h("a", {href: "#/x", class: "c"}, "text", child) → an element. Attributes starting with "on" are listeners;
 * `false`, `null` and `undefined` attributes and children are skipped; strings and numbers become text nodes. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "value" || name === "checked" || name === "selected") {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === false || child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";

/** The same for SVG elements (charts). */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

/** A labelled form control: label, control, and a slot for its error (aria-describedby points there). */
export function field(label, control, { hint = "" } = {}) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [hint ? `${id}-hint` : "", `${id}-error`].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", described);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    control,
    error,
  );
}

/** Shows (or with "" clears) the error of a control made by field(). */
export function setFieldError(control, message) {
  const error = document.getElementById(`${control.id}-error`);
  if (!error) return;
  error.textContent = message;
  error.hidden = !message;
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

export function select(name, options, selected, { any = "" } = {}) {
  return h(
    "select",
    { name },
    any ? h("option", { value: "" }, any) : null,
    options.map(([value, label]) => h("option", { value, selected: value === selected }, label)),
  );
}

/** A table from a header and rows of cells (each cell text or a node). */
export function table(caption, headers, rows) {
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

/** A status as a badge whose class says whether it is good, bad or under way. */
export function badge(value, label) {
  const tone = /SENT$|SUCCEEDED/.test(value) && !/PARTIALLY/.test(value)
    ? "good"
    : /FAILED|FAILURE/.test(value)
      ? "bad"
      : /CANCELLED|SKIPPED|UNKNOWN|PARTIALLY/.test(value)
        ? "muted"
        : "pending";
  return h("span", { class: `badge badge-${tone}` }, label);
}

/** An RFC 3339 time as the reader's local date and time, in a <time> element. */
export function time(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  return h("time", { datetime: value, title: value }, date.toLocaleString());
}

/** A message for the user: role=status for news, role=alert for errors. */
export function notice(message, { error = false } = {}) {
  return h("p", { class: error ? "notice notice-error" : "notice", role: error ? "alert" : "status" }, message);
}

/** The text of an ApiError (or any error), with the request id to quote. */
export function errorText(error) {
  const id = error?.requestId ? ` (request id ${error.requestId})` : "";
  if (error?.httpStatus === 403) return `This key may not do that: ${error.message}${id}`;
  return `${error?.message || error}${id}`;
}

export function errorNotice(error) {
  return notice(errorText(error), { error: true });
}

/** Appends children (nested arrays flattened, text as text nodes) to an element. */
export function add(element, ...children) {
  append(element, children);
  return element;
}

/** Replaces the children of an element. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** Calls `fn` once the calls stop for `delay_ms`. */
export function debounce(fn, delay_ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), delay_ms);
  };
}
