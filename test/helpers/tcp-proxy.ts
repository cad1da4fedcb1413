import net from 'node:net';

/**
 * A TCP proxy on loopback that a test can take down and bring back on the same port: the way to make
 * Redis or an object store "go away" for one Tenantry instance while other suites keep using it.
 */
export interface TcpProxy {
  /** the proxy's port on 127.0.0.1 */
  port: number;
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function tcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  let port = 0;
  const up = async (): Promise<void> => {
    if (server) return;
    server = net.createServer((c) => {
      const s = net.connect(targetPort, targetHost);
      sockets.add(c); sockets.add(s);
      c.pipe(s); s.pipe(c);
      const end = (): void => { c.destroy(); s.destroy(); sockets.delete(c); sockets.delete(s); };
      c.on('error', end); s.on('error', end); c.on('close', end); s.on('close', end);
    });
    await new Promise<void>((r) => server!.listen(port, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
    proxy.port = port;
  };
  const down = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    const s = server;
    server = undefined;
    await new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  };
  const proxy: TcpProxy = { port: 0, up, down, close: down };
  await up();
  return proxy;
}
