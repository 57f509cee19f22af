// The filter bar's values, kept in the URL (so a view is a link) and turned into an EventFilter.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EventFilterSchema, IngestSource, Outcome, Severity, type EventFilter } from "./gen/okta/events/v1/events_pb.js";

export type StartKind = "live" | "since" | "after" | "oldest";

/** What the filter bar holds, as strings (the URL's query parameters). */
export interface FilterState {
  type: string;
  user: string;
  actor: string;
  attr: string;
  sev: string;
  result: string;
  source: string;
  start: StartKind;
  since: string;
  after: string;
}

export const FIELDS = ["type", "user", "actor", "attr", "sev", "result", "source", "start", "since", "after"] as const;

export function emptyFilter(): FilterState {
  return { type: "", user: "", actor: "", attr: "", sev: "", result: "", source: "", start: "live", since: "", after: "" };
}

/** The filter in `search` (location.search). */
export function fromQuery(search: string): FilterState {
  const params = new URLSearchParams(search);
  const state = emptyFilter();
  for (const field of FIELDS) {
    const value = params.get(field);
    if (value !== null) (state as unknown as Record<string, string>)[field] = value;
  }
  if (!["live", "since", "after", "oldest"].includes(state.start)) state.start = "live";
  return state;
}

/** The query string of `state`, without empty or default values. */
export function toQuery(state: FilterState): string {
  const params = new URLSearchParams();
  for (const field of FIELDS) {
    const value = state[field].trim();
    if (!value || (field === "start" && value === "live")) continue;
    if (field === "since" && state.start !== "since") continue;
    if (field === "after" && state.start !== "after") continue;
    params.set(field, value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

const list = (value: string) =>
  value
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v);

function enumValue<T extends Record<string, string | number>>(kind: T, word: string, field: string): number {
  const key = word.toUpperCase().replace(/[\s-]/g, "_");
  const value = kind[key as keyof T];
  if (typeof value !== "number" || value === 0) {
    const known = Object.keys(kind)
      .filter((k) => isNaN(Number(k)) && k !== "UNSPECIFIED")
      .map((k) => k.toLowerCase())
      .join(", ");
    throw new FilterError(field, `“${word}” is not one of ${known}`);
  }
  return value;
}

/** A filter value the server would refuse, named. */
export class FilterError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** The EventFilter of `state`; throws [`FilterError`] naming the field that is wrong. */
export function toEventFilter(state: FilterState): EventFilter {
  const filter = create(EventFilterSchema, {
    eventTypes: list(state.type),
    oktaUsers: list(state.user),
    actors: list(state.actor),
    changedAttributes: list(state.attr),
    minSeverity: state.sev ? enumValue(Severity, state.sev, "sev") : Severity.UNSPECIFIED,
    results: list(state.result).map((r) => enumValue(Outcome, r, "result") as Outcome),
    ingestSources: list(state.source).map((s) => enumValue(IngestSource, s, "source") as IngestSource),
  });
  switch (state.start) {
    case "since": {
      const date = new Date(state.since.trim());
      if (!state.since.trim() || isNaN(date.getTime())) {
        throw new FilterError("since", "give a time such as 2026-12-01T10:00:00Z");
      }
      filter.start = { case: "since", value: timestampFromDate(date) };
      break;
    }
    case "after": {
      if (!/^\d{1,20}$/.test(state.after.trim())) {
        throw new FilterError("after", "give a cursor: a whole number from an event's cursor");
      }
      filter.start = { case: "after", value: BigInt(state.after.trim()) };
      break;
    }
    case "oldest":
      filter.start = { case: "fromOldest", value: true };
      break;
    default:
      break;
  }
  return filter;
}
