// Drive a siocluster with the official socket.io-client, for tests/integration/test_js_client.py.
//
//   node client.mjs sessions URL [--clients N] [--echoes N] [--timeout-ms MS]
//       Connects N clients with the default options (polling handshake, then the websocket
//       upgrade) and N more with transports: ["polling"]; each calls whoami and echo with
//       acks. Prints one JSON line: {"default": RESULT, "polling": RESULT}.
//
//   node client.mjs broadcast URL [--clients N] [--path P]
//       Connects N clients (websocket after the upgrade); the first emits "shout" with a
//       unicode string and bytes; prints how many clients got it back intact, and the worker
//       pids they were on (a broadcast across workers goes through the adapter).
//
//   Every command takes --path P: the Engine.IO path when the app mounts it elsewhere
//   (for example /ws/socket.io/).
//
//   node client.mjs reconnect URL [--transports polling|default] [--timeout-ms MS]
//       One client with default reconnection. Prints {"event": "ready", "pid": ...}, then waits
//       for its worker to die (the test kills it), for socket.io-client to reconnect through the
//       balancer, and for whoami to answer again; prints {"event": "reconnected", ...}.
//
// The app is tests/apps/echo_app.py. Nothing is thrown out of the script: every failure is
// counted in "errors", so the test can show them all at once.

import { io } from "socket.io-client";

function parseArgs(argv) {
  const [command, url, ...rest] = argv;
  const opts = { command, url, clients: 10, echoes: 3, timeoutMs: 10000, transports: "default",
                 path: null };
  for (let i = 0; i < rest.length; i += 2) {
    const [key, value] = [rest[i], rest[i + 1]];
    if (key === "--clients") opts.clients = Number(value);
    else if (key === "--echoes") opts.echoes = Number(value);
    else if (key === "--timeout-ms") opts.timeoutMs = Number(value);
    else if (key === "--transports") opts.transports = value;
    else if (key === "--path") opts.path = value;
    else throw new Error(`unknown option ${key}`);
  }
  if (!["sessions", "reconnect", "broadcast"].includes(command) || !url) {
    throw new Error("usage: node client.mjs sessions|reconnect|broadcast URL [options]");
  }
  return opts;
}

let enginePath = null;

function clientOptions(mode) {
  // forceNew: io() otherwise shares one Manager (one connection) between sockets to one URL.
  const options = { forceNew: true };
  if (enginePath) options.path = enginePath;
  if (mode === "polling") options.transports = ["polling"];
  return options;
}

function once(emitter, event, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms`)),
      timeoutMs);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function connect(socket, timeoutMs) {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not connected within ${timeoutMs} ms`)),
      timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// engine.io-client wraps transport failures: the cause is in description (a status code or an
// Error) and context (the XMLHttpRequest, with its status).
function describe(err) {
  const cause = err.description instanceof Error ? err.description.message : err.description;
  const status = err.context?.status;
  return [err.message, cause, status !== undefined && `status ${status}`].filter((x) => x !== undefined && x !== "")
    .join(": ");
}

const sameJSON = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function session(url, mode, index, opts, errors) {
  const socket = io(url, clientOptions(mode));
  const result = { connected: false, pid: null, transport: null, host: null, acks: 0 };
  socket.on("connect_error", (err) => errors.push(`${mode}#${index} connect_error: ${describe(err)}`));
  try {
    await connect(socket, opts.timeoutMs);
    result.connected = true;
    const who = await socket.timeout(opts.timeoutMs).emitWithAck("whoami");
    result.pid = who.pid;
    result.host = who.host;
    result.acks += 1;
    for (let i = 0; i < opts.echoes; i += 1) {
      const payload = { i, mode, text: "héllo ✓", nested: [1, null, true] };
      const answer = await socket.timeout(opts.timeoutMs).emitWithAck("echo", payload);
      if (sameJSON(answer, payload)) result.acks += 1;
      else errors.push(`${mode}#${index} echo ${i}: got ${JSON.stringify(answer)}`);
    }
    // Binary attachments travel as separate packets; the server answers with bytes.
    const bytes = Buffer.from([0, 1, 2, 255]);
    const binary = await socket.timeout(opts.timeoutMs).emitWithAck("echo", bytes);
    if (Buffer.isBuffer(binary) && binary.equals(bytes)) result.acks += 1;
    else errors.push(`${mode}#${index} binary echo: got ${JSON.stringify(binary)}`);
    // Several arguments: the app answers with one list.
    const many = await socket.timeout(opts.timeoutMs).emitWithAck("echo", "a", 2);
    if (sameJSON(many, ["a", 2])) result.acks += 1;
    else errors.push(`${mode}#${index} multi-arg echo: got ${JSON.stringify(many)}`);

    const engine = socket.io.engine;
    if (mode === "default" && engine.transport.name !== "websocket") {
      await once(engine, "upgrade", opts.timeoutMs).catch((err) => {
        errors.push(`${mode}#${index} ${err.message}`);
      });
    }
    result.transport = engine.transport.name;
  } catch (err) {
    errors.push(`${mode}#${index} ${err.message}`);
  } finally {
    socket.disconnect();
  }
  return result;
}

function summarize(results, opts, errors) {
  const count = (values) => {
    const counts = {};
    for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
    return counts;
  };
  return {
    clients: results.length,
    connected: results.filter((r) => r.connected).length,
    pids: [...new Set(results.map((r) => r.pid).filter((p) => p !== null))].sort(),
    pid_counts: count(results.map((r) => r.pid)),
    transports: count(results.map((r) => r.transport)),
    hosts: [...new Set(results.map((r) => r.host))],
    acks: results.reduce((sum, r) => sum + r.acks, 0),
    acks_expected: results.length * (opts.echoes + 3),
    errors,
  };
}

async function sessions(opts) {
  const out = {};
  for (const mode of ["default", "polling"]) {
    const errors = [];
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: opts.clients }, (_, i) => session(opts.url, mode, i, opts, errors)));
    out[mode] = { ...summarize(results, opts, errors),
                  elapsed_ms: Math.round(performance.now() - started) };
  }
  return out;
}

async function broadcast(opts) {
  const errors = [];
  const sockets = Array.from({ length: opts.clients }, () => io(opts.url, clientOptions("default")));
  try {
    await Promise.all(sockets.map((s) => connect(s, opts.timeoutMs)));
    const pids = await Promise.all(sockets.map(
      (s) => s.timeout(opts.timeoutMs).emitWithAck("whoami").then((who) => who.pid)));
    const payload = { text: "héllo ✓ 日本語 🎉", bytes: Buffer.from([0, 1, 2, 254, 255]) };
    const got = sockets.map((s, i) => once(s, "shout", opts.timeoutMs).then(([data]) => data)
      .catch((err) => { errors.push(`#${i} ${err.message}`); return null; }));
    sockets[0].emit("shout", payload);
    const received = (await Promise.all(got)).filter((d) => d && d.text === payload.text
      && Buffer.isBuffer(d.bytes) && d.bytes.equals(payload.bytes)).length;
    return { clients: sockets.length, received, pids: [...new Set(pids)].sort(),
             transports: [...new Set(sockets.map((s) => s.io.engine.transport.name))], errors };
  } catch (err) {
    errors.push(err.message);
    return { clients: sockets.length, received: 0, pids: [], errors };
  } finally {
    sockets.forEach((s) => s.disconnect());
  }
}

function emit(line) {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(line)}\n`, resolve));
}

async function reconnect(opts) {
  const socket = io(opts.url, clientOptions(opts.transports));
  const errors = [];
  let connects = 0;
  let disconnectReason = null;
  socket.on("connect", () => { connects += 1; });
  socket.on("disconnect", (reason) => { disconnectReason ??= reason; });
  socket.io.on("reconnect_attempt", (attempt) => { opts.attempts = attempt; });
  try {
    await connect(socket, opts.timeoutMs);
    const before = await socket.timeout(opts.timeoutMs).emitWithAck("whoami");
    if (opts.transports === "default" && socket.io.engine.transport.name !== "websocket") {
      await once(socket.io.engine, "upgrade", opts.timeoutMs);
    }
    await emit({ event: "ready", pid: before.pid, transport: socket.io.engine.transport.name });

    await once(socket, "disconnect", opts.timeoutMs);
    const killedAt = performance.now();
    await connect(socket, opts.timeoutMs);
    const after = await socket.timeout(opts.timeoutMs).emitWithAck("whoami");
    const echo = await socket.timeout(opts.timeoutMs).emitWithAck("echo", { back: true });
    if (!sameJSON(echo, { back: true })) errors.push(`echo after reconnect: ${JSON.stringify(echo)}`);
    return {
      event: "reconnected",
      before_pid: before.pid,
      pid: after.pid,
      disconnect_reason: disconnectReason,
      connects,
      reconnect_attempts: opts.attempts ?? 0,
      transport: socket.io.engine.transport.name,
      reconnect_ms: Math.round(performance.now() - killedAt),
      errors,
    };
  } catch (err) {
    errors.push(err.message);
    return { event: "failed", connects, disconnect_reason: disconnectReason, errors };
  } finally {
    socket.disconnect();
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  enginePath = opts.path;
  const commands = { sessions, reconnect, broadcast };
  const result = await commands[opts.command](opts);
  await emit(result);
  // Lingering reconnection timers must not keep the test waiting.
  process.exit(0);
}

main();
