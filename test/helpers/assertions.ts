import assert from 'node:assert/strict';
import { isTenantryError, type ErrorCode, type TenantryError } from '../../src/index.js';

/**
 * Asserts that `p` rejects with a TenantryError of `code`; `check` is a pattern its message must
 * match or a function that asserts more. Returns the error.
 */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, check?: RegExp | ((err: TenantryError) => void)): Promise<TenantryError> {
  let caught: TenantryError | undefined;
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isTenantryError(err), `expected a TenantryError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (check instanceof RegExp) assert.match(err.message, check);
    else check?.(err);
    caught = err;
    return true;
  });
  return caught!;
}
