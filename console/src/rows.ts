// What a list row shows of an event: small, so tens of thousands stay cheap; the whole record
// is fetched with GetEvent when a row is opened.
import { isMessage, toJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { IngestSource, Outcome, Severity, type Event } from "./gen/okta/events/v1/events_pb.js";

/** One changed attribute; `old`/`new` are JSON text when the record carries the values. */
export interface Change {
  attribute: string;
  old?: string;
  new?: string;
}

export interface Row {
  cursor: bigint;
  uuid: string;
  /** Okta's time (`published`), ms since the epoch, or NaN. */
  time: number;
  /** When okta-stream stored it, ms since the epoch (for the per-minute chart). */
  received: number;
  type: string;
  message: string;
  actor: string;
  user: string;
  changes: Change[];
  result: string;
  severity: string;
  source: string;
}

const ms = (t: Timestamp | undefined) => (t ? timestampDate(t).getTime() : NaN);

function enumWord(kind: Record<number, string>, value: number, raw: string): string {
  const name = kind[value];
  if (value === 0 || name === undefined) return raw ? raw.toUpperCase() : "";
  return name;
}

/** A `google.protobuf.Value` (a message, or already plain JSON) as compact JSON text. */
function jsonText(value: unknown): string | undefined {
  if (value === undefined || value === null) return value === null ? "null" : undefined;
  if (isMessage(value, ValueSchema)) return JSON.stringify(toJson(ValueSchema, value));
  return JSON.stringify(value);
}

/** The changes of `event`: old → new values from `profileChanges` (when the server sends them),
 * then the other names of `changedAttributes`. */
export function changesOf(event: Event): Change[] {
  const changes: Change[] = [];
  const withValues = (event as unknown as { profileChanges?: unknown[] }).profileChanges ?? [];
  for (const item of withValues) {
    const c = item as { attribute?: string; oldValue?: unknown; newValue?: unknown };
    if (!c.attribute) continue;
    changes.push({ attribute: c.attribute, old: jsonText(c.oldValue) ?? "∅", new: jsonText(c.newValue) ?? "∅" });
  }
  for (const attribute of event.changedAttributes) {
    if (!changes.some((c) => c.attribute.toLowerCase() === attribute.toLowerCase())) changes.push({ attribute });
  }
  return changes;
}

const who = (p: { alternateId: string; displayName: string; id: string } | undefined) =>
  p ? p.alternateId || p.displayName || p.id : "";

export function rowOf(event: Event): Row {
  const target = event.targets?.find((t) => t.alternateId || t.displayName);
  return {
    cursor: event.cursor,
    uuid: event.uuid,
    time: ms(event.published),
    received: ms(event.received) || Date.now(),
    type: event.eventType,
    message: event.message,
    actor: who(event.actor),
    user: who(event.oktaUser) || (target ? target.alternateId || target.displayName : ""),
    changes: changesOf(event),
    result: enumWord(Outcome, event.result, event.resultRaw),
    severity: enumWord(Severity, event.severity, event.severityRaw),
    source: enumWord(IngestSource, event.ingestSource, ""),
  };
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0");

/** `2026-11-22` and `18:07:13.125` in UTC, as Okta shows its times. */
export function utcParts(time: number): [string, string] {
  if (isNaN(time)) return ["", "—"];
  const d = new Date(time);
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const clock = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
  return [date, clock];
}
