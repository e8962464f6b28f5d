// The abuse scenario: an MSP sweeping numbers it does not know, side by side with an MSP
// resolving its address book, against one resolver with the local network's budgets and
// enumeration detection enforcing. Reports what each was granted, how soon the sweep was
// refused, and the address book's latency beside the sweep against alone.
import { warmKeys } from "./keys.js";
import { type Bench, cacheEntriesFor, type Load, type Options, prewarm, withNetwork } from "./measure.js";

/** The sweeper's enrolled users here: 20 users, so 2,000 lookups per DP per day and 120 a minute. */
const SWEEPER_USERS = 20;

export async function abuseScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  warmCount: number,
  log: (s: string) => void,
): Promise<void> {
  const resolver = {
    quotas: {
      // The quick run lasts 0.4 s, in which a slow machine may not reach the sweeper's 120 a
      // minute; one user and a floor of 20 a minute make its refusals certain there.
      enrolledUsers: {
        "msp-bluebird": 2_000_000,
        "msp-wirechat": 1_000_000,
        "msp-parrot": o.quick ? 1 : SWEEPER_USERS,
      },
      ...(o.quick && { perMinuteFloor: 20 }),
    },
    enumeration: { mode: "enforce" },
  };
  const cacheEntries = cacheEntriesFor(o);
  await withNetwork(
    bench,
    netDir,
    cacheEntries,
    async (net) => {
      const base = warmKeys(warmCount);
      await prewarm(bench, net, o, warmCount);
      // The address book: mostly contacts asked before (cached), some new, a few unknown ones
      // scattered over many number blocks, at a steady rate (open loop: latency counts from
      // when each lookup was due, so queueing behind the sweep shows). One worker each.
      const rate = Math.max(10, Math.floor(o.rate / 4));
      const book = (): Load => {
        const n = Math.ceil((rate * o.durationMs) / 1000);
        const cold = bench.takeCold(Math.ceil(n / 10));
        const absent = bench.takeAbsent(Math.ceil(n / 40));
        return {
          service: "resolver",
          api: "unary",
          concurrency: 1,
          rate,
          workers: 1,
          identity: "msp-bluebird",
          keys: () => ({ ...base, mode: "mixed", cold, absent, absentStride: 20_001 }),
        };
      };
      const alone = await bench.measure(net, "abuse", "address book alone", book());
      const sweepRange = bench.takeAbsent(Math.ceil(o.durationMs * 20));
      const [beside, sweep] = await bench.measureSideBySide(net, "abuse", [
        { variant: "address book + sweep", load: book() },
        {
          variant: "sweep (refusals=errors)",
          load: {
            service: "resolver",
            api: "stream",
            concurrency: o.streamConcurrency,
            workers: 1,
            identity: "msp-parrot",
            keys: () => ({ ...base, mode: "absent", absent: sweepRange }),
          },
        },
      ]);
      if (!beside || !sweep) return;
      sweep.extra = {
        granted: sweep.lookups,
        refused: sweep.errors,
        refusedPerSec: Math.round(sweep.errors / (o.durationMs / 1000)),
        ...(sweep.firstErrorAfterMs !== undefined && { msToFirstRefusal: sweep.firstErrorAfterMs }),
      };
      const ratio = alone.latencyMs.p50 > 0 ? beside.latencyMs.p50 / alone.latencyMs.p50 : 0;
      log(
        `abuse: the sweep was granted ${sweep.lookups} lookups and refused ${sweep.errors}, the first refusal ` +
          `${sweep.firstErrorAfterMs ?? "-"} ms after it started (${sweep.firstError ?? "no refusal"}); the address ` +
          `book asked ${rate}/s and got ${beside.lookupsPerSec}/s beside it (${alone.lookupsPerSec}/s alone), ` +
          `p50 ${beside.latencyMs.p50} ms (${ratio.toFixed(2)}x alone), p99 ${beside.latencyMs.p99} ms ` +
          `(${alone.latencyMs.p99} ms alone), ${beside.errors} errors (${alone.errors} alone)`,
      );
    },
    { resolver },
  );
}
