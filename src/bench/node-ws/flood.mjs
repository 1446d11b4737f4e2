// The fan-out comparison peer of edgemon-bench: a plain Node `ws` server that speaks the part of
// edgemon's protocol the benchmark's fan-out uses, so the same tool measures both the same way.
//
//   node flood.mjs HOST:PORT   (port 0 picks one; prints "listening on http://HOST:PORT")
//
// - GET /ws upgrades; {"op":"subscribe","topic":"test/flood"} subscribes.
// - Every second, one frame of 1024 bytes in edgemon's shape
//   {"type":"data","topic":"test/flood","seq":N,"ts":MS,"data":{"sent_us":US,"pad":"x.."}}
//   is sent to every subscriber, stamped just before the loop, as edgemon's flood topic does.
// - GET /api/websocket/stats answers what the benchmark waits on (open connections, hubs).
import http from "node:http";
import { performance } from "node:perf_hooks";
import { WebSocketServer } from "ws";

const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(/:(?=[^:]*$)/);
const TOPIC = "test/flood";
const SIZE = 1024;
const subscribers = new Set();
let open = 0;
let seq = 0;

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/api/websocket/stats") {
    const hubs = subscribers.size
      ? [{ topic: TOPIC, subscribers: subscribers.size, dropped_frames: 0 }]
      : [];
    // A length, not chunks: the benchmark's one-shot GET does not decode chunked bodies.
    const body = JSON.stringify({ active_connections: open, hubs, rejected_total: 0 });
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
    return;
  }
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on("upgrade", (req, socket, head) => {
  if (req.url !== "/ws") {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    open += 1;
    ws.on("message", (msg) => {
      let cmd;
      try {
        cmd = JSON.parse(msg);
      } catch {
        return;
      }
      if (cmd.op === "subscribe" && cmd.topic === TOPIC) subscribers.add(ws);
      if (cmd.op === "unsubscribe") subscribers.delete(ws);
    });
    ws.on("error", () => {});
    ws.on("close", () => {
      open -= 1;
      subscribers.delete(ws);
    });
  });
});

function frame(now) {
  seq += 1;
  const sentUs = Math.floor((performance.timeOrigin + now) * 1000);
  const head = `{"type":"data","topic":"${TOPIC}","seq":${seq},"ts":${Math.floor(sentUs / 1000)},"data":{"sent_us":${sentUs},"pad":"`;
  const tail = `"}}`;
  return head + "x".repeat(Math.max(0, SIZE - head.length - tail.length)) + tail;
}

setInterval(() => {
  if (subscribers.size === 0) return;
  // Encoded once, like edgemon's shared frame: each send then only frames and writes it.
  const data = Buffer.from(frame(performance.now()));
  for (const ws of subscribers) ws.send(data, { binary: false });
}, 1000);

server.listen(Number(port), host, () => {
  const a = server.address();
  console.log(`listening on http://${a.address}:${a.port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
