// Subscribes to okta-stream over gRPC-Web and prints each matching event as one JSON line.
//
// It remembers the cursor of the last event printed; when the stream drops (server restart,
// network) it reconnects with backoff and resumes `after` that cursor, so nothing is missed
// and nothing repeats. Node 20+ (its fetch streams the gRPC-Web response); browsers work the
// same way if the server allows their origin (OKTA_STREAM_GRPC_WEB_CORS_ORIGINS).
//
//   node dist/example.js --url http://127.0.0.1:50051 --event-type user.account. --from-oldest

import { parseArgs } from "node:util";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventSchema, EventStream } from "./gen/okta/events/v1/events_pb.js";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: process.env.OKTA_STREAM_GRPC_URL ?? "http://127.0.0.1:50051" },
    token: { type: "string", default: process.env.OKTA_STREAM_GRPC_TOKEN },
    "event-type": { type: "string", multiple: true, default: [] },
    user: { type: "string", multiple: true, default: [] },
    after: { type: "string" },
    "from-oldest": { type: "boolean", default: false },
    "max-events": { type: "string" },
  },
});

// Statuses after which reconnecting cannot help.
const FINAL = new Set([Code.InvalidArgument, Code.OutOfRange, Code.Unauthenticated, Code.PermissionDenied]);

const transport = createGrpcWebTransport({ baseUrl: values.url! });
const client = createClient(EventStream, transport);
const headers: Record<string, string> = values.token ? { authorization: `Bearer ${values.token}` } : {};
const maxEvents = values["max-events"] === undefined ? Infinity : Number(values["max-events"]);

let last: bigint | undefined = values.after === undefined ? undefined : BigInt(values.after);
let printed = 0;
let backoffMs = 200;

function start() {
  if (last !== undefined) return { case: "after" as const, value: last };
  if (values["from-oldest"]) return { case: "fromOldest" as const, value: true };
  return { case: undefined };
}

async function main(): Promise<number> {
  for (;;) {
    try {
      const stream = client.subscribe(
        { eventTypes: values["event-type"], oktaUsers: values.user, start: start() },
        { headers },
      );
      for await (const message of stream) {
        backoffMs = 200;
        if (message.kind.case !== "event") continue; // heartbeat
        const event = message.kind.value;
        console.log(toJsonString(EventSchema, event));
        last = event.cursor;
        printed += 1;
        if (printed >= maxEvents) return 0;
      }
      console.error("okta-stream: the server ended the stream; reconnecting");
    } catch (error) {
      const err = ConnectError.from(error);
      if (FINAL.has(err.code)) {
        console.error(`okta-stream: ${Code[err.code]}: ${err.rawMessage}`);
        return 1;
      }
      console.error(`okta-stream: ${err.message}; reconnecting in ${backoffMs} ms after cursor ${last ?? "-"}`);
    }
    await new Promise((resolve) => setTimeout(resolve, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 10_000);
  }
}

process.exitCode = await main();
