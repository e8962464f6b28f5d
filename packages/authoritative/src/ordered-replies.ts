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
  // Read through a call: sends set it in their own turns, which flow analysis does not see.
  const failed = () => failure;
  // Rejects the read in progress when a send fails. A promise per read, not one raced for the
  // stream's life: every race would add a reaction to it, kept as long as the stream is open.
  let interrupt: ((err: unknown) => void) | undefined;
  const read = () =>
    new Promise<IteratorResult<Req>>((resolve, reject) => {
      interrupt = reject;
      items.next().then(resolve, reject);
    }).finally(() => {
      interrupt = undefined;
    });
  let last: Promise<void> = Promise.resolve();
  const unwritten: Promise<void>[] = [];
  let finished = false;
  try {
    for (;;) {
      const f = failed();
      if (f) throw f.err;
      const next = await read();
      if (next.done) {
        finished = true;
        break;
      }
      const reply = answer(next.value);
      reply.catch(() => {}); // heard by its link below, which may run after it settles
      last = last.then(async () => {
        if (failure) return;
        try {
          await send(await reply);
        } catch (err) {
          failure = { err };
          interrupt?.(err);
        }
      });
      unwritten.push(last);
      // Answers are written in order, so the oldest is the first to free its place.
      if (unwritten.length >= maxUnwritten) await unwritten.shift();
    }
  } finally {
    // Stop the reader's listeners (a failed send or read leaves the stream open otherwise).
    if (!finished) items.return?.().catch(() => {});
    await last;
  }
  const f = failed();
  if (f) throw f.err;
}
