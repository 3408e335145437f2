// Connection-state recovery with the official socket.io-client (default options), for
// tests/integration/test_recovery.py.  The app is tests/apps/recovery_app.py.
//
//   node recovery.mjs stream URL [--clients N]
//       N receivers in the room "stream" and one sender publishing a numbered stream with
//       acks, retrying what is not acknowledged (socket.io-client's retries + ackTimeout).
//       Prints {"event": "ready", "pids": {worker pid: receivers}} once everyone is
//       connected; the test then kills or rolls workers and writes "finish" on stdin.
//       Then: wait until every receiver is connected, publish 20 more, wait for them, and
//       print one JSON line: per receiver the reconnections, how many were recovered,
//       whether its id stayed the same, and the acknowledged numbers it never received.
//
//   node recovery.mjs trimmed URL
//       One receiver goes offline and prints {"event": "offline"}; the test floods the log
//       past [recovery] max_log_bytes and writes "back" on stdin; the receiver reconnects and
//       prints whether it was recovered and kept its id.
//
//   node recovery.mjs offline URL --short-ms MS --long-ms MS
//       Two receivers go offline (their Engine.IO connection closed, no reconnection) for
//       --short-ms and --long-ms while the stream goes on, then reconnect; prints whether
//       each was recovered, kept its id, and what it missed.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [command, url, ...rest] = process.argv.slice(2);
const opts = { clients: 30, shortMs: 500, longMs: 4000 };
for (let i = 0; i < rest.length; i += 2) {
  const value = Number(rest[i + 1]);
  if (rest[i] === "--clients") opts.clients = value;
  else if (rest[i] === "--short-ms") opts.shortMs = value;
  else if (rest[i] === "--long-ms") opts.longMs = value;
  else throw new Error(`unknown option ${rest[i]}`);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const errors = [];

function receiver(name) {
  const socket = io(url, { forceNew: true, auth: { role: "receiver", name } });
  const r = { name, socket, got: new Set(), connects: 0, recovered: 0, ids: new Set(),
              firstId: null, pid: null, notRecovered: 0 };
  socket.on("tick", (n) => r.got.add(n));
  socket.on("connect", () => {
    r.connects += 1;
    r.ids.add(socket.id);
    if (r.firstId === null) r.firstId = socket.id;
    else if (socket.recovered) r.recovered += 1;
    else r.notRecovered += 1;
  });
  socket.on("connect_error", (e) => errors.push(`${name}: connect_error ${e.message}`));
  return r;
}

function sender() {
  // The sender retries what is not acknowledged: retries + ackTimeout (socket.io-client >= 4.6).
  const socket = io(url, { forceNew: true, retries: 20, ackTimeout: 1000 });
  const s = { socket, acked: new Set(), next: 1, running: true };
  s.loop = (async () => {
    await new Promise((ok) => (socket.connected ? ok() : socket.once("connect", ok)));
    while (s.running) {
      const n = s.next++;
      socket.emitWithAck("publish", n).then((v) => s.acked.add(v),
        (e) => errors.push(`publish ${n}: ${e.message}`));
      await sleep(20);
    }
  })();
  return s;
}

async function waitFor(pred, ms) {
  const until = Date.now() + ms;
  while (!pred() && Date.now() < until) await sleep(50);
  return pred();
}

async function whoami(r) {
  const w = await r.socket.timeout(5000).emitWithAck("whoami");
  r.pid = w.pid;
  return w;
}

function report(r, acked) {
  const missed = [...acked].filter((n) => !r.got.has(n)).sort((a, b) => a - b);
  return { name: r.name, connects: r.connects, recovered: r.recovered,
           not_recovered: r.notRecovered, same_id: r.ids.size === 1, pid: r.pid,
           missed: missed.slice(0, 20), missed_count: missed.length, got: r.got.size };
}

async function stream() {
  const receivers = Array.from({ length: opts.clients }, (_, i) => receiver(`r${i}`));
  if (!(await waitFor(() => receivers.every((r) => r.socket.connected), 15000))) {
    errors.push("receivers did not all connect");
  }
  const pids = {};
  for (const r of receivers) {
    const w = await whoami(r);
    pids[w.pid] = (pids[w.pid] || 0) + 1;
  }
  const s = sender();
  await waitFor(() => s.acked.size >= 10, 10000);
  console.log(JSON.stringify({ event: "ready", pids }));
  const lines = createInterface({ input: process.stdin });
  await new Promise((ok) => lines.on("line", (l) => l.trim() === "finish" && ok()));
  await waitFor(() => receivers.every((r) => r.socket.connected) && s.socket.connected, 15000);
  const last = s.next + 20;
  await waitFor(() => s.next >= last, 10000);
  s.running = false;
  await s.loop;
  await waitFor(() => s.acked.size >= s.next - 1, 10000);
  await waitFor(() => receivers.every((r) => [...s.acked].every((n) => r.got.has(n))), 5000);
  const recoveredWhoami = [];
  for (const r of receivers) {
    try {
      const w = await whoami(r);
      recoveredWhoami.push({ rooms: w.rooms, name: w.name, recovered: w.recovered });
    } catch (e) {
      errors.push(`${r.name}: whoami ${e.message}`);
    }
  }
  console.log(JSON.stringify({
    event: "done", sent: s.next - 1, acked: s.acked.size, errors,
    receivers: receivers.map((r) => report(r, s.acked)), whoami: recoveredWhoami,
  }));
  for (const r of receivers) r.socket.close();
  s.socket.close();
}

async function offline() {
  const receivers = [receiver("short"), receiver("long")];
  await waitFor(() => receivers.every((r) => r.socket.connected), 10000);
  for (const r of receivers) await whoami(r);
  const s = sender();
  await waitFor(() => s.acked.size >= 5, 5000);
  await waitFor(() => receivers.every((r) => r.got.size >= 3), 5000);
  const gone = async (r, ms) => {
    r.socket.io.reconnection(false);
    r.socket.io.engine.close(); // the network drops: "transport close", recoverable
    await sleep(ms);
    r.socket.io.reconnection(true);
    r.socket.connect();
    await waitFor(() => r.socket.connected, 10000);
  };
  await Promise.all([gone(receivers[0], opts.shortMs), gone(receivers[1], opts.longMs)]);
  const last = s.next + 10;
  await waitFor(() => s.next >= last, 5000);
  s.running = false;
  await s.loop;
  await waitFor(() => s.acked.size >= s.next - 1, 5000);
  await sleep(300);
  const after = [];
  for (const r of receivers) after.push(await whoami(r));
  console.log(JSON.stringify({
    event: "done", errors, receivers: receivers.map((r) => report(r, s.acked)),
    whoami: after.map((w) => ({ rooms: w.rooms, name: w.name, recovered: w.recovered })),
  }));
  for (const r of receivers) r.socket.close();
  s.socket.close();
}

async function trimmed() {
  const r = receiver("trimmed");
  await waitFor(() => r.socket.connected, 10000);
  const s = sender();
  await waitFor(() => r.got.size >= 3, 5000); // it holds an offset
  s.running = false;
  await s.loop;
  r.socket.io.reconnection(false);
  r.socket.io.engine.close();
  console.log(JSON.stringify({ event: "offline" }));
  const lines = createInterface({ input: process.stdin });
  await new Promise((ok) => lines.on("line", (l) => l.trim() === "back" && ok()));
  r.socket.io.reconnection(true);
  r.socket.connect();
  await waitFor(() => r.socket.connected, 10000);
  const w = await whoami(r);
  console.log(JSON.stringify({ event: "done", errors, receiver: report(r, new Set()),
                               whoami: { rooms: w.rooms, recovered: w.recovered } }));
  r.socket.close();
  s.socket.close();
}

try {
  if (command === "stream") await stream();
  else if (command === "trimmed") await trimmed();
  else if (command === "offline") await offline();
  else throw new Error("usage: node recovery.mjs stream|offline URL [options]");
} catch (e) {
  console.log(JSON.stringify({ event: "failed", error: String(e), errors }));
}
process.exit(0);
