// The one-line help of each command group of `mimi`, shared by the group's module and by the
// help main.ts prints without loading any group.

export const ABOUT = {
  resolve: "ask a resolver where a CSI (tel:+... or mailto:...) is reachable",
  root: "administer the root registry (delegations, DPs, MSPs, audit)",
  auth: "administer an authoritative DP (MSP enrolment, provider feeds, status, private-lookup key rotation)",
  claim:
    "act as an MSP at a DP: claim a CSI for a user with a proof of possession, invalidate, opt out, contest, watch notices, register in bulk",
  resolver: "operate a resolver: drop cached answers, read its cache and freshness counters",
  store: "back up, verify and restore a root's or a DP's SQLite store (run on its host)",
  "dev-pki": "create a development CA and certificates (never for production)",
  health: "ask a server (root, authoritative or resolver) whether it is serving; exit 1 if not",
} as const;

/** The help line of a group. */
export function about(group: keyof typeof ABOUT): string {
  return ABOUT[group];
}
