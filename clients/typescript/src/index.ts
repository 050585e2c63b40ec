// Clarion's TypeScript client: the clients and messages ts-proto generates from protos/ (into src/gen/, by
// `buf generate --template clients/typescript/buf.gen.yaml`), plus what every caller needs around them: an API key on
// each call, a promise per unary call, and the field violations of an INVALID_ARGUMENT.
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientOptions,
  type ClientUnaryCall,
  type Interceptor,
  InterceptingCall,
  Metadata,
  type ServiceError,
  credentials,
} from "@grpc/grpc-js";

import { AccessServiceClient } from "./gen/clarion/v1/access";
import { InboxServiceClient } from "./gen/clarion/v1/inbox";
import { NotificationServiceClient } from "./gen/clarion/v1/notifications";
import { SuppressionServiceClient } from "./gen/clarion/v1/suppressions";
import { TemplateServiceClient } from "./gen/clarion/v1/templates";
import { UserServiceClient } from "./gen/clarion/v1/users";
import { BadRequest, type BadRequest_FieldViolation } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

// Namespaces, because every generated module exports its own `protobufPackage`, `DeepPartial` and `MessageFns`.
export * as access from "./gen/clarion/v1/access";
export * as common from "./gen/clarion/v1/common";
export * as inbox from "./gen/clarion/v1/inbox";
export * as notifications from "./gen/clarion/v1/notifications";
export * as suppressions from "./gen/clarion/v1/suppressions";
export * as templates from "./gen/clarion/v1/templates";
export * as users from "./gen/clarion/v1/users";
export * as errorDetails from "./gen/google/rpc/error_details";
export {
  AccessServiceClient,
  InboxServiceClient,
  NotificationServiceClient,
  Status,
  SuppressionServiceClient,
  TemplateServiceClient,
  UserServiceClient,
};

/** The services on one channel. */
export interface ClarionClients {
  users: UserServiceClient;
  templates: TemplateServiceClient;
  notifications: NotificationServiceClient;
  /** What the key may do (GetCaller). */
  access: AccessServiceClient;
  /** Users' in-app inboxes; with a user token (CreateUserToken) as `apiKey`, that user's inbox only. */
  inbox: InboxServiceClient;
  /** The project's suppressed addresses. */
  suppressions: SuppressionServiceClient;
  /** Closes the channel they share. */
  close(): void;
}

export interface ConnectOptions {
  /** Sent as `authorization: Bearer <key>` on every call; without it Clarion answers UNAUTHENTICATED. */
  apiKey?: string;
  /** Defaults to plaintext, as `clarion up` serves on loopback. */
  channelCredentials?: ChannelCredentials;
  clientOptions?: Partial<ClientOptions>;
}

/**
 * Adds `authorization: Bearer <key>` to every call. An interceptor rather than grpc-js CallCredentials because
 * grpc-js refuses to combine call credentials with insecure channel credentials, and a local Clarion is plaintext.
 */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${apiKey}`);
        next(metadata, listener);
      },
    });
}

/** Clients for Clarion at `address` (host:port of the services, or of Envoy, which serves gRPC too). */
export function createClients(address: string, options: ConnectOptions = {}): ClarionClients {
  const channelCredentials = options.channelCredentials ?? credentials.createInsecure();
  const interceptors = [...(options.clientOptions?.interceptors ?? [])];
  if (options.apiKey !== undefined) interceptors.push(apiKeyInterceptor(options.apiKey));
  const clientOptions = { ...options.clientOptions, interceptors };
  const users = new UserServiceClient(address, channelCredentials, clientOptions);
  const shared = { ...clientOptions, channelOverride: users.getChannel() };
  return {
    users,
    templates: new TemplateServiceClient(address, channelCredentials, shared),
    notifications: new NotificationServiceClient(address, channelCredentials, shared),
    access: new AccessServiceClient(address, channelCredentials, shared),
    inbox: new InboxServiceClient(address, channelCredentials, shared),
    suppressions: new SuppressionServiceClient(address, channelCredentials, shared),
    close: () => users.close(),
  };
}

/** A generated unary method in its fullest form, which `unary` calls; pass it bound to its client. */
export type UnaryMethod<Request, Response> = (
  request: Request,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Response) => void,
) => ClientUnaryCall;

export interface CallSettings {
  metadata?: Metadata;
  /** gRPC has no default deadline: every call gets one. */
  timeoutMs?: number;
}

/** Calls a unary method and resolves with its response, or rejects with its ServiceError. */
export function unary<Request, Response>(
  method: UnaryMethod<Request, Response>,
  request: Request,
  { metadata = new Metadata(), timeoutMs = 10_000 }: CallSettings = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    method(request, metadata, { deadline: Date.now() + timeoutMs }, (error, response) =>
      error === null ? resolve(response) : reject(error),
    );
  });
}

/** Whether a thrown value is a grpc-js call error (a status code and trailers) rather than a bug. */
export function isServiceError(value: unknown): value is ServiceError {
  return value instanceof Error && "code" in value && "metadata" in value && value.metadata instanceof Metadata;
}

/** The `google.rpc.Status` Clarion put in the error's `grpc-status-details-bin` trailer, if any. */
export function errorStatus(error: ServiceError): Status | undefined {
  const [encoded] = error.metadata.get("grpc-status-details-bin");
  return encoded instanceof Buffer ? Status.decode(encoded) : undefined;
}

const BAD_REQUEST_TYPE_URL = "type.googleapis.com/google.rpc.BadRequest";

/** The fields an INVALID_ARGUMENT names (`user.email_address`, ...), from its BadRequest details. */
export function fieldViolations(error: ServiceError): BadRequest_FieldViolation[] {
  const details = errorStatus(error)?.details ?? [];
  return details
    .filter((detail) => detail.typeUrl === BAD_REQUEST_TYPE_URL)
    .flatMap((detail) => BadRequest.decode(detail.value).fieldViolations);
}
