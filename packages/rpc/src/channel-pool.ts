// Channels to peers that may share an address with a different expected identity: one channel
// per (identity, address), made on first use and kept while the peer is listed, since grpc-js
// reconnects channels itself. A channel to an endpoint that is no longer listed is closed
// (retain): grpc-js would go on reconnecting to it, every few seconds, for as long as the
// channel lives.
import { type Channel, openChannel } from "./channel.js";
import { channelCredentials, type TlsSource } from "./tls.js";

/** A pool of channels to DPs, authenticated with one client certificate. */
export interface ChannelPool {
  /** The channel to `address` whose server must present `identity` and the dp role. */
  get(address: string, identity: string): Channel;
  /**
   * Closes the channels to the endpoints `listed` says are gone (an endpoint a DP no longer
   * lists): calls in progress on them finish, and nothing reconnects to them. Returns how many.
   */
  retain(listed: (address: string, identity: string) => boolean): number;
  close(): void;
}

interface Pooled {
  readonly channel: Channel;
  readonly address: string;
  readonly identity: string;
}

/** Creates a pool connecting with `tls`. */
export function createChannelPool(tls: TlsSource): ChannelPool {
  return channelPool((address, identity) =>
    openChannel(address, channelCredentials(tls, { identity, role: "dp" })),
  );
}

/** A pool of the channels `open` makes (tests pass one without TLS). */
export function channelPool(open: (address: string, identity: string) => Channel): ChannelPool {
  const channels = new Map<string, Pooled>();
  return {
    get(address, identity) {
      const k = `${identity}|${address}`;
      let p = channels.get(k);
      if (!p) {
        p = { channel: open(address, identity), address, identity };
        channels.set(k, p);
      }
      return p.channel;
    },
    retain(listed) {
      let closed = 0;
      for (const [k, p] of channels) {
        if (listed(p.address, p.identity)) continue;
        p.channel.close();
        channels.delete(k);
        closed++;
      }
      return closed;
    },
    close() {
      for (const p of channels.values()) p.channel.close();
      channels.clear();
    },
  };
}
