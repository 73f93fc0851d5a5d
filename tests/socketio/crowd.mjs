// Many real socket.io-clients watching one drop, for the fan-out test.
//
//   node crowd.mjs <url> <clients> <dropId>
//
// Connects every client (half with default options, polling then upgrade; half
// websocket-only) and prints {"type":"connected","clients":N}. Then reads one line,
// {"version": V, "withinMs": T}, waits until every client has seen version V of the drop
// (in a stock_update or a snapshot) or T ms have passed, and prints
// {"type":"reached","reached":K,"clients":N,"behind":[...]} before exiting.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, count, dropArg] = process.argv.slice(2);
const clients = Number(count);
const dropId = Number(dropArg);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const fail = (message) => {
  print({ type: "failed", message });
  process.exit(1);
};

const newest = new Array(clients).fill(0);
const sockets = [];
let wanted = Infinity;
let settle = () => {};
const everyoneThere = () => newest.every((version) => version >= wanted);

function connect(index) {
  const transports = index % 2 === 0 ? ["polling", "websocket"] : ["websocket"];
  const socket = io(url, { forceNew: true, reconnection: false, transports });
  sockets.push(socket);
  const saw = (version) => {
    if (version > newest[index]) {
      newest[index] = version;
      if (everyoneThere()) settle();
    }
  };
  socket.on("stock_update", (update) => {
    if (update.dropId === dropId) saw(update.version);
  });
  socket.on("snapshot", (snapshot) => {
    const drop = snapshot.drops.find((d) => d.dropId === dropId);
    if (drop) saw(drop.version);
  });
  socket.on("disconnect", (reason) => {
    if (reason !== "io client disconnect") print({ type: "disconnect", index, reason });
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (error) => reject(new Error(`client ${index}: ${error.message}`)));
  });
}

try {
  // In waves, as a page full of visitors arrives: not one SYN flood.
  for (let start = 0; start < clients; start += 100) {
    const wave = [];
    for (let i = start; i < Math.min(start + 100, clients); i++) wave.push(connect(i));
    await Promise.all(wave);
  }
} catch (error) {
  fail(error.message);
}
print({ type: "connected", clients });

const lines = createInterface({ input: process.stdin });
const [line] = await new Promise((resolve) => lines.once("line", (l) => resolve([l])));
const { version, withinMs } = JSON.parse(line);
wanted = version;
await new Promise((resolve) => {
  settle = resolve;
  if (everyoneThere()) resolve();
  setTimeout(resolve, withinMs);
});
const behind = newest.filter((v) => v < wanted);
print({ type: "reached", reached: clients - behind.length, clients, behind: behind.slice(0, 10) });
for (const socket of sockets) socket.close();
process.exit(0);
