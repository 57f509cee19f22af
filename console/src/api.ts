// The EventStream client over gRPC-Web, same origin as the page, and the session's token.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventStream } from "./gen/okta/events/v1/events_pb.js";

const TOKEN_KEY = "okta-stream.token";

/** The API of the server that served this page. */
export const api: Client<typeof EventStream> = createClient(
  EventStream,
  createGrpcWebTransport({ baseUrl: location.origin }),
);

/** The bearer token of this browser session (sessionStorage only: gone with the tab). */
export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  const trimmed = value.trim();
  if (trimmed) sessionStorage.setItem(TOKEN_KEY, trimmed);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Headers and abort signal of one call. */
export function callOptions(signal?: AbortSignal) {
  const t = token();
  return { headers: t ? { authorization: `Bearer ${t}` } : ({} as Record<string, string>), signal };
}

/** Statuses after which retrying the same call cannot help. */
export const FINAL = new Set<Code>([
  Code.InvalidArgument,
  Code.OutOfRange,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.Unimplemented,
]);

/** A status as people read it: `PERMISSION_DENIED: message`. */
export function describe(error: unknown): { code: Code; text: string } {
  const e = ConnectError.from(error);
  const name = Code[e.code]
    .replace(/([a-z])([A-Z])/g, "$1_$2")
    .toUpperCase();
  return { code: e.code, text: `${name}: ${e.rawMessage || "no details"}` };
}

export { Code };
