// Where a package's worker-thread module is. Workers always run the compiled file in dist/:
// tsx's loader hooks do not reach worker threads on Node 20, so a module run from src/ (tests)
// still starts the compiled worker (which imports the other packages from their dist/ too).

/** The compiled `file` beside the module at `moduleUrl` (a module directly under src/ or dist/). */
export function compiledWorkerUrl(moduleUrl: string, file: string): URL {
  return moduleUrl.endsWith(".ts") ? new URL(`../dist/${file}`, moduleUrl) : new URL(`./${file}`, moduleUrl);
}
