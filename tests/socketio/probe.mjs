// One real socket.io-client, driven by a Rust test over stdin and stdout (JSON lines).
//
//   node probe.mjs <url> [options as JSON]
//
// Prints what happens to the socket: {"type":"open"|"upgrade"|"connect"|"connect_error"|
// "event"|"ack"|"disconnect", ...}. Reads commands, one JSON object a line:
// {"id": 1, "emit": "subscribe", "data": {...}} emits with an acknowledgement (printed as
// {"type":"ack","id":1,...}). Exits when stdin closes.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, options = "{}"] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const socket = io(url, {
  ...JSON.parse(options),
  // One connection per probe, and no silent retries a test could mistake for success.
  forceNew: true,
  reconnection: false,
});

socket.io.on("open", () => {
  const engine = socket.io.engine;
  print({ type: "open", transport: engine.transport.name });
  engine.on("upgrade", (transport) => print({ type: "upgrade", transport: transport.name }));
});
socket.on("connect", () =>
  print({ type: "connect", transport: socket.io.engine.transport.name }),
);
socket.on("connect_error", (error) => print({ type: "connect_error", message: error.message }));
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, data) => print({ type: "event", event, data }));

createInterface({ input: process.stdin })
  .on("line", (line) => {
    const command = JSON.parse(line);
    socket.timeout(5000).emit(command.emit, command.data, (error, answer) => {
      print({ type: "ack", id: command.id, error: error ? error.message : null, data: answer });
    });
  })
  .on("close", () => {
    socket.close();
    process.exit(0);
  });
