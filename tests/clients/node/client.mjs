// Clarion from Node, as a customer's service would use it: create a user and a template and send a notification,
// over gRPC straight to the services, over gRPC through Envoy, and over REST through Envoy with fetch.
//
//   CLARION_API_KEY=clr_... node client.mjs <grpc host:port> <envoy host:port>
//
// The key comes from the environment, not the command line, where any user of the machine could read it.
// Prints one JSON object per line (what each step got back) and exits 0, or prints the error and exits 1.
import { randomUUID } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
// protos/ is the contract; third_party/googleapis holds google/api and google/rpc (`make googleapis` copies them).
// protobufjs ships google/protobuf/* itself.
const INCLUDE_DIRS = [join(ROOT, "protos"), join(ROOT, "third_party", "googleapis")];

function loadServices() {
  const definition = protoLoader.loadSync(
    ["clarion/v1/users.proto", "clarion/v1/templates.proto", "clarion/v1/notifications.proto"],
    // keepCase: field names as in the protos (user_id), as the REST API spells them too.
    { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: INCLUDE_DIRS },
  );
  return grpc.loadPackageDefinition(definition).clarion.v1;
}

// Adds `authorization: Bearer <key>` to every call on a client.
function bearer(apiKey) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${apiKey}`);
        next(metadata, listener);
      },
    });
}

function unary(client, method, request) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

// A protobuf Struct, as proto-loader wants it with keepCase. The well-known types come from protobufjs's own
// definitions, whose Value fields are camelCase whatever keepCase says: `{ string_value: ... }` is dropped without a
// word and arrives as a Value with no kind, which Clarion refuses (NULL_TEMPLATE_VARIABLES) rather than send blanks.
function struct(values) {
  return { fields: Object.fromEntries(Object.entries(values).map(([k, v]) => [k, { stringValue: String(v) }])) };
}

async function overGrpc(v1, via, address, apiKey) {
  const credentials = grpc.credentials.createInsecure();
  const options = { interceptors: [bearer(apiKey)] };
  const users = new v1.UserService(address, credentials, options);
  const templates = new v1.TemplateService(address, credentials, options);
  const notifications = new v1.NotificationService(address, credentials, options);
  const suffix = randomUUID().slice(0, 8);
  try {
    const user = await unary(users, "CreateUser", {
      user: { email_address: `node-${via}-${suffix}@example.com`, preferred_language: "en" },
    });
    const template = await unary(templates, "CreateTemplate", {
      template: { template_key: `NODE_${via.toUpperCase().replace("-", "_")}_${suffix}`, subject: "Hi {name}", body: "Hello {name}, from Node" },
    });
    const sent = await unary(notifications, "SendNotification", {
      user_id: user.user_id,
      template_key: template.template_key,
      message_data: struct({ name: "Ada" }),
      request_id: `node-${suffix}`,
    });
    emit({
      via,
      user_id: user.user_id,
      template_key: template.template_key,
      template_version: template.version,
      notification_id: sent.notification.notification_id,
      status: sent.notification.status,
    });

    // The same client without a key is turned away, with the reason in the status details.
    const anonymous = new v1.UserService(address, credentials);
    try {
      await unary(anonymous, "GetUser", { user_id: user.user_id });
      throw new Error(`${via}: GetUser without a key succeeded`);
    } catch (error) {
      if (error.code === undefined) throw error;
      emit({ via, without_key: grpc.status[error.code] });
    } finally {
      anonymous.close();
    }
  } finally {
    users.close();
    templates.close();
    notifications.close();
  }
}

async function rest(base, method, path, apiKey, body, headers = {}) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const json = await response.json();
  if (apiKey && !response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${JSON.stringify(json)}`);
  return { status: response.status, json };
}

async function overRest(envoy, apiKey) {
  const base = `http://${envoy}`;
  const suffix = randomUUID().slice(0, 8);
  const user = await rest(base, "POST", "/v1/users", apiKey, { email_address: `node-rest-${suffix}@example.com` });
  const template = await rest(base, "POST", "/v1/templates", apiKey, {
    template_key: `NODE_REST_${suffix}`,
    subject: "Your Weekly {app_name} Digest: {new_updates} new items!",
    body: "Check out your latest activity. See summary: {digest_link}",
  });
  const send = { user_id: user.json.user_id, template_key: template.json.template_key,
    message_data: { app_name: "MyApp", new_updates: "10", digest_link: "https://example.com/digest" } };
  const idempotency = { "x-idempotency-key": `node-rest-${suffix}` };
  const sent = await rest(base, "POST", "/v1/notifications", apiKey, send, idempotency);
  const replayed = await rest(base, "POST", "/v1/notifications", apiKey, send, idempotency);
  emit({
    via: "rest-envoy",
    user_id: user.json.user_id,
    template_key: template.json.template_key,
    notification_id: sent.json.notification.notification_id,
    status: sent.json.notification.status,
    replayed_id: replayed.json.notification.notification_id,
    replayed: replayed.json.replayed,
  });
  const refused = await rest(base, "GET", `/v1/users/${user.json.user_id}`, undefined);
  emit({ via: "rest-envoy", without_key: refused.status, reason: refused.json.details[0].reason });
}

async function main() {
  const [grpcAddress, envoyAddress] = process.argv.slice(2);
  const apiKey = process.env.CLARION_API_KEY;
  if (!grpcAddress || !envoyAddress || !apiKey) {
    process.stderr.write("usage: CLARION_API_KEY=clr_... node client.mjs <grpc host:port> <envoy host:port>\n");
    process.exit(2);
  }
  const v1 = loadServices();
  await overGrpc(v1, "grpc-direct", grpcAddress, apiKey);
  await overGrpc(v1, "grpc-envoy", envoyAddress, apiKey);
  await overRest(envoyAddress, apiKey);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
