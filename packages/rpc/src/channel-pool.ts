// Channels to peers that may share an address with a different expected identity: one channel
// per (identity, address), made on first use and kept, since grpc-js reconnects channels itself.
import { type Channel, openChannel } from "./channel.js";
import { channelCredentials, type TlsSource } from "./tls.js";

/** A pool of channels to DPs, authenticated with one client certificate. */
export interface ChannelPool {
  /** The channel to `address` whose server must present `identity` and the dp role. */
  get(address: string, identity: string): Channel;
  close(): void;
}

/** Creates a pool connecting with `tls`. */
export function createChannelPool(tls: TlsSource): ChannelPool {
  const channels = new Map<string, Channel>();
  return {
    get(address, identity) {
      const k = `${identity}|${address}`;
      let ch = channels.get(k);
      if (!ch) {
        ch = openChannel(address, channelCredentials(tls, { identity, role: "dp" }));
        channels.set(k, ch);
      }
      return ch;
    },
    close() {
      for (const ch of channels.values()) ch.close();
      channels.clear();
    },
  };
}
