#!/usr/bin/env node
// node resume.mjs — run by tests/sse/run.sh, which sets H2PG (the binary)
// and DATABASE_URL (a fresh database).
//
// GET /events read by the npm `eventsource` package, the WHATWG EventSource
// that browsers implement, across a server restart: the server it streams
// from is stopped (SIGTERM ends the stream), users are created through a
// second server meanwhile, the first comes back on the same port, and the
// client reconnects by itself with Last-Event-ID. Every user.created must
// arrive exactly once, in id order, with `data` equal to the user's own
// GET /users/{id}.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { EventSource } from "eventsource";

const BIN = process.env.H2PG;
const DB = process.env.DATABASE_URL;
if (!BIN || !DB) {
  console.error("resume: H2PG and DATABASE_URL must be set");
  process.exit(2);
}

function fail(msg) {
  console.error(`resume: FAIL: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

async function until(what, cond, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(50);
  }
  fail(`${what} within ${ms} ms`);
}

const servers = new Set();

async function startServer(port, name) {
  const child = spawn(BIN, ["serve"], {
    env: {
      PATH: process.env.PATH, DATABASE_URL: DB, HOST: "127.0.0.1", PORT: String(port), THREADS: "2",
      LOG_LEVEL: "warn", EVENTS_HEARTBEAT_MS: "1000",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise((res) => child.on("exit", (code, sig) => res(sig ? 128 : code)));
  const s = { child, exited, name, base: `http://127.0.0.1:${port}` };
  servers.add(s);
  await until(`${name} answering /healthz`, async () => {
    try {
      return (await fetch(`${s.base}/healthz`)).status === 200;
    } catch {
      return false;
    }
  }, 30000);
  return s;
}

async function stopServer(s) {
  s.child.kill("SIGTERM");
  const code = await s.exited;
  servers.delete(s);
  if (code !== 0) fail(`${s.name} exited with ${code} on SIGTERM`);
}

let made = 0;
async function createUsers(base, n) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    made++;
    const r = await fetch(`${base}/users`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: `Reader ${made}`, email: `reader${made}@example.com` }),
    });
    if (r.status !== 201) fail(`POST /users: ${r.status} ${await r.text()}`);
    ids.push((await r.json()).id);
  }
  return ids;
}

async function main() {
  const port = await freePort();
  let a = await startServer(port, "server A");
  const b = await startServer(await freePort(), "server B");

  const got = []; // {eventId, type, event}
  let opens = 0;
  const es = new EventSource(`${a.base}/events?types=user.created`);
  es.addEventListener("open", () => opens++);
  es.addEventListener("user.created", (m) => {
    got.push({ eventId: m.lastEventId, type: m.type, event: JSON.parse(m.data) });
  });
  await until("the stream opening", () => opens === 1, 20000);

  const ids = await createUsers(a.base, 20);
  await until("20 events before the restart", () => got.length >= 20, 20000);

  await stopServer(a); // ends the stream; the client will retry (retry: 1000)
  ids.push(...(await createUsers(b.base, 15))); // while it is away
  a = await startServer(port, "server A (again)");
  await until("the client reconnecting by itself", () => opens === 2, 30000);
  ids.push(...(await createUsers(b.base, 10))); // after it is back
  await until("all 45 events", () => got.length >= 45, 30000);
  await sleep(500); // nothing more may come
  es.close();

  if (got.length !== 45) fail(`${got.length} events, want 45 (a duplicate or a stray)`);
  let prev = 0;
  for (let i = 0; i < got.length; i++) {
    const { eventId, type, event } = got[i];
    if (type !== "user.created" || event.type !== "user.created") fail(`event ${i}: type ${type} / ${event.type}`);
    if (String(event.id) !== eventId) fail(`event ${i}: id field ${eventId}, JSON id ${event.id}`);
    if (!(event.id > prev)) fail(`event ${i}: id ${event.id} after ${prev}`);
    prev = event.id;
    if (event.data.id !== ids[i]) fail(`event ${i} is about user ${event.data.id}, want ${ids[i]}`);
    const r = await fetch(`${b.base}/users/${ids[i]}`);
    const user = (await r.json()).user;
    if (JSON.stringify(Object.entries(user).sort()) !== JSON.stringify(Object.entries(event.data).sort()))
      fail(`event ${i}: data ${JSON.stringify(event.data)} is not GET /users/${ids[i]}'s ${JSON.stringify(user)}`);
  }
  console.log(`resume: ok: 45 user.created events, each once and in order, across a restart (${opens} connections)`);
}

try {
  await main();
} catch (e) {
  if (!process.exitCode) {
    console.error(`resume: ${e.stack ?? e}`);
    process.exitCode = 1;
  }
} finally {
  for (const s of servers) s.child.kill("SIGKILL");
}
