// The Sales chat preview: reads the generated agent package the way Copilot does (the plugin
// manifest's functions and cards, the OpenAPI description's paths by operationId), calls the two
// tools with a locally minted token, expands each card template with the answer (the Adaptive
// Cards templating library, run by the dev host in Node) and renders it with the Adaptive Cards
// renderer.
"use strict";

const $ = (selector) => document.querySelector(selector);
let plugin, openapi;

async function getJSON(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function operationPath(operationId) {
  for (const [path, verbs] of Object.entries(openapi.paths)) {
    for (const op of Object.values(verbs)) if (op.operationId === operationId) return path;
  }
  throw new Error(`no operation ${operationId} in openapi.json`);
}

// `$`, `$.a.b`: the JSONPath forms the plugin manifest uses
function atPath(data, path) {
  return path.split(".").slice(1).reduce((value, key) => (value == null ? undefined : value[key]), data);
}

async function callTool(name, params, token) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== ""));
  const response = await fetch(`/api${operationPath(name)}?${query}`, {
    headers: { Authorization: `Bearer ${token}`, "x-ms-client-request-id": crypto.randomUUID() },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${name}: ${response.status} ${body.errorCode || ""} ${body.errorMessage || ""}`);
  return body;
}

async function renderResults(name, answer, target) {
  const fn = plugin.functions.find((f) => f.name === name);
  const semantics = fn.capabilities.response_semantics;
  let results = atPath(answer, semantics.data_path);
  results = Array.isArray(results) ? results : [results];
  target.replaceChildren();
  for (const result of results) {
    const card = await getJSON("/preview/api/expand", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ template: semantics.static_template, data: result }),
    });
    const adaptive = new AdaptiveCards.AdaptiveCard();
    adaptive.parse(card);
    const rendered = adaptive.render();
    rendered.dataset.title = atPath(result, semantics.properties.title) || "";
    target.append(rendered);
  }
  return results;
}

async function ask() {
  document.body.dataset.ready = "false";
  const status = $("#chat-status");
  status.textContent = "";
  const tenant = $("#tenant").value;
  const name = $("#name").value;
  $("#question").textContent = `What's new with ${name}?`;
  $("#question").hidden = false;
  $("#answer").hidden = false;
  $("#suggestions").hidden = true;
  try {
    const { token } = await getJSON(`/preview/api/token?tenant=${encodeURIComponent(tenant)}`);
    const found = await callTool("findRecords", { name }, token);
    const records = await renderResults("findRecords", found, $("#card-find"));
    $("#card-digest").replaceChildren();
    if (!found.records.length) {
      status.textContent = "No record has that name.";
    } else {
      const first = records[0];
      const digest = await callTool(
        "getRecordInsights",
        { recordType: first.recordType, recordId: first.recordId, crmOrgUrl: first.crmOrgUrl, language: $("#language").value },
        token,
      );
      await renderResults("getRecordInsights", digest, $("#card-digest"));
    }
  } catch (error) {
    status.textContent = String(error.message || error);
  }
  document.body.dataset.ready = "true";
}

async function start() {
  [plugin, openapi] = await Promise.all([getJSON("/preview/agent/ai-plugin.json"), getJSON("/preview/agent/openapi.json")]);
  const tenants = await getJSON("/preview/api/tenants");
  for (const tenant of tenants) $("#tenant").append(new Option(tenant, tenant));
  const params = new URLSearchParams(location.search);
  if (params.get("tenant")) $("#tenant").value = params.get("tenant");
  if (params.get("name")) $("#name").value = params.get("name");
  if (params.get("lang")) $("#language").value = params.get("lang");
  $("#ask").addEventListener("click", ask);
  $("#tenant").addEventListener("change", suggest);
  await suggest();
  if (params.get("ask")) await ask();
  else document.body.dataset.ready = "true";
}

// questions a seller could ask, about the tenant's first named records
async function suggest() {
  const records = await getJSON(`/preview/api/records?tenant=${encodeURIComponent($("#tenant").value)}`);
  const named = records.filter((r) => r.name).slice(0, 2);
  const box = $("#suggestions");
  box.replaceChildren(box.firstElementChild);
  for (const record of named) {
    const button = document.createElement("button");
    button.className = "suggestion";
    button.type = "button";
    button.textContent = `What's new with ${record.name}?`;
    button.addEventListener("click", () => { $("#name").value = record.name; ask(); });
    box.append(button);
  }
  if (!named.length) box.append(Object.assign(document.createElement("p"), { className: "hint", textContent: "No record of this tenant has a name yet: load documents with recordName." }));
}

start();
