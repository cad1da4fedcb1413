import { S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command, DeleteObjectsCommand, NoSuchKey } from '@aws-sdk/client-s3';
import { TenantryError } from '../errors.js';
import { checkKey, type BackupStore } from './store.js';

export interface S3StoreOptions {
  bucket: string;
  /** key prefix inside the bucket, e.g. `tenantry/prod` (no leading or trailing slash) */
  prefix?: string;
  /** an S3-compatible endpoint (MinIO, R2, a local server); AWS itself when unset */
  endpoint?: string;
  region?: string;
}

/**
 * Backups in an S3-compatible object store. Credentials come from the AWS SDK's own chain
 * (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles), never from Tenantry's options,
 * so they are never logged or stored by it.
 */
export class S3BackupStore implements BackupStore {
  readonly kind = 's3';
  private readonly client: S3Client;
  private readonly prefix: string;

  constructor(private readonly opts: S3StoreOptions) {
    this.client = new S3Client({
      region: opts.region ?? 'us-east-1',
      ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
    });
    this.prefix = opts.prefix ? `${checkKey(opts.prefix)}/` : '';
  }

  private key(key: string): string {
    return `${this.prefix}${checkKey(key)}`;
  }

  async put(key: string, body: Buffer): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key), Body: body }));
  }

  async get(key: string): Promise<Buffer> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') throw new TenantryError('BACKUP_NOT_FOUND', `No ${key} in the backup store.`);
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: `${this.key(prefix)}/`, ContinuationToken: token }));
      for (const o of r.Contents ?? []) if (o.Key) out.push(o.Key.slice(this.prefix.length));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }

  async remove(prefix: string): Promise<void> {
    const keys = await this.list(prefix);
    for (let i = 0; i < keys.length; i += 1000) {
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.opts.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((k) => ({ Key: this.key(k) })) } }));
    }
  }

  close(): void {
    this.client.destroy();
  }
}
