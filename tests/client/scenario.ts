// A frontend's drop day through the generated client, against a running store: sign up, list
// drops, reserve, hear the stock change over Socket.IO, buy with an Idempotency-Key (twice:
// one purchase), read the purchase back. Every REST call is a generated function named after
// its operationId; every socket event is typed from the AsyncAPI document.
// Usage: node build/dist/scenario.js <base url> <drop name>
// Prints one JSON line per step and exits 0 only when every step held.
import { randomUUID } from "node:crypto";
import { io, type Socket } from "socket.io-client";
import { client } from "./build/generated/api/client.gen.js";
import {
  listDrops,
  listPurchases,
  purchaseReservation,
  reserveDrop,
  signup,
} from "./build/generated/api/sdk.gen.js";
import type {
  ClientToServerEvents,
  ServerToClientEvents,
  Snapshot,
  SocketIoAuth,
  StockUpdate,
  SubscribeAck,
} from "./build/generated/events.js";

const [baseUrl, dropName] = process.argv.slice(2);

function say(step: string, detail: unknown): void {
  console.log(JSON.stringify({ step, detail }));
}

function fail(step: string, detail: unknown): never {
  console.log(JSON.stringify({ step, failed: true, detail }));
  process.exit(1);
}

/** The data of a generated call, or the end of the scenario with its error. */
function must<T>(step: string, result: { data?: T; error?: unknown; response?: Response }): T {
  if (result.data === undefined) {
    fail(step, { status: result.response?.status, error: result.error });
  }
  return result.data;
}

function within<T>(ms: number, step: string, wait: Promise<T>): Promise<T> {
  return Promise.race([
    wait,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${step}: no answer in ${ms} ms`)), ms)),
  ]);
}

async function main(): Promise<void> {
  let token = "";
  client.setConfig({ baseUrl, auth: () => token });

  const email = `frontend-${randomUUID()}@example.com`;
  const account = must(
    "signup",
    await signup({ body: { email, password: "correct horse battery", displayName: "Frontend" } }),
  );
  token = account.accessToken;
  say("signup", { userId: account.user.id });

  const drops = must("listDrops", await listDrops());
  const drop = drops.find((d) => d.name === dropName) ?? fail("listDrops", { missing: dropName });
  say("listDrops", { dropId: drop.id, availableStock: drop.availableStock, version: drop.version });

  const auth: SocketIoAuth = { token };
  const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(baseUrl, {
    auth,
    transports: ["websocket"],
    reconnection: false,
  });
  const updates: StockUpdate[] = [];
  socket.on("stock_update", (update) => {
    if (update.dropId === drop.id) updates.push(update);
  });
  const snapshot = await within(
    10_000,
    "snapshot",
    new Promise<Snapshot>((resolve, reject) => {
      socket.once("snapshot", resolve);
      socket.once("connect_error", reject);
    }),
  );
  const seen = snapshot.drops.find((d) => d.dropId === drop.id) ?? fail("snapshot", snapshot);
  say("snapshot", seen);
  const ack = await within(
    10_000,
    "subscribe",
    new Promise<SubscribeAck>((resolve) => socket.emit("subscribe", { drops: [drop.id] }, resolve)),
  );
  if ("error" in ack || JSON.stringify(ack.drops) !== JSON.stringify([drop.id])) {
    fail("subscribe", ack);
  }
  say("subscribe", ack);

  const hold = must("reserveDrop", await reserveDrop({ path: { dropId: drop.id } }));
  say("reserveDrop", { reservationId: hold.id, expiresAt: hold.expiresAt });

  const update = await within(
    10_000,
    "stock_update",
    new Promise<StockUpdate>((resolve) => {
      const check = () => {
        const found = updates.find((u) => u.version > seen.version);
        if (found) resolve(found);
        else setTimeout(check, 20);
      };
      check();
    }),
  );
  if (update.availableStock !== seen.availableStock - 1) fail("stock_update", { seen, update });
  say("stock_update", update);

  const key = randomUUID();
  const bought = must(
    "purchaseReservation",
    await purchaseReservation({ path: { reserveId: hold.id }, headers: { "Idempotency-Key": key } }),
  );
  const again = must(
    "purchaseReservation (retry)",
    await purchaseReservation({ path: { reserveId: hold.id }, headers: { "Idempotency-Key": key } }),
  );
  if (again.id !== bought.id) fail("purchaseReservation (retry)", { bought, again });
  say("purchaseReservation", { purchaseId: bought.id, retriedId: again.id, amountCents: bought.amountCents });

  const purchases = must("listPurchases", await listPurchases());
  const mine = purchases.filter((p) => p.reservationId === hold.id);
  if (mine.length !== 1 || mine[0].id !== bought.id) fail("listPurchases", purchases);
  say("listPurchases", { purchases: purchases.length });

  socket.disconnect();
  console.log(
    JSON.stringify({
      step: "done",
      detail: { email, dropId: drop.id, reservationId: hold.id, purchaseId: bought.id, version: update.version },
    }),
  );
}

main().catch((error: unknown) => fail("scenario", String(error)));
