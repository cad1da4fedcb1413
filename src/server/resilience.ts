import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DATABASE_RETRY_AFTER_SECONDS, TenantryError, isDatabaseUnavailable } from '../errors.js';

interface HealthLog {
  warn(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
}

/**
 * What the server knows about PostgreSQL between requests. A request that meets a connection-class
 * fault makes it probe at once; while the probe fails, requests fail fast with DATABASE_UNAVAILABLE
 * (instead of each waiting for its own connect timeout) and /readyz says 503. The probe keeps running
 * every `intervalMs` and the first success ends the outage: recovery needs no restart.
 */
export class DatabaseHealth {
  private down = false;
  private downSince = 0;
  private unreadyReason: string | undefined;
  private unreadyUntil = 0;
  private checking: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** outages seen since start (for metrics and tests) */
  outages = 0;

  constructor(
    private readonly probe: () => Promise<unknown>,
    private readonly log: HealthLog,
    private readonly intervalMs = 500,
    private readonly probeTimeoutMs = 2_000,
  ) {}

  /** false while PostgreSQL is known to be unreachable */
  get available(): boolean {
    return !this.down;
  }

  /** false while PostgreSQL is unreachable or since an error escaped every handler, until a probe succeeds */
  get ready(): boolean {
    return !this.down && this.unreadyReason === undefined;
  }

  /** Probes now unless a probe is running (then waits for it); true when ready afterwards. */
  async recheck(): Promise<boolean> {
    await this.check();
    return this.ready;
  }

  get reason(): string | undefined {
    return this.down ? 'database unavailable' : this.unreadyReason;
  }

  /** A request met a connection-class fault: probe now (one probe at a time). */
  reportFault(): void {
    void this.check();
  }

  /** The last-resort handler: an error escaped; stay up, but say unready until PostgreSQL answers a probe. */
  markUnready(reason: string): void {
    this.unreadyReason = reason;
    // unready long enough for a load balancer to notice, then until a probe succeeds
    this.unreadyUntil = Date.now() + 10 * this.intervalMs;
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => { this.timer = undefined; void this.check(); }, this.intervalMs);
    this.timer.unref();
  }

  private up(): void {
    if (this.down) this.log.info({ downMs: Date.now() - this.downSince }, 'PostgreSQL is reachable again');
    this.down = false;
    if (this.unreadyReason !== undefined && Date.now() >= this.unreadyUntil) this.unreadyReason = undefined;
    else if (this.unreadyReason !== undefined) this.schedule();
  }

  private check(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.checking) return this.checking;
    this.checking = (async () => {
      let timeout: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          this.probe(),
          new Promise((_, reject) => { timeout = setTimeout(() => reject(new ProbeTimeout(`no answer within ${this.probeTimeoutMs} ms`)), this.probeTimeoutMs); }),
        ]);
        this.up();
      } catch (err) {
        // an answer that is an error (a missing table, a permission) still means PostgreSQL is reachable
        if (!isDatabaseUnavailable(err) && !(err instanceof ProbeTimeout)) { this.up(); return; }
        if (!this.down) {
          this.down = true;
          this.downSince = Date.now();
          this.outages++;
          this.log.warn({ err }, 'PostgreSQL is unreachable: failing requests fast with 503 until it answers');
        }
        this.schedule();
      } finally {
        clearTimeout(timeout);
        this.checking = undefined;
      }
    })();
    return this.checking;
  }
}

class ProbeTimeout extends Error {}

declare module 'fastify' {
  interface FastifyRequest {
    /** set when the request's deadline passed and it was answered with REQUEST_TIMEOUT */
    deadlinePassed: boolean;
    deadlineTimer: NodeJS.Timeout | null;
    /** settles when the route handler has finished (also after the deadline answered for it) */
    work: Promise<void> | null;
  }
}

/**
 * Every request gets an answer within `deadlineMs`: past it, the client gets 503 REQUEST_TIMEOUT with
 * Retry-After while the work (which may still commit) runs on; `req.work` settles when it ends, so an
 * idempotency claim can be held until then. Also records each route handler's completion.
 */
export function installDeadline(app: FastifyInstance, deadlineMs: number, send: (req: FastifyRequest, reply: FastifyReply, err: TenantryError) => void): void {
  app.decorateRequest('deadlinePassed', false);
  app.decorateRequest('deadlineTimer', null);
  app.decorateRequest('work', null);
  app.addHook('onRoute', (route) => {
    const handler = route.handler;
    route.handler = function deadlineTracked(this: FastifyInstance, req: FastifyRequest, reply: FastifyReply) {
      const run = Promise.resolve().then(() => handler.call(this, req, reply));
      req.work = run.then(() => undefined, () => undefined);
      // once the deadline has answered, the late result or error is only logged, not sent twice
      return run.then((value) => (req.deadlinePassed ? undefined : value), (err: unknown) => {
        if (!req.deadlinePassed) throw err;
        req.log.warn({ err }, 'request failed after its deadline answered for it');
        return undefined;
      });
    } as typeof route.handler;
  });
  app.addHook('onRequest', async (req, reply) => {
    const timer = setTimeout(() => {
      if (reply.sent) return;
      req.deadlinePassed = true;
      send(req, reply, new TenantryError('REQUEST_TIMEOUT', `The request did not finish within ${deadlineMs} ms (TENANTRY_REQUEST_TIMEOUT_MS). It may still complete: retry with the same Idempotency-Key to get its result rather than run it twice.`,
        { retryAfterSeconds: DATABASE_RETRY_AFTER_SECONDS }));
    }, deadlineMs);
    timer.unref();
    req.deadlineTimer = timer;
  });
  app.addHook('onResponse', async (req) => {
    if (req.deadlineTimer) clearTimeout(req.deadlineTimer);
  });
}

/** Runs `fn` now and, if it fails, again in the background with backoff (a release must not be lost to a blip). */
export async function withRetries(fn: () => Promise<unknown>, onGiveUp: (err: unknown) => void, attempts = 6, firstDelayMs = 250): Promise<void> {
  try {
    await fn();
    return;
  } catch (err) {
    if (attempts <= 1) { onGiveUp(err); return; }
  }
  let delay = firstDelayMs;
  const retry = (left: number): void => {
    const t = setTimeout(() => {
      fn().catch((err: unknown) => {
        if (left <= 1) onGiveUp(err);
        else { delay *= 2; retry(left - 1); }
      });
    }, delay);
    t.unref();
  };
  retry(attempts - 1);
}
