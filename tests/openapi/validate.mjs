#!/usr/bin/env node
// node validate.mjs [openapi.json]
//
// Checks openapi/openapi.json (or the given file) and exits non-zero with
// every problem found:
//   - it is an OpenAPI 3.1 document (@seriousme/openapi-schema-validator,
//     against the official 3.1 schema), pretty-printed in canonical form
//     (which also rules out duplicate keys), with info.version equal to the
//     project's version in CMakeLists.txt;
//   - every $ref resolves, and every schema in it compiles under Ajv's
//     JSON Schema 2020-12 in strict mode (a misspelt keyword is an error);
//   - it has exactly the operations of API.md (the list below, which is
//     itself checked against the repository's copy, spec/API.md; what the
//     team's ../shared/spec/API.md has beyond it is reported as not built);
//   - each operation documents its success status with the right media type,
//     the parameters and error statuses the contract requires, every 4xx/5xx
//     as an application/problem+json RFC 9457 problem, X-Request-Id on every
//     response, Location on every 201, Retry-After on every 503;
//   - who may call it ("Authentication, authorization and limits"): the
//     bearer JWT scheme, required by every operation but the open ones
//     (which say `security: []`), 401 with WWW-Authenticate on each that
//     needs a token, 403 exactly where the contract has it (an
//     administrators' operation; POST /accounts for another user), 429 with
//     Retry-After, RateLimit-Policy and RateLimit on every rate-limited one
//     (all but the probes and /metrics), and neither 401 nor 403 elsewhere;
//   - the schemas state the contract's rules: sample bodies that break a
//     rule (an empty name, two @, quantity 0, a negative amount...) fail
//     them and samples that keep the rules pass.
//
// It also exports what conformance.mjs shares with it.
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020Module from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";

const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module;
const addFormats = addFormatsModule.default ?? addFormatsModule;

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, "../..");
export const DOCUMENT_PATH = resolve(REPO_ROOT, "openapi/openapi.json");
// Where Ajv files the document, so "#/components/..." refs resolve in it.
export const DOCUMENT_ID = "https://h2pg.invalid/openapi.json";

const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// Every operation of API.md. success: status -> media type (null: no body).
// errors: the 4xx/5xx statuses the operation must document: 400 everywhere
// (a bad Request-Timeout), 500 and 503 everywhere, 504 wherever the handler
// awaits the database, 404 for ids, 409/413/415/422 where API.md says.
// query: query parameters; headers: request headers beyond the common ones.
// access: "user" (the default: a bearer token, 401 without one), "admin"
// (also 403 for a caller who may not do it at all) or "open" (no token);
// unlimited: not rate limited (no 429).
const DB = [400, 500, 503, 504];
const BODY = [400, 413, 415, 422, 500, 503, 504];
export const API_OPERATIONS = [
  { method: "GET", path: "/healthz", success: { 200: "application/json" }, errors: [400, 500, 503], access: "open", unlimited: true },
  { method: "GET", path: "/readyz", success: { 200: "application/json" }, errors: DB, access: "open", unlimited: true },
  { method: "GET", path: "/metrics", success: { 200: "text/plain; version=0.0.4" }, errors: [400, 500, 503], access: "open", unlimited: true },
  { method: "GET", path: "/openapi.json", success: { 200: "application/json" }, errors: [400, 500, 503], access: "open" },
  { method: "POST", path: "/users", success: { 201: "application/json" }, errors: [...BODY, 409], body: "UserCreate", access: "admin" },
  { method: "GET", path: "/users", success: { 200: "application/json" }, errors: DB, query: ["limit", "after"], access: "admin" },
  { method: "GET", path: "/users/{id}", success: { 200: "application/json" }, errors: [...DB, 404] },
  { method: "PATCH", path: "/users/{id}", success: { 200: "application/json" }, errors: [...BODY, 404, 409], body: "UserPatch" },
  { method: "DELETE", path: "/users/{id}", success: { 204: null }, errors: [...DB, 404, 409] },
  { method: "POST", path: "/users/{id}/orders", success: { 201: "application/json" }, errors: [...BODY, 404], body: "OrderCreate" },
  { method: "GET", path: "/users/{id}/orders", success: { 200: "application/json" }, errors: [...DB, 404], query: ["limit", "after"] },
  { method: "GET", path: "/users/{id}/accounts", success: { 200: "application/json" }, errors: [...DB, 404], query: ["limit", "after"] },
  { method: "GET", path: "/orders/{id}", success: { 200: "application/json" }, errors: [...DB, 404] },
  { method: "POST", path: "/accounts", success: { 201: "application/json" }, errors: [...BODY, 404], body: "AccountCreate", access: "admin" },
  { method: "GET", path: "/accounts/{id}", success: { 200: "application/json" }, errors: [...DB, 404] },
  {
    method: "POST", path: "/transfers", success: { 201: "application/json" }, errors: [...BODY, 404, 409],
    body: "TransferCreate", headers: ["Idempotency-Key"],
  },
  { method: "GET", path: "/transfers/{id}", success: { 200: "application/json" }, errors: [...DB, 404] },
  { method: "GET", path: "/export/orders", success: { 200: "application/x-ndjson" }, errors: DB, query: ["after"], access: "admin" },
  { method: "POST", path: "/webhooks", success: { 201: "application/json" }, errors: BODY, body: "WebhookCreate", access: "admin" },
  { method: "GET", path: "/webhooks", success: { 200: "application/json" }, errors: DB, query: ["limit", "after"], access: "admin" },
  { method: "GET", path: "/webhooks/{id}", success: { 200: "application/json" }, errors: [...DB, 404], access: "admin" },
  { method: "DELETE", path: "/webhooks/{id}", success: { 204: null }, errors: [...DB, 404], access: "admin" },
  { method: "GET", path: "/webhooks/{id}/deliveries", success: { 200: "application/json" }, errors: [...DB, 404], query: ["limit", "after"], access: "admin" },
  { method: "POST", path: "/webhooks/{id}/ping", success: { 200: "application/json" }, errors: [...DB, 404], access: "admin" },
  {
    method: "GET", path: "/events", success: { 200: "text/event-stream" }, errors: DB, query: ["types", "after"],
    headers: ["Last-Event-ID"],
  },
  { method: "GET", path: "/json", success: { 200: "application/json" }, errors: [400, 500, 503], access: "open" },
  { method: "GET", path: "/plaintext", success: { 200: "text/plain" }, errors: [400, 500, 503], access: "open" },
  { method: "GET", path: "/db", success: { 200: "application/json" }, errors: DB, access: "open" },
  { method: "GET", path: "/queries", success: { 200: "application/json" }, errors: DB, query: ["queries"], access: "open" },
  { method: "GET", path: "/updates", success: { 200: "application/json" }, errors: DB, query: ["queries"], access: "open" },
  { method: "GET", path: "/fortunes", success: { 200: "text/html; charset=utf-8" }, errors: DB, access: "open" },
];

// Request headers every operation takes.
const COMMON_HEADERS = ["X-Request-Id", "Request-Timeout"];

// ---- helpers shared with conformance.mjs ----

export function loadDocument(path = DOCUMENT_PATH) {
  const text = readFileSync(path, "utf8");
  return { text, doc: JSON.parse(text) };
}

function escapePointerPart(part) {
  return String(part).replaceAll("~", "~0").replaceAll("/", "~1");
}

// A JSON pointer ("#/a/b") from its parts; uriSafe also percent-encodes each
// part, as a pointer in a URI fragment must be (Ajv decodes it).
export function pointer(parts, uriSafe = false) {
  return "#" + parts.map((p) => "/" + (uriSafe ? encodeURIComponent(escapePointerPart(p)) : escapePointerPart(p))).join("");
}

function pointerParts(ref) {
  if (!ref.startsWith("#")) throw new Error(`only local $refs are supported: ${ref}`);
  const frag = decodeURIComponent(ref.slice(1));
  if (frag === "") return [];
  if (!frag.startsWith("/")) throw new Error(`not a JSON pointer: ${ref}`);
  return frag.slice(1).split("/").map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
}

export function getAt(doc, parts) {
  let node = doc;
  for (const p of parts) {
    if (node === null || typeof node !== "object" || !(p in node)) return undefined;
    node = node[p];
  }
  return node;
}

// Follows $refs (of responses, parameters, headers...) to the object they
// name. Returns { node, parts } with the parts of the final location.
export function deref(doc, node, parts) {
  const seen = new Set();
  while (node && typeof node === "object" && typeof node.$ref === "string") {
    if (seen.has(node.$ref)) throw new Error(`$ref cycle at ${node.$ref}`);
    seen.add(node.$ref);
    parts = pointerParts(node.$ref);
    const next = getAt(doc, parts);
    if (next === undefined) throw new Error(`unresolved $ref ${node.$ref}`);
    node = next;
  }
  return { node, parts };
}

// An Ajv for the document: 2020-12, formats checked, strict (unknown
// keywords are errors) except for the OpenAPI vocabulary's extra keywords.
export function makeAjv(doc, { strict = true } = {}) {
  // strictRequired stays off: anyOf [{required: [a]}, {required: [b]}] is
  // the idiom for "at least one of", and it names properties defined beside it.
  const ajv = new Ajv2020({ strict, strictRequired: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  ajv.addVocabulary(["discriminator", "xml", "externalDocs", "example"]);
  // The document itself is added as one schema so that "#/components/..."
  // refs resolve in it; Ajv compiles that root once, and its top-level
  // members must not count as unknown keywords there.
  ajv.addVocabulary(["openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks", "components", "security", "tags"]);
  // OpenAPI's own formats that ajv-formats does not define: numbers only
  ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
  ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });
  ajv.addFormat("float", { type: "number", validate: () => true });
  ajv.addFormat("double", { type: "number", validate: () => true });
  ajv.addSchema(structuredClone(doc), DOCUMENT_ID);
  return ajv;
}

// The validator of the schema at `parts` of the document.
export function schemaValidator(ajv, parts) {
  const v = ajv.getSchema(DOCUMENT_ID + pointer(parts, true));
  if (!v) throw new Error(`no schema at ${pointer(parts)}`);
  return v;
}

export function formatAjvErrors(errors) {
  return (errors ?? []).map((e) => `${e.instancePath || "(root)"} ${e.message}${e.params && Object.keys(e.params).length ? " " + JSON.stringify(e.params) : ""}`);
}

// type/subtype and parameters of a media type, lower-cased.
export function parseMediaType(s) {
  const [essence, ...rest] = String(s).split(";");
  const params = {};
  for (const p of rest) {
    const i = p.indexOf("=");
    if (i < 0) continue;
    params[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim().replace(/^"(.*)"$/, "$1").toLowerCase();
  }
  return { essence: essence.trim().toLowerCase(), params };
}

// Whether an actual Content-Type satisfies a documented media type: same
// type/subtype, and every parameter the document names with its value.
export function mediaTypeMatches(documented, actual) {
  const d = parseMediaType(documented);
  const a = parseMediaType(actual);
  if (d.essence !== a.essence) return false;
  return Object.entries(d.params).every(([k, v]) => a.params[k] === v);
}

export function operationsOf(doc) {
  const out = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const m of HTTP_METHODS) if (item[m]) out.push({ method: m.toUpperCase(), path, op: item[m], item });
  }
  return out;
}

// ---- the checks ----

class Report {
  constructor() {
    this.failures = [];
    this.checks = 0;
  }
  check(ok, message) {
    this.checks++;
    if (!ok) this.failures.push(message);
    return ok;
  }
}

function projectVersion() {
  const cmake = readFileSync(resolve(REPO_ROOT, "CMakeLists.txt"), "utf8");
  const m = cmake.match(/project\(\s*h2pg\s+VERSION\s+([0-9.]+)/);
  return m ? m[1] : null;
}

// The operations API.md lists in its tables: "| GET | /users?limit=N... |".
function operationsOfApiMd(text) {
  const ops = new Set();
  for (const line of text.split("\n")) {
    const m = line.match(/^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*(\/[^\s|?]*)/);
    if (m) ops.add(`${m[1]} ${m[2]}`);
  }
  return ops;
}

// The contract the service implements is the repository's copy,
// spec/API.md: it is brought in step with the team's contract
// (../shared/spec/API.md) section by section, as each is built.
function findApiMd() {
  const candidates = [process.env.H2PG_API_MD, resolve(REPO_ROOT, "spec/API.md")];
  return candidates.find((p) => p && existsSync(p));
}

// Operations the team's contract has that the copy does not yet: reported,
// so the gap is visible, but not a failure of the copy's implementation.
function reportContractAhead(copy) {
  const shared = resolve(REPO_ROOT, "../shared/spec/API.md");
  if (process.env.H2PG_API_MD || !existsSync(shared) || !copy) return;
  const have = operationsOfApiMd(readFileSync(copy, "utf8"));
  const ahead = [...operationsOfApiMd(readFileSync(shared, "utf8"))].filter((op) => !have.has(op));
  if (ahead.length) console.log(`validate: not built yet (in ${shared}, not in spec/API.md): ${ahead.join(", ")}`);
}

function collectRefs(node, parts, out) {
  if (Array.isArray(node)) node.forEach((v, i) => collectRefs(v, [...parts, i], out));
  else if (node && typeof node === "object") {
    if (typeof node.$ref === "string") out.push({ ref: node.$ref, at: pointer(parts) });
    for (const [k, v] of Object.entries(node)) collectRefs(v, [...parts, k], out);
  }
}

// Every place of the document that holds a schema, as pointer parts.
function schemaLocations(doc) {
  const locs = [];
  const media = (content, parts) => {
    for (const [mt, m] of Object.entries(content ?? {})) if (m.schema) locs.push([...parts, "content", mt, "schema"]);
  };
  const headers = (hs, parts) => {
    for (const [name, h] of Object.entries(hs ?? {})) if (!h.$ref && h.schema) locs.push([...parts, "headers", name, "schema"]);
  };
  const params = (ps, parts) =>
    (ps ?? []).forEach((p, i) => {
      if (!p.$ref && p.schema) locs.push([...parts, "parameters", i, "schema"]);
    });
  const c = doc.components ?? {};
  for (const name of Object.keys(c.schemas ?? {})) locs.push(["components", "schemas", name]);
  for (const [name, p] of Object.entries(c.parameters ?? {})) if (p.schema) locs.push(["components", "parameters", name, "schema"]);
  for (const [name, h] of Object.entries(c.headers ?? {})) if (h.schema) locs.push(["components", "headers", name, "schema"]);
  for (const [name, r] of Object.entries(c.responses ?? {})) {
    media(r.content, ["components", "responses", name]);
    headers(r.headers, ["components", "responses", name]);
  }
  for (const [name, b] of Object.entries(c.requestBodies ?? {})) media(b.content, ["components", "requestBodies", name]);
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    params(item.parameters, ["paths", path]);
    for (const m of HTTP_METHODS) {
      const op = item[m];
      if (!op) continue;
      const at = ["paths", path, m];
      params(op.parameters, at);
      if (op.requestBody && !op.requestBody.$ref) media(op.requestBody.content, [...at, "requestBody"]);
      for (const [status, r] of Object.entries(op.responses ?? {})) {
        if (r.$ref) continue;
        media(r.content, [...at, "responses", status]);
        headers(r.headers, [...at, "responses", status]);
      }
    }
  }
  return locs;
}

// Whether a (problem) schema is the Problem schema or an allOf that holds
// it; returns { problem, status } with the status it pins, if any.
function problemSchemaOf(doc, schema) {
  const isProblemRef = (s) => s && s.$ref === "#/components/schemas/Problem";
  if (isProblemRef(schema)) return { problem: true, status: undefined };
  if (schema && Array.isArray(schema.allOf) && schema.allOf.some(isProblemRef)) {
    let status;
    for (const s of schema.allOf) if (s.properties?.status && "const" in s.properties.status) status = s.properties.status.const;
    return { problem: true, status };
  }
  return { problem: false };
}

function checkResponse(doc, rep, where, status, response) {
  const { node: r } = deref(doc, response, []);
  const code = Number(status);
  const headers = r.headers ?? {};
  const hasHeader = (name) => {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
    if (!key) return false;
    return deref(doc, headers[key], []).node.required === true;
  };
  rep.check(hasHeader("X-Request-Id"), `${where} ${status}: no required X-Request-Id response header`);
  if (code === 201) rep.check(hasHeader("Location"), `${where} 201: no required Location header`);
  if (code === 503) rep.check(hasHeader("Retry-After"), `${where} 503: no required Retry-After header`);
  if (code === 405) rep.check(hasHeader("Allow"), `${where} 405: no required Allow header`);
  if (code === 401) rep.check(hasHeader("WWW-Authenticate"), `${where} 401: no required WWW-Authenticate header`);
  if (code === 429)
    for (const h of ["Retry-After", "RateLimit-Policy", "RateLimit"]) rep.check(hasHeader(h), `${where} 429: no required ${h} header`);
  if (code >= 400) {
    const types = Object.keys(r.content ?? {});
    if (!rep.check(types.length === 1 && types[0] === "application/problem+json", `${where} ${status}: content must be application/problem+json alone, not [${types.join(", ")}]`))
      return;
    const p = problemSchemaOf(doc, r.content["application/problem+json"].schema);
    rep.check(p.problem, `${where} ${status}: schema is not #/components/schemas/Problem (or an allOf with it)`);
    if (p.problem && p.status !== undefined) rep.check(p.status === code, `${where} ${status}: its schema pins status ${p.status}`);
  }
}

function effectiveParameters(doc, item, op) {
  const byKey = new Map();
  for (const p of [...(item.parameters ?? []), ...(op.parameters ?? [])]) {
    const { node } = deref(doc, p, []);
    byKey.set(`${node.in}:${node.in === "header" ? node.name.toLowerCase() : node.name}`, node);
  }
  return byKey;
}

function checkOperation(doc, rep, want) {
  const where = `${want.method} ${want.path}`;
  const item = doc.paths?.[want.path];
  const op = item?.[want.method.toLowerCase()];
  if (!rep.check(op, `${where}: missing from the document`)) return;
  rep.check(typeof op.operationId === "string" && op.operationId, `${where}: no operationId`);
  rep.check(Array.isArray(op.tags) && op.tags.length > 0, `${where}: no tags`);
  rep.check(typeof op.summary === "string" && op.summary, `${where}: no summary`);

  const params = effectiveParameters(doc, item, op);
  for (const h of [...COMMON_HEADERS, ...(want.headers ?? [])])
    rep.check(params.has(`header:${h.toLowerCase()}`), `${where}: header parameter ${h} is not documented`);
  for (const q of want.query ?? []) rep.check(params.has(`query:${q}`), `${where}: query parameter ${q} is not documented`);
  for (const [key, p] of params)
    if (p.in === "query") rep.check((want.query ?? []).includes(p.name), `${where}: query parameter ${p.name} is not in API.md`);
  for (const m of want.path.matchAll(/\{([^}]+)\}/g)) {
    const p = params.get(`path:${m[1]}`);
    rep.check(p && p.required === true, `${where}: path parameter ${m[1]} is not documented as required`);
  }

  if (want.body) {
    const body = op.requestBody && deref(doc, op.requestBody, []).node;
    if (rep.check(body, `${where}: no requestBody`)) {
      rep.check(body.required === true, `${where}: requestBody is not required`);
      const types = Object.keys(body.content ?? {});
      rep.check(types.length === 1 && types[0] === "application/json", `${where}: requestBody must be application/json alone`);
      const schema = body.content?.["application/json"]?.schema;
      rep.check(schema?.$ref === `#/components/schemas/${want.body}`, `${where}: requestBody schema must be #/components/schemas/${want.body}`);
    }
  } else {
    rep.check(!op.requestBody, `${where}: takes no body in API.md, but documents one`);
  }

  const responses = op.responses ?? {};
  for (const [status, mediaType] of Object.entries(want.success)) {
    const r = responses[status] && deref(doc, responses[status], []).node;
    if (!rep.check(r, `${where}: success status ${status} is not documented`)) continue;
    const types = Object.keys(r.content ?? {});
    if (mediaType === null) rep.check(types.length === 0, `${where} ${status}: must have no body`);
    else rep.check(types.length === 1 && types[0] === mediaType, `${where} ${status}: content must be ${mediaType}, not [${types.join(", ")}]`);
  }
  const access = want.access ?? "user";
  const auth = [...(access !== "open" ? [401] : []), ...(access === "admin" ? [403] : []), ...(want.unlimited ? [] : [429])];
  for (const status of new Set([...want.errors, ...auth]))
    rep.check(responses[status], `${where}: error status ${status} is not documented`);
  for (const status of [401, 403, 429])
    if (responses[status]) rep.check(auth.includes(status), `${where}: documents ${status}, which the contract does not give it`);
  const security = op.security ?? doc.security;
  const bearer = Array.isArray(security) && security.some((req) => req && Object.keys(req).length === 1 && Array.isArray(req.bearer));
  if (access === "open") rep.check(Array.isArray(op.security) && op.security.length === 0, `${where}: an open operation must say security: []`);
  else rep.check(bearer, `${where}: needs a token, but the bearer scheme is not among its security requirements`);
  for (const [status, r] of Object.entries(responses)) {
    rep.check(/^[1-5][0-9][0-9]$/.test(status), `${where}: response key ${status} is not an exact status code`);
    if (Number(status) < 400) rep.check(status in want.success, `${where}: ${status} is not a success status of API.md`);
    checkResponse(doc, rep, where, status, r);
  }
}

// Samples that must pass or fail a component schema: the contract's rules.
const A = (n, c = "a") => c.repeat(n);
const SAMPLES = {
  UserCreate: {
    valid: [
      { name: "Ada", email: "ada@example.com" },
      { name: A(200, "é"), email: "x@y" },
      { name: "A", email: A(316) + "@x.y" },
      { name: "Ada", email: "ada@example.com", nickname: "unknown fields are ignored" },
      { name: "Ada", email: "ADA@EXAMPLE.COM" },
      { name: "Élève", email: "élève@école.fr" },
    ],
    invalid: [
      {},
      { name: "Ada" },
      { email: "ada@example.com" },
      { name: "", email: "ada@example.com" },
      { name: A(201), email: "ada@example.com" },
      { name: 7, email: "ada@example.com" },
      { name: "Ada", email: "ada.example.com" },
      { name: "Ada", email: "a@b@c" },
      { name: "Ada", email: "@b" },
      { name: "Ada", email: "a@" },
      { name: "Ada", email: A(317) + "@x.y" },
      { name: "Ada", email: "\n@\n" },
      { name: "Ada", email: "a b@c" },
      { name: "Ada", email: " a@b" },
      { name: "Ada", email: "a@b " },
      { name: "Ada", email: "a\t@b" },
      { name: "Ada", email: "a\u007f@b" },
      { name: "Ada", email: "a\u0085@b" },
      { name: "Ada", email: "a\u00a0b@c" },
      { name: "Ada", email: "a@b\u2028" },
      { name: "Ada", email: "a@b\u3000c" },
    ],
  },
  UserPatch: {
    valid: [{ name: "Ada" }, { email: "a@b" }, { name: "Ada", email: "a@b" }],
    invalid: [{}, { name: "" }, { email: "nope" }, { name: A(201) }, { email: "a b@c" }, { email: "a@b\u0000" }],
  },
  OrderCreate: {
    valid: [
      { item: "Widget", quantity: 1, price_cents: 0 },
      { item: A(200, "ü"), quantity: 10000, price_cents: 9007199254740991 },
    ],
    invalid: [
      { item: "Widget", quantity: 0, price_cents: 1 },
      { item: "Widget", quantity: 10001, price_cents: 1 },
      { item: "Widget", quantity: 1.5, price_cents: 1 },
      { item: "Widget", quantity: "2", price_cents: 1 },
      { item: "Widget", quantity: 1, price_cents: -1 },
      { item: "Widget", quantity: 1, price_cents: 1.25 },
      { item: "", quantity: 1, price_cents: 1 },
      { item: A(201), quantity: 1, price_cents: 1 },
      { quantity: 1, price_cents: 1 },
    ],
  },
  AccountCreate: {
    valid: [{ user_id: 1, balance_cents: 0 }, { user_id: 9007199254740991, balance_cents: 100 }],
    invalid: [
      { user_id: 0, balance_cents: 0 },
      { user_id: -1, balance_cents: 0 },
      { user_id: "1", balance_cents: 0 },
      { user_id: 1, balance_cents: -1 },
      { user_id: 1, balance_cents: 0.5 },
      { user_id: 1 },
      { balance_cents: 1 },
    ],
  },
  TransferCreate: {
    valid: [{ from_account_id: 1, to_account_id: 2, amount_cents: 1 }],
    invalid: [
      { from_account_id: 1, to_account_id: 2, amount_cents: 0 },
      { from_account_id: 1, to_account_id: 2, amount_cents: -5 },
      { from_account_id: 1, to_account_id: 2, amount_cents: 2.5 },
      { from_account_id: 0, to_account_id: 2, amount_cents: 1 },
      { from_account_id: 1, to_account_id: "2", amount_cents: 1 },
      { from_account_id: 1, amount_cents: 1 },
    ],
  },
  User: {
    valid: [{ id: 1, name: "Ada", email: "a@b", created_at: "2025-01-31T09:15:02.123456Z" }],
    invalid: [
      { id: 0, name: "Ada", email: "a@b", created_at: "2025-01-31T09:15:02Z" },
      { id: "1", name: "Ada", email: "a@b", created_at: "2025-01-31T09:15:02Z" },
      { id: 1, name: "Ada", email: "a@b", created_at: "yesterday" },
      { id: 1, name: "Ada", email: "a@b", created_at: "2025-01-31T09:15:02+02:00" },
      { id: 1, name: "Ada", email: "a@b" },
    ],
  },
  Order: {
    valid: [{ id: 3, user_id: 1, item: "Widget", quantity: 3, price_cents: 1999, total_cents: 5997, created_at: "2025-01-31T09:15:02.5Z" }],
    invalid: [
      { id: 3, user_id: 1, item: "Widget", quantity: 3, price_cents: 19.99, total_cents: 59.97, created_at: "2025-01-31T09:15:02Z" },
      { id: 3, user_id: 1, item: "Widget", quantity: 3, price_cents: 1999, created_at: "2025-01-31T09:15:02Z" },
    ],
  },
  Account: {
    valid: [{ id: 1, user_id: 1, balance_cents: 0, created_at: "2025-01-31T09:15:02Z" }],
    invalid: [{ id: 1, user_id: 1, balance_cents: -1, created_at: "2025-01-31T09:15:02Z" }],
  },
  Transfer: {
    valid: [{ id: 1, from_account_id: 1, to_account_id: 2, amount_cents: 5, created_at: "2025-01-31T09:15:02Z" }],
    invalid: [{ id: 1, from_account_id: 1, to_account_id: 2, amount_cents: 0, created_at: "2025-01-31T09:15:02Z" }],
  },
  UserPage: {
    valid: [{ items: [], next_after: null }, { items: [{ id: 4, name: "A", email: "a@b", created_at: "2025-01-31T09:15:02Z" }], next_after: 4 }],
    invalid: [{ items: [] }, { items: [], next_after: 0 }, { items: [], next_after: "4" }],
  },
  UserDetail: {
    valid: [
      { user: { id: 1, name: "A", email: "a@b", created_at: "2025-01-31T09:15:02Z" }, orders: [], accounts: [] },
      {
        user: { id: 1, name: "A", email: "a@b", created_at: "2025-01-31T09:15:02Z" }, orders: [],
        accounts: Array.from({ length: 100 }, (_, i) => ({ id: i + 1, user_id: 1, balance_cents: 0, created_at: "2025-01-31T09:15:02Z" })),
      },
    ],
    invalid: [
      { user: { id: 1, name: "A", email: "a@b", created_at: "2025-01-31T09:15:02Z" }, orders: [] },
      // at most the first 100 accounts: the rest are GET /users/{id}/accounts
      {
        user: { id: 1, name: "A", email: "a@b", created_at: "2025-01-31T09:15:02Z" }, orders: [],
        accounts: Array.from({ length: 101 }, (_, i) => ({ id: i + 1, user_id: 1, balance_cents: 0, created_at: "2025-01-31T09:15:02Z" })),
      },
    ],
  },
  AccountPage: {
    valid: [{ items: [], next_after: null }, { items: [{ id: 4, user_id: 1, balance_cents: 0, created_at: "2025-01-31T09:15:02Z" }], next_after: 4 }],
    invalid: [
      { items: [] },
      { items: [], next_after: 0 },
      { items: [{ id: 4, user_id: 1, balance_cents: -1, created_at: "2025-01-31T09:15:02Z" }], next_after: null },
    ],
  },
  Problem: {
    valid: [
      { type: "about:blank", title: "Not Found", status: 404, detail: "no such user" },
      { type: "about:blank", title: "Unprocessable Content", status: 422, detail: "x", errors: [{ field: "email", message: "bad" }] },
    ],
    invalid: [
      { type: "about:blank", title: "Not Found", status: 404 },
      { type: "about:blank", title: "Not Found", status: "404", detail: "x" },
      { type: "about:blank", title: "x", status: 422, detail: "x", errors: [{ field: "email" }] },
    ],
  },
  WebhookCreate: {
    valid: [
      { url: "https://example.com/hook", events: ["user.created"] },
      { url: "http://10.0.0.1:8080/x?y=1", events: ["*"] },
      { url: "HTTPS://user@example.com/", events: ["order.created", "account.created", "transfer.created"] },
    ],
    invalid: [
      { url: "ftp://example.com/", events: ["*"] },
      { url: "/relative", events: ["*"] },
      { url: "http://", events: ["*"] },
      { url: "https://exa mple.com/", events: ["*"] },
      { url: "https://example.com/" + A(2030), events: ["*"] },
      { url: "https://example.com/", events: [] },
      { url: "https://example.com/", events: ["user.deleted"] },
      { url: "https://example.com/", events: ["*", "user.created"] },
      { url: "https://example.com/", events: ["user.created", "user.created"] },
      { url: "https://example.com/" },
      { events: ["*"] },
    ],
  },
  Delivery: {
    valid: [
      { id: 1, event_id: 7, type: "user.created", state: "pending", attempts: 0, last_status: null, last_error: null, next_attempt_at: "2025-01-31T09:15:02Z", delivered_at: null },
      { id: 1, event_id: 7, type: "user.created", state: "delivered", attempts: 2, last_status: 204, last_error: null, next_attempt_at: null, delivered_at: "2025-01-31T09:15:02Z" },
    ],
    invalid: [
      { id: 1, event_id: 7, type: "user.created", state: "lost", attempts: 0, last_status: null, last_error: null, next_attempt_at: null, delivered_at: null },
      { id: 1, event_id: 7, type: "user.created", state: "pending", attempts: 0, last_status: null, last_error: null, next_attempt_at: null },
    ],
  },
  WebhookCreated: {
    valid: [{ id: 1, url: "https://example.com/", events: ["*"], disabled: false, created_at: "2025-01-31T09:15:02Z", secret: "whsec_" + A(44) }],
    invalid: [{ id: 1, url: "https://example.com/", events: ["*"], disabled: false, created_at: "2025-01-31T09:15:02Z" }],
  },
  World: { valid: [{ id: 1, randomNumber: 10000 }], invalid: [{ id: 0, randomNumber: 1 }, { id: 1, randomnumber: 1 }] },
};

export async function validateDocument(path = DOCUMENT_PATH) {
  const rep = new Report();
  let text, doc;
  try {
    ({ text, doc } = loadDocument(path));
  } catch (e) {
    rep.check(false, `${path}: ${e.message}`);
    return rep;
  }

  const canonical = JSON.stringify(doc, null, 2) + "\n";
  if (!rep.check(text === canonical, "not in canonical form (JSON.stringify(doc, null, 2) plus a final newline), or it has a duplicate key")) {
    const a = text.split("\n"), b = canonical.split("\n");
    const i = a.findIndex((line, k) => line !== b[k]);
    rep.failures.push(`  first difference at line ${i + 1}: ${JSON.stringify(a[i])} (canonical: ${JSON.stringify(b[i])})`);
  }

  const validator = new Validator();
  const result = await validator.validate(structuredClone(doc));
  if (!rep.check(result.valid, "not a valid OpenAPI document:"))
    for (const e of [].concat(result.errors ?? [])) rep.failures.push("  " + (typeof e === "string" ? e : `${e.instancePath} ${e.message} ${JSON.stringify(e.params ?? {})}`));
  rep.check(validator.version === "3.1" && /^3\.1\.\d+$/.test(doc.openapi ?? ""), `openapi must be 3.1.x, is ${doc.openapi}`);
  const version = projectVersion();
  rep.check(doc.info?.version === version, `info.version ${doc.info?.version} differs from the project version ${version} (CMakeLists.txt)`);

  const refs = [];
  collectRefs(doc, [], refs);
  for (const { ref, at } of refs) {
    let ok = false;
    try {
      ok = ref.startsWith("#") && getAt(doc, pointerParts(ref)) !== undefined;
    } catch {
      ok = false;
    }
    rep.check(ok, `${at}: $ref ${ref} does not resolve`);
  }
  if (rep.failures.length > 0) return rep; // the rest needs a sound document

  const ajv = makeAjv(doc);
  for (const parts of schemaLocations(doc)) {
    try {
      schemaValidator(ajv, parts);
      rep.checks++;
    } catch (e) {
      rep.check(false, `${pointer(parts)}: schema does not compile (JSON Schema 2020-12, strict): ${e.message}`);
    }
  }

  const listed = new Set(API_OPERATIONS.map((o) => `${o.method} ${o.path}`));
  const apiMd = findApiMd();
  reportContractAhead(apiMd);
  if (apiMd) {
    for (const op of operationsOfApiMd(readFileSync(apiMd, "utf8")))
      rep.check(listed.has(op), `${op} is in ${apiMd} but not in validate.mjs's API_OPERATIONS`);
  }
  for (const { method, path } of operationsOf(doc))
    rep.check(listed.has(`${method} ${path}`), `${method} ${path} is documented but not an operation of API.md`);
  for (const want of API_OPERATIONS) checkOperation(doc, rep, want);
  const ids = operationsOf(doc).map((o) => o.op.operationId);
  rep.check(new Set(ids).size === ids.length, "operationIds are not unique");

  const scheme = doc.components?.securitySchemes?.bearer;
  rep.check(scheme?.type === "http" && scheme.scheme === "bearer" && scheme.bearerFormat === "JWT",
    "components.securitySchemes.bearer must be the HTTP bearer scheme with bearerFormat JWT");

  // The answers for paths and methods that no operation covers.
  const resps = doc.components?.responses ?? {};
  if (rep.check(resps.NotFound, "components.responses.NotFound is missing (unknown routes)"))
    checkResponse(doc, rep, "components.responses.NotFound", "404", resps.NotFound);
  if (rep.check(resps.MethodNotAllowed, "components.responses.MethodNotAllowed is missing (405 with Allow)"))
    checkResponse(doc, rep, "components.responses.MethodNotAllowed", "405", resps.MethodNotAllowed);

  for (const [name, { valid, invalid }] of Object.entries(SAMPLES)) {
    let v;
    try {
      v = schemaValidator(ajv, ["components", "schemas", name]);
    } catch (e) {
      rep.check(false, `components.schemas.${name}: ${e.message}`);
      continue;
    }
    for (const s of valid) rep.check(v(s), `components.schemas.${name} rejects ${JSON.stringify(s).slice(0, 120)}: ${formatAjvErrors(v.errors).join("; ")}`);
    for (const s of invalid) rep.check(!v(s), `components.schemas.${name} accepts ${JSON.stringify(s).slice(0, 120)}, which breaks the contract`);
  }
  return rep;
}

async function main() {
  const path = resolve(process.argv[2] ?? DOCUMENT_PATH);
  const rep = await validateDocument(path);
  for (const f of rep.failures) console.error(f.startsWith("  ") ? f : `validate: ${f}`);
  const ops = (() => {
    try {
      return operationsOf(loadDocument(path).doc).length;
    } catch {
      return 0;
    }
  })();
  if (rep.failures.length > 0) {
    console.error(`validate: ${path}: ${rep.failures.filter((f) => !f.startsWith("  ")).length} of ${rep.checks} checks failed`);
    process.exit(1);
  }
  console.log(`validate: ${path}: valid OpenAPI 3.1, ${ops} operations, ${rep.checks} checks passed`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
