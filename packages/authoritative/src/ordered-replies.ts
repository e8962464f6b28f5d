// The DP's lookup stream answers each request once its seal is signed, with the seals of the
// other lookups read in that turn of the event loop (seal-batcher.ts). So it reads the next
// request without waiting for the last answer, and writes the answers in the order asked.

/**
 * Reads `reqs`, starting `answer` for each at once, and sends the answers in order, one at a
 * time. At most `maxUnwritten` answers wait to be written (for their seals, or for the peer to
 * read what `send` wrote); past that, reading waits for the oldest. A failed send ends reading
 * at once, even while the peer sends nothing, and is what this rejects with; a failed read
 * rejects after every answer begun before it was written. `answer` should not reject: one that
 * does fails the stream like a send.
 */
export async function replyInOrder<Req, Reply>(
  reqs: AsyncIterable<Req>,
  answer: (req: Req) => Promise<Reply>,
  send: (reply: Reply) => Promise<void>,
  maxUnwritten: number,
): Promise<void> {
  const items = reqs[Symbol.asyncIterator]();
  let failure: { err: unknown } | undefined;
  let stop: (err: unknown) => void = () => {};
  const stopped = new Promise<never>((_, reject) => {
    stop = reject;
  });
  stopped.catch(() => {}); // heard through the race below
  let last: Promise<void> = Promise.resolve();
  const unwritten: Promise<void>[] = [];
  try {
    for (;;) {
      const next = await Promise.race([items.next(), stopped]);
      if (next.done) break;
      const reply = answer(next.value);
      last = last.then(async () => {
        if (failure) return;
        try {
          await send(await reply);
        } catch (err) {
          failure = { err };
          stop(err);
        }
      });
      unwritten.push(last);
      // Answers are written in order, so the oldest is the first to free its place.
      if (unwritten.length >= maxUnwritten) await unwritten.shift();
    }
  } finally {
    await last;
  }
  if (failure) throw failure.err;
}
