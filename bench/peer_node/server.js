// The benchmark's second peer: Socket.IO 4 on Node.js with @socket.io/redis-adapter, one node per process.
//
// What a Node team would write instead of Warren, mirroring bench/peer_sio.py: a client connects with
// auth {user}, which joins a room named after the user; a `chat` event {receiver, msg} is emitted as `message` to
// the receiver's room with the fields Warren delivers (id, from, to, content, ts). The Redis adapter publishes every
// emit on one Redis channel per room, and every node pattern-subscribes to all of them, so each message reaches
// every node (counted in /stats as `adapter_arrivals`, which the bench divides by the messages sent).
//
// Run: PORT=... REDIS_URL=redis://127.0.0.1:6379 SIO_KEY=... node bench/peer_node/server.js
// Listens on 127.0.0.1 only. GET /healthz answers once Redis is subscribed; GET /stats gives the counters.
"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { Redis } = require("ioredis");

const port = Number(process.env.PORT || 0);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const key = process.env.SIO_KEY || "socket.io";

const pubClient = new Redis(redisUrl, { lazyConnect: false });
const subClient = pubClient.duplicate();
for (const client of [pubClient, subClient]) {
  client.on("error", (err) => console.error(`redis: ${err.message}`));
}

const stats = { emits: 0, adapter_arrivals: 0, connected: 0 };
let ready = false;

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" });
    res.end(ready ? "ok" : "starting");
  } else if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(stats));
  } else {
    res.writeHead(404);
    res.end();
  }
});

const io = new Server(server, { cors: { origin: "*" }, serveClient: false });
io.adapter(createAdapter(pubClient, subClient, { key }));

// Every message the adapter's pattern subscription brings to this node, whether or not a local socket wants it.
const channelPrefix = `${key}#/#`;
subClient.on("pmessageBuffer", (_pattern, channel) => {
  if (channel.toString().startsWith(channelPrefix)) stats.adapter_arrivals += 1;
});

io.on("connection", (socket) => {
  const user = socket.handshake.auth && socket.handshake.auth.user;
  if (!user) {
    socket.disconnect(true);
    return;
  }
  stats.connected += 1;
  socket.join(user);
  socket.on("chat", (data) => {
    if (!data || typeof data.receiver !== "string") return;
    stats.emits += 1;
    io.to(data.receiver).emit("message", {
      id: crypto.randomUUID().replaceAll("-", ""),
      from: user,
      to: data.receiver,
      content: data.msg,
      ts: Date.now(),
    });
  });
  socket.on("disconnect", () => {
    stats.connected -= 1;
  });
});

// Ready once both Redis connections are up (the subscriber has then sent its PSUBSCRIBE).
Promise.all(
  [pubClient, subClient].map((c) => (c.status === "ready" ? Promise.resolve() : new Promise((ok) => c.once("ready", ok))))
).then(() => {
  ready = true;
});

server.listen(port, "127.0.0.1");

function stop() {
  io.close();
  pubClient.disconnect();
  subClient.disconnect();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
