/**
 * The Dockerfile and compose.yaml, checked as files: no Docker engine runs on the test machines, so
 * these tests hold the properties the issue asks for (multi-stage, non-root, HEALTHCHECK against
 * /readyz, PostgreSQL + Redis + server in one compose file) and that every path they copy exists.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('the Dockerfile is multi-stage, runs as a non-root user, has a HEALTHCHECK and copies only what exists', () => {
  const text = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const stages = [...text.matchAll(/^FROM \S+ AS (\S+)/gm)].map((m) => m[1]);
  assert.ok(stages.length >= 2, `multi-stage: ${stages.join(', ')}`);
  const runtime = text.slice(text.lastIndexOf('\nFROM '));
  assert.match(runtime, /^USER (?!root\b)\S+/m, 'the last stage runs as a non-root user');
  assert.match(runtime, /^HEALTHCHECK .*\n?.*\/readyz/m, 'HEALTHCHECK asks /readyz');
  assert.match(runtime, /^CMD \[.*"serve"\]/m);
  for (const [, src] of text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const p of src!.split(/\s+/)) assert.ok(existsSync(path.join(ROOT, p)), `COPY ${p}: it exists`);
  }
});

test('compose.yaml starts PostgreSQL, Redis and the server, the server after both are healthy', () => {
  const compose = YAML.parse(readFileSync(path.join(ROOT, 'compose.yaml'), 'utf8')) as { services: Record<string, { image?: string; build?: string; environment?: Record<string, string>; depends_on?: Record<string, { condition: string }>; healthcheck?: unknown }> };
  const { postgres, redis, tenantry } = compose.services;
  assert.ok(postgres?.image?.startsWith('postgres:') && postgres.healthcheck);
  assert.ok(redis?.image?.startsWith('redis:') && redis.healthcheck);
  assert.equal(tenantry?.build, '.');
  assert.match(tenantry!.environment!.DATABASE_URL!, /@postgres:5432\//);
  assert.match(tenantry!.environment!.REDIS_URL!, /^redis:\/\/redis:6379/);
  assert.deepEqual(tenantry!.depends_on, { postgres: { condition: 'service_healthy' }, redis: { condition: 'service_healthy' } });
});
