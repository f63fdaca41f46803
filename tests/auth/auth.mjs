// node auth.mjs PATH/TO/h2pg DATABASE_URL TMPDIR
//
// Bearer tokens, rate limits and CORS, against the real binary. Tokens are
// minted here by the `jose` package; the service verifies them with cjose.
// Each check prints one line; the first failure stops the run (exit 1).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, generateSecret,
} from 'jose';

const [bin, dbUrl, tmp] = process.argv.slice(2);
if (!bin || !dbUrl || !tmp) {
  console.error('usage: node auth.mjs PATH/TO/h2pg DATABASE_URL TMPDIR');
  process.exit(2);
}

const ISS = 'https://issuer.test';
const AUD = 'h2pg-api';
const ORIGIN = 'https://app.test';
const children = [];
let checks = 0;

function ok(what) {
  checks++;
  console.log(`ok ${checks} - ${what}`);
}

function check(cond, what, detail) {
  if (!cond) throw new Error(`${what}${detail !== undefined ? `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}` : ''}`);
  ok(what);
}

// ---- HTTP: a fresh connection per request (no pooling surprises) ----

function request(base, method, p, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (data) {
      h['content-type'] ??= 'application/json';
      h['content-length'] = data.length;
    }
    const req = http.request(`${base}${p}`, { method, headers: h, agent: false, timeout: 30000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${p}: no answer in 30 s`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

const bearer = (t) => ({ authorization: `Bearer ${t}` });

// ---- servers ----

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServer(name, env) {
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await freePort();
    const logPath = path.join(tmp, `${name}.log`);
    const fd = fs.openSync(logPath, 'a');
    const child = spawn(bin, ['serve'], {
      env: {
        ...process.env, DATABASE_URL: dbUrl, HOST: '127.0.0.1', PORT: String(port), THREADS: '2',
        LOG_FORMAT: 'text', LOG_LEVEL: 'info', POOL_MIN: '0', POOL_MAX: '4', ...env,
      },
      stdio: ['ignore', fd, fd],
    });
    fs.closeSync(fd);
    let exited = false;
    child.on('exit', () => { exited = true; });
    children.push(child);
    const base = `http://127.0.0.1:${port}`;
    const until = Date.now() + 60000;
    while (!exited && Date.now() < until) {
      try {
        const r = await request(base, 'GET', '/healthz');
        if (r.status === 200) return { base, child, logPath, name };
      } catch { /* not yet */ }
      await sleep(100);
    }
    if (!exited) throw new Error(`${name} did not answer /healthz within 60 s`);
    const log = fs.readFileSync(logPath, 'utf8');
    if (!/address already in use|bind/i.test(log)) throw new Error(`${name} exited at start:\n${log.slice(-2000)}`);
  }
  throw new Error(`${name}: no free port`);
}

// Stops every server; each must exit 0 after SIGTERM (under the
// sanitizers, a leak or an error found on the way out makes it non-zero).
async function stopAll() {
  const codes = await Promise.all(children.map((c) => new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve([c.exitCode, c.signalCode]);
    c.on('exit', (code, signal) => resolve([code, signal]));
    c.kill('SIGTERM');
  })));
  return codes.every(([code]) => code === 0);
}

// ---- keys and tokens ----

async function rsaKey(kid) {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { kid, alg: 'RS256', privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig' }, pem: await exportSPKI(publicKey) };
}

async function ecKey(kid) {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, alg: 'ES256', privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig' } };
}

async function hmacKey(kid) {
  const secret = await generateSecret('HS256', { extractable: true });
  return { kid, alg: 'HS256', privateKey: secret, jwk: { ...(await exportJWK(secret)), kid } };
}

function writeJwks(file, keys) {
  // written beside, then renamed: the service never reads half a file
  fs.writeFileSync(`${file}.tmp`, JSON.stringify({ keys: keys.map((k) => k.jwk) }));
  fs.renameSync(`${file}.tmp`, file);
}

const now = () => Math.floor(Date.now() / 1000);

async function token(key, { sub = '1', scope, iss = ISS, aud = AUD, exp = now() + 300, nbf, iat = now(), kid = key.kid, alg = key.alg, extra = {} } = {}) {
  const claims = { ...extra };
  if (scope !== undefined) claims.scope = scope;
  const jwt = new SignJWT(claims).setProtectedHeader(kid === null ? { alg } : { alg, kid });
  if (sub !== null) jwt.setSubject(sub);
  if (iss !== null) jwt.setIssuer(iss);
  if (aud !== null) jwt.setAudience(aud);
  if (exp !== null) jwt.setExpirationTime(exp);
  if (nbf !== undefined) jwt.setNotBefore(nbf);
  if (iat !== null) jwt.setIssuedAt(iat);
  return jwt.sign(key.privateKey);
}

const b64u = (s) => Buffer.from(s).toString('base64url');

// ---- the checks ----

async function expect401(s, t, what, { sent = true, method = 'GET', p = '/users', body } = {}) {
  const r = await request(s.base, method, p, { headers: t === undefined ? {} : bearer(t), body });
  const want = sent ? 'Bearer realm="h2pg", error="invalid_token"' : 'Bearer realm="h2pg"';
  check(r.status === 401 && r.headers['www-authenticate'] === want &&
        /^application\/problem\+json/.test(r.headers['content-type'] ?? '') && r.json?.status === 401,
  `401 ${what}`, { status: r.status, wwwAuthenticate: r.headers['www-authenticate'], body: r.text.slice(0, 200) });
  check(!/expired|signature|kid|issuer|audience|alg/i.test(r.json?.detail ?? ''), `401 ${what}: the reason is not in the response`, r.json?.detail);
}

async function userCount(s, admin) {
  let n = 0;
  let after = null;
  for (;;) {
    const r = await request(s.base, 'GET', `/users?limit=100${after === null ? '' : `&after=${after}`}`, { headers: bearer(admin) });
    if (r.status !== 200) throw new Error(`GET /users: ${r.status} ${r.text}`);
    n += r.json.items.length;
    if (r.json.next_after === null) return n;
    after = r.json.next_after;
  }
}

async function mainServer(dir) {
  const rsa = await rsaKey('r1');
  const ec = await ecKey('e1');
  const oct = await hmacKey('h1');
  const jwks = path.join(dir, 'jwks.json');
  writeJwks(jwks, [rsa, ec, oct]);
  const s = await startServer('file', {
    AUTH_JWKS_FILE: jwks, AUTH_ALGORITHMS: 'RS256,ES256,HS256', AUTH_ISSUER: ISS, AUTH_AUDIENCE: AUD,
    CORS_ALLOW_ORIGINS: `${ORIGIN}, https://other.test`,
  });
  const admin = await token(rsa, { sub: '1', scope: 'read admin' });
  const used = [admin];

  // open routes stay open
  for (const p of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/json', '/plaintext', '/db', '/queries?queries=2', '/updates?queries=1', '/fortunes']) {
    const r = await request(s.base, 'GET', p);
    check(r.status === 200 && r.headers['x-content-type-options'] === 'nosniff' && r.headers['cache-control'] === undefined,
      `${p} is open without a token (nosniff, no no-store)`, r.status);
  }

  // no token
  await expect401(s, undefined, 'without a token', { sent: false });
  await expect401(s, undefined, 'without a token on GET /export/orders', { sent: false, p: '/export/orders' });
  await expect401(s, undefined, 'without a token on GET /events', { sent: false, p: '/events' });
  await expect401(s, undefined, 'without a token on POST /transfers', { sent: false, method: 'POST', p: '/transfers', body: { from_account_id: 1, to_account_id: 2, amount_cents: 1 } });
  {
    const r = await request(s.base, 'GET', '/users', { headers: { authorization: 'Basic YTpi' } });
    check(r.status === 401 && r.headers['www-authenticate'] === 'Bearer realm="h2pg", error="invalid_token"', '401 for Basic credentials', r.status);
  }

  // accepted: RS256, ES256, HS256 (listed, with an oct key)
  const created = await request(s.base, 'POST', '/users', { headers: bearer(admin), body: { name: 'Ada', email: `ada-${Date.now()}@example.com` } });
  check(created.status === 201 && created.headers['cache-control'] === 'no-store' && created.headers['x-content-type-options'] === 'nosniff',
    'RS256 admin token: POST /users 201, Cache-Control: no-store, nosniff', { status: created.status, h: created.headers });
  const uid = created.json.id;
  for (const key of [rsa, ec, oct]) {
    const t = await token(key, { sub: String(uid) });
    used.push(t);
    const r = await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t) });
    check(r.status === 200 && r.headers['cache-control'] === 'no-store', `${key.alg} token accepted`, { status: r.status, body: r.text });
  }
  {
    const t = await token(rsa, { kid: null, sub: String(uid) });
    const r = await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t) });
    check(r.status === 401, 'a token without kid is refused when the set has more than one key', r.status);
  }
  {
    const t = await token(rsa, { aud: ['other', AUD], sub: String(uid) });
    const r = await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t) });
    check(r.status === 200, 'aud as an array that contains the audience is accepted', r.status);
  }
  {
    const t = await token(rsa, { exp: now() - 10, sub: String(uid) });
    const r = await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t) });
    check(r.status === 200, 'exp 10 s ago is within the 30 s leeway', r.status);
  }

  // refused, and nothing changed
  const before = await userCount(s, admin);
  const good = await token(rsa, { sub: String(uid) });
  const [h, p, sig] = good.split('.');
  const otherPayload = b64u(JSON.stringify({ sub: String(uid), scope: 'admin', iss: ISS, aud: AUD, exp: now() + 300, iat: now() }));
  const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
  const big = await token(rsa, { sub: String(uid), scope: 'admin', extra: { pad: 'x'.repeat(9000) } });
  const bad = {
    'an expired token': await token(rsa, { exp: now() - 120, scope: 'admin' }),
    'a token without exp': await token(rsa, { exp: null, scope: 'admin' }),
    'nbf in the future': await token(rsa, { nbf: now() + 300, scope: 'admin' }),
    'iat in the future': await token(rsa, { iat: now() + 300, scope: 'admin' }),
    'a wrong issuer': await token(rsa, { iss: 'https://evil.test', scope: 'admin' }),
    'a wrong audience': await token(rsa, { aud: 'someone-else', scope: 'admin' }),
    'an unknown kid': await token(await rsaKey('nobody'), { scope: 'admin' }),
    'a tampered payload': `${h}.${otherPayload}.${sig}`,
    'a tampered signature': `${h}.${p}.${flipped}`,
    'alg none': new UnsecuredJWT({ sub: '1', scope: 'admin', iss: ISS, aud: AUD, exp: now() + 300 }).encode(),
    'alg none with the kid of a key': `${b64u(JSON.stringify({ alg: 'none', kid: 'r1' }))}.${otherPayload}.`,
    'HS256 signed with the RSA public key PEM': await token({ privateKey: new TextEncoder().encode(rsa.pem), kid: 'r1', alg: 'HS256' }, { scope: 'admin' }),
    'HS256 signed with the RSA public JWK': await token({ privateKey: new TextEncoder().encode(JSON.stringify(rsa.jwk)), kid: 'r1', alg: 'HS256' }, { scope: 'admin' }),
    'an RS256 token naming the EC key': await token({ ...rsa, kid: 'e1' }, { scope: 'admin' }),
    'a sub that is not a user id': await token(rsa, { sub: 'alice', scope: 'admin' }),
    'an oversized token (over 8 KiB, well signed)': big,
    'garbage': 'not.a.token',
  };
  check(big.length > 8192, 'the oversized token is over 8 KiB', big.length);
  let n = 0;
  for (const [what, t] of Object.entries(bad)) {
    used.push(t);
    await expect401(s, t, what, { method: 'POST', p: '/users', body: { name: 'Mallory', email: `mallory-${n++}-${Date.now()}@example.com` } });
  }
  check(await userCount(s, admin) === before, 'none of the refused requests created anything', before);

  // CORS
  {
    const r = await request(s.base, 'OPTIONS', '/users', { headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    check(r.status === 204 && r.headers['access-control-allow-origin'] === ORIGIN &&
          /POST/.test(r.headers['access-control-allow-methods'] ?? '') &&
          /Authorization/.test(r.headers['access-control-allow-headers'] ?? '') &&
          /Idempotency-Key/.test(r.headers['access-control-allow-headers'] ?? '') &&
          /Last-Event-ID/.test(r.headers['access-control-allow-headers'] ?? '') &&
          Number(r.headers['access-control-max-age']) > 0 && /Origin/.test(r.headers.vary ?? ''),
    'CORS preflight from an allowed origin: 204 with the Access-Control-Allow-* headers', { status: r.status, h: r.headers });
    const e = await request(s.base, 'OPTIONS', '/users', { headers: { origin: 'https://evil.test', 'access-control-request-method': 'POST' } });
    check(e.status === 405 && e.headers['access-control-allow-origin'] === undefined && e.headers.allow !== undefined,
      'CORS preflight from another origin: 405 with Allow, no Access-Control-Allow-Origin', { status: e.status, h: e.headers });
    const plain = await request(s.base, 'OPTIONS', '/users');
    check(plain.status === 405 && plain.headers.allow !== undefined, 'OPTIONS without CORS is still 405 with Allow', plain.status);
    const g = await request(s.base, 'GET', `/users/${uid}`, { headers: { ...bearer(admin), origin: ORIGIN } });
    check(g.status === 200 && g.headers['access-control-allow-origin'] === ORIGIN &&
          /RateLimit/.test(g.headers['access-control-expose-headers'] ?? '') && /Location/.test(g.headers['access-control-expose-headers'] ?? ''),
    'a response to an allowed origin carries Access-Control-Allow-Origin and -Expose-Headers', g.headers);
    const o = await request(s.base, 'GET', `/users/${uid}`, { headers: { ...bearer(admin), origin: 'https://evil.test' } });
    check(o.status === 200 && o.headers['access-control-allow-origin'] === undefined, 'nothing for another origin', o.headers);
    const u = await request(s.base, 'GET', '/users', { headers: { origin: ORIGIN } });
    check(u.status === 401 && u.headers['access-control-allow-origin'] === ORIGIN, 'a 401 to an allowed origin is readable by the page', u.headers);
  }

  await authorization(s, rsa, admin);
  await eventsByOwner(s, rsa, admin);

  // rotation through the file: a new key works without a restart, a removed one stops
  const rsa2 = await rsaKey('r2');
  const t2 = await token(rsa2, { sub: String(uid) });
  used.push(t2);
  check((await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t2) })).status === 401, 'a key not yet in the file is refused');
  writeJwks(jwks, [rsa2, ec, oct]);
  let accepted = false;
  for (const until = Date.now() + 15000; !accepted && Date.now() < until;) {
    // both workers must have it: several fresh connections
    const rs = await Promise.all([1, 2, 3, 4].map(() => request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t2) })));
    accepted = rs.every((r) => r.status === 200);
    if (!accepted) await sleep(200);
  }
  check(accepted, 'a key added to AUTH_JWKS_FILE is accepted without a restart');
  const old = await token(rsa, { sub: String(uid) });
  const rs = await Promise.all([1, 2, 3, 4].map(() => request(s.base, 'GET', `/users/${uid}`, { headers: bearer(old) })));
  check(rs.every((r) => r.status === 401), 'a key removed from the file is refused', rs.map((r) => r.status));

  // the token is in neither the access log nor the metrics
  const metrics = (await request(s.base, 'GET', '/metrics')).text;
  await sleep(300);
  const log = fs.readFileSync(s.logPath, 'utf8');
  const leaked = used.filter((t) => {
    const sigPart = t.split('.')[2] || t.split('.')[1];
    return sigPart && sigPart.length > 8 && (log.includes(sigPart) || metrics.includes(sigPart));
  });
  check(leaked.length === 0 && /GET \/users/.test(log), 'no token in the access log or /metrics', leaked.length);

  // 431 for a 100 KiB header section
  {
    const r = await rawHead(s.base, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100 * 1024)}\r\n\r\n`);
    check(/^HTTP\/1\.1 431/.test(r) && /x-content-type-options: nosniff/i.test(r), 'a 100 KiB header section gets 431 (nosniff)', r.slice(0, 200));
  }

  // HS256 is refused when AUTH_ALGORITHMS does not list it
  const d = await startServer('default-algs', { AUTH_JWKS_FILE: jwks, AUTH_ISSUER: ISS, AUTH_AUDIENCE: AUD });
  const hs = await token(oct, { sub: String(uid) });
  check((await request(d.base, 'GET', `/users/${uid}`, { headers: bearer(hs) })).status === 401, 'HS256 refused with the default AUTH_ALGORITHMS (RS256,ES256)');
  check((await request(d.base, 'GET', `/users/${uid}`, { headers: bearer(await token(ec, { sub: String(uid) })) })).status === 200, 'ES256 accepted with the default AUTH_ALGORITHMS');
  return { uid };
}

// The contract's authorization table, row by row, with two users (A, B), a
// third without accounts (C) and an administrator.
async function authorization(s, key, admin) {
  const as = async (t, method, p, body) => request(s.base, method, p, { headers: bearer(t), body });
  const mk = async (name) => {
    const r = await as(admin, 'POST', '/users', { name, email: `${name}-${Date.now()}-${Math.random()}@example.com` });
    if (r.status !== 201) throw new Error(`creating ${name}: ${r.status} ${r.text}`);
    return r.json.id;
  };
  const [A, B, C] = [await mk('a'), await mk('b'), await mk('c')];
  const [ta, tb, tc] = await Promise.all([A, B, C].map((id) => token(key, { sub: String(id) })));
  const expect = async (t, method, p, body, status, what) => {
    const r = await as(t, method, p, body);
    check(r.status === status, `authorization: ${what}: ${status}`, { status: r.status, body: r.text.slice(0, 200) });
    return r;
  };
  // administrators only
  await expect(ta, 'POST', '/users', { name: 'x', email: `x-${Date.now()}@example.com` }, 403, 'POST /users by a user');
  await expect(ta, 'GET', '/users', undefined, 403, 'GET /users by a user');
  await expect(ta, 'GET', '/export/orders', undefined, 403, 'GET /export/orders by a user');
  await expect(admin, 'GET', '/export/orders', undefined, 200, 'GET /export/orders by an administrator');
  await expect(ta, 'POST', '/webhooks', { url: 'https://example.com/hook', events: ['*'] }, 403, 'POST /webhooks by a user');
  await expect(ta, 'GET', '/webhooks', undefined, 403, 'GET /webhooks by a user');
  await expect(ta, 'GET', '/webhooks/1', undefined, 403, 'GET /webhooks/1 by a user');
  await expect(admin, 'GET', '/webhooks', undefined, 200, 'GET /webhooks by an administrator');
  // the user itself, or an administrator; another user's reads as unknown
  await expect(ta, 'GET', `/users/${A}`, undefined, 200, 'GET /users/{own id}');
  await expect(ta, 'GET', `/users/${B}`, undefined, 404, 'GET /users/{another user}');
  await expect(admin, 'GET', `/users/${B}`, undefined, 200, 'GET /users/{id} by an administrator');
  await expect(ta, 'PATCH', `/users/${A}`, { name: 'A' }, 200, 'PATCH /users/{own id}');
  await expect(ta, 'PATCH', `/users/${B}`, { name: 'pwned' }, 404, 'PATCH /users/{another user}');
  await expect(ta, 'DELETE', `/users/${B}`, undefined, 404, 'DELETE /users/{another user}');
  const b = await expect(admin, 'GET', `/users/${B}`, undefined, 200, 'and B is still there, unchanged');
  check(b.json.user.name === 'b', 'authorization: B\'s name unchanged', b.json.user);
  const oa = await expect(ta, 'POST', `/users/${A}/orders`, { item: 'tea', quantity: 1, price_cents: 100 }, 201, 'POST /users/{own id}/orders');
  await expect(ta, 'POST', `/users/${B}/orders`, { item: 'tea', quantity: 1, price_cents: 100 }, 404, 'POST /users/{another user}/orders');
  const ob = await expect(tb, 'POST', `/users/${B}/orders`, { item: 'jam', quantity: 1, price_cents: 300 }, 201, 'POST /users/{own id}/orders (B)');
  await expect(ta, 'GET', `/users/${A}/orders`, undefined, 200, 'GET /users/{own id}/orders');
  await expect(ta, 'GET', `/users/${B}/orders`, undefined, 404, 'GET /users/{another user}/orders');
  await expect(ta, 'GET', `/users/${B}/accounts`, undefined, 404, 'GET /users/{another user}/accounts');
  await expect(ta, 'GET', `/users/${A}/accounts`, undefined, 200, 'GET /users/{own id}/accounts');
  // owned rows
  await expect(ta, 'GET', `/orders/${oa.json.id}`, undefined, 200, 'GET /orders/{own order}');
  await expect(ta, 'GET', `/orders/${ob.json.id}`, undefined, 404, 'GET /orders/{another user\'s order}');
  await expect(admin, 'GET', `/orders/${ob.json.id}`, undefined, 200, 'GET /orders/{id} by an administrator');
  const accA = (await expect(ta, 'POST', '/accounts', { user_id: A, balance_cents: 1000 }, 201, 'POST /accounts for itself')).json.id;
  await expect(ta, 'POST', '/accounts', { user_id: B, balance_cents: 1000 }, 403, 'POST /accounts for another user');
  const accB = (await expect(admin, 'POST', '/accounts', { user_id: B, balance_cents: 500 }, 201, 'POST /accounts by an administrator for B')).json.id;
  await expect(ta, 'GET', `/accounts/${accA}`, undefined, 200, 'GET /accounts/{own account}');
  await expect(ta, 'GET', `/accounts/${accB}`, undefined, 404, 'GET /accounts/{another user\'s account}');
  await expect(tb, 'GET', `/accounts/${accB}`, undefined, 200, 'GET /accounts/{own account} (B)');
  // transfers: only out of one's own account
  await expect(ta, 'POST', '/transfers', { from_account_id: accB, to_account_id: accA, amount_cents: 200 }, 404, 'POST /transfers out of another user\'s account');
  await expect(ta, 'POST', '/transfers', { from_account_id: accB, to_account_id: accA, amount_cents: 200 }, 404, 'again: still 404 (a refusal is not remembered)');
  const balA = (await as(admin, 'GET', `/accounts/${accA}`)).json.balance_cents;
  const balB = (await as(admin, 'GET', `/accounts/${accB}`)).json.balance_cents;
  check(balA === 1000 && balB === 500, 'authorization: no money moved', { balA, balB });
  const tr = await expect(ta, 'POST', '/transfers', { from_account_id: accA, to_account_id: accB, amount_cents: 100 }, 201, 'POST /transfers out of its own account into another user\'s');
  const tid = tr.json.id;
  await expect(ta, 'GET', `/transfers/${tid}`, undefined, 200, 'GET /transfers/{id} by the owner of the from account');
  await expect(tb, 'GET', `/transfers/${tid}`, undefined, 200, 'GET /transfers/{id} by the owner of the to account');
  await expect(tc, 'GET', `/transfers/${tid}`, undefined, 404, 'GET /transfers/{id} by a user of neither account');
  await expect(admin, 'GET', `/transfers/${tid}`, undefined, 200, 'GET /transfers/{id} by an administrator');
  const idem = { 'idempotency-key': `k-${Date.now()}` };
  const first = await request(s.base, 'POST', '/transfers', { headers: { ...bearer(ta), ...idem }, body: { from_account_id: accA, to_account_id: accB, amount_cents: 1 } });
  const other = await request(s.base, 'POST', '/transfers', { headers: { ...bearer(tb), ...idem }, body: { from_account_id: accA, to_account_id: accB, amount_cents: 1 } });
  check(first.status === 201 && other.status !== 201 && other.status !== 200, 'authorization: another user\'s Idempotency-Key replay does not return the first caller\'s transfer', [first.status, other.status]);
  const after = [(await as(admin, 'GET', `/accounts/${accA}`)).json.balance_cents, (await as(admin, 'GET', `/accounts/${accB}`)).json.balance_cents];
  check(after[0] === 899 && after[1] === 601, 'authorization: balances as the two allowed transfers left them', after);
}

// ---- GET /events: who sees which event ----

// Opens GET /events as the holder of token t. The stream's events collect
// in .events ({id, type, data} as each frame's data line has them);
// .opened resolves to the status once the answer's head is in (the
// stream's starting point is fixed by then); .waitFor(pred, ms) resolves
// to whether pred(events) came true within ms; .close() hangs up.
function openEvents(base, t, { query = '', lastEventId } = {}) {
  const headers = { ...bearer(t), accept: 'text/event-stream' };
  if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId);
  const events = [];
  const waiters = new Set();
  let buf = '';
  let openedResolve;
  const opened = new Promise((resolve) => { openedResolve = resolve; });
  const poke = () => { for (const w of waiters) w(); };
  const req = http.request(`${base}/events${query}`, { headers, agent: false }, (res) => {
    openedResolve(res.statusCode);
    res.setEncoding('utf8');
    res.on('data', (c) => {
      buf += c;
      for (let i; (i = buf.indexOf('\n\n')) >= 0;) {
        const frame = {};
        for (const line of buf.slice(0, i).split('\n')) {
          const m = line.match(/^(id|event|data): (.*)$/);
          if (m) frame[m[1]] = m[2];
        }
        buf = buf.slice(i + 2);
        if (frame.data === undefined) continue;
        const ev = JSON.parse(frame.data);
        if (String(ev.id) !== frame.id || ev.type !== frame.event) throw new Error(`a frame whose id/event lines disagree with its data: ${JSON.stringify(frame)}`);
        events.push(ev);
      }
      poke();
    });
    res.on('error', () => {});
  });
  req.on('error', (e) => openedResolve(`error: ${e.message}`));
  req.end();
  return {
    events,
    opened,
    waitFor(pred, ms) {
      return new Promise((resolve) => {
        const done = (v) => { clearTimeout(timer); waiters.delete(w); resolve(v); };
        const w = () => { if (pred(events)) done(true); };
        const timer = setTimeout(() => done(pred(events)), ms);
        waiters.add(w);
        w();
      });
    },
    close() { req.destroy(); },
  };
}

// Reads a stream from a starting point up to event id `last` (and 300 ms
// more, for anything that should not be there), then hangs up.
async function readEventsTo(base, t, last, opts) {
  const st = openEvents(base, t, opts);
  const status = await st.opened;
  if (status === 200) {
    await st.waitFor((evs) => evs.some((e) => e.id >= last), 10000);
    await sleep(300);
  }
  st.close();
  return { status, events: st.events.filter((e) => e.id <= last) };
}

// The users an event belongs to, as the contract's table has them.
function ownersOf(ev, accountOwner) {
  const d = ev.data;
  switch (ev.type) {
    case 'user.created': return [d.id];
    case 'order.created': case 'account.created': return [d.user_id];
    case 'transfer.created': return [accountOwner.get(d.from_account_id), accountOwner.get(d.to_account_id)];
    default: return [];
  }
}

// Two users and an administrator, events of each kind (a transfer each way
// between the two users, one between a user's own accounts), watched live
// and read back with Last-Event-ID and ?after=: each user sees exactly its
// own, the administrator everything.
async function eventsByOwner(s, key, admin) {
  const as = async (t, method, p, body) => {
    const r = await request(s.base, method, p, { headers: bearer(t), body });
    if (r.status !== 201) throw new Error(`${method} ${p}: ${r.status} ${r.text}`);
    return r.json.id;
  };
  const mkUser = (name) => as(admin, 'POST', '/users', { name, email: `${name}-${Date.now()}-${Math.random()}@example.com` });
  const [A, B, C] = [await mkUser('ev-a'), await mkUser('ev-b'), await mkUser('ev-c')];
  const [ta, tb, tc] = await Promise.all([A, B, C].map((id) => token(key, { sub: String(id) })));
  // every stream starts after C's user.created: ids follow commit order,
  // so the events before it are all numbered by then
  const first = openEvents(s.base, admin, { lastEventId: 0 });
  await first.opened;
  await first.waitFor((evs) => evs.some((e) => e.type === 'user.created' && e.data.id === C), 15000);
  first.close();
  const startId = first.events.find((e) => e.type === 'user.created' && e.data.id === C)?.id;
  if (startId === undefined) throw new Error('events: C\'s user.created never showed');
  const q = { query: `?after=${startId}` };
  const live = { admin: openEvents(s.base, admin, q), A: openEvents(s.base, ta, q), B: openEvents(s.base, tb, q), C: openEvents(s.base, tc, q) };
  const statuses = await Promise.all(Object.values(live).map((st) => st.opened));
  check(statuses.every((x) => x === 200), 'events: GET /events is 200 for users and the administrator', statuses);

  const accA = await as(ta, 'POST', '/accounts', { user_id: A, balance_cents: 1000 });
  const accB = await as(admin, 'POST', '/accounts', { user_id: B, balance_cents: 1000 });
  const accB2 = await as(tb, 'POST', '/accounts', { user_id: B, balance_cents: 0 });
  const made = [accA, accB, accB2];
  made.push(await as(ta, 'POST', `/users/${A}/orders`, { item: 'tea', quantity: 1, price_cents: 100 }));
  made.push(await as(tb, 'POST', `/users/${B}/orders`, { item: 'jam', quantity: 2, price_cents: 300 }));
  const tAB = await as(ta, 'POST', '/transfers', { from_account_id: accA, to_account_id: accB, amount_cents: 10 });
  const tBA = await as(tb, 'POST', '/transfers', { from_account_id: accB, to_account_id: accA, amount_cents: 20 });
  const tBB = await as(tb, 'POST', '/transfers', { from_account_id: accB, to_account_id: accB2, amount_cents: 30 });
  const D = await mkUser('ev-d');
  const kinds = [['account.created', accA], ['account.created', accB], ['account.created', accB2], ['order.created', made[3]],
    ['order.created', made[4]], ['transfer.created', tAB], ['transfer.created', tBA], ['transfer.created', tBB], ['user.created', D]];
  const has = (evs, [type, id]) => evs.some((e) => e.type === type && e.data.id === id);
  check(await live.admin.waitFor((evs) => kinds.every((k) => has(evs, k)), 15000),
    'events: the administrator\'s live stream has every event, of each kind', live.admin.events.map((e) => `${e.type} ${e.data.id}`));

  // the whole history, read by the administrator from the start (the
  // table for what came before the hubs started, the ring after)
  const last = Math.max(...live.admin.events.map((e) => e.id));
  const all = await readEventsTo(s.base, admin, last, { lastEventId: 0 });
  check(all.status === 200 && kinds.every((k) => has(all.events, k)) && all.events.every((e, i) => i === 0 || e.id > all.events[i - 1].id),
    'events: the administrator\'s catch-up from Last-Event-ID: 0 has everything, in id order', all.events.length);
  const accountOwner = new Map(all.events.filter((e) => e.type === 'account.created').map((e) => [e.data.id, e.data.user_id]));
  const mine = (u, evs) => evs.filter((e) => ownersOf(e, accountOwner).includes(u)).map((e) => e.id);
  const ids = (evs) => evs.map((e) => e.id);
  const liveFrom = startId;
  const want = { A: mine(A, live.admin.events), B: mine(B, live.admin.events), C: [] };
  check(live.admin.events.length === kinds.length && want.A.length === 4 && want.B.length === 6,
    'events: of the 9 new events A owns 4 (its account and order, the two transfers with B), B 6', want);

  for (const [who, u] of [['A', A], ['B', B], ['C', C]]) {
    const st = live[who];
    await st.waitFor((evs) => evs.length >= want[who].length, 10000);
    await sleep(500); // and nothing more comes
    const got = ids(st.events.filter((e) => e.id <= last));
    check(JSON.stringify(got) === JSON.stringify(want[who]) && st.events.every((e) => ownersOf(e, accountOwner).includes(u)),
      `events: ${who}'s live stream has exactly its own events`, { got, want: want[who], seen: st.events.map((e) => `${e.type} ${e.data.id}`) });
    st.close();
  }
  live.admin.close();
  const shared = (id) => want.A.includes(id) && want.B.includes(id);
  check(all.events.filter((e) => e.type === 'transfer.created' && shared(e.id)).length === 2,
    'events: both transfers between A and B reached both of them');

  // resuming: Last-Event-ID 0 (the whole history, mostly from the table)
  // and ?after= (from the ring), with and without ?types=
  for (const [who, u, t] of [['A', A, ta], ['B', B, tb], ['C', C, tc]]) {
    const r = await readEventsTo(s.base, t, last, { lastEventId: 0 });
    const w = mine(u, all.events);
    check(r.status === 200 && JSON.stringify(ids(r.events)) === JSON.stringify(w),
      `events: ${who}'s catch-up from Last-Event-ID: 0 has exactly its own ${w.length} events`, { got: ids(r.events), want: w });
  }
  {
    const r = await readEventsTo(s.base, tb, last, { query: `?after=${liveFrom}&types=transfer.created` });
    const w = mine(B, all.events.filter((e) => e.id > liveFrom && e.type === 'transfer.created'));
    check(r.status === 200 && w.length === 3 && JSON.stringify(ids(r.events)) === JSON.stringify(w),
      'events: B\'s ?after= with ?types=transfer.created has its 3 transfers only', { got: ids(r.events), want: w });
  }
  {
    const from = all.events.find((e) => e.type === 'transfer.created' && e.data.id === tAB).id;
    const r = await readEventsTo(s.base, ta, last, { query: `?after=${liveFrom}`, lastEventId: from });
    const w = mine(A, all.events.filter((e) => e.id > from));
    check(r.status === 200 && w.length === 1 && JSON.stringify(ids(r.events)) === JSON.stringify(w),
      'events: A resuming with Last-Event-ID (which wins over ?after=) gets its events after it only', { got: ids(r.events), want: w });
  }
}

function rawHead(base, text) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname);
    let got = '';
    sock.on('data', (c) => { got += c.toString(); });
    sock.on('error', () => resolve(got));
    sock.on('close', () => resolve(got));
    sock.setTimeout(20000, () => { sock.destroy(); reject(new Error('no answer to the raw request in 20 s')); });
    sock.write(text);
  });
}

async function urlServer(uid) {
  let keys = [await rsaKey('u1')];
  let fetches = 0;
  const jwksServer = http.createServer((req, res) => {
    fetches++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: keys.map((k) => k.jwk) }));
  });
  await new Promise((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${jwksServer.address().port}/jwks.json`;
  try {
    // one worker: each worker keeps its own copy of the keys, and one that
    // never sees the new kid drops the old key only at its periodic refresh
    // (five minutes), which this test does not wait for
    const s = await startServer('url', { AUTH_JWKS_URL: url, AUTH_JWKS_REFETCH_S: '2', AUTH_ISSUER: ISS, AUTH_AUDIENCE: AUD, THREADS: '1' });
    const t1 = await token(keys[0], { sub: String(uid) });
    check((await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t1) })).status === 200, 'a key from AUTH_JWKS_URL is accepted');
    const k2 = await rsaKey('u2');
    keys = [k2];
    await sleep(2100); // past the refetch interval since the fetches at start
    const t2 = await token(k2, { sub: String(uid) });
    const rs = await Promise.all([1, 2, 3, 4].map(() => request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t2) })));
    check(rs.every((r) => r.status === 200), 'a token with a new kid makes the service fetch the URL again and is accepted', rs.map((r) => r.status));
    const rs1 = await Promise.all([1, 2, 3, 4].map(() => request(s.base, 'GET', `/users/${uid}`, { headers: bearer(t1) })));
    check(rs1.every((r) => r.status === 401), 'the key gone from the URL is refused after the refetch', rs1.map((r) => r.status));
    // unknown kids do not make it hammer the URL: at most one fetch per interval per worker
    const start = fetches;
    const t0 = Date.now();
    const stranger = await token(await rsaKey('stranger'), { sub: String(uid) });
    for (let i = 0; i < 20; i++) await request(s.base, 'GET', `/users/${uid}`, { headers: bearer(stranger) });
    const secs = (Date.now() - t0) / 1000;
    const allowed = Math.ceil(secs / 2) + 1;
    check(fetches - start <= allowed, `20 tokens with an unknown kid caused at most ${allowed} fetches in ${secs.toFixed(1)} s`, fetches - start);
  } finally {
    jwksServer.close();
  }
}

async function limitServer(dir) {
  const rsa = await rsaKey('l1');
  const jwks = path.join(dir, 'jwks-limit.json');
  writeJwks(jwks, [rsa]);
  const s = await startServer('limit', { AUTH_JWKS_FILE: jwks, RATE_LIMIT_PER_S: '1', RATE_LIMIT_BURST: '3' });
  const rs = [];
  for (let i = 0; i < 8; i++) {
    const r = await request(s.base, 'GET', '/json');
    rs.push(r);
    if (r.status === 429) break;
  }
  check(rs.slice(0, 3).every((r) => r.status === 200 && r.headers['ratelimit-policy'] === '"default";q=3;w=3' && /^"default";r=\d+;t=\d+$/.test(r.headers.ratelimit ?? '')),
    'the first 3 (the burst) pass, with RateLimit-Policy and RateLimit', rs.map((r) => [r.status, r.headers['ratelimit-policy'], r.headers.ratelimit]));
  const over = rs[rs.length - 1];
  const retry = Number(over.headers['retry-after']);
  check(over.status === 429 && over.json?.status === 429 && /^application\/problem\+json/.test(over.headers['content-type'] ?? '') &&
        retry >= 1 && retry <= 2 && over.headers.ratelimit === `"default";r=0;t=${retry}`,
  '429 after the burst: problem+json, Retry-After, RateLimit r=0', { status: over.status, h: over.headers });
  check((await request(s.base, 'GET', '/healthz')).status === 200, 'the probes are not rate limited');
  const t = await token(rsa, { sub: '7' });
  const mine = await request(s.base, 'GET', '/users/7', { headers: bearer(t) });
  check(mine.status !== 429 && mine.headers['ratelimit'] !== undefined, 'an authenticated caller has a bucket of its own (its sub), not the address\'s', mine.status);
  await sleep(retry * 1000);
  const after = await request(s.base, 'GET', '/json');
  check(after.status === 200, `after waiting Retry-After (${retry} s), the next request passes`, after.status);
}

try {
  const dir = fs.mkdtempSync(path.join(tmp, 'keys-'));
  const { uid } = await mainServer(dir);
  await urlServer(uid);
  await limitServer(dir);
  check(await stopAll(), 'every server exited 0 after SIGTERM (no sanitizer report)');
  for (const f of fs.readdirSync(tmp).filter((n) => n.endsWith('.log'))) {
    const log = fs.readFileSync(path.join(tmp, f), 'utf8');
    check(!/AddressSanitizer|LeakSanitizer|runtime error:/.test(log), `${f}: no sanitizer report`);
  }
  console.log(`all ${checks} checks passed`);
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  await stopAll();
  process.exit(1);
}
