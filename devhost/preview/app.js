// The preview calls the backend the way Copilot for Sales does: operations and fields are found in
// the generated connector definition by the contract's description strings (contract.json is the
// preview's own copy, as Copilot has its own). A broken description or a missing field shows up
// here as it would in Copilot: as a missing card or a missing line.
"use strict";

const BUDGET_MS = 5000;
const KEY_FIELD_MAX = 50;
const FILE_ICONS = {
  "content-pdf": "📕", "content-pptx": "📙", "content-xlsx": "📗",
  "content-doc": "📘", "content-web": "🌐", "content-file": "📄",
};

const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
};

let contract, definition;
const unseen = [];

async function getJSON(url, options) {
  const response = await fetch(url, options);
  return response.json();
}

// ---- the connector definition, read the way Copilot reads it --------------------------------------

function resolve(schema) {
  if (schema && schema.$ref) return definition.definitions[schema.$ref.split("/").pop()];
  return schema || {};
}

function findOperation(key) {
  const wanted = contract.operations[key].description;
  for (const [path, verbs] of Object.entries(definition.paths)) {
    for (const [verb, op] of Object.entries(verbs)) {
      if (op.description === wanted) return { path, verb, op };
    }
  }
  return null;
}

// name in the definition of the property/parameter whose description is the contract's
function byDescription(properties, description) {
  for (const [name, prop] of Object.entries(properties || {})) {
    if (prop.description === description) return name;
  }
  return null;
}

function itemSchema(op) {
  const envelope = resolve(op.responses["200"] && op.responses["200"].schema);
  return resolve(envelope.properties && envelope.properties.value && envelope.properties.value.items);
}

// read an item's fields by the contract's output descriptions
function readItem(key, op, item) {
  const outputs = contract.operations[key].outputs;
  const props = itemSchema(op).properties || {};
  const read = {};
  for (const [name, description] of Object.entries(outputs)) {
    const wireName = byDescription(props, description);
    read[name] = wireName ? item[wireName] : undefined;
  }
  return read;
}

function fillBody(schema, values, descriptions) {
  const body = {};
  for (const [name, prop] of Object.entries(resolve(schema).properties || {})) {
    for (const [contractName, description] of Object.entries(descriptions)) {
      if (prop.description === description && values[contractName] !== undefined) body[name] = values[contractName];
    }
  }
  return body;
}

// ---- calling ----------------------------------------------------------------------------------------

function state() {
  const [recordType, recordId] = ($("#record").value || "|").split("|");
  return {
    tenant: $("#tenant").value,
    recordType, recordId,
    language: $("#language").value,
    org: $("#org").value.trim(),
    crm: $("#crm").value.trim(),
    start: $("#start").value, end: $("#end").value,
    from: $("#mail-from").value.trim(),
    to: $("#mail-to").value.split(/[;,]/).map((s) => s.trim()).filter(Boolean),
    cc: $("#mail-cc").value.split(/[;,]/).map((s) => s.trim()).filter(Boolean),
    subject: $("#mail-subject").value,
    prompt: $("#prompt").value,
  };
}

async function call(key, values, token, lang) {
  const found = findOperation(key);
  if (!found) return { missing: `no operation in the connector has the description Copilot looks for (${key})` };
  const { path, verb, op } = found;
  const inputs = contract.operations[key].inputs;
  const requestId = crypto.randomUUID();
  const headers = {
    "Authorization": `Bearer ${token}`,
    "Accept-Language": lang,
    "x-ms-client-request-id": requestId,
    "x-ms-user-agent": "sales-copilot",
  };
  let url = definition.basePath.replace(/\/$/, "") + path;
  const init = { method: verb.toUpperCase(), headers };
  if (verb === "get") {
    const query = new URLSearchParams();
    for (const param of op.parameters || []) {
      for (const [name, description] of Object.entries(inputs)) {
        if (param.description === description && values[name] !== undefined && values[name] !== "") query.set(param.name, values[name]);
      }
    }
    url += "?" + query.toString();
  } else {
    const bodyParam = (op.parameters || []).find((p) => p.in === "body");
    const schema = resolve(bodyParam && bodyParam.schema);
    const body = fillBody(schema, values, inputs);
    const props = schema.properties || {};
    const email = byDescription(props, inputs.resourceData);
    if (email) body[email] = fillBody(props[email], values.email, contract.email);
    const related = byDescription(props, inputs.relatedEntities);
    if (related && values.relatedEntities) {
      body[related] = values.relatedEntities.map((entity) => fillBody(props[related].items, entity, contract.relatedEntity));
    }
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const started = performance.now();
  const response = await fetch(url, init);
  const ms = performance.now() - started;
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { json = null; }
  recordCall(op.operationId, response.status, ms, response.headers.get("x-ms-client-request-id") || requestId);
  return { op, status: response.status, json };
}

function recordCall(operationId, status, ms, requestId) {
  const width = Math.min(100, (ms / BUDGET_MS) * 100);
  const row = el("tr", { "data-operation": operationId },
    el("td", { text: operationId }),
    el("td", { class: status === 200 ? "good" : "bad", text: String(status) }),
    el("td", {}, el("span", { class: "budget", style: `width:${Math.max(2, width)}px` }), `${ms.toFixed(0)} ms / 5000`),
    el("td", { class: "request-id", text: requestId }));
  $("#calls tbody").append(row);
}

// ---- cards --------------------------------------------------------------------------------------------

function missing(card, why) {
  card.classList.add("missing");
  $(".card-body", card).replaceChildren(el("p", { text: `Copilot would show no card: ${why}` }));
}

function note(text) {
  unseen.push(text);
  $("#unseen ul").append(el("li", { text }));
}

function renderRecordDetails(result) {
  const card = $("#card-recordDetails");
  if (result.missing || result.status !== 200) return missing(card, result.missing || `status ${result.status}`);
  const body = $(".card-body", card);
  const items = result.json.value.map((item) => readItem("recordDetails", result.op, item));
  if (!items.length) return body.replaceChildren(el("p", { class: "hint", text: "No related records." }));
  body.replaceChildren(...items.map((item) => {
    const props = Object.entries(item.additionalProperties || {});
    const keys = props.slice(0, 2);
    const rest = props.slice(2);
    for (const [name, value] of keys) {
      if (!value || !String(value).trim()) note(`${item.recordTitle}: key field "${name}" is empty`);
      else if (String(value).length > KEY_FIELD_MAX) note(`${item.recordTitle}: key field "${name}" is too long to show (${String(value).length} characters)`);
    }
    const node = el("div", { class: "record" },
      el("div", { class: "record-title", text: item.recordTitle || "" }),
      el("div", { class: "record-type", text: item.recordTypeDisplayName || "" }),
      el("div", { class: "key-fields" }, ...keys.map(([name, value]) => el("span", { class: "key-field" }, el("span", { class: "name", text: name }), value))));
    if (rest.length) {
      const list = el("dl");
      for (const [name, value] of rest) list.append(el("dt", { text: name }), el("dd", { text: value }));
      node.append(el("details", {}, el("summary", { text: "Details" }), list));
    }
    if (item.url) node.append(el("a", { class: "more-actions", href: item.url, target: "_blank", text: "More actions ›" }));
    return node;
  }));
  if (result.json.hasMoreResults) note(`Record details: more related records exist than the ${items.length} shown; a seller does not page through them`);
}

function renderKeySalesInfo(result) {
  const card = $("#card-keySalesInfo");
  if (result.missing || result.status !== 200) return missing(card, result.missing || `status ${result.status}`);
  const body = $(".card-body", card);
  const citationCard = $(".citation-card", card);
  const items = result.json.value.map((item) => readItem("keySalesInfo", result.op, item));
  if (!items.length) return body.replaceChildren(el("p", { class: "hint", text: "No insights." }));
  const list = el("ul", { class: "bullets" });
  items.forEach((item, index) => {
    const cite = el("button", { class: "citation", type: "button", "data-index": String(index + 1), text: String(index + 1) });
    cite.addEventListener("click", () => {
      const props = el("dl");
      for (const [name, value] of Object.entries(item.additionalProperties || {})) props.append(el("dt", { text: name }), el("dd", { text: value }));
      const children = [el("strong", { text: item.title || "" })];
      if (item.dateTime) children.push(el("time", { text: " " + new Date(item.dateTime).toLocaleString(state().language) }));
      children.push(el("p", { text: item.description || "" }), props);
      if (item.url) children.push(el("a", { href: item.url, target: "_blank", text: "Learn more ›" }));
      citationCard.replaceChildren(...children);
      citationCard.hidden = false;
    });
    list.append(el("li", {}, item.description || "", cite));
  });
  body.replaceChildren(list);
  if (result.json.hasMoreResults) note(`Key sales info: more insights exist than the ${items.length} shown`);
}

function renderRecordSummary(result) {
  const card = $("#card-recordSummary");
  if (result.missing || result.status !== 200) return missing(card, result.missing || `status ${result.status}`);
  const items = result.json.value.map((item) => readItem("recordSummary", result.op, item));
  const body = $(".card-body", card);
  if (!items.length) return body.replaceChildren(el("p", { class: "hint", text: "No activities in this window." }));
  body.replaceChildren(...items.map((item) => el("div", { class: "activity" },
    el("strong", { text: item.title || "" }), " ",
    el("time", { text: item.dateTime ? new Date(item.dateTime).toLocaleString(state().language) : "" }),
    el("div", { text: item.description || "" }))));
  if (result.json.hasMoreResults) note(`Record summary: more activities exist in the window than the ${items.length} shown`);
}

function renderEmailSummary(result) {
  const card = $("#card-emailSummary");
  if (result.missing || result.status !== 200) return missing(card, result.missing || `status ${result.status}`);
  const items = result.json.value.map((item) => readItem("emailSummary", result.op, item));
  const body = $(".card-body", card);
  if (!items.length) return body.replaceChildren(el("p", { class: "hint", text: "No insight for this thread." }));
  body.replaceChildren(...items.map((item, index) => el("div", { class: `insight ${index === 0 ? "in-body" : "in-pane"}` },
    el("span", { class: "where", text: index === 0 ? "In the email body" : "In the pane only" }), item.insight || "")));
  items.slice(1).forEach((item) => note(`Email summary: "${item.insight}" stays in the pane, not in the email body`));
}

function renderEmailDraft(result) {
  const card = $("#card-emailDraft");
  if (result.missing || result.status !== 200) return missing(card, result.missing || `status ${result.status}`);
  const items = result.json.value.map((item) => readItem("emailDraft", result.op, item));
  const body = $(".card-body", card);
  if (!items.length) return body.replaceChildren(el("p", { class: "hint", text: "No suggested files." }));
  body.replaceChildren(...items.map((item) => el("div", { class: "file", "data-content-type": item.contentType || "" },
    el("span", { class: "file-icon", title: item.contentType || "", text: FILE_ICONS[item.contentType] || "❔" }),
    el("div", {}, el("a", { href: item.content || "#", target: "_blank", text: item.contentTitle || "" }), el("div", { class: "hint", text: item.contentDescription || "" })))));
}

// ---- page -------------------------------------------------------------------------------------------------

async function show() {
  document.body.dataset.ready = "false";
  unseen.length = 0;
  $("#unseen ul").replaceChildren();
  $("#calls tbody").replaceChildren();
  for (const card of document.querySelectorAll(".card")) card.classList.remove("missing");
  for (const title of document.querySelectorAll(".card-title")) title.textContent = definition.info.title;
  const s = state();
  const { token } = await getJSON(`/preview/api/token?tenant=${encodeURIComponent(s.tenant)}`);
  const common = {
    recordType: s.recordType, recordId: s.recordId, crmOrgUrl: s.org || undefined, crmType: s.crm || undefined, top: 5,
  };
  const record = { entityId: s.recordId, entityType: s.recordType };
  const emailValues = { from: s.from, to: s.to, cc: s.cc, subject: s.subject, plaintextBody: "(preview)" };
  const timeWindow = {
    startDateTime: s.start ? new Date(s.start + "T00:00:00Z").toISOString() : undefined,
    endDateTime: s.end ? new Date(s.end + "T00:00:00Z").toISOString() : undefined,
  };
  const [details, sales, summary, email, draft] = await Promise.all([
    call("recordDetails", common, token, s.language),
    call("keySalesInfo", common, token, s.language),
    call("recordSummary", { ...common, ...timeWindow }, token, s.language),
    call("emailSummary", { email: emailValues, relatedEntities: [record], crmOrgUrl: common.crmOrgUrl, crmType: common.crmType, top: 5 }, token, s.language),
    call("emailDraft", { ...common, email: emailValues, resourceType: "email-thread", inputPrompt: s.prompt }, token, s.language),
  ]);
  renderRecordDetails(details);
  renderKeySalesInfo(sales);
  renderRecordSummary(summary);
  renderEmailSummary(email);
  renderEmailDraft(draft);
  if (!unseen.length) note("Nothing: every loaded insight for this record reaches the seller.");
  await explainScope(s);
  document.body.dataset.ready = "true";
}

// Which card is empty, or shorter, because the record's documents are scoped to another CRM org or
// type than the request names (the backend's own scoping rule, asked of the dev host).
const CARD_POINTS = {
  recordDetails: "recordDetails", keySalesInfo: "opportunityInsights", recordSummary: "recordSummary",
  emailSummary: "emailSummary", emailDraft: "emailDraftFiles",
};

async function explainScope(s) {
  const list = $("#scoped ul");
  list.replaceChildren();
  const query = new URLSearchParams({ tenant: s.tenant, recordType: s.recordType, recordId: s.recordId, crmOrgUrl: s.org, crmType: s.crm });
  const hidden = await getJSON(`/preview/api/hidden?${query}`);
  for (const card of document.querySelectorAll(".card")) {
    const found = hidden[CARD_POINTS[card.dataset.operation]];
    if (!found) continue;
    const kind = $(".card-kind", card).textContent;
    for (const reason of found.reasons) list.append(el("li", { "data-operation": card.dataset.operation, text: `${kind}: ${reason}` }));
  }
  if (!list.children.length) list.append(el("li", { class: "hint", text: "No document of this record is left out by its CRM org or type." }));
}

async function loadRecords() {
  const records = await getJSON(`/preview/api/records?tenant=${encodeURIComponent($("#tenant").value)}`);
  $("#record").replaceChildren(...records.map((r) => {
    const option = el("option", {
      value: `${r.recordType}|${r.recordId}`,
      title: `${r.recordType} ${r.recordId}`,
      text: `${r.name || r.recordId} (${r.recordType})`,
    });
    option.dataset.contacts = r.contacts.join(";");
    option.dataset.org = r.crmOrgUrl;
    option.dataset.crm = r.crmType;
    return option;
  }));
  const params = new URLSearchParams(location.search);
  if (params.get("record")) $("#record").value = params.get("record");
  onRecord();
}

// a record's org and CRM type are the ones its documents carry, as a seller's request would name them
let pageParams = new URLSearchParams(location.search);  // a link's choices, applied to the first record shown

function onRecord() {
  const option = $("#record").selectedOptions[0];
  if (!option) return;
  $("#record").title = option.title;
  const params = pageParams;
  pageParams = new URLSearchParams();
  $("#org").value = params.has("org") ? params.get("org") : option.dataset.org;
  $("#crm").value = params.has("crm") ? params.get("crm") : option.dataset.crm;
  const contacts = option.dataset.contacts.split(";").filter(Boolean);
  if (params.get("from")) $("#mail-from").value = params.get("from");
  else if (contacts.length) $("#mail-from").value = contacts[0];
}

async function lint() {
  const result = await getJSON("/preview/api/lint", { method: "POST", body: $("#lint-text").value });
  if (result.error) { $("#lint-summary").textContent = result.error; return; }
  $("#lint-summary").textContent = `${result.documents} document(s) checked, ${result.rejected} would be rejected.`;
  $("#lint-results").replaceChildren(...result.problems.map((p) => el("li", { class: "bad", "data-line": String(p.line) },
    `line ${p.line}${p.id ? ` (id ${p.id})` : ""}: ${p.field}: ${p.message}`)));
}

async function main() {
  [contract, definition] = await Promise.all([getJSON("/preview/contract.json"), getJSON("/preview/definition.json")]);
  const params = new URLSearchParams(location.search);
  const tenants = await getJSON("/preview/api/tenants");
  $("#tenant").replaceChildren(...tenants.map((t) => el("option", { value: t, text: t })));
  if (params.get("tenant")) $("#tenant").value = params.get("tenant");
  if (params.get("lang")) $("#language").value = params.get("lang");
  $("#tenant").addEventListener("change", async () => { await loadRecords(); await show(); });
  $("#record").addEventListener("change", () => { onRecord(); show(); });
  $("#show").addEventListener("click", show);
  $("#lint-run").addEventListener("click", lint);
  $("#lint-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) { $("#lint-text").value = await file.text(); lint(); }
  });
  await loadRecords();
  document.body.dataset.loaded = "true";
  if ($("#record").value) await show();  // the first record's cards at once, as a seller opens it
  else document.body.dataset.ready = "true";
}

main();
