// What a list row shows of an event: small, so tens of thousands stay cheap; the whole record
// is fetched with GetEvent when a row is opened.
import { isMessage, toJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { IngestSource, Outcome, ProfileValuesStatus, Severity, type Event } from "./gen/okta/events/v1/events_pb.js";

/** One changed attribute; `old`/`new` are the values as text when the record carries them
 * (`∅`: no earlier value known). */
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
  /** How far the values can be trusted (`COMPLETE`, `NO_BASELINE`, ...), "" without values. */
  values: string;
  /** What the values status rests on: the reason they are missing, or the profile's time. */
  valuesNote: string;
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

/** A `google.protobuf.Value` (a message, or already plain JSON) as a reader writes it, as
 * `okta-stream tail` does: a non-empty string bare (`Manager`), anything else as compact JSON
 * (`null`, `""`, `["a","b"]`); `∅` when absent (no earlier value known). */
export function valueText(value: unknown): string {
  if (value === undefined) return "∅";
  const json = isMessage(value, ValueSchema) ? toJson(ValueSchema, value) : value;
  if (typeof json === "string" && json.trim() !== "") return json;
  return JSON.stringify(json);
}

/** The changes of `event`: old → new values from `profileChanges` (when the server sends them),
 * then the other names of `changedAttributes`. */
export function changesOf(event: Event): Change[] {
  const changes: Change[] = [];
  for (const c of event.profileChanges) {
    if (!c.attribute) continue;
    changes.push({ attribute: c.attribute, old: valueText(c.oldValue), new: valueText(c.newValue) });
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
    values: enumWord(ProfileValuesStatus, event.profileValuesStatus, ""),
    valuesNote: event.profileValuesReason || (event.profileAsOf ? `profile as of ${timestampDate(event.profileAsOf).toISOString()}` : ""),
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
