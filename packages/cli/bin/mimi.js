#!/usr/bin/env node
// Entry shim for the `mimi` command; the CLI itself is compiled to dist/ by `npm run build`.
import("../dist/main.js").catch((err) => {
  process.stderr.write(`mimi: cannot load the CLI (${err.message}); run "npm run build" first\n`);
  process.exit(1);
});
