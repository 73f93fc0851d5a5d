// TypeScript types for the live events, from the AsyncAPI document: one type per schema
// (json-schema-to-typescript), the `/ws` frame unions, and the event maps socket.io-client
// takes (`Socket<ServerToClientEvents, ClientToServerEvents>`), read from the document's
// Socket.IO operations. Usage: node gen-events.mjs <asyncapi.json file or URL> out.ts
import { readFileSync, writeFileSync } from "node:fs";
import { compile } from "json-schema-to-typescript";

const [input, output] = process.argv.slice(2);
const doc = /^https?:\/\//.test(input)
  ? await (await fetch(input)).json()
  : JSON.parse(readFileSync(input, "utf8"));
const schemaName = (ref) => ref.replace("#/components/schemas/", "");
const retarget = (value) =>
  JSON.parse(JSON.stringify(value).replaceAll('"#/components/schemas/', '"#/definitions/'));

const definitions = {};
for (const [name, schema] of Object.entries(doc.components.schemas)) {
  definitions[name] = { ...retarget(schema), title: name };
}
const types = await compile(
  { title: "LiveEventsDocument", type: "object", definitions },
  "LiveEventsDocument",
  { bannerComment: "", unreachableDefinitions: true, additionalProperties: false },
);

const message = (ref) => {
  const [, , channel, , key] = ref.split("/");
  const target = doc.channels[channel].messages[key].$ref.split("/").pop();
  return doc.components.messages[target];
};
const payloadType = (msg) => schemaName(msg.payload.$ref);

const serverToClient = [];
const clientToServer = [];
const wsServer = new Set();
const wsClient = new Set();
for (const operation of Object.values(doc.operations)) {
  const channel = operation.channel.$ref.split("/").pop();
  for (const ref of operation.messages) {
    const msg = message(ref.$ref);
    if (channel === "ws") {
      (operation.action === "send" ? wsServer : wsClient).add(payloadType(msg));
      for (const reply of operation.reply?.messages ?? []) wsServer.add(payloadType(message(reply.$ref)));
      continue;
    }
    if (msg.name === "connect") continue; // the handshake: io(url, { auth: SocketIoAuth })
    if (operation.action === "send") {
      serverToClient.push(`  ${msg.name}: (data: ${payloadType(msg)}) => void;`);
    } else {
      const ack = operation.reply ? `, ack: (answer: ${payloadType(message(operation.reply.messages[0].$ref))}) => void` : "";
      clientToServer.push(`  ${msg.name}: (data: ${payloadType(msg)}${ack}) => void;`);
    }
  }
}

writeFileSync(
  output,
  [
    `// Generated from the AsyncAPI document (${doc.info.title} ${doc.info.version}) by gen-events.mjs.`,
    types.replace(/export interface LiveEventsDocument \{[^}]*\}\n/, ""),
    "/** Socket.IO events the server emits. */",
    "export interface ServerToClientEvents {",
    ...serverToClient,
    "}",
    "/** Socket.IO events a client emits. */",
    "export interface ClientToServerEvents {",
    ...clientToServer,
    "}",
    "/** Every text frame the server sends on `/ws`. */",
    `export type WsServerFrame = ${[...wsServer].sort().join(" | ")};`,
    "/** Every text frame a client may send on `/ws`. */",
    `export type WsClientFrame = ${[...wsClient].sort().join(" | ")};`,
    "",
  ].join("\n"),
);
console.log(`events: ${serverToClient.length} server events, ${clientToServer.length} client events`);
