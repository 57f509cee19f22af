// Events per minute over the last 30 minutes, as bars, by the time okta-stream stored them.
const MINUTES = 30;

export class PerMinute {
  private counts = new Map<number, number>();

  add(time: number): void {
    const minute = Math.floor(time / 60_000);
    this.counts.set(minute, (this.counts.get(minute) ?? 0) + 1);
    if (this.counts.size > MINUTES * 4) {
      const floor = Math.floor(Date.now() / 60_000) - MINUTES;
      for (const key of this.counts.keys()) if (key < floor) this.counts.delete(key);
    }
  }

  /** Events stored within the last 60 s (this minute and the previous one, weighted). */
  lastMinute(): number {
    const now = Date.now() / 60_000;
    const current = Math.floor(now);
    const share = 1 - (now - current);
    return Math.round((this.counts.get(current) ?? 0) + share * (this.counts.get(current - 1) ?? 0));
  }

  draw(svg: SVGSVGElement): void {
    const now = Math.floor(Date.now() / 60_000);
    const values: number[] = [];
    for (let m = now - MINUTES + 1; m <= now; m++) values.push(this.counts.get(m) ?? 0);
    const max = Math.max(1, ...values);
    const width = 300 / MINUTES;
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    values.forEach((v, i) => {
      const h = v === 0 ? 0.5 : Math.max(2, (v / max) * 56);
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(i * width + 1));
      bar.setAttribute("y", String(60 - h));
      bar.setAttribute("width", String(width - 2));
      bar.setAttribute("height", String(h));
      bar.setAttribute("rx", "1.5");
      bar.setAttribute("class", v === 0 ? "bar zero" : "bar");
      const title = document.createElementNS(ns, "title");
      title.textContent = `${MINUTES - 1 - i} min ago: ${v}`;
      bar.append(title);
      svg.append(bar);
    });
    svg.setAttribute("aria-label", `Events per minute, last ${MINUTES} minutes; peak ${max}`);
  }
}
