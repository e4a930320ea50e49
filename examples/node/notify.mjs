// floodgate from Node: register a customer system, submit a notification, wait until it is
// delivered, and verify the webhook's signature as the customer system would.
//
// The program plays both sides. It is the service that submits (with @grpc/grpc-js, the service
// definitions loaded from proto/ at start-up by @grpc/proto-loader), and it is the customer
// system that receives the webhook: a small node:http server on a local port, registered as the
// customer's webhook_url, that checks every request with the `standardwebhooks` package and the
// signing secret floodgate generated for the customer.
//
//   node examples/node/notify.mjs --server 127.0.0.1:50051 --token "$(cat floodgate-data/admin-token)"
//
// The token must be the admin token: registering a customer (Customers.UpsertCustomer) needs it.
// The server must be allowed to reach the local receiver: start it with
// `--allow-target-cidr 127.0.0.0/8`. Exit status 0 means delivered and verified.

import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Webhook } from "standardwebhooks";

// proto/ at the root of the repository, two levels above this file.
const PROTO_ROOT = fileURLToPath(new URL("../../proto", import.meta.url));
const FINAL = new Set([
  "STATE_DELIVERED",
  "STATE_FAILED",
  "STATE_SUPPRESSED",
  "STATE_EXPIRED",
  "STATE_CANCELLED",
]);

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: process.env.FLOODGATE_ADDR ?? "127.0.0.1:50051" },
    token: { type: "string", default: process.env.FLOODGATE_TOKEN },
    customer: { type: "string", default: "example-node" },
    recipient: { type: "string", default: "user-42" },
    port: { type: "string", default: "0" },
    timeout: { type: "string", default: "30" },
  },
});

function fail(message) {
  console.error(message);
  process.exit(1);
}

/** Calls a unary method of a grpc-js client as a promise. */
function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10_000);
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/**
 * The customer system's webhook endpoint. It answers 204 only to a request whose signature
 * verifies, as a real receiver must; an unsigned or forged request gets 401. Each request's
 * verdict is pushed to `results`.
 */
function startReceiver(port, results) {
  const receiver = { webhook: null };
  const server = createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const id = request.headers["webhook-id"] ?? "";
      try {
        const event = receiver.webhook.verify(body, request.headers);
        response.writeHead(204).end();
        results.push({ verdict: "verified", id, event });
      } catch (error) {
        response.writeHead(401).end();
        results.push({ verdict: "rejected", id, reason: String(error.message ?? error) });
      }
    });
  });
  server.listen(port, "127.0.0.1");
  receiver.server = server;
  return receiver;
}

async function main() {
  if (!args.token) fail("give the admin token with --token or FLOODGATE_TOKEN");
  const address = args.server.replace(/^http:\/\//, "");

  // keepCase: the field names of the .proto; enums as their names; the well-known types
  // (Timestamp, Struct) come with protobufjs.
  const definition = protoLoader.loadSync("floodgate/v1/floodgate.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const v1 = grpc.loadPackageDefinition(definition).floodgate.v1;
  const credentials = grpc.credentials.createInsecure();
  const customers = new v1.Customers(address, credentials);
  const dispatcher = new v1.Dispatcher(address, credentials);
  const auth = new grpc.Metadata();
  auth.set("authorization", `Bearer ${args.token}`);

  // 1. The customer system's webhook endpoint, on a local port.
  const results = [];
  const receiver = startReceiver(Number(args.port), results);
  await once(receiver.server, "listening");
  const webhookUrl = `http://127.0.0.1:${receiver.server.address().port}/webhook`;

  // 2. Register the customer system. An empty signing_secret keeps the stored one or generates
  //    one. floodgate shows a secret only in the answer that made it: a new customer's answer
  //    carries it, and the receiver verifies with it.
  const customer = await call(
    customers,
    "UpsertCustomer",
    { customer: { id: args.customer, webhook_url: webhookUrl } },
    auth,
  );
  let secret = customer.signing_secret;
  if (!secret) {
    // Registered by an earlier run, whose secret this run never saw: rotate to a new one (a real
    // customer system keeps the secret it was given instead).
    const rotated = await call(
      customers,
      "RotateSigningSecret",
      { customer_id: args.customer, overlap_seconds: 60 },
      auth,
    );
    secret = rotated.signing_secret;
  }
  receiver.webhook = new Webhook(secret);
  console.log(`customer ${customer.id} -> ${customer.webhook_url}`);

  // 3. Submit. The idempotency key would come from your own data (an order id); a retry of
  //    this call with the same key can never send twice.
  const accepted = await call(
    dispatcher,
    "Submit",
    {
      customer_id: args.customer,
      idempotency_key: `example-${randomUUID()}`,
      recipient: args.recipient,
      lane: "LANE_TRANSACTIONAL",
      payload: Buffer.from(JSON.stringify({ text: "Your order has shipped" })),
    },
    auth,
  );
  const id = accepted.notification_id;
  console.log(`submitted ${id}`);

  // 4. Poll its state until it is final.
  const deadline = Date.now() + Number(args.timeout) * 1000;
  let notification;
  for (;;) {
    notification = await call(dispatcher, "GetNotification", { notification_id: id }, auth);
    if (FINAL.has(notification.state)) break;
    if (Date.now() > deadline) fail(`${id} is still ${notification.state}`);
    await sleep(200);
  }

  // 5. What the receiver saw. It answers 2xx only to a request that verified, so DELIVERED
  //    means this very webhook was checked; anything else is reported here.
  const waitUntil = Date.now() + 5000;
  while (results.length === 0 && Date.now() < waitUntil) await sleep(50);
  receiver.server.close();
  customers.close();
  dispatcher.close();
  const seen = results[0];
  if (seen?.verdict === "rejected") fail(`webhook ${seen.id}: signature rejected: ${seen.reason}`);
  if (notification.state !== "STATE_DELIVERED") {
    fail(`${id} ended ${notification.state}: ${notification.last_error}`);
  }
  console.log(`delivered ${id} after ${notification.attempts} attempt(s)`);
  if (!seen) fail("the receiver saw no webhook");
  if (seen.id !== id || seen.event.id !== id) fail(`the receiver got webhook ${seen.id}, not ${id}`);
  console.log(`signature verified for ${seen.id}: payload ${JSON.stringify(seen.event.payload)}`);
}

main().catch((error) => {
  // A gRPC error carries its status name and the server's message.
  if (error.code !== undefined && error.details !== undefined) {
    fail(`floodgate answered ${grpc.status[error.code]}: ${error.details}`);
  }
  fail(error.stack ?? String(error));
});
