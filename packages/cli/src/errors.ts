// The CLI's own failures, mapped to exit codes by main.ts (kept apart so main loads no group).

/** Bad command-line input; the CLI exits 2 for it, like for other usage errors. */
export class UsageError extends Error {}

/** The user stopped a command with Ctrl-C after it said how to go on; the CLI exits 130. */
export class Interrupted extends Error {}
