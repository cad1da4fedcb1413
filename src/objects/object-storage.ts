import type { S3Client } from '@aws-sdk/client-s3';
import type { Core } from '../core.js';
import { TenantryError } from '../errors.js';
import type { TenantService } from '../tenants/tenants.js';

/** The longest object key (UTF-8 bytes, after the tenant's prefix is added S3 allows 1024 in all). */
export const MAX_OBJECT_KEY_BYTES = 900;
/** Presigned URLs live at most this long. */
export const MAX_PRESIGN_SECONDS = 7 * 86_400;

/**
 * An object key as a tenant may name it: NFC-normalised UTF-8 of 1-900 bytes, `/`-separated segments
 * none of which is empty, `.` or `..`, no leading `/`, no backslash, no control character (NUL
 * included). Whatever passes can only ever name an object under the tenant's own prefix.
 */
export function validateObjectKey(key: unknown, field = 'key', allowTrailingSlash = false): string {
  if (typeof key !== 'string') throw new TenantryError('INVALID_INPUT', `${field} must be a string.`, { field });
  const k = key.normalize('NFC');
  const why = objectKeyProblem(k, allowTrailingSlash);
  if (why) throw new TenantryError('INVALID_INPUT', `${field} ${why}.`, { field });
  return k;
}

function objectKeyProblem(k: string, allowTrailingSlash: boolean): string | undefined {
  if (k.length === 0) return 'is empty';
  if (Buffer.byteLength(k, 'utf8') > MAX_OBJECT_KEY_BYTES) return `is longer than ${MAX_OBJECT_KEY_BYTES} bytes of UTF-8`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(k)) return 'contains a control character (NUL, newline, ...)';
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(k)) return 'contains an unpaired UTF-16 surrogate';
  if (k.includes('\\')) return 'contains a backslash; separate folders with /';
  if (k.startsWith('/')) return 'starts with /; keys are relative to the tenant\'s own space';
  const segments = (allowTrailingSlash && k.endsWith('/') ? k.slice(0, -1) : k).split('/');
  if (segments.some((s) => s === '')) return 'has an empty path segment (//, or a trailing /)';
  if (segments.some((s) => s === '.' || s === '..')) return 'has a . or .. segment';
  return undefined;
}

type Sdk = typeof import('@aws-sdk/client-s3') & { getSignedUrl: typeof import('@aws-sdk/s3-request-presigner').getSignedUrl };

export interface StoredObject {
  key: string;
  size: number;
  lastModified: Date | undefined;
}

export interface ObjectBody {
  key: string;
  body: Buffer;
  size: number;
  contentType: string | undefined;
}

/** One tenant's objects: every call is confined to `<prefix>/tenants/<id>/`. */
export interface ScopedObjects {
  readonly tenant: string;
  put(key: string, body: string | Uint8Array, opts?: { contentType?: string }): Promise<{ key: string; size: number }>;
  get(key: string): Promise<ObjectBody>;
  /** Removes an object; false when there was none. */
  delete(key: string): Promise<boolean>;
  list(opts?: { prefix?: string; limit?: number; cursor?: string }): Promise<{ objects: StoredObject[]; nextCursor: string | undefined }>;
  /** A URL that GETs this one object until it expires (default 900 s). */
  presignGet(key: string, opts?: { expiresInSeconds?: number }): Promise<string>;
  /** A URL that PUTs this one object until it expires (default 900 s); the content type, when given, is signed. */
  presignPut(key: string, opts?: { expiresInSeconds?: number; contentType?: string }): Promise<string>;
  /** Recounts the tenant's bytes in the bucket (its storage gauge adds them). */
  measure(): Promise<{ bytes: number; objects: number }>;
  /** Removes every object of the tenant; how many. */
  purge(): Promise<number>;
}

/**
 * Tenant-scoped object storage in an S3-compatible bucket. Keys are validated (validateObjectKey) and
 * joined under the tenant's prefix by this class alone; listing asks the bucket for that prefix only,
 * and a presigned URL is signed for exactly one object key under it, so no URL reaches another object.
 * The bytes each tenant keeps are counted into tenantry_catalog.tenant_object_usage, which the storage
 * gauge (refreshStorage) adds to the tenant's PostgreSQL storage.
 */
export class ObjectStorageService {
  private client: S3Client | undefined;
  private sdkLoad: Promise<Sdk> | undefined;

  constructor(private readonly core: Core, private readonly tenants: TenantService) {}

  get enabled(): boolean {
    return this.core.opts.objectStore !== undefined;
  }

  private cfg(): NonNullable<Core['opts']['objectStore']> {
    const c = this.core.opts.objectStore;
    if (!c) throw new TenantryError('OBJECT_STORE_NOT_CONFIGURED', 'Object storage needs a bucket: set TENANTRY_OBJECT_STORE_BUCKET (and _ENDPOINT, _REGION for an S3-compatible store).');
    return c;
  }

  /** The AWS SDK is loaded on first use: an installation without object storage never pays for it. */
  private sdk(): Promise<Sdk> {
    this.sdkLoad ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/s3-request-presigner')]).then(([s3, p]) => ({ ...s3, getSignedUrl: p.getSignedUrl }));
    return this.sdkLoad;
  }

  private async s3(): Promise<S3Client> {
    const c = this.cfg();
    const { S3Client } = await this.sdk();
    this.client ??= new S3Client({
      region: c.region ?? 'us-east-1',
      ...(c.endpoint ? { endpoint: c.endpoint, forcePathStyle: true } : {}),
      // a store that is away fails a call in bounded time
      requestHandler: { requestTimeout: 30_000, connectionTimeout: 5000 } as never,
      maxAttempts: 2,
    });
    return this.client;
  }

  /** `<prefix>/tenants/<id>/` */
  tenantPrefix(tenantId: string): string {
    const p = this.cfg().prefix;
    return `${p ? `${p}/` : ''}tenants/${tenantId}/`;
  }

  for(idOrSlug: string): ScopedObjects {
    if (typeof idOrSlug !== 'string' || idOrSlug.length === 0 || idOrSlug.length > 64) {
      throw new TenantryError('INVALID_INPUT', `A tenant is named by its id (uuid) or slug, got ${JSON.stringify(idOrSlug)}.`);
    }
    const self = this;
    const bucket = (): string => self.cfg().bucket;
    const tenant = async (): Promise<{ id: string; prefix: string }> => {
      self.cfg();
      const t = await self.tenants.resolveForWork(idOrSlug);
      return { id: t.id, prefix: self.tenantPrefix(t.id) };
    };
    const expires = (v: unknown): number => {
      const s = v ?? 900;
      if (typeof s !== 'number' || !Number.isInteger(s) || s < 1 || s > MAX_PRESIGN_SECONDS) throw new TenantryError('INVALID_INPUT', `expiresInSeconds must be a whole number from 1 to ${MAX_PRESIGN_SECONDS}.`, { field: 'expiresInSeconds' });
      return s;
    };
    const contentType = (v: unknown): string | undefined => {
      if (v === undefined) return undefined;
      if (typeof v !== 'string' || !/^[A-Za-z0-9!#$&^_.+-]{1,127}\/[A-Za-z0-9!#$&^_.+-]{1,127}( *;[ -~]{0,200})?$/.test(v)) throw new TenantryError('INVALID_INPUT', 'contentType must be a media type such as text/plain or application/json; charset=utf-8.', { field: 'contentType' });
      return v;
    };
    return {
      tenant: idOrSlug,
      async put(key, body, opts = {}) {
        const k = validateObjectKey(key);
        const ct = contentType(opts?.contentType);
        if (typeof body !== 'string' && !(body instanceof Uint8Array)) throw new TenantryError('INVALID_INPUT', 'put() takes the body as a string or a Buffer.', { field: 'body' });
        const data = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (data.length > self.core.opts.objectMaxBytes) throw new TenantryError('INVALID_INPUT', `An object is at most ${self.core.opts.objectMaxBytes} bytes (objectMaxBytes); upload bigger ones with presignPut.`, { field: 'body' });
        const t = await tenant();
        const before = await self.sizeOf(t.prefix + k);
        await self.send(async () => (await self.s3()).send(new (await self.sdk()).PutObjectCommand({ Bucket: bucket(), Key: t.prefix + k, Body: data, ContentType: ct })));
        await self.addUsage(t.id, data.length - (before ?? 0), before === undefined ? 1 : 0);
        return { key: k, size: data.length };
      },
      async get(key) {
        const k = validateObjectKey(key);
        const t = await tenant();
        const r = await self.send(async () => (await self.s3()).send(new (await self.sdk()).GetObjectCommand({ Bucket: bucket(), Key: t.prefix + k })), k);
        const body = Buffer.from(await r.Body!.transformToByteArray());
        return { key: k, body, size: body.length, contentType: r.ContentType };
      },
      async delete(key) {
        const k = validateObjectKey(key);
        const t = await tenant();
        const before = await self.sizeOf(t.prefix + k);
        if (before === undefined) return false;
        await self.send(async () => (await self.s3()).send(new (await self.sdk()).DeleteObjectCommand({ Bucket: bucket(), Key: t.prefix + k })));
        await self.addUsage(t.id, -before, -1);
        return true;
      },
      async list(opts = {}) {
        const sub = opts?.prefix === undefined || opts.prefix === '' ? '' : validateObjectKey(opts.prefix, 'prefix', true);
        const limit = opts?.limit ?? 100;
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TenantryError('INVALID_INPUT', 'limit must be a whole number from 1 to 1000.', { field: 'limit' });
        if (opts?.cursor !== undefined && (typeof opts.cursor !== 'string' || opts.cursor.length > 2048)) throw new TenantryError('INVALID_INPUT', 'cursor is the nextCursor of the previous page.', { field: 'cursor' });
        const t = await tenant();
        const r = await self.send(async () => (await self.s3()).send(new (await self.sdk()).ListObjectsV2Command({ Bucket: bucket(), Prefix: t.prefix + sub, MaxKeys: limit, ContinuationToken: opts?.cursor })));
        const objects = (r.Contents ?? [])
          // the bucket was asked for this prefix; anything else it answers is not shown
          .filter((o) => o.Key?.startsWith(t.prefix))
          .map((o) => ({ key: o.Key!.slice(t.prefix.length), size: Number(o.Size ?? 0), lastModified: o.LastModified }));
        return { objects, nextCursor: r.IsTruncated ? r.NextContinuationToken : undefined };
      },
      async presignGet(key, opts = {}) {
        const k = validateObjectKey(key);
        const seconds = expires(opts?.expiresInSeconds);
        const t = await tenant();
        const sdk = await self.sdk();
        return sdk.getSignedUrl(await self.s3(), new sdk.GetObjectCommand({ Bucket: bucket(), Key: t.prefix + k }), { expiresIn: seconds });
      },
      async presignPut(key, opts = {}) {
        const k = validateObjectKey(key);
        const seconds = expires(opts?.expiresInSeconds);
        const ct = contentType(opts?.contentType);
        const t = await tenant();
        const sdk = await self.sdk();
        return sdk.getSignedUrl(await self.s3(), new sdk.PutObjectCommand({ Bucket: bucket(), Key: t.prefix + k, ContentType: ct }), { expiresIn: seconds });
      },
      async measure() {
        const t = await tenant();
        return self.measureTenant(t.id);
      },
      async purge() {
        const t = await self.tenants.get(idOrSlug);
        return self.purgeTenant(t.id);
      },
    };
  }

  /** Recounts a tenant's objects and bytes from the bucket and records them. */
  async measureTenant(tenantId: string): Promise<{ bytes: number; objects: number }> {
    const prefix = this.tenantPrefix(tenantId);
    let bytes = 0;
    let objects = 0;
    let token: string | undefined;
    do {
      const r = await this.send(async () => (await this.s3()).send(new (await this.sdk()).ListObjectsV2Command({ Bucket: this.cfg().bucket, Prefix: prefix, ContinuationToken: token })));
      for (const o of r.Contents ?? []) if (o.Key?.startsWith(prefix)) { bytes += Number(o.Size ?? 0); objects++; }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    await this.core.admin`
      insert into tenantry_catalog.tenant_object_usage (tenant_id, bytes, objects, measured_at)
      select ${tenantId}, ${bytes}, ${objects}, now() where exists (select 1 from tenantry_catalog.tenants where id = ${tenantId})
      on conflict (tenant_id) do update set bytes = excluded.bytes, objects = excluded.objects, measured_at = now(), updated_at = now()`;
    return { bytes, objects };
  }

  /** Deletes every object under the tenant's prefix (batches of 1000): the hard delete's purge. Resumable. */
  async purgeTenant(tenantId: string): Promise<number> {
    const prefix = this.tenantPrefix(tenantId);
    let removed = 0;
    for (;;) {
      const r = await this.send(async () => (await this.s3()).send(new (await this.sdk()).ListObjectsV2Command({ Bucket: this.cfg().bucket, Prefix: prefix, MaxKeys: 1000 })));
      const keys = (r.Contents ?? []).map((o) => o.Key!).filter((k) => k.startsWith(prefix));
      if (keys.length === 0) break;
      const d = await this.send(async () => (await this.s3()).send(new (await this.sdk()).DeleteObjectsCommand({ Bucket: this.cfg().bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } })));
      if (d.Errors?.length) throw new TenantryError('OBJECT_STORE_UNAVAILABLE', `The object store refused to delete ${d.Errors.length} objects (${d.Errors[0]?.Code ?? '?'}); the purge is retried.`);
      removed += keys.length;
    }
    await this.core.admin`update tenantry_catalog.tenant_object_usage set bytes = 0, objects = 0, updated_at = now() where tenant_id = ${tenantId}`;
    return removed;
  }

  close(): void {
    this.client?.destroy();
    this.client = undefined;
  }

  private async sizeOf(key: string): Promise<number | undefined> {
    try {
      const h = await (await this.s3()).send(new (await this.sdk()).HeadObjectCommand({ Bucket: this.cfg().bucket, Key: key }));
      return Number(h.ContentLength ?? 0);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw storeError(err);
    }
  }

  private async addUsage(tenantId: string, bytes: number, objects: number): Promise<void> {
    await this.core.admin`
      insert into tenantry_catalog.tenant_object_usage (tenant_id, bytes, objects)
      select ${tenantId}, greatest(0, ${bytes}::bigint), greatest(0, ${objects}::bigint) where exists (select 1 from tenantry_catalog.tenants where id = ${tenantId})
      on conflict (tenant_id) do update set bytes = greatest(0, tenant_object_usage.bytes + ${bytes}::bigint),
        objects = greatest(0, tenant_object_usage.objects + ${objects}::bigint), updated_at = now()`;
  }

  private async send<T>(fn: () => Promise<T>, key?: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (key !== undefined && isNotFound(err)) throw new TenantryError('OBJECT_NOT_FOUND', `No object ${JSON.stringify(key)} in this tenant's storage.`, { key });
      throw storeError(err);
    }
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

function storeError(err: unknown): unknown {
  if (err instanceof TenantryError) return err;
  return new TenantryError('OBJECT_STORE_UNAVAILABLE', `The object store failed (${(err as Error)?.name ?? 'error'}: ${String((err as Error)?.message ?? '').slice(0, 200)}); retry shortly.`, { retryAfterSeconds: 2 }, { cause: err });
}
