// Node's socket.io cluster, the peer system of `python -m bench --peers`.
//
//   node server.mjs PORT WORKERS
//
// What socket.io's docs prescribe for one machine: the primary process owns
// the port and hands each connection to a worker with @socket.io/sticky
// (sticky by the session id, least-connection for new sessions), and the
// workers broadcast to each other with @socket.io/cluster-adapter (IPC through
// the primary).  The events are those of bench/app/bench_app.py:
//   echo(data) -> ack(data);  fanout(data): broadcast tick(data) to all but the
//   sender, then ack(true).
// The primary prints "ready <pid>..." once every worker is set up, and stops
// its workers on SIGTERM/SIGINT.
import cluster from "node:cluster";
import http from "node:http";
import { Server } from "socket.io";
import { setupMaster, setupWorker } from "@socket.io/sticky";
import { createAdapter, setupPrimary } from "@socket.io/cluster-adapter";

const port = Number(process.argv[2]);
const workers = Number(process.argv[3] || 2);

if (cluster.isPrimary) {
  const httpServer = http.createServer();
  setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  cluster.setupPrimary({ serialization: "advanced" });
  const ready = new Set();
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork();
    worker.on("message", (msg) => {
      if (msg === "bench:ready") {
        ready.add(worker.process.pid);
        if (ready.size === workers) {
          httpServer.listen(port, "127.0.0.1", () => {
            console.log(`ready ${[...ready].join(" ")}`);
          });
        }
      }
    });
  }
  cluster.on("exit", (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited (${code ?? signal})`);
      process.exit(1);
    }
  });
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
    httpServer.close();
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const httpServer = http.createServer();
  const io = new Server(httpServer);
  io.adapter(createAdapter());
  setupWorker(io);
  io.on("connection", (socket) => {
    socket.on("echo", (data, ack) => {
      if (typeof ack === "function") ack(data);
    });
    socket.on("fanout", (data, ack) => {
      socket.broadcast.emit("tick", data);
      if (typeof ack === "function") ack(true);
    });
  });
  process.send("bench:ready");
}
