// The okta-stream console: a live, filterable view of the event stream over gRPC-Web.
//
// Flow: the filter (from the URL) → a recent page (ListEvents, newest first) → Subscribe
// after its newest cursor, so the live tail joins the history with no gap. Every event is
// kept once (by cursor); after a dropped stream, a pause or a token change the console
// subscribes again `after` the last cursor it holds: no gap, no duplicate.
import { create, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { EventFilterSchema, EventSchema, type Event, type EventFilter } from "./gen/okta/events/v1/events_pb.js";
import { api, callOptions, Code, describe, FINAL, setToken, token } from "./api.js";
import { PerMinute } from "./chart.js";
import { FIELDS, FilterError, fromQuery, toEventFilter, toQuery, type FilterState } from "./filter.js";
import { rowOf, utcParts, type Row } from "./rows.js";
import { tree } from "./tree.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** Pixel height of one list row (the list is virtualised: only visible rows exist). */
const ROW_HEIGHT = 58;
/** Most rows held; beyond this the oldest are dropped (and "Load older" brings them back). */
const MAX_ROWS = 200_000;
/** Events loaded when a view opens, and per "Load older". */
const PAGE = 200;
const FIRST_BACKOFF = 250;
const MAX_BACKOFF = 5_000;

// ---------------------------------------------------------------- theme
const THEMES = ["auto", "light", "dark"] as const;
type Theme = (typeof THEMES)[number];
function applyTheme(theme: Theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $("theme").textContent = `Theme: ${theme}`;
  localStorage.setItem("okta-stream.theme", theme);
}
applyTheme((THEMES as readonly string[]).includes(localStorage.getItem("okta-stream.theme") ?? "") ? (localStorage.getItem("okta-stream.theme") as Theme) : "auto");
$("theme").addEventListener("click", () => {
  const current = (document.documentElement.dataset.theme as Theme | undefined) ?? "auto";
  applyTheme(THEMES[(THEMES.indexOf(current) + 1) % THEMES.length]);
});

// ---------------------------------------------------------------- toast
let toastTimer = 0;
function toast(text: string) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => (t.hidden = true), 2200);
}

// ---------------------------------------------------------------- rows and counters
let rows: Row[] = []; // newest first, by cursor
const seen = new Set<bigint>();
let perMinute = new PerMinute();
const counts = { failure: 0, hook: 0, poller: 0, reconnects: 0 };
let olderExhausted = false;

function resetRows() {
  rows = [];
  seen.clear();
  perMinute = new PerMinute();
  counts.failure = counts.hook = counts.poller = 0;
  olderExhausted = false;
}

function count(row: Row) {
  perMinute.add(row.received);
  if (["FAILURE", "DENY"].includes(row.result)) counts.failure++;
  if (row.source === "HOOK") counts.hook++;
  if (row.source === "POLLER") counts.poller++;
}

/** Adds events (any order) once each, keeping `rows` newest first. */
function addEvents(events: Event[], live: boolean) {
  const fresh: Row[] = [];
  for (const event of events) {
    if (seen.has(event.cursor)) continue;
    seen.add(event.cursor);
    const row = rowOf(event);
    count(row);
    fresh.push(row);
  }
  if (!fresh.length) return;
  fresh.sort((a, b) => (a.cursor > b.cursor ? -1 : a.cursor < b.cursor ? 1 : 0));
  const list = $("list");
  if (live && rows.length && fresh[fresh.length - 1].cursor > rows[0].cursor) {
    rows = fresh.concat(rows);
    // Keep what the reader is looking at still when new rows arrive above it.
    if (list.scrollTop > 0) list.scrollTop += fresh.length * ROW_HEIGHT;
  } else {
    rows = rows.concat(fresh);
    rows.sort((a, b) => (a.cursor > b.cursor ? -1 : a.cursor < b.cursor ? 1 : 0));
  }
  if (rows.length > MAX_ROWS) {
    for (const dropped of rows.splice(MAX_ROWS)) seen.delete(dropped.cursor);
    olderExhausted = false;
  }
  scheduleRender();
}

/** Live events wait here for the next frame: a replay of thousands costs one list update per
 * frame, not one per event. */
let pending: Event[] = [];
let flushQueued = false;
function queueLive(event: Event) {
  pending.push(event);
  if (flushQueued) return;
  flushQueued = true;
  requestAnimationFrame(flushLive);
}
function flushLive() {
  flushQueued = false;
  const batch = pending;
  pending = [];
  addEvents(batch, true);
}

// ---------------------------------------------------------------- virtual list
let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

const rowNodes = new Map<bigint, HTMLElement>();

function badge(text: string, kind: string): HTMLElement {
  const b = document.createElement("span");
  b.className = `badge ${kind}-${text.toLowerCase().replace(/[^a-z0-9]+/g, "_")}`;
  b.textContent = text.toLowerCase().replace(/_/g, " ");
  return b;
}

/** What each profile-values status tells the reader (the proto documents them precisely). */
const VALUES_MEANING: Record<string, string> = {
  COMPLETE: "old and new values; the profile was not updated after this event",
  NO_BASELINE: "new values only: no earlier reading of this user (or attribute) was kept",
  NEWER_THAN_EVENT: "the profile was updated again after this event: new values may include later changes",
  UNAVAILABLE: "no values: Okta's Users API could not be asked in time",
};

/** The profile-values status of an event, e.g. "values complete", with its meaning and note. */
function valuesBadge(status: string, note: string): HTMLElement {
  const b = badge(status, "values");
  b.textContent = `values ${b.textContent}`;
  b.title = [VALUES_MEANING[status] ?? status, note].filter(Boolean).join("; ");
  return b;
}

function span(cls: string, text: string, title?: string) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  if (title) s.title = title;
  return s;
}

function rowNode(row: Row, index: number): HTMLElement {
  const node = document.createElement("div");
  node.className = "row";
  node.setAttribute("role", "row");
  node.tabIndex = 0;
  node.dataset.uuid = row.uuid;
  node.dataset.cursor = String(row.cursor);
  node.dataset.index = String(index);

  const [date, clock] = utcParts(row.time);
  const time = span("cell time", "");
  time.setAttribute("role", "gridcell");
  time.append(span("clock mono", clock), span("date muted", date));
  time.title = isNaN(row.time) ? "no time" : new Date(row.time).toISOString();

  const type = span("cell type", "");
  type.setAttribute("role", "gridcell");
  type.append(span("event-type mono", row.type || "—", row.type), span("message muted", row.message, row.message));

  const who = span("cell who", "");
  who.setAttribute("role", "gridcell");
  const user = span("user", row.user || "—", row.user);
  const actor = span("actor muted", row.actor ? `by ${row.actor}` : "", row.actor);
  who.append(user, actor);

  const changes = span("cell changes", "");
  changes.setAttribute("role", "gridcell");
  if (!row.changes.length) changes.append(span("muted", "—"));
  for (const change of row.changes) {
    const chip = span("change", "");
    chip.append(span("attr", change.attribute));
    if (change.old !== undefined) {
      // `∅`: no earlier value known (not a value that was removed), so it is not struck out.
      chip.append(span(change.old === "∅" ? "old unknown mono" : "old mono", change.old), span("arrow", "→"), span("new mono", change.new ?? "∅"));
      chip.title = `${change.attribute}: ${change.old} → ${change.new}`;
    }
    changes.append(chip);
  }

  const result = span("cell badges", "");
  result.setAttribute("role", "gridcell");
  if (row.values) result.append(valuesBadge(row.values, row.valuesNote));
  if (row.result) result.append(badge(row.result, "result"));
  if (row.severity) result.append(badge(row.severity, "severity"));
  if (row.source) result.append(badge(row.source, "source"));

  node.append(time, type, who, changes, result);
  node.setAttribute("aria-label", `${clock} ${row.type}: ${row.actor || "unknown"} for ${row.user || "nobody"}${row.changes.length ? `, changed ${row.changes.map((c) => c.attribute).join(", ")}` : ""}, ${row.result}`);
  return node;
}

function render() {
  const list = $("list");
  const spacer = $("spacer");
  spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
  $("grid").setAttribute("aria-rowcount", String(rows.length));
  $("empty").hidden = rows.length > 0;
  const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - 8);
  const last = Math.min(rows.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW_HEIGHT) + 8);
  const wanted = new Set<bigint>();
  const focused = document.activeElement as HTMLElement | null;
  // Rows stay in the DOM in display order (screen readers, tab order); only new ones move.
  let previous: HTMLElement | null = null;
  for (let i = first; i < last; i++) {
    const row = rows[i];
    wanted.add(row.cursor);
    let node = rowNodes.get(row.cursor);
    if (!node) {
      node = rowNode(row, i);
      rowNodes.set(row.cursor, node);
    }
    if (previous === null ? spacer.firstElementChild !== node : previous.nextElementSibling !== node) {
      if (previous === null) spacer.prepend(node);
      else previous.after(node);
    }
    previous = node;
    node.dataset.index = String(i);
    node.setAttribute("aria-rowindex", String(i + 2));
    node.style.transform = `translateY(${i * ROW_HEIGHT}px)`;
  }
  for (const [cursor, node] of rowNodes) {
    if (wanted.has(cursor) || node === focused) continue;
    node.remove();
    rowNodes.delete(cursor);
  }
  const failure = counts.failure;
  $("count-total").textContent = rows.length.toLocaleString("en");
  $("count-minute").textContent = perMinute.lastMinute().toLocaleString("en");
  $("count-failure").textContent = failure.toLocaleString("en");
  $("count-source").textContent = `${counts.hook.toLocaleString("en")} · ${counts.poller.toLocaleString("en")}`;
  $("count-reconnects").textContent = String(counts.reconnects);
  $("count-cursor").textContent = lastCursor === undefined ? "—" : String(lastCursor);
  $<HTMLButtonElement>("older").disabled = olderExhausted || loadingOlder;
  $("older-note").textContent = olderExhausted ? "No older events match." : "";
  perMinute.draw($("chart") as unknown as SVGSVGElement);
}

$("list").addEventListener("scroll", scheduleRender, { passive: true });
window.addEventListener("resize", scheduleRender);
setInterval(scheduleRender, 5_000);

// ---------------------------------------------------------------- connection state
type State = "connecting" | "live" | "reconnecting" | "paused" | "error";
function setState(state: State, text: string) {
  const pill = $("conn");
  pill.dataset.state = state;
  $("conn-text").textContent = text;
  $<HTMLButtonElement>("pause").textContent = state === "paused" ? "Resume" : "Pause";
}

function showError(id: string, text: string | null) {
  const p = $(id);
  p.hidden = text === null;
  p.textContent = text ?? "";
}

// ---------------------------------------------------------------- the stream
let filterState: FilterState = fromQuery(location.search);
let filter: EventFilter = create(EventFilterSchema);
/** The cursor of the newest event held: the next subscription resumes after it. */
let lastCursor: bigint | undefined;
let generation = 0;
let paused = false;
let abort: AbortController | undefined;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Handles a status that retrying cannot fix; true when the stream must stop. */
function refused(error: unknown, where: string): boolean {
  const { code, text } = describe(error);
  if (!FINAL.has(code)) return false;
  setState("error", code === Code.Unauthenticated ? "Token needed" : "Stopped");
  showError("stream-error", `${where}: ${text}`);
  if (code === Code.Unauthenticated) askToken(token() ? "The server refused this token." : "The server requires a token.");
  return true;
}

/** Opens the view: recent history (or the replay) and then the live tail. */
async function open() {
  const mine = ++generation;
  abort?.abort();
  abort = new AbortController();
  resetRows();
  pending = [];
  for (const node of rowNodes.values()) node.remove();
  rowNodes.clear();
  lastCursor = undefined;
  showError("stream-error", null);
  $("empty").textContent = "Waiting for events…";
  scheduleRender();
  if (filter.start.case === undefined) {
    // Live: show the newest page, then follow from its newest cursor.
    setState("connecting", "Loading recent events…");
    try {
      const page = await api.listEvents({ filter, pageSize: PAGE, newestFirst: true }, callOptions(abort.signal));
      if (mine !== generation) return;
      addEvents(page.events, false);
      if (page.events.length) lastCursor = page.events[0].cursor;
      olderExhausted = !page.nextPageToken;
    } catch (error) {
      if (mine !== generation) return;
      if (refused(error, "ListEvents")) return;
    }
  }
  if (!paused) void follow(mine);
}

/** Subscribes until this generation ends, reconnecting with backoff after a drop. */
async function follow(mine: number) {
  let backoff = FIRST_BACKOFF;
  const signal = abort!.signal;
  while (mine === generation && !paused) {
    setState("connecting", lastCursor === undefined ? "Connecting…" : `Connecting (after ${lastCursor})…`);
    const request: EventFilter = { ...filter };
    if (lastCursor !== undefined) request.start = { case: "after", value: lastCursor };
    let reason = "the server ended the stream";
    try {
      for await (const message of api.subscribe(request, callOptions(signal))) {
        if (mine !== generation) return;
        backoff = FIRST_BACKOFF;
        setState("live", "Live");
        showError("stream-error", null);
        if (message.kind.case === "event") {
          const event = message.kind.value;
          if (lastCursor !== undefined && event.cursor <= lastCursor) continue;
          lastCursor = event.cursor;
          queueLive(event);
        } else if (message.kind.case === "heartbeat") {
          const hb = message.kind.value;
          const at = hb.time ? timestampDate(hb.time) : new Date();
          const beat = $("heartbeat");
          beat.textContent = `last heartbeat ${at.toLocaleTimeString([], { hour12: false })}`;
          beat.title = `The server's newest cursor was ${hb.headCursor} at ${at.toISOString()}`;
          beat.dataset.head = String(hb.headCursor);
          // Live only and nothing held yet: every matching event up to the head was sent.
          if (lastCursor === undefined && filter.start.case === undefined) lastCursor = hb.headCursor;
        }
      }
    } catch (error) {
      if (mine !== generation || paused) return;
      if (refused(error, "Subscribe")) return;
      reason = describe(error).text;
    }
    if (mine !== generation || paused) return;
    counts.reconnects++;
    scheduleRender();
    setState("reconnecting", `Reconnecting in ${(backoff / 1000).toFixed(1)} s — ${reason}`);
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, MAX_BACKOFF);
  }
}

function pause() {
  paused = true;
  generation++;
  abort?.abort();
  setState("paused", lastCursor === undefined ? "Paused" : `Paused after ${lastCursor}`);
}

function resume() {
  paused = false;
  const mine = ++generation;
  abort = new AbortController();
  void follow(mine);
}

$("pause").addEventListener("click", () => (paused ? resume() : pause()));

// ---------------------------------------------------------------- load older
let loadingOlder = false;
$("older").addEventListener("click", async () => {
  loadingOlder = true;
  scheduleRender();
  const oldest = rows.length ? rows[rows.length - 1].cursor : undefined;
  const older: EventFilter = { ...filter };
  // Newest first from just below the oldest row held (or from the newest event).
  older.start = oldest === undefined ? { case: undefined } : { case: "after", value: oldest - 1n };
  try {
    if (oldest !== undefined && oldest <= 1n) {
      olderExhausted = true;
    } else {
      const page = await api.listEvents({ filter: older, pageSize: PAGE, newestFirst: true }, callOptions());
      addEvents(page.events, false);
      olderExhausted = !page.nextPageToken;
    }
  } catch (error) {
    const { text } = describe(error);
    showError("stream-error", `ListEvents: ${text}`);
  } finally {
    loadingOlder = false;
    scheduleRender();
  }
});

// ---------------------------------------------------------------- filter bar
const form = $<HTMLFormElement>("filter");
function fillForm(state: FilterState) {
  for (const field of FIELDS) {
    const input = form.elements.namedItem(field) as HTMLInputElement | HTMLSelectElement | null;
    if (input) input.value = state[field];
  }
  form.dataset.start = state.start;
}

function readForm(): FilterState {
  const state = fromQuery("");
  for (const field of FIELDS) {
    const input = form.elements.namedItem(field) as HTMLInputElement | HTMLSelectElement | null;
    if (input) (state as unknown as Record<string, string>)[field] = input.value.trim();
  }
  return state;
}

/** Applies `state`: validates it (naming the wrong field), puts it in the URL, reopens. */
function apply(state: FilterState, push: boolean): boolean {
  let next: EventFilter;
  try {
    next = toEventFilter(state);
  } catch (error) {
    if (error instanceof FilterError) {
      showError("filter-error", `${error.field}: ${error.message}`);
      (form.elements.namedItem(error.field) as HTMLElement | null)?.focus();
      return false;
    }
    throw error;
  }
  showError("filter-error", null);
  filterState = state;
  filter = next;
  const url = `${location.pathname}${toQuery(state)}`;
  if (push && url !== `${location.pathname}${location.search}`) history.pushState(null, "", url);
  void open();
  return true;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  paused = false;
  apply(readForm(), true);
});
(form.elements.namedItem("start") as HTMLSelectElement).addEventListener("change", () => {
  form.dataset.start = (form.elements.namedItem("start") as HTMLSelectElement).value;
});
$("reset").addEventListener("click", () => {
  fillForm(fromQuery(""));
  paused = false;
  apply(fromQuery(""), true);
});
window.addEventListener("popstate", () => {
  filterState = fromQuery(location.search);
  fillForm(filterState);
  apply(filterState, false);
});

// ---------------------------------------------------------------- the record
let detailJson: unknown = null;
let detailOpener: HTMLElement | null = null;

async function openDetail(uuid: string, opener: HTMLElement | null) {
  const panel = $("detail");
  detailOpener = opener;
  panel.hidden = false;
  $("detail-title").textContent = "Loading…";
  $("detail-sub").textContent = uuid;
  showError("detail-error", null);
  $("tree").replaceChildren();
  detailJson = null;
  panel.focus();
  try {
    const { event } = await api.getEvent({ uuid }, callOptions());
    if (!event) throw new Error("the server sent no event");
    detailJson = toJson(EventSchema, event);
    $("detail-title").textContent = event.eventType || "Event";
    $("detail-sub").textContent = `uuid ${event.uuid} · cursor ${event.cursor}`;
    const json = detailJson as Record<string, unknown>;
    const root = document.createElement("div");
    for (const [key, value] of Object.entries(json)) root.append(tree(key, value as never, 0, 1));
    $("tree").replaceChildren(root);
  } catch (error) {
    $("detail-title").textContent = "Event";
    showError("detail-error", `GetEvent: ${describe(error).text}`);
  }
}

function closeDetail() {
  $("detail").hidden = true;
  detailOpener?.focus();
}

$("detail-close").addEventListener("click", closeDetail);
$("copy").addEventListener("click", async () => {
  if (detailJson === null) return;
  const text = JSON.stringify(detailJson, null, 2);
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").dataset.copied = String(text.length);
  toast("Copied the record as JSON");
});

$("list").addEventListener("click", (e) => {
  const row = (e.target as HTMLElement).closest<HTMLElement>(".row");
  if (row?.dataset.uuid) void openDetail(row.dataset.uuid, row);
});

// ---------------------------------------------------------------- keyboard
function focusRow(index: number) {
  const list = $("list");
  const i = Math.max(0, Math.min(rows.length - 1, index));
  if (!rows.length) return;
  const top = i * ROW_HEIGHT;
  if (top < list.scrollTop) list.scrollTop = top;
  else if (top + ROW_HEIGHT > list.scrollTop + list.clientHeight) list.scrollTop = top + ROW_HEIGHT - list.clientHeight;
  render();
  rowNodes.get(rows[i].cursor)?.focus();
}

$("list").addEventListener("keydown", (e) => {
  const row = (e.target as HTMLElement).closest<HTMLElement>(".row");
  const index = row ? Number(row.dataset.index) : -1;
  const page = Math.max(1, Math.floor($("list").clientHeight / ROW_HEIGHT) - 1);
  const moves: Record<string, number> = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1, PageDown: page, PageUp: -page };
  if (e.key in moves) {
    e.preventDefault();
    focusRow(index + moves[e.key]);
  } else if (e.key === "Home") {
    e.preventDefault();
    focusRow(0);
  } else if (e.key === "End") {
    e.preventDefault();
    focusRow(rows.length - 1);
  } else if ((e.key === "Enter" || e.key === " ") && row?.dataset.uuid) {
    e.preventDefault();
    void openDetail(row.dataset.uuid, row);
  }
});

document.addEventListener("keydown", (e) => {
  const typing = (e.target as HTMLElement).closest("input, select, textarea, dialog");
  if (e.key === "Escape" && !$("detail").hidden) {
    closeDetail();
  } else if (!typing && e.key === "/") {
    e.preventDefault();
    (form.elements.namedItem("type") as HTMLInputElement).focus();
  } else if (!typing && e.key === "p" && !e.ctrlKey && !e.metaKey) {
    if (paused) resume();
    else pause();
  }
});

// ---------------------------------------------------------------- token
const dialog = $<HTMLDialogElement>("token-dialog");
function askToken(reason?: string) {
  $("token-reason").textContent = `${reason ? `${reason} ` : ""}Sent as “authorization: Bearer …” on every call; kept for this browser tab only (sessionStorage).`;
  $<HTMLInputElement>("token-input").value = "";
  if (!dialog.open) dialog.showModal();
}
$("token-button").addEventListener("click", () => askToken());
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "save") setToken($<HTMLInputElement>("token-input").value);
  else if (dialog.returnValue === "forget") setToken("");
  else return;
  $("token-button").textContent = token() ? "Token ✓" : "Token";
  paused = false;
  void open();
  if (!$("view-quarantine").hidden) void loadQuarantine();
});
$("token-button").textContent = token() ? "Token ✓" : "Token";

// ---------------------------------------------------------------- quarantine
async function loadQuarantine() {
  const body = $("quarantine").querySelector("tbody")!;
  showError("quarantine-error", null);
  try {
    const { entries } = await api.listQuarantined({ limit: 500 }, callOptions());
    body.replaceChildren();
    if (!entries.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 4;
      td.className = "muted";
      td.textContent = "Nothing is quarantined.";
      tr.append(td);
      body.append(tr);
    }
    for (const entry of entries) {
      const tr = document.createElement("tr");
      const raw = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = entry.raw.length > 80 ? `${entry.raw.slice(0, 80)}…` : entry.raw;
      const pre = document.createElement("pre");
      pre.textContent = entry.raw;
      raw.append(summary, pre);
      for (const text of [entry.received, entry.origin, entry.reason]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      td.className = "mono";
      td.append(raw);
      tr.append(td);
      body.append(tr);
    }
  } catch (error) {
    const { code, text } = describe(error);
    body.replaceChildren();
    const hint =
      code === Code.PermissionDenied
        ? " — this token may read events but not the quarantine: use an admin token (OKTA_STREAM_GRPC_ADMIN_TOKENS)."
        : code === Code.Unauthenticated
          ? " — set a token first."
          : "";
    showError("quarantine-error", `ListQuarantined: ${text}${hint}`);
    if (code === Code.Unauthenticated) askToken("The server requires a token.");
  }
}
$("quarantine-refresh").addEventListener("click", () => void loadQuarantine());

function selectTab(which: "events" | "quarantine") {
  for (const name of ["events", "quarantine"] as const) {
    const tab = $(`tab-${name}`);
    tab.setAttribute("aria-selected", String(name === which));
    tab.tabIndex = name === which ? 0 : -1;
    $(`view-${name}`).hidden = name !== which;
  }
  if (which === "quarantine") void loadQuarantine();
  else scheduleRender();
}
$("tab-events").addEventListener("click", () => selectTab("events"));
$("tab-quarantine").addEventListener("click", () => selectTab("quarantine"));
document.querySelector(".tabs")!.addEventListener("keydown", (e) => {
  const key = (e as KeyboardEvent).key;
  if (key !== "ArrowLeft" && key !== "ArrowRight") return;
  const next = $("tab-events").getAttribute("aria-selected") === "true" ? "quarantine" : "events";
  selectTab(next);
  $(`tab-${next}`).focus();
});

// ---------------------------------------------------------------- start
fillForm(filterState);
apply(filterState, false);
