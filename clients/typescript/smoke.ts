// The TypeScript client against a running Clarion, over gRPC straight to the services and over gRPC through Envoy:
// the README's seed flow (a user, a template with an email block, a notification sent twice under one idempotency
// key, read back), then an INVALID_ARGUMENT with its field violation, and UNAUTHENTICATED without a key.
//
//   CLARION_API_KEY=clr_... node dist/smoke.js <grpc host:port> <envoy host:port>
//
// The key comes from the environment, not the command line, where any user of the machine could read it.
// Prints one JSON object per line and exits 0, or prints the error and exits 1.
import { randomUUID } from "node:crypto";

import { Metadata, type ServiceError, status as grpcStatus } from "@grpc/grpc-js";

import {
  type ClarionClients,
  createClients,
  fieldViolations,
  isServiceError,
  notifications,
  unary,
  users,
  templates,
} from "./src/index";

function emit(record: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(record) + "\n");
}

/** Runs a call that must fail, and returns its error. */
async function refusal(via: string, what: string, call: () => Promise<unknown>): Promise<ServiceError> {
  try {
    await call();
  } catch (error) {
    if (isServiceError(error)) return error;
    throw error;
  }
  throw new Error(`${via}: ${what} succeeded`);
}

async function seedFlow(via: string, clients: ClarionClients): Promise<void> {
  const suffix = randomUUID().slice(0, 8);
  const user = await unary(
    clients.users.createUser.bind(clients.users),
    users.CreateUserRequest.fromPartial({
      user: {
        emailAddress: `ts-${via}-${suffix}@example.com`,
        phoneNumber: "+1234567890",
        preferredLanguage: "en-US",
        preferences: { emailEnabled: true, pushEnabled: true, quietHoursStart: "22:00", quietHoursEnd: "08:00" },
      },
    }),
  );
  const template = await unary(
    clients.templates.createTemplate.bind(clients.templates),
    templates.CreateTemplateRequest.fromPartial({
      template: {
        templateKey: `TS_${via.toUpperCase().replace("-", "_")}_${suffix}`,
        subject: "Your Weekly {app_name} Digest: {new_updates} new items!",
        body: "Check out your latest activity. See summary: {digest_link}",
        htmlBody: '<h3>Weekly Summary</h3><p>You have {new_updates} new items. <a href="{digest_link}">View Digest</a></p>',
      },
    }),
  );

  // ts-proto turns this plain object into a google.protobuf.Struct, each string a Value with string_value set.
  const send = notifications.SendNotificationRequest.fromPartial({
    userId: user.userId,
    templateKey: template.templateKey,
    messageData: { app_name: "MyApp", new_updates: "10", digest_link: "https://example.com/digest" },
    priority: notifications.Priority.PRIORITY_CRITICAL, // the seed user's quiet hours would hold a normal one
  });
  const metadata = new Metadata();
  metadata.set("x-idempotency-key", `ts-${via}-${suffix}`);
  const sendNotification = clients.notifications.sendNotification.bind(clients.notifications);
  const sent = await unary(sendNotification, send, { metadata });
  const replayed = await unary(sendNotification, send, { metadata });
  const notificationId = sent.notification?.notificationId ?? "";
  emit({
    via,
    step: "sent",
    user_id: user.userId,
    template_key: template.templateKey,
    notification_id: notificationId,
    status: notifications.notificationStatusToJSON(sent.notification?.status ?? 0),
    replayed: sent.replayed,
    replayed_id: replayed.notification?.notificationId,
    replayed_again: replayed.replayed,
  });

  const stored = await unary(
    clients.notifications.getNotification.bind(clients.notifications),
    notifications.GetNotificationRequest.fromPartial({ notificationId }),
  );
  emit({
    via,
    step: "read",
    notification_id: stored.notificationId,
    user_id: stored.userId,
    template_key: stored.templateKey,
    message_data: stored.messageData,
    status: notifications.notificationStatusToJSON(stored.status),
  });

  const invalid = await refusal(via, "CreateUser with a bad email address", () =>
    unary(
      clients.users.createUser.bind(clients.users),
      users.CreateUserRequest.fromPartial({ user: { emailAddress: "not-an-email" } }),
    ),
  );
  emit({
    via,
    step: "invalid",
    code: grpcStatus[invalid.code],
    fields: fieldViolations(invalid).map((violation) => violation.field),
  });
}

async function withoutKey(via: string, address: string): Promise<void> {
  const anonymous = createClients(address);
  try {
    const error = await refusal(via, "GetUser without a key", () =>
      unary(anonymous.users.getUser.bind(anonymous.users), users.GetUserRequest.fromPartial({ userId: "nobody" })),
    );
    emit({ via, step: "without_key", code: grpcStatus[error.code] });
  } finally {
    anonymous.close();
  }
}

async function main(): Promise<void> {
  const [grpcAddress, envoyAddress] = process.argv.slice(2);
  const apiKey = process.env.CLARION_API_KEY;
  if (grpcAddress === undefined || envoyAddress === undefined || !apiKey) {
    throw new Error("usage: CLARION_API_KEY=... node dist/smoke.js <grpc host:port> <envoy host:port>");
  }
  for (const [via, address] of [
    ["grpc-direct", grpcAddress],
    ["grpc-envoy", envoyAddress],
  ] as const) {
    const clients = createClients(address, { apiKey });
    try {
      await seedFlow(via, clients);
    } finally {
      clients.close();
    }
    await withoutKey(via, address);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
