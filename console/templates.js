// Templates: the list, a template's versions, an editor whose save makes a new version, and a preview rendered by
// RenderTemplate with sample data.

import { ApiError, channelLabel, get, may, patch, post } from "./api.js";
import { debounce, errorNotice, field, fill, h, notice, setFieldError, table, time } from "./dom.js";

// The content fields of a locale, as TemplateContent names them, with their labels; "body" fields are multi-line.
const CONTENT = [
  ["subject", "Email subject"],
  ["body", "Email text body"],
  ["html_body", "Email HTML body"],
  ["push_title", "Push title"],
  ["push_body", "Push body"],
];
// What a save sends: every content field, so that saving an older version makes it the latest again as it reads.
const UPDATE_MASK = [
  "description", "syntax", "default_locale", "subject", "body", "html_body", "push_title", "push_body", "push_data",
  "localizations",
].join(",");

export async function renderTemplates(main) {
  const page = await get("/v1/templates", { page_size: 200 });
  const templates = page.templates || [];
  fill(main, 
    h("h1", {}, "Templates"),
    templates.length
      ? table(
          "Templates, latest version of each",
          ["Key", "Version", "Description", "Channels", "Changed"],
          templates.map((t) => [
            h("a", { href: `#/templates/${encodeURIComponent(t.template_key)}` }, t.template_key),
            String(t.version),
            t.description || "—",
            (t.channels || []).map(channelLabel).join(", ") || "—",
            time(t.create_time),
          ]),
        )
      : h("p", {}, "No templates yet."),
  );
}

/** The rendered email and push of a RenderTemplate answer. The HTML goes into a sandboxed frame with no scripts,
 * no same-origin access and the page's Content-Security-Policy: it is shown, never trusted. */
export function renderedView(rendered) {
  const parts = [];
  if (rendered.email && (rendered.email.subject || rendered.email.body || rendered.email.html_body)) {
    parts.push(
      h(
        "section",
        { class: "rendered-email", "aria-label": "Rendered email" },
        h("h3", {}, "Email"),
        h("dl", { class: "summary" }, h("dt", {}, "Subject"), h("dd", { class: "rendered-subject" }, rendered.email.subject)),
        h("h4", {}, "Text"),
        h("pre", { class: "rendered-text" }, rendered.email.body),
        rendered.email.html_body
          ? [
              h("h4", {}, "HTML"),
              h("iframe", { class: "rendered-html", sandbox: true, title: "The email's HTML body", srcdoc: rendered.email.html_body }),
            ]
          : null,
      ),
    );
  }
  if (rendered.push && (rendered.push.title || rendered.push.body)) {
    const data = Object.entries(rendered.push.data || {});
    parts.push(
      h(
        "section",
        { class: "rendered-push", "aria-label": "Rendered push notification" },
        h("h3", {}, "Push"),
        h(
          "dl",
          { class: "summary" },
          h("dt", {}, "Title"),
          h("dd", {}, rendered.push.title),
          h("dt", {}, "Body"),
          h("dd", {}, rendered.push.body),
          data.length ? [h("dt", {}, "Data"), h("dd", {}, data.map(([k, v]) => h("div", {}, h("code", {}, k), " = ", v)))] : null,
        ),
      ),
    );
  }
  return parts.length ? parts : h("p", {}, "The template has no content in this locale.");
}

/** Placeholder names in the template's text, as sample data: `{app_name}` or `{{ order.id }}` → {"order": {"id":
 * "id"}}. A starting point to edit, not a parser: the server says what is missing. */
function sampleData(template) {
  const texts = [template, ...Object.values(template.localizations || {})].flatMap((c) =>
    CONTENT.map(([name]) => c[name] || ""),
  );
  const data = {};
  const pattern = /\{\{-?\s*([A-Za-z_][\w.]*)|(?<!\{)\{([A-Za-z_]\w*)\}(?!\})/g;
  for (const text of texts) {
    for (const match of text.matchAll(pattern)) {
      const path = (match[1] || match[2]).split(".");
      let node = data;
      path.forEach((part, index) => {
        if (index === path.length - 1) node[part] ??= part;
        else node = node[part] = typeof node[part] === "object" ? node[part] : {};
      });
    }
  }
  return data;
}

/** Where a violation's field points: {locale: "" for the default or a tag, name: "body"}; null for other fields. */
function violationTarget(fieldName) {
  // `template.` from a save, `draft.` from a preview of unsaved content.
  const localized = /^(?:template|draft)\.localizations\["?([^"\]]+)"?\]\.(\w+)$/.exec(fieldName);
  if (localized) return { locale: localized[1], name: localized[2] };
  const top = /^(?:template|draft)\.(\w+)$/.exec(fieldName);
  return top ? { locale: "", name: top[1] } : null;
}

/** Puts the caret on line `line` (from 1) of a textarea and selects it. */
function goToLine(control, line) {
  const lines = control.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  control.focus();
  control.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

export async function renderTemplate(main, key, params) {
  const path = `/v1/templates/${encodeURIComponent(key)}`;
  const wanted = Number(params.get("version")) || 0;
  const [template, versions] = await Promise.all([
    get(path, { version: wanted || "" }),
    get(`${path}/versions`, { page_size: 100 }),
  ]);
  const latest = versions.templates?.[0]?.version ?? template.version;
  const canSave = may("TemplateService/UpdateTemplate");

  // The draft: top-level content under "" and each localization under its tag.
  const draft = { "": Object.fromEntries(CONTENT.map(([n]) => [n, template[n] || ""])) };
  for (const [tag, content] of Object.entries(template.localizations || {})) {
    draft[tag] = Object.fromEntries(CONTENT.map(([n]) => [n, content[n] || ""]));
  }
  let violations = [];
  const description = h("input", { name: "description", value: template.description || "", readonly: !canSave });
  const pushData = h("textarea", { name: "push_data", rows: 2, readonly: !canSave }, JSON.stringify(template.push_data || {}));
  const localeSelect = h("select", { name: "editing-locale" });
  const controls = Object.fromEntries(
    CONTENT.map(([name]) => [
      name,
      name.endsWith("body") && name !== "push_body"
        ? h("textarea", { name, rows: name === "html_body" ? 8 : 5, readonly: !canSave, spellcheck: "true" })
        : h("input", { name, readonly: !canSave }),
    ]),
  );
  let editing = "";
  const localeLabel = (tag) => (tag ? tag : `${template.default_locale || "en"} (default)`);
  function fillLocales() {
    fill(localeSelect, Object.keys(draft).map((tag) => h("option", { value: tag, selected: tag === editing }, localeLabel(tag))));
  }
  function showLocale(tag) {
    editing = tag;
    localeSelect.value = tag;
    for (const [name, control] of Object.entries(controls)) {
      control.value = draft[tag][name];
      const problem = violations.find((v) => v.target?.locale === tag && v.target.name === name);
      setFieldError(control, problem ? problem.description : "");
    }
  }
  for (const [name, control] of Object.entries(controls)) {
    control.addEventListener("input", () => (draft[editing][name] = control.value));
  }
  localeSelect.addEventListener("change", () => showLocale(localeSelect.value));

  const newLocale = h("input", { name: "new-locale", placeholder: "pt-BR", size: 8 });
  const addLocale = h("div", { class: "inline-add" }, field("New locale", newLocale), h("button", {
    type: "button",
    class: "secondary",
    onclick: () => {
      const tag = newLocale.value.trim();
      if (!tag || tag in draft) return;
      draft[tag] = Object.fromEntries(CONTENT.map(([n]) => [n, ""]));
      newLocale.value = "";
      fillLocales();
      showLocale(tag);
    },
  }, "Add locale"));

  const problems = h("div", { class: "problems" });
  const saveButton = h("button", { type: "submit" }, `Save as version ${latest + 1}`);
  const form = h(
    "form",
    { class: "editor", onsubmit: (event) => save(event) },
    h("h2", {}, wanted && wanted !== latest ? `Version ${template.version} (latest is ${latest})` : `Version ${template.version}`),
    canSave ? null : notice("This key may read templates but not change them."),
    field("Description", description),
    field("Locale", localeSelect, { hint: "The content below is for this locale." }),
    canSave ? addLocale : null,
    CONTENT.map(([name, label]) => field(label, controls[name])),
    field("Push data (JSON object of strings)", pushData),
    problems,
    canSave ? h("div", { class: "form-actions" }, saveButton) : null,
  );

  // --- Preview ---
  const previewLocale = h("select", { name: "preview-locale" });
  const sample = h("textarea", { name: "sample-data", rows: 8, spellcheck: "false" }, JSON.stringify(sampleData(template), null, 2));
  const output = h("div", { class: "preview-output", "aria-live": "polite" });
  let previewVersion = template.version;
  function fillPreviewLocales() {
    const tags = [template.default_locale || "en", ...Object.keys(draft).filter(Boolean)];
    const current = previewLocale.value;
    fill(previewLocale, tags.map((tag) => h("option", { value: tag, selected: tag === current }, tag)));
  }
  let previewTicket = 0;
  const preview = debounce(async () => {
    // Answers may come back out of order: only the latest request's answer is shown.
    const ticket = ++previewTicket;
    let data;
    try {
      data = JSON.parse(sample.value || "{}");
      if (typeof data !== "object" || Array.isArray(data) || data === null) throw new Error("not an object");
      setFieldError(sample, "");
    } catch {
      setFieldError(sample, "Sample data must be a JSON object, e.g. {\"name\": \"Ada\"}.");
      return;
    }
    // The editor's content as it stands (RenderTemplate's `draft`: checked and rendered, never saved); the saved
    // version when the push data does not parse yet.
    const edited = editedTemplate();
    const request = edited ? { draft: edited } : { version: previewVersion };
    try {
      const rendered = await post(`${path}:render`, { ...request, locale: previewLocale.value, data });
      if (ticket !== previewTicket) return;
      setFieldError(sample, "");
      const what = rendered.version ? `Version ${rendered.version}` : "Your edits (not saved)";
      fill(output, h("p", { class: "hint" }, `${what}, locale ${rendered.locale}.`), renderedView(rendered));
    } catch (error) {
      if (ticket !== previewTicket) return;
      const missing = (error.violations || []).filter((v) => v.field?.startsWith("data."));
      setFieldError(sample, missing.map((v) => `${v.field.slice(5)} ${v.description}`).join("; ") || "");
      fill(output, errorNotice(error));
    }
  }, 400);
  sample.addEventListener("input", preview);
  previewLocale.addEventListener("change", preview);
  for (const control of [...Object.values(controls), pushData]) control.addEventListener("input", preview);
  const previewPanel = h(
    "section",
    { class: "preview", "aria-labelledby": "preview-heading" },
    h("h2", { id: "preview-heading" }, "Preview"),
    h("p", { class: "hint" }, "Rendered by Clarion from the editor's content with this data, as you type; nothing is saved until you save."),
    field("Preview locale", previewLocale),
    field("Sample data (JSON)", sample),
    output,
  );

  /** The editor's content as a Template message; null (with the field marked) when the push data is not JSON. */
  function editedTemplate() {
    let push_data;
    try {
      push_data = JSON.parse(pushData.value || "{}");
      setFieldError(pushData, "");
    } catch {
      setFieldError(pushData, "Push data must be a JSON object of strings.");
      return null;
    }
    const body = { description: description.value, syntax: template.syntax, default_locale: template.default_locale, ...draft[""], push_data };
    body.localizations = Object.fromEntries(Object.entries(draft).filter(([tag]) => tag));
    return body;
  }

  async function save(event) {
    event.preventDefault();
    const body = editedTemplate();
    if (body === null) return;
    saveButton.disabled = true;
    try {
      const saved = await patch(path, body, { update_mask: UPDATE_MASK });
      location.hash = `#/templates/${encodeURIComponent(key)}?version=${saved.version}&saved=1`;
    } catch (error) {
      showViolations(error);
    } finally {
      saveButton.disabled = false;
    }
  }

  function showViolations(error) {
    violations = (error instanceof ApiError ? error.violations : []).map((v) => ({ ...v, target: violationTarget(v.field || "") }));
    showLocale(editing);
    fill(
      problems,
      h(
        "div",
        { role: "alert", class: "notice notice-error" },
        h("p", {}, `Not saved: ${error.message}`),
        violations.length
          ? h(
              "ul",
              {},
              violations.map((v) => {
                const line = Number(/\(line (\d+)\)/.exec(v.description || "")?.[1]);
                const target = v.target;
                const where = target ? `${localeLabel(target.locale)} › ${target.name}` : v.field;
                return h(
                  "li",
                  {},
                  target && controls[target.name]
                    ? h("button", {
                        type: "button",
                        class: "link",
                        onclick: () => {
                          showLocale(target.locale);
                          if (line) goToLine(controls[target.name], line);
                          else controls[target.name].focus();
                        },
                      }, `${where}${line ? `, line ${line}` : ""}`)
                    : where,
                  `: ${v.description}`,
                );
              }),
            )
          : null,
      ),
    );
  }

  fillLocales();
  showLocale("");
  fillPreviewLocales();
  fill(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/templates" }, "Templates"), " › ", key),
    h("h1", {}, `Template ${key}`),
    params.get("saved") ? notice(`Saved as version ${template.version}.`) : null,
    h("div", { class: "editor-layout" }, form, previewPanel),
    h("h2", {}, "Versions"),
    table(
      "Every version, newest first",
      ["Version", "Created", "Description", "Channels"],
      (versions.templates || []).map((t) => [
        t.version === template.version
          ? h("span", { "aria-current": "true" }, `${t.version} (shown)`)
          : h("a", { href: `#/templates/${encodeURIComponent(key)}?version=${t.version}` }, `Version ${t.version}`),
        time(t.create_time),
        t.description || "—",
        (t.channels || []).map(channelLabel).join(", ") || "—",
      ]),
    ),
  );
  if (!may("TemplateService/RenderTemplate")) {
    fill(previewPanel, h("h2", {}, "Preview"), h("p", {}, "This key may not render templates."));
  } else {
    previewVersion = template.version;
    preview();
  }
}
