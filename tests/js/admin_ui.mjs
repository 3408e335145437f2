// Connect to a siocluster's Socket.IO Admin UI namespace as the official Admin UI does, for
// tests/integration/test_dashboard.py.
//
//   node admin_ui.mjs URL [--password P] [--servers N] [--timeout-ms MS] [--join ROOM]
//
// Connects to URL + "/admin" with auth {username: "admin", password: P} (no auth without
// --password), and waits until server_stats came from N distinct servers, or the timeout.
// Prints one JSON line: {"connected", "error", "config", "sockets", "servers"}, where servers
// maps each serverId to its last server_stats and sockets is the all_sockets list.
// --join ROOM: once logged in, asks (as the UI's "join" action does) every socket of "/" to
// join ROOM, and waits half a second before it exits.

import { io } from "socket.io-client";

const [url, ...rest] = process.argv.slice(2);
const opts = { password: null, servers: 1, timeoutMs: 10000, join: null };
for (let i = 0; i < rest.length; i += 2) {
  const [key, value] = [rest[i], rest[i + 1]];
  if (key === "--password") opts.password = value;
  else if (key === "--servers") opts.servers = Number(value);
  else if (key === "--timeout-ms") opts.timeoutMs = Number(value);
  else if (key === "--join") opts.join = value;
  else throw new Error(`unknown option ${key}`);
}

const result = { connected: false, error: null, config: null, sockets: null, servers: {} };
// WebSocket only: exiting closes it, where a polling session would linger on the server until
// its ping timeout (and hold up the cluster's graceful stop).
const options = { forceNew: true, reconnection: false, transports: ["websocket"] };
if (opts.password !== null) options.auth = { username: "admin", password: opts.password };
const socket = io(`${url}/admin`, options);

const done = () => {
  socket.disconnect();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
};
const timer = setTimeout(done, opts.timeoutMs);
let joined = opts.join === null;
const check = () => {
  if (Object.keys(result.servers).length >= opts.servers && result.sockets !== null && joined) {
    clearTimeout(timer);
    done();
  }
};

socket.on("connect", () => { result.connected = true; });
socket.on("connect_error", (err) => {
  result.error = err.message;
  clearTimeout(timer);
  done();
});
socket.on("config", (config) => {
  result.config = config;
  if (opts.join !== null) {
    socket.emit("join", "/", opts.join);
    setTimeout(() => { joined = true; check(); }, 500);
  }
});
socket.on("all_sockets", (sockets) => { result.sockets = sockets; check(); });
socket.on("server_stats", (stats) => { result.servers[stats.serverId] = stats; check(); });
