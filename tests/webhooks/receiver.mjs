// A webhook receiver for tests/e2e/test_webhooks.c. Every POST to a path
// other than /_control/* is a delivery: it is checked with the Standard
// Webhooks reference library (npm `standardwebhooks`) against the secret
// set for that path, recorded, and answered as that path is told to.
//
//   node receiver.mjs            prints "listening <port>" once it listens
//   POST /_control/<path>        {"secret": "whsec_...", "fail": n, "status": s, "sleep_ms": ms, "verify": v}
//                                 fail: answer 500 to the next n deliveries; status: answer s
//                                 (default 204); sleep_ms: answer only after that long;
//                                 verify "native": check the signature with node:crypto (OpenSSL)
//                                 instead of the library, whose SHA-256 is JavaScript and costs
//                                 the bench (bench/webhooks.sh) more CPU than the server's delivery;
//                                 the event is then not kept. The tests use the library.
//   GET  /_stats/<path>          {"in_flight", "max_in_flight"}: deliveries to <path> not yet
//                                 answered (or aborted), now and at most at once so far
//   GET  /_received/<path>       the deliveries to <path> so far, oldest first:
//                                 [{"id", "timestamp", "verified", "error", "answered", "aborted", "event"}]
//                                 (recorded on arrival; answered is null until the answer is sent,
//                                 aborted turns true if the sender hung up before it)
import crypto from "node:crypto";
import http from "node:http";
import { Webhook } from "standardwebhooks";

const paths = new Map(); // path -> {secret, fail, status, sleep_ms, received: []}

function state(path) {
  if (!paths.has(path))
    paths.set(path, { secret: null, fail: 0, status: 204, sleep_ms: 0, received: [], in_flight: 0, max_in_flight: 0 });
  return paths.get(path);
}

// The Standard Webhooks check with node:crypto: HMAC-SHA256 of
// id.timestamp.body keyed with the secret's base64 part, one of the
// header's "v1,<base64>" signatures equal to it, the timestamp within five
// minutes. Throws as the library does.
function verifyNative(secret, body, headers) {
  const id = headers["webhook-id"], ts = headers["webhook-timestamp"], sigs = headers["webhook-signature"];
  if (!id || !ts || !sigs) throw new Error("Missing required headers");
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) throw new Error("Message timestamp too old or too new");
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const want = crypto.createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest();
  for (const s of sigs.split(" ")) {
    const [version, b64] = s.split(",");
    const got = Buffer.from(b64 ?? "", "base64");
    if (version === "v1" && got.length === want.length && crypto.timingSafeEqual(got, want)) return;
  }
  throw new Error("No matching signature found");
}

function reply(res, status, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url, "http://receiver");
    if (url.pathname.startsWith("/_control/")) {
      const s = state(url.pathname.slice("/_control".length));
      Object.assign(s, JSON.parse(body));
      return reply(res, 200, { ok: true });
    }
    if (url.pathname.startsWith("/_stats/")) {
      const s = state(url.pathname.slice("/_stats".length));
      return reply(res, 200, { in_flight: s.in_flight, max_in_flight: s.max_in_flight });
    }
    if (url.pathname.startsWith("/_received/")) {
      return reply(res, 200, state(url.pathname.slice("/_received".length)).received);
    }
    const s = state(url.pathname);
    const rec = {
      id: req.headers["webhook-id"] ?? null,
      timestamp: req.headers["webhook-timestamp"] ?? null,
      verified: false,
      error: null,
      answered: null,
      aborted: false,
      event: null,
    };
    s.received.push(rec);
    s.in_flight++;
    s.max_in_flight = Math.max(s.max_in_flight, s.in_flight);
    res.on("close", () => {
      s.in_flight--;
      if (rec.answered === null) rec.aborted = true;
    });
    try {
      if (s.verify === "native") verifyNative(s.secret, body, req.headers);
      else rec.event = new Webhook(s.secret).verify(body, req.headers);
      rec.verified = true;
    } catch (e) {
      rec.error = String(e && e.message ? e.message : e);
    }
    let status = s.status;
    if (s.fail > 0) {
      s.fail--;
      status = 500;
    }
    const answer = () => {
      if (rec.aborted) return;
      rec.answered = status;
      reply(res, status);
    };
    if (s.sleep_ms > 0) setTimeout(answer, s.sleep_ms);
    else answer();
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on("SIGTERM", () => process.exit(0));
