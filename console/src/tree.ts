// The whole record as a collapsible tree (objects and lists fold), and its JSON for copying.
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function leaf(value: Json): HTMLElement {
  const kind = value === null ? "null" : typeof value;
  return el("span", `v ${kind}`, typeof value === "string" ? JSON.stringify(value) : String(value));
}

/** `value` under `key`; objects and lists open down to `openDepth`. */
export function tree(key: string, value: Json, depth = 0, openDepth = 2): HTMLElement {
  if (value !== null && typeof value === "object") {
    const entries: [string, Json][] = Array.isArray(value)
      ? value.map((v, i) => [String(i), v])
      : Object.entries(value);
    const details = el("details");
    details.open = depth < openDepth;
    const summary = el("summary");
    summary.append(el("span", "k", key), el("span", "count", Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`));
    details.append(summary);
    const children = el("div", "children");
    for (const [k, v] of entries) children.append(tree(k, v, depth + 1, openDepth));
    details.append(children);
    return details;
  }
  const line = el("div", "leaf");
  line.append(el("span", "k", key), leaf(value));
  return line;
}
