#!/usr/bin/env node
// node conformance.mjs BASE_URL [DOWN_URL [GUARDED_URL]]
//
// Drives a running h2pg at BASE_URL (a fresh database: the cases create
// their own rows) and checks that what it really answers conforms to
// openapi/openapi.json. For each request of the list below:
//   - the status is the one the case expects (from API.md);
//   - the document has an operation for the request's path and method and
//     documents that status for it (a path it lacks must get the documented
//     404, a method it lacks the documented 405 whose Allow names exactly the
//     path's methods, plus HEAD with GET);
//   - the Content-Type is one the response documents (no body where it
//     documents none), every required header is there, every documented
//     header's value fits its schema, and X-Request-Id echoes the request's;
//   - the body validates against the documented schema ($refs resolved;
//     NDJSON line by line), and a problem's body shows no SQL or database
//     message;
//   - plus what the case itself checks (an echo of the created fields, the
//     Location that reads back the same object, balances after a transfer...).
// DOWN_URL, when given, is an h2pg whose database is unreachable: its cases
// check the documented 503s. GUARDED_URL, when given, is an h2pg with
// bearer authentication (an HS256 oct key whose k, base64url, is in
// $H2PG_CONFORMANCE_HS256_KEY) and a rate limit of a burst of 6 at 1/s: its
// cases check the documented 401s, 403s and 429s.
//
// Each case prints "ok" or "FAIL" with the reasons; a case whose prerequisite
// (an id an earlier case was to create) is missing is skipped. Exits 1 when
// any case failed or was skipped.
import { createHmac } from "node:crypto";
import http from "node:http";
import { readFileSync } from "node:fs";
import {
  DOCUMENT_PATH,
  deref,
  formatAjvErrors,
  loadDocument,
  makeAjv,
  mediaTypeMatches,
  parseMediaType,
  schemaValidator,
} from "./validate.mjs";

const BASE = process.argv[2];
const DOWN = process.argv[3];
const GUARDED = process.argv[4];
if (!BASE) {
  console.error("usage: node conformance.mjs BASE_URL [DOWN_URL]");
  process.exit(2);
}

const fileBytes = readFileSync(DOCUMENT_PATH);
const { doc } = loadDocument();
const ajv = makeAjv(doc);

// ---- HTTP ----

// One request on a connection of its own. With expectContinue the body
// waits for "100 Continue" (or 2 s of silence), as a careful client sends a
// large body: a server that refuses it (413) answers before reading it, and
// the answer cannot be lost to a write on a connection it has closed.
function send(baseUrl, { method, path, headers = {}, body, expectContinue = false }) {
  const url = new URL(path, baseUrl);
  return new Promise((resolveP, rejectP) => {
    let done = false;
    const h = { Connection: "close", ...headers };
    if (expectContinue) h.Expect = "100-continue";
    const req = http.request(
      url,
      { method, headers: h, agent: false, timeout: 30000 },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          done = true;
          resolveP({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) });
        });
        res.on("error", (e) => {
          if (!done) rejectP(e);
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer within 30 s")));
    req.on("error", (e) => {
      if (!done && !req.res) rejectP(e);
    });
    if (expectContinue && body !== undefined) {
      let sent = false;
      const sendBody = () => {
        if (!sent && !req.destroyed) {
          sent = true;
          req.end(body);
        }
      };
      req.on("continue", sendBody);
      req.on("response", () => {
        sent = true;
      });
      setTimeout(sendBody, 2000).unref();
      req.flushHeaders();
    } else if (body !== undefined) req.end(body);
    else req.end();
  });
}

// ---- finding what the document says ----

// The document's path template for a concrete path: among the templates
// that match, a literal segment wins over a parameter at the first position
// where they differ (as the server's router decides).
function findPathTemplate(path) {
  const segs = path.split("/").slice(1);
  const matches = [];
  for (const template of Object.keys(doc.paths)) {
    const t = template.split("/").slice(1);
    if (t.length !== segs.length) continue;
    const kinds = [];
    let ok = true;
    for (let i = 0; i < t.length && ok; i++) {
      if (/^\{[^}]+\}$/.test(t[i])) kinds.push(1);
      else if (t[i] === segs[i]) kinds.push(0);
      else ok = false;
    }
    if (ok && segs.every((s) => s !== "")) matches.push({ template, kinds });
  }
  matches.sort((a, b) => {
    for (let i = 0; i < a.kinds.length; i++) if (a.kinds[i] !== b.kinds[i]) return a.kinds[i] - b.kinds[i];
    return 0;
  });
  return matches[0]?.template;
}

function documentedMethods(template) {
  const item = doc.paths[template];
  const methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"].filter((m) => item[m]).map((m) => m.toUpperCase());
  if (methods.includes("GET") && !methods.includes("HEAD")) methods.push("HEAD");
  return methods;
}

// Header values are strings; a schema may want a number.
function coerceHeader(value, schema) {
  const { node } = deref(doc, schema, []);
  const types = [].concat(node?.type ?? []);
  if ((types.includes("integer") || types.includes("number")) && /^-?[0-9]+(\.[0-9]+)?$/.test(value)) return Number(value);
  return value;
}

const LEAK = [/duplicate key value/i, /violates (foreign key|check|unique|not-null) constraint/i, /relation "/i, /column "/i, /SQLSTATE/i, /\bERROR:/, /syntax error at/i, /pg_catalog/i];

// Checks a response against the documented response object (which may be a
// $ref) found at `parts`. Returns the list of problems.
function checkAgainst(res, responseRef, parts, requestId) {
  const problems = [];
  const { node: r, parts: rParts } = deref(doc, responseRef, parts);
  const header = (name) => res.headers[name.toLowerCase()];

  // headers
  for (const [name, hRef] of Object.entries(r.headers ?? {})) {
    const { node: h, parts: hParts } = deref(doc, hRef, [...rParts, "headers", name]);
    const value = header(name);
    if (value === undefined) {
      if (h.required) problems.push(`required header ${name} is missing`);
      continue;
    }
    if (h.schema) {
      const v = schemaValidator(ajv, [...hParts, "schema"]);
      const coerced = coerceHeader(String(value), h.schema);
      if (!v(coerced)) problems.push(`header ${name}: ${JSON.stringify(value)} does not fit its schema: ${formatAjvErrors(v.errors).join("; ")}`);
    }
  }
  if (requestId !== undefined && header("x-request-id") !== undefined && header("x-request-id") !== requestId)
    problems.push(`X-Request-Id is ${JSON.stringify(header("x-request-id"))}, not the request's ${JSON.stringify(requestId)}`);

  // content
  const content = r.content ?? {};
  const ct = header("content-type");
  if (Object.keys(content).length === 0) {
    if (res.body.length > 0) problems.push(`the document gives this response no body, but it has ${res.body.length} bytes (${ct ?? "no Content-Type"})`);
    return problems;
  }
  if (!ct) {
    problems.push("no Content-Type header");
    return problems;
  }
  const mediaType = Object.keys(content).find((mt) => mediaTypeMatches(mt, ct));
  if (!mediaType) {
    problems.push(`Content-Type ${ct} is not documented (documented: ${Object.keys(content).join(", ")})`);
    return problems;
  }
  if (!content[mediaType].schema) return problems;
  const validate = schemaValidator(ajv, [...rParts, "content", mediaType, "schema"]);
  const essence = parseMediaType(mediaType).essence;
  const text = res.body.toString("utf8");
  if (!Buffer.from(text, "utf8").equals(res.body)) problems.push("the body is not valid UTF-8");
  if (essence === "application/x-ndjson") {
    if (text.length > 0 && !text.endsWith("\n")) problems.push("the NDJSON body does not end with a newline");
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    lines.forEach((line, i) => {
      let value;
      try {
        value = JSON.parse(line);
      } catch (e) {
        problems.push(`NDJSON line ${i + 1} is not JSON: ${e.message}`);
        return;
      }
      if (!validate(value)) problems.push(`NDJSON line ${i + 1}: ${formatAjvErrors(validate.errors).join("; ")}`);
    });
    res.lines = lines.map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return undefined;
      }
    });
  } else if (essence === "application/json" || essence.endsWith("+json")) {
    try {
      res.json = JSON.parse(text);
    } catch (e) {
      problems.push(`the body is not JSON: ${e.message}`);
      return problems;
    }
    if (!validate(res.json)) problems.push(`the body does not fit its schema: ${formatAjvErrors(validate.errors).join("; ")}`);
  } else if (!validate(text)) {
    problems.push(`the body does not fit its schema: ${formatAjvErrors(validate.errors).join("; ")}`);
  }
  if (res.status >= 400 && LEAK.some((re) => re.test(text))) problems.push(`the problem reveals database internals: ${text.slice(0, 200)}`);
  return problems;
}

// Everything the document says about this exchange.
function conformance(req, res, requestId) {
  const path = new URL(req.path, "http://x").pathname;
  const template = findPathTemplate(path);
  if (!template) {
    if (res.status !== 404) return [`${path} is not in the document, so it must be 404, not ${res.status}`];
    return checkAgainst(res, { $ref: "#/components/responses/NotFound" }, [], requestId);
  }
  const item = doc.paths[template];
  const method = req.method.toLowerCase();
  const op = item[method] ?? (method === "head" ? item.get : undefined);
  if (!op) {
    if (res.status !== 405) return [`${req.method} ${template} is not in the document, so it must be 405, not ${res.status}`];
    const problems = checkAgainst(res, { $ref: "#/components/responses/MethodNotAllowed" }, [], requestId);
    const allow = res.headers.allow;
    if (allow !== undefined) {
      const got = new Set(allow.split(",").map((s) => s.trim()).filter(Boolean));
      const want = new Set(documentedMethods(template));
      if (got.size !== want.size || [...want].some((m) => !got.has(m)))
        problems.push(`Allow is "${allow}", but the document has ${[...want].join(", ")} for ${template}`);
    }
    return problems;
  }
  const opMethod = item[method] ? method : "get";
  const response = op.responses?.[String(res.status)];
  if (!response) return [`status ${res.status} is not documented for ${req.method} ${template} (documented: ${Object.keys(op.responses ?? {}).join(", ")})`];
  return checkAgainst(res, response, ["paths", template, opMethod, "responses", String(res.status)], requestId);
}

// ---- the cases ----

class Skip extends Error {}
const ctx = {};
function need(...keys) {
  for (const k of keys) if (ctx[k] === undefined) throw new Skip(`needs ${k} from an earlier case`);
  return keys.length === 1 ? ctx[keys[0]] : keys.map((k) => ctx[k]);
}
const NO_ID = "9000000000000000000"; // an id no row has
const json = (v) => ({ body: JSON.stringify(v), headers: { "Content-Type": "application/json" } });
const raw = (body, contentType) => ({ body, headers: contentType ? { "Content-Type": contentType } : {} });
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Extra checks. Each returns a list of problems.
const expectJson = (want) => (res) => (eq(res.json, want) ? [] : [`body ${JSON.stringify(res.json)} is not ${JSON.stringify(want)}`]);
const expectFields = (want) => (res) =>
  Object.entries(want).filter(([k, v]) => !eq(res.json?.[k], v)).map(([k, v]) => `${k} is ${JSON.stringify(res.json?.[k])}, not ${JSON.stringify(v)}`);
const expectErrorField = (field) => (res) =>
  (res.json?.errors ?? []).some((e) => e.field === field) ? [] : [`errors ${JSON.stringify(res.json?.errors)} name no "${field}"`];
const expectLength = (n) => (res) => (Array.isArray(res.json) && res.json.length === n ? [] : [`${res.json?.length} items, not ${n}`]);
const expectLocation = (prefix) => (res) => {
  const loc = res.headers.location;
  return loc === `${prefix}${res.json?.id}` ? [] : [`Location ${loc} is not ${prefix}${res.json?.id}`];
};
const ascending = (ids) => ids.every((id, i) => i === 0 || ids[i - 1] < id);

const bigName = "é".repeat(200);
const oneMiBAndMore = JSON.stringify({ name: "x".repeat(1024 * 1024 + 1024), email: "big@example.com" });

// Every case: name, method, path (or a function of ctx), optional headers and
// body (or a function returning { headers, body }), expect (a status or a
// list), check(res) for more problems, save(res) to remember what it made.
const CASES = [
  // operations
  { name: "liveness", method: "GET", path: "/healthz", expect: 200, check: expectJson({ status: "ok" }) },
  { name: "readiness", method: "GET", path: "/readyz", expect: 200, check: expectJson({ status: "ready" }) },
  {
    name: "metrics in Prometheus text format",
    method: "GET", path: "/metrics", expect: 200,
    check: (res) => (/^# (HELP|TYPE) /m.test(res.body.toString()) ? [] : ["no # HELP or # TYPE line"]),
  },
  {
    name: "this document, byte for byte",
    method: "GET", path: "/openapi.json", expect: 200,
    check: (res) => (res.body.equals(fileBytes) ? [] : [`the body (${res.body.length} bytes) differs from openapi/openapi.json (${fileBytes.length} bytes)`]),
  },
  { name: "a made-up X-Request-Id is replaced", method: "GET", path: "/healthz", headers: { "X-Request-Id": "not a valid id!" }, requestId: null, expect: 200,
    check: (res) => (res.headers["x-request-id"] && res.headers["x-request-id"] !== "not a valid id!" ? [] : [`X-Request-Id is ${res.headers["x-request-id"]}`]) },
  { name: "unknown route", method: "GET", path: "/no/such/route", expect: 404 },
  { name: "unknown route under a known prefix", method: "GET", path: "/users/1/nothing", expect: 404 },
  { name: "wrong method on /healthz", method: "POST", path: "/healthz", ...json({}), expect: 405 },
  { name: "wrong method on /users", method: "DELETE", path: "/users", expect: 405 },
  { name: "wrong method on /users/{id}", method: "PUT", path: "/users/1", ...json({ name: "x" }), expect: 405 },
  { name: "wrong method on /orders/{id}", method: "DELETE", path: "/orders/1", expect: 405 },
  { name: "wrong method on /transfers", method: "GET", path: "/transfers", expect: 405 },
  { name: "wrong method on /openapi.json", method: "POST", path: "/openapi.json", ...json({}), expect: 405 },
  { name: "Request-Timeout not a number", method: "GET", path: "/healthz", headers: { "Request-Timeout": "soon" }, expect: 400 },
  { name: "Request-Timeout zero", method: "GET", path: "/db", headers: { "Request-Timeout": "0" }, expect: 400 },

  // benchmark
  { name: "json", method: "GET", path: "/json", expect: 200, check: expectJson({ message: "Hello, World!" }) },
  { name: "plaintext", method: "GET", path: "/plaintext", expect: 200 },
  { name: "db", method: "GET", path: "/db", expect: 200 },
  { name: "queries without a count", method: "GET", path: "/queries", expect: 200, check: expectLength(1) },
  { name: "queries=7", method: "GET", path: "/queries?queries=7", expect: 200, check: expectLength(7) },
  { name: "queries=0 clamps to 1", method: "GET", path: "/queries?queries=0", expect: 200, check: expectLength(1) },
  { name: "queries=foo counts as 1", method: "GET", path: "/queries?queries=foo", expect: 200, check: expectLength(1) },
  { name: "queries=9999 clamps to 500", method: "GET", path: "/queries?queries=9999", expect: 200, check: expectLength(500) },
  { name: "updates=5", method: "GET", path: "/updates?queries=5", expect: 200, check: expectLength(5) },
  {
    name: "fortunes",
    method: "GET", path: "/fortunes", expect: 200,
    check: (res) => {
      const html = res.body.toString();
      const p = [];
      if ((html.match(/<tr><td>/g) ?? []).length !== 13) p.push("not 13 fortunes");
      if (!html.includes("<td>0</td><td>Additional fortune added at request time.</td>")) p.push("no fortune added at request time");
      if (!html.includes("&lt;script&gt;")) p.push("the <script> fortune is not escaped");
      return p;
    },
  },

  // users
  {
    name: "create a user",
    method: "POST", path: "/users", ...json({ name: "Ada Lovelace", email: "ada@example.com" }), expect: 201,
    check: (res) => [...expectFields({ name: "Ada Lovelace", email: "ada@example.com" })(res), ...expectLocation("/users/")(res)],
    save: (res) => {
      ctx.userA = res.json?.id;
      ctx.userALocation = res.headers.location;
      ctx.userAJson = res.json;
    },
  },
  {
    name: "the user's Location reads back the user",
    method: "GET", path: () => need("userALocation"), expect: 200,
    check: (res) => (eq(res.json?.user, ctx.userAJson) ? [] : [`user ${JSON.stringify(res.json?.user)} differs from the created ${JSON.stringify(ctx.userAJson)}`]),
  },
  { name: "duplicate email", method: "POST", path: "/users", ...json({ name: "Ada again", email: "ada@example.com" }), expect: 409 },
  { name: "duplicate email in other case", method: "POST", path: "/users", ...json({ name: "Ada again", email: "ADA@Example.COM" }), expect: 409 },
  {
    name: "a name of 200 characters (400 bytes)",
    method: "POST", path: "/users", ...json({ name: bigName, email: "grace@example.com" }), expect: 201,
    check: expectFields({ name: bigName }),
    save: (res) => {
      ctx.userB = res.json?.id;
      ctx.userBEmail = res.json?.email;
    },
  },
  {
    name: "unknown body fields are ignored",
    method: "POST", path: "/users", ...json({ name: "Charles", email: "charles@example.com", nickname: "C" }), expect: 201,
    check: (res) => (res.json && !("nickname" in res.json) ? [] : ["nickname came back"]),
    save: (res) => (ctx.userC = res.json?.id),
  },
  { name: "a name of 201 characters", method: "POST", path: "/users", ...json({ name: "a".repeat(201), email: "x1@example.com" }), expect: 422, check: expectErrorField("name") },
  { name: "an empty name", method: "POST", path: "/users", ...json({ name: "", email: "x2@example.com" }), expect: 422, check: expectErrorField("name") },
  { name: "a missing email", method: "POST", path: "/users", ...json({ name: "X" }), expect: 422, check: expectErrorField("email") },
  { name: "an email with two @", method: "POST", path: "/users", ...json({ name: "X", email: "a@b@c" }), expect: 422, check: expectErrorField("email") },
  { name: "an email with nothing before @", method: "POST", path: "/users", ...json({ name: "X", email: "@b" }), expect: 422, check: expectErrorField("email") },
  { name: "an email with a space", method: "POST", path: "/users", ...json({ name: "X", email: "a b@example.com" }), expect: 422, check: expectErrorField("email") },
  { name: "an email with newlines", method: "POST", path: "/users", ...json({ name: "X", email: "\n@\n" }), expect: 422, check: expectErrorField("email") },
  { name: "an email with a DEL", method: "POST", path: "/users", ...json({ name: "X", email: "a\u007f@example.com" }), expect: 422, check: expectErrorField("email") },
  { name: "an email of 321 characters", method: "POST", path: "/users", ...json({ name: "X", email: "a".repeat(317) + "@x.y" }), expect: 422, check: expectErrorField("email") },
  { name: "a name that is a number", method: "POST", path: "/users", ...json({ name: 42, email: "x3@example.com" }), expect: 422, check: expectErrorField("name") },
  { name: "a text/plain body", method: "POST", path: "/users", ...raw('{"name":"X","email":"x4@example.com"}', "text/plain"), expect: 415 },
  { name: "a body without Content-Type", method: "POST", path: "/users", ...raw('{"name":"X","email":"x5@example.com"}'), expect: 415 },
  { name: "malformed JSON", method: "POST", path: "/users", ...raw('{"name": "X", "email":', "application/json"), expect: 400 },
  { name: "a JSON array body", method: "POST", path: "/users", ...raw('[{"name":"X","email":"x6@example.com"}]', "application/json"), expect: 400 },
  { name: "invalid UTF-8", method: "POST", path: "/users", ...raw(Buffer.from([0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x2c, 0x22, 0x65, 0x6d, 0x61, 0x69, 0x6c, 0x22, 0x3a, 0x22, 0x61, 0x40, 0x62, 0x22, 0x7d]), "application/json"), expect: 400 },
  { name: "duplicate keys", method: "POST", path: "/users", ...raw('{"name":"X","name":"Y","email":"x7@example.com"}', "application/json"), expect: 400 },
  { name: "nesting 40 deep", method: "POST", path: "/users", ...raw('{"name":"X","email":"x8@example.com","deep":' + "[".repeat(40) + "]".repeat(40) + "}", "application/json"), expect: 400 },
  { name: "a body over 1 MiB", method: "POST", path: "/users", ...raw(oneMiBAndMore, "application/json"), expectContinue: true, expect: 413 },
  {
    name: "list users",
    method: "GET", path: "/users", expect: 200,
    check: (res) => {
      const ids = (res.json?.items ?? []).map((u) => u.id);
      const p = [];
      if (ids.length !== 3) p.push(`${ids.length} users, not 3`);
      if (!ascending(ids)) p.push(`ids ${ids} are not ascending`);
      if (res.json?.next_after !== null) p.push(`next_after is ${res.json?.next_after} on a page that is not full`);
      return p;
    },
  },
  {
    name: "a page of one user",
    method: "GET", path: "/users?limit=1", expect: 200,
    check: (res) => (res.json?.items?.length === 1 && res.json.next_after === res.json.items[0].id ? [] : [`next_after ${res.json?.next_after} is not the last item's id`]),
    save: (res) => (ctx.usersNext = res.json?.next_after ?? undefined),
  },
  {
    name: "the next page of one user",
    method: "GET", path: () => `/users?limit=1&after=${need("usersNext")}`, expect: 200,
    check: (res) => (res.json?.items?.length === 1 && res.json.items[0].id > ctx.usersNext ? [] : ["not the next user"]),
  },
  { name: "limit=0", method: "GET", path: "/users?limit=0", expect: 400, check: expectErrorField("limit") },
  { name: "limit=101", method: "GET", path: "/users?limit=101", expect: 400, check: expectErrorField("limit") },
  { name: "limit=ten", method: "GET", path: "/users?limit=ten", expect: 400, check: expectErrorField("limit") },
  { name: "after=-1", method: "GET", path: "/users?after=-1", expect: 400, check: expectErrorField("after") },
  { name: "after=abc", method: "GET", path: "/users?after=abc", expect: 400, check: expectErrorField("after") },
  { name: "a user with no orders or accounts", method: "GET", path: () => `/users/${need("userA")}`, expect: 200, check: expectFields({ orders: [], accounts: [] }) },
  { name: "an unknown user", method: "GET", path: `/users/${NO_ID}`, expect: 404 },
  { name: "user id 0", method: "GET", path: "/users/0", expect: 404 },
  { name: "user id abc", method: "GET", path: "/users/abc", expect: 404 },
  { name: "a user id over 64 bits", method: "GET", path: "/users/99999999999999999999", expect: 404 },
  {
    name: "rename a user",
    method: "PATCH", path: () => `/users/${need("userA")}`, ...json({ name: "Ada King" }), expect: 200,
    check: expectFields({ name: "Ada King", email: "ada@example.com" }),
  },
  { name: "a patch with no field", method: "PATCH", path: () => `/users/${need("userA")}`, ...json({}), expect: 422 },
  { name: "a patch with a bad email", method: "PATCH", path: () => `/users/${need("userA")}`, ...json({ email: "nope" }), expect: 422, check: expectErrorField("email") },
  { name: "a patch to another user's email", method: "PATCH", path: () => `/users/${need("userA")}`, body: () => json({ email: need("userBEmail") }), expect: 409 },
  { name: "a patch to another user's email in capitals", method: "PATCH", path: () => `/users/${need("userA")}`, body: () => json({ email: need("userBEmail").toUpperCase() }), expect: 409 },
  { name: "a patch with a space in the email", method: "PATCH", path: () => `/users/${need("userA")}`, ...json({ email: "ada @example.com" }), expect: 422, check: expectErrorField("email") },
  { name: "a patch of an unknown user", method: "PATCH", path: `/users/${NO_ID}`, ...json({ name: "X" }), expect: 404 },
  { name: "a text/plain patch", method: "PATCH", path: () => `/users/${need("userA")}`, ...raw('{"name":"X"}', "text/plain"), expect: 415 },

  // orders
  {
    name: "place an order",
    method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "Widget", quantity: 3, price_cents: 1999 }), expect: 201,
    check: (res) => [...expectFields({ item: "Widget", quantity: 3, price_cents: 1999, total_cents: 5997, user_id: ctx.userA })(res), ...expectLocation("/orders/")(res)],
    save: (res) => {
      ctx.order1 = res.json?.id;
      ctx.order1Json = res.json;
    },
  },
  {
    name: "place a free order",
    method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "Sample", quantity: 10000, price_cents: 0 }), expect: 201,
    check: expectFields({ total_cents: 0 }),
    save: (res) => (ctx.order2 = res.json?.id),
  },
  { name: "quantity 0", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "W", quantity: 0, price_cents: 1 }), expect: 422, check: expectErrorField("quantity") },
  { name: "quantity 10001", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "W", quantity: 10001, price_cents: 1 }), expect: 422, check: expectErrorField("quantity") },
  { name: "quantity 2.5", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "W", quantity: 2.5, price_cents: 1 }), expect: 422, check: expectErrorField("quantity") },
  { name: "a negative price", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "W", quantity: 1, price_cents: -1 }), expect: 422, check: expectErrorField("price_cents") },
  { name: "a price as a string", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "W", quantity: 1, price_cents: "1" }), expect: 422, check: expectErrorField("price_cents") },
  { name: "an empty item", method: "POST", path: () => `/users/${need("userA")}/orders`, ...json({ item: "", quantity: 1, price_cents: 1 }), expect: 422, check: expectErrorField("item") },
  { name: "an order of an unknown user", method: "POST", path: `/users/${NO_ID}/orders`, ...json({ item: "W", quantity: 1, price_cents: 1 }), expect: 404 },
  { name: "a text/plain order", method: "POST", path: () => `/users/${need("userA")}/orders`, ...raw('{"item":"W","quantity":1,"price_cents":1}', "text/plain"), expect: 415 },
  { name: "a malformed order", method: "POST", path: () => `/users/${need("userA")}/orders`, ...raw("{item: W}", "application/json"), expect: 400 },
  {
    name: "read an order",
    method: "GET", path: () => `/orders/${need("order1")}`, expect: 200,
    check: (res) => (eq(res.json, ctx.order1Json) ? [] : ["differs from the created order"]),
  },
  { name: "an unknown order", method: "GET", path: `/orders/${NO_ID}`, expect: 404 },
  {
    name: "a user's orders",
    method: "GET", path: () => `/users/${need("userA")}/orders`, expect: 200,
    check: (res) => (eq((res.json?.items ?? []).map((o) => o.id), [ctx.order1, ctx.order2]) && res.json.next_after === null ? [] : ["not the two orders, ascending, with next_after null"]),
  },
  {
    name: "a user's orders, one a page",
    method: "GET", path: () => `/users/${need("userA")}/orders?limit=1&after=${need("order1")}`, expect: 200,
    check: (res) => (eq((res.json?.items ?? []).map((o) => o.id), [ctx.order2]) && res.json.next_after === ctx.order2 ? [] : ["not the second order with next_after = its id"]),
  },
  { name: "the orders of an unknown user", method: "GET", path: `/users/${NO_ID}/orders`, expect: 404 },
  { name: "orders with limit=500", method: "GET", path: () => `/users/${need("userA")}/orders?limit=500`, expect: 400, check: expectErrorField("limit") },
  {
    name: "a user with their orders",
    method: "GET", path: () => `/users/${need("userA")}`, expect: 200,
    check: (res) => (eq((res.json?.orders ?? []).map((o) => o.id), [ctx.order1, ctx.order2]) ? [] : ["orders are not the two created"]),
  },

  // accounts
  {
    name: "open an account",
    method: "POST", path: "/accounts", body: () => json({ user_id: need("userA"), balance_cents: 10000 }), expect: 201,
    check: (res) => [...expectFields({ user_id: ctx.userA, balance_cents: 10000 })(res), ...expectLocation("/accounts/")(res)],
    save: (res) => (ctx.acc1 = res.json?.id),
  },
  {
    name: "open an empty account",
    method: "POST", path: "/accounts", body: () => json({ user_id: need("userB"), balance_cents: 0 }), expect: 201,
    save: (res) => (ctx.acc2 = res.json?.id),
  },
  { name: "a negative opening deposit", method: "POST", path: "/accounts", body: () => json({ user_id: need("userA"), balance_cents: -1 }), expect: 422, check: expectErrorField("balance_cents") },
  { name: "a user_id as a string", method: "POST", path: "/accounts", ...json({ user_id: "1", balance_cents: 1 }), expect: 422, check: expectErrorField("user_id") },
  { name: "a missing user_id", method: "POST", path: "/accounts", ...json({ balance_cents: 1 }), expect: 422, check: expectErrorField("user_id") },
  { name: "an account of an unknown user", method: "POST", path: "/accounts", ...json({ user_id: Number(NO_ID), balance_cents: 1 }), expect: 404 },
  { name: "a text/plain account", method: "POST", path: "/accounts", ...raw('{"user_id":1,"balance_cents":1}', "text/plain"), expect: 415 },
  { name: "read an account", method: "GET", path: () => `/accounts/${need("acc1")}`, expect: 200, check: expectFields({ balance_cents: 10000 }) },
  {
    name: "a user's accounts",
    method: "GET", path: () => `/users/${need("userA")}/accounts`, expect: 200,
    check: (res) => (eq((res.json?.items ?? []).map((a) => a.id), [ctx.acc1]) && res.json.next_after === null ? [] : ["not the one account with next_after null"]),
  },
  {
    name: "a user's accounts, one a page",
    method: "GET", path: () => `/users/${need("userA")}/accounts?limit=1`, expect: 200,
    check: (res) => (eq((res.json?.items ?? []).map((a) => a.id), [ctx.acc1]) && res.json.next_after === ctx.acc1 ? [] : ["not the account with next_after = its id"]),
  },
  {
    name: "a user's accounts after the last",
    method: "GET", path: () => `/users/${need("userA")}/accounts?after=${need("acc1")}`, expect: 200,
    check: expectJson({ items: [], next_after: null }),
  },
  { name: "the accounts of an unknown user", method: "GET", path: `/users/${NO_ID}/accounts`, expect: 404 },
  { name: "accounts with limit=500", method: "GET", path: () => `/users/${need("userA")}/accounts?limit=500`, expect: 400, check: expectErrorField("limit") },
  { name: "accounts with after=abc", method: "GET", path: () => `/users/${need("userA")}/accounts?after=abc`, expect: 400, check: expectErrorField("after") },
  {
    name: "a user with their accounts",
    method: "GET", path: () => `/users/${need("userA")}`, expect: 200,
    check: (res) => (eq((res.json?.accounts ?? []).map((a) => a.id), [ctx.acc1]) ? [] : ["accounts are not the one opened"]),
  },
  { name: "an unknown account", method: "GET", path: `/accounts/${NO_ID}`, expect: 404 },

  // transfers
  {
    name: "move money",
    method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 2500 }), expect: 201,
    check: (res) => [...expectFields({ from_account_id: ctx.acc1, to_account_id: ctx.acc2, amount_cents: 2500 })(res), ...expectLocation("/transfers/")(res)],
    save: (res) => {
      ctx.t1 = res.json?.id;
      ctx.t1Json = res.json;
    },
  },
  { name: "the source after the transfer", method: "GET", path: () => `/accounts/${need("acc1")}`, expect: 200, check: expectFields({ balance_cents: 7500 }) },
  { name: "the target after the transfer", method: "GET", path: () => `/accounts/${need("acc2")}`, expect: 200, check: expectFields({ balance_cents: 2500 }) },
  { name: "insufficient funds", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc2"), to_account_id: need("acc1"), amount_cents: 2501 }), expect: 422 },
  { name: "a transfer to the same account", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: need("acc1"), amount_cents: 1 }), expect: 422 },
  { name: "an amount of 0", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 0 }), expect: 422, check: expectErrorField("amount_cents") },
  { name: "a negative amount", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: -5 }), expect: 422, check: expectErrorField("amount_cents") },
  { name: "an amount as a string", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: "5" }), expect: 422, check: expectErrorField("amount_cents") },
  { name: "a transfer to an unknown account", method: "POST", path: "/transfers", body: () => json({ from_account_id: need("acc1"), to_account_id: Number(NO_ID), amount_cents: 1 }), expect: 404 },
  { name: "a transfer from an unknown account", method: "POST", path: "/transfers", body: () => json({ from_account_id: Number(NO_ID), to_account_id: need("acc1"), amount_cents: 1 }), expect: 404 },
  { name: "a text/plain transfer", method: "POST", path: "/transfers", ...raw('{"from_account_id":1,"to_account_id":2,"amount_cents":1}', "text/plain"), expect: 415 },
  {
    name: "a transfer with an Idempotency-Key",
    method: "POST", path: "/transfers",
    body: () => ({ body: JSON.stringify({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 100 }), headers: { "Content-Type": "application/json", "Idempotency-Key": "conformance-key-1" } }),
    expect: 201,
    save: (res) => (ctx.idemBody = res.body.toString()),
  },
  {
    name: "the same request again gets the first answer",
    method: "POST", path: "/transfers",
    body: () => ({ body: JSON.stringify({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 100 }), headers: { "Content-Type": "application/json", "Idempotency-Key": "conformance-key-1" } }),
    expect: 201,
    check: (res) => (res.body.toString() === need("idemBody") ? [] : [`body ${res.body} differs from the first ${ctx.idemBody}`]),
  },
  { name: "money moved once", method: "GET", path: () => `/accounts/${need("acc1")}`, expect: 200, check: expectFields({ balance_cents: 7400 }) },
  {
    name: "the same key with another body",
    method: "POST", path: "/transfers",
    body: () => ({ body: JSON.stringify({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 101 }), headers: { "Content-Type": "application/json", "Idempotency-Key": "conformance-key-1" } }),
    expect: 409,
  },
  {
    name: "an Idempotency-Key of 256 characters",
    method: "POST", path: "/transfers",
    body: () => ({ body: JSON.stringify({ from_account_id: need("acc1"), to_account_id: need("acc2"), amount_cents: 1 }), headers: { "Content-Type": "application/json", "Idempotency-Key": "k".repeat(256) } }),
    expect: 400,
  },
  {
    name: "read a transfer",
    method: "GET", path: () => `/transfers/${need("t1")}`, expect: 200,
    check: (res) => (eq(res.json, ctx.t1Json) ? [] : ["differs from the created transfer"]),
  },
  { name: "an unknown transfer", method: "GET", path: `/transfers/${NO_ID}`, expect: 404 },

  // export
  {
    name: "export every order",
    method: "GET", path: "/export/orders", expect: 200,
    check: (res) => (eq((res.lines ?? []).map((o) => o?.id), [ctx.order1, ctx.order2]) ? [] : [`lines ${JSON.stringify((res.lines ?? []).map((o) => o?.id))} are not the two orders ascending`]),
  },
  {
    name: "export after the first order",
    method: "GET", path: () => `/export/orders?after=${need("order1")}`, expect: 200,
    check: (res) => (eq((res.lines ?? []).map((o) => o?.id), [ctx.order2]) ? [] : ["not the second order alone"]),
  },
  { name: "export after=abc", method: "GET", path: "/export/orders?after=abc", expect: 400, check: expectErrorField("after") },

  // deleting
  { name: "delete a user who holds money", method: "DELETE", path: () => `/users/${need("userA")}`, expect: 409 },
  { name: "delete a user", method: "DELETE", path: () => `/users/${need("userC")}`, expect: 204 },
  { name: "the deleted user is gone", method: "GET", path: () => `/users/${need("userC")}`, expect: 404 },
  { name: "delete an unknown user", method: "DELETE", path: `/users/${NO_ID}`, expect: 404 },
  {
    name: "create a user to delete with an order",
    method: "POST", path: "/users", ...json({ name: "Dora", email: "dora@example.com" }), expect: 201,
    save: (res) => (ctx.userD = res.json?.id),
  },
  {
    name: "an order of that user",
    method: "POST", path: () => `/users/${need("userD")}/orders`, ...json({ item: "Gone", quantity: 1, price_cents: 5 }), expect: 201,
    save: (res) => (ctx.orderD = res.json?.id),
  },
  { name: "delete the user with the order", method: "DELETE", path: () => `/users/${need("userD")}`, expect: 204 },
  { name: "the user's order went with them", method: "GET", path: () => `/orders/${need("orderD")}`, expect: 404 },

  // webhooks (nothing listens at the URL, and it is private: deliveries and pings fail, which is all the same here)
  {
    name: "register a webhook",
    method: "POST", path: "/webhooks", ...json({ url: "http://127.0.0.1:9/hook", events: ["user.created", "order.created"] }), expect: 201,
    check: (res) => [...expectLocation("/webhooks/")(res), ...(String(res.json?.secret ?? "").startsWith("whsec_") ? [] : ["no whsec_ secret"])],
    save: (res) => (ctx.webhook = res.json?.id),
  },
  { name: "a webhook with an unknown event type", method: "POST", path: "/webhooks", ...json({ url: "https://example.com/", events: ["user.deleted"] }), expect: 422, check: expectErrorField("events") },
  { name: "a webhook with a relative url", method: "POST", path: "/webhooks", ...json({ url: "/hook", events: ["*"] }), expect: 422, check: expectErrorField("url") },
  { name: "list webhooks", method: "GET", path: "/webhooks?limit=5", expect: 200 },
  {
    name: "read a webhook back, without its secret",
    method: "GET", path: () => `/webhooks/${need("webhook")}`, expect: 200,
    check: (res) => (res.json && !("secret" in res.json) ? [] : ["the secret is shown"]),
  },
  { name: "an unknown webhook", method: "GET", path: `/webhooks/${NO_ID}`, expect: 404 },
  { name: "a webhook's deliveries", method: "GET", path: () => `/webhooks/${need("webhook")}/deliveries`, expect: 200 },
  { name: "deliveries of an unknown webhook", method: "GET", path: `/webhooks/${NO_ID}/deliveries`, expect: 404 },
  {
    name: "ping a webhook whose address is refused",
    method: "POST", path: () => `/webhooks/${need("webhook")}/ping`, expect: 200,
    check: (res) => (res.json?.status === null && typeof res.json?.error === "string" ? [] : [`ping said ${JSON.stringify(res.json)}`]),
  },
  { name: "delete a webhook", method: "DELETE", path: () => `/webhooks/${need("webhook")}`, expect: 204 },
  { name: "delete an unknown webhook", method: "DELETE", path: `/webhooks/${NO_ID}`, expect: 404 },

  // deadline: 500 reads and an update in 1 ms; a machine fast enough gets 200
  { name: "a deadline of 1 ms", method: "GET", path: "/updates?queries=500", headers: { "Request-Timeout": "1" }, expect: [504, 200] },
];

// With a database that does not answer.
const DOWN_CASES = [
  { name: "liveness without a database", method: "GET", path: "/healthz", expect: 200 },
  { name: "readiness without a database", method: "GET", path: "/readyz", expect: 503 },
  { name: "db without a database", method: "GET", path: "/db", expect: 503 },
  { name: "a user without a database", method: "GET", path: "/users/1", expect: 503 },
  { name: "create a user without a database", method: "POST", path: "/users", ...json({ name: "X", email: "x@example.com" }), expect: 503 },
];

// With authentication and a rate limit. The token is a user's (sub 2, no
// admin scope), signed here with the server's HS256 key (node:crypto; the
// service verifies it with cjose).
function userToken() {
  const key = process.env.H2PG_CONFORMANCE_HS256_KEY;
  if (!key) throw new Error("H2PG_CONFORMANCE_HS256_KEY is not set");
  const b64u = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const signed = `${b64u({ alg: "HS256", typ: "JWT", kid: "conformance" })}.${b64u({ sub: "2", exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${signed}.${createHmac("sha256", Buffer.from(key, "base64url")).update(signed).digest("base64url")}`;
}
const asUser = () => ({ Authorization: `Bearer ${userToken()}` });
const GUARDED_CASES = [
  { name: "a user's own record without a token", method: "GET", path: "/users/2", expect: 401 },
  { name: "the event stream with a token that is not one", method: "GET", path: "/events", headers: { Authorization: "Bearer not.a.token" }, expect: 401 },
  { name: "a transfer without a token", method: "POST", path: "/transfers", ...json({ from_account_id: 1, to_account_id: 2, amount_cents: 1 }), expect: 401 },
  { name: "an administrators' operation by a user", method: "POST", path: "/users", body: () => ({ body: JSON.stringify({ name: "X", email: "x@guarded.test" }), headers: { "Content-Type": "application/json", ...asUser() } }), expect: 403 },
  { name: "the list of webhooks by a user", method: "GET", path: "/webhooks", body: () => ({ headers: asUser() }), expect: 403 },
  { name: "an account for another user", method: "POST", path: "/accounts", body: () => ({ body: JSON.stringify({ user_id: 3, balance_cents: 1 }), headers: { "Content-Type": "application/json", ...asUser() } }), expect: 403 },
  {
    name: "over the rate limit", method: "GET", path: "/openapi.json", expect: 429,
    // the address's bucket (6) emptied first, far faster than its 1/s refill
    prime: async (baseUrl) => { for (let i = 0; i < 10; i++) await send(baseUrl, { method: "GET", path: "/json" }); },
  },
  { name: "a user over the rate limit", method: "GET", path: "/users/2", body: () => ({ headers: asUser() }), expect: 429,
    prime: async (baseUrl) => { for (let i = 0; i < 10; i++) await send(baseUrl, { method: "GET", path: "/users/2", headers: asUser() }); } },
];

async function runCase(baseUrl, c, n) {
  const expect = [].concat(c.expect);
  let path, extra;
  try {
    path = typeof c.path === "function" ? c.path() : c.path;
    extra = typeof c.body === "function" ? c.body() : { body: c.body, headers: c.headers };
  } catch (e) {
    if (e instanceof Skip) return { status: "skip", reasons: [e.message] };
    throw e;
  }
  const requestId = c.requestId === null ? undefined : `conformance-${n}`;
  const headers = { ...(c.headers ?? {}), ...(extra.headers ?? {}) };
  if (requestId) headers["X-Request-Id"] = requestId;
  const req = { method: c.method, path, headers, body: extra.body, expectContinue: c.expectContinue };
  let res;
  try {
    if (c.prime) await c.prime(baseUrl);
    res = await send(baseUrl, req);
  } catch (e) {
    return { status: "fail", reasons: [`request failed: ${e.message}`], label: `${c.method} ${path}` };
  }
  if (/json/i.test(res.headers["content-type"] ?? "")) {
    try {
      res.json = JSON.parse(res.body.toString("utf8"));
    } catch {
      res.json = undefined;
    }
  }
  const reasons = [];
  if (!expect.includes(res.status)) {
    reasons.push(`status ${res.status}, expected ${expect.join(" or ")}`);
    const body = res.body.toString().slice(0, 300);
    if (body) reasons.push(`body: ${body}`);
  }
  reasons.push(...conformance(req, res, requestId));
  if (expect.includes(res.status) && c.check) {
    try {
      reasons.push(...c.check(res));
    } catch (e) {
      reasons.push(e instanceof Skip ? e.message : `check failed: ${e.message}`);
    }
  }
  // what the case made exists whatever else is wrong: later cases may use it
  if (expect.includes(res.status) && c.save) c.save(res);
  return { status: reasons.length ? "fail" : "ok", reasons, label: `${c.method} ${path.length > 80 ? path.slice(0, 77) + "..." : path} -> ${res.status}` };
}

async function runAll(baseUrl, cases, title, totals) {
  console.log(`${title} (${baseUrl})`);
  for (const c of cases) {
    const n = ++totals.n;
    const r = await runCase(baseUrl, c, n);
    totals[r.status]++;
    const word = { ok: "ok  ", fail: "FAIL", skip: "SKIP" }[r.status];
    console.log(`${word} ${String(n).padStart(3)} ${c.name}${r.label ? `: ${r.label}` : ""}`);
    for (const reason of r.reasons) console.log(`           - ${reason}`);
  }
}

const totals = { n: 0, ok: 0, fail: 0, skip: 0 };
await runAll(BASE, CASES, "conformance of a running h2pg to openapi/openapi.json", totals);
if (DOWN) await runAll(DOWN, DOWN_CASES, "with its database unreachable", totals);
else console.log("(no DOWN_URL given: the database-unreachable cases did not run)");
if (GUARDED) await runAll(GUARDED, GUARDED_CASES, "with bearer authentication and a rate limit", totals);
else console.log("(no GUARDED_URL given: the 401, 403 and 429 cases did not run)");
console.log(`conformance: ${totals.ok} passed, ${totals.fail} failed, ${totals.skip} skipped`);
process.exit(totals.fail || totals.skip ? 1 : 0);
