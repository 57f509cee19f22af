#!/usr/bin/env python3
"""Subscribe to okta-stream and print each matching event as one JSON line.

The example remembers the cursor of the last event it printed. When the stream drops (server
restart, network), it reconnects with backoff and resumes `after` that cursor, so it misses
nothing and repeats nothing. Run ./generate.sh first.

    python3 example.py --target 127.0.0.1:50051 --event-type user.account. --from-oldest
    python3 example.py --after 41          # everything after cursor 41, then live
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Statuses after which reconnecting cannot help: the request itself is refused.
FINAL = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "UNAUTHENTICATED", "PERMISSION_DENIED"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=os.environ.get("OKTA_STREAM_GRPC_TARGET", "127.0.0.1:50051"),
                        help="host:port of okta-stream's gRPC port [env OKTA_STREAM_GRPC_TARGET]")
    parser.add_argument("--token", default=os.environ.get("OKTA_STREAM_GRPC_TOKEN"),
                        help="bearer token, if the server requires one [env OKTA_STREAM_GRPC_TOKEN]")
    parser.add_argument("--event-type", action="append", default=[], help="event type or prefix ending in '.'")
    parser.add_argument("--user", action="append", default=[], help="Okta user id or login")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--after", type=int, help="replay after this cursor, then follow live")
    start.add_argument("--from-oldest", action="store_true", help="replay from the oldest retained event")
    parser.add_argument("--max-events", type=int, help="exit after printing this many events")
    parser.add_argument("--until-caught-up", action="store_true",
                        help="exit at the first heartbeat: every matching event up to the head was printed")
    parser.add_argument("--stubs", default=os.path.join(HERE, "okta_stream_client"),
                        help="directory ./generate.sh wrote the stubs to")
    return parser.parse_args()


def main():
    args = parse_args()
    sys.path.insert(0, args.stubs)
    import grpc
    from google.protobuf.json_format import MessageToJson
    from okta.events.v1 import events_pb2, events_pb2_grpc

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    last = args.after  # resume point: the cursor of the last event printed
    printed = 0
    backoff = 0.2
    while True:
        request = events_pb2.EventFilter(event_types=args.event_type, okta_users=args.user)
        if last is not None:
            request.after = last
        elif args.from_oldest:
            request.from_oldest = True
        try:
            with grpc.insecure_channel(args.target) as channel:
                stub = events_pb2_grpc.EventStreamStub(channel)
                for response in stub.Subscribe(request, metadata=metadata):
                    backoff = 0.2
                    if response.WhichOneof("kind") == "heartbeat":
                        if args.until_caught_up:
                            return 0
                        continue
                    event = response.event
                    print(MessageToJson(event, indent=None), flush=True)
                    last = event.cursor
                    printed += 1
                    if args.max_events is not None and printed >= args.max_events:
                        return 0
            print("okta-stream: the server ended the stream; reconnecting", file=sys.stderr)
        except grpc.RpcError as error:
            code = error.code().name
            if code in FINAL:
                print(f"okta-stream: {code}: {error.details()}", file=sys.stderr)
                return 1
            print(f"okta-stream: {code}: {error.details()}; reconnecting in {backoff:.1f} s "
                  f"after cursor {last}", file=sys.stderr)
        time.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


if __name__ == "__main__":
    sys.exit(main())
