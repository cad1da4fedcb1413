import dns2 from 'dns2';

const { Packet } = dns2;

/**
 * A DNS server on loopback (dns2, UDP) answering from a table the test edits: TXT and A records per
 * name; any other name is NXDOMAIN. Tenantry is pointed at it with dnsServers (TENANTRY_DNS_SERVERS).
 */
export interface LoopbackDns {
  /** `127.0.0.1:<port>` for dnsServers */
  server: string;
  txt: Map<string, string[]>;
  a: Map<string, string>;
  /** names queried, in order */
  queries: string[];
  close(): Promise<void>;
}

export async function startLoopbackDns(): Promise<LoopbackDns> {
  const txt = new Map<string, string[]>();
  const a = new Map<string, string>();
  const queries: string[] = [];
  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      const name = (q?.name ?? '').toLowerCase();
      queries.push(name);
      const values = txt.get(name);
      const address = a.get(name);
      if (q?.type === Packet.TYPE.TXT && values) {
        for (const v of values) response.answers.push({ name: q.name, type: Packet.TYPE.TXT, class: Packet.CLASS.IN, ttl: 1, data: v } as never);
      } else if (q?.type === Packet.TYPE.A && address) {
        response.answers.push({ name: q.name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 1, address } as never);
      } else if (!values && !address) {
        (response.header as { rcode: number }).rcode = 3; // NXDOMAIN
      }
      send(response);
    },
  });
  const addrs = await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  const port = (addrs as unknown as { udp: { port: number } }).udp.port;
  return { server: `127.0.0.1:${port}`, txt, a, queries, close: () => server.close() as unknown as Promise<void> };
}
