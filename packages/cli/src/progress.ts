// A progress line for long imports: a redrawn bar on a terminal, a line every few seconds
// in a log. Time is passed in, so rendering and throttling are tested without waiting.

/** Where a long job stands. */
export interface ProgressState {
  readonly done: number;
  readonly total: number;
  /** Work done before this run (a resumed session); not counted in the rate. */
  readonly resumedAt: number;
  readonly elapsedMs: number;
}

/** "58s", "12m05s", "3h07m". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Items per second of this run, or 0 before any time has passed. */
function rateOf(p: ProgressState): number {
  return p.elapsedMs > 0 ? ((p.done - p.resumedAt) * 1000) / p.elapsedMs : 0;
}

/** `[#####     ] 512000/1000000 51% 8400/s ETA 58s` */
export function renderProgress(p: ProgressState, width = 20): string {
  const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
  const filled = Math.floor(frac * width);
  const bar = `[${"#".repeat(filled)}${" ".repeat(width - filled)}]`;
  const rate = rateOf(p);
  const left = p.total - p.done;
  const eta = left <= 0 ? "ETA 0s" : rate > 0 ? `ETA ${formatDuration(left / rate)}` : "ETA ?";
  return `${bar} ${p.done}/${p.total} ${Math.floor(frac * 100)}% ${Math.round(rate)}/s ${eta}`;
}

/** Options of createProgressReporter. */
export interface ProgressReporterOptions {
  readonly total: number;
  /** Redraw one line in place (a terminal), or print a line every `logIntervalMs`. */
  readonly tty: boolean;
  readonly write: (text: string) => void;
  readonly now: () => number;
  readonly logIntervalMs?: number;
}

/** Reports progress, throttled: at most 10 redraws a second on a terminal. */
export interface ProgressReporter {
  update(done: number, resumedAt: number): void;
  /** Draws the last state and ends the line. */
  finish(): void;
}

const REDRAW_MS = 100;

/** Makes a reporter; the clock starts now. */
export function createProgressReporter(o: ProgressReporterOptions): ProgressReporter {
  const startedMs = o.now();
  const every = o.tty ? REDRAW_MS : (o.logIntervalMs ?? 5_000);
  let lastMs = o.tty ? Number.NEGATIVE_INFINITY : startedMs;
  let state: ProgressState = { done: 0, total: o.total, resumedAt: 0, elapsedMs: 0 };
  let drawn = false;
  const draw = () => {
    const line = renderProgress(state);
    // \x1b[K clears what a longer earlier line left on the right.
    o.write(o.tty ? `\r${line}\x1b[K` : `${line}\n`);
    drawn = true;
  };
  return {
    update(done, resumedAt) {
      const t = o.now();
      state = { done, total: o.total, resumedAt, elapsedMs: t - startedMs };
      if (t - lastMs < every) return;
      lastMs = t;
      draw();
    },
    finish() {
      if (!o.tty) return;
      state = { ...state, elapsedMs: o.now() - startedMs };
      draw();
      if (drawn) o.write("\n");
    },
  };
}
