import { TenantryError } from '../errors.js';

/**
 * One check for every piece of text that enters Tenantry, run before PostgreSQL sees it. PostgreSQL
 * refuses a NUL byte in text and jsonb (22021) and a lone UTF-16 surrogate cannot be encoded as UTF-8
 * at all, so either one would otherwise surface deep inside a call as a 500, or half-way through a
 * provisioning. The HTTP server, the CLI and the library's public calls all run this one check.
 */

/** The longest single string any call accepts (the HTTP body limit is far below it). */
export const MAX_TEXT_LENGTH = 1_048_576;
/** How deep JSON values (metadata, SQL parameters) may nest. */
export const MAX_DEPTH = 64;
/** How many strings, keys and values one call may carry in all. */
const MAX_NODES = 100_000;

const SUSPECT = /[\u0000\ud800-\udfff]/;
// a high surrogate not followed by a low one, or a low surrogate not preceded by a high one
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why a string is refused, or undefined when it is fine. */
export function textProblem(s: string): string | undefined {
  if (s.length > MAX_TEXT_LENGTH) return `is ${s.length} characters long; the limit is ${MAX_TEXT_LENGTH}`;
  // the common case, ordinary text, costs one scan
  if (!SUSPECT.test(s)) return undefined;
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000), which PostgreSQL cannot store';
  if (LONE_SURROGATE.test(s)) return 'contains an unpaired UTF-16 surrogate, which is not valid Unicode text';
  return undefined;
}

/** `field`, `field.key`, `field[2]`, or `field["odd key"]` for keys that are not plain names. */
function childPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  const safeKey = /^[A-Za-z_$][\w$-]*$/.test(key) ? key : JSON.stringify(key).replace(/\\u0000/g, '\\0');
  if (!parent) return safeKey;
  return safeKey.startsWith('"') ? `${parent}[${safeKey}]` : `${parent}.${safeKey}`;
}

/** An object literal, or a null-prototype record (how query-string and router parsers build theirs). */
function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as object | null;
  return proto === Object.prototype || proto === null || Object.getPrototypeOf(proto) === null;
}

interface Found { field: string; problem: string }
// no cycle tracking: a cycle runs into the depth limit, and shared values into the node limit
interface Walk { field: string; rootPath: string; nodes: number; keys: (string | number)[] }

// the path is only spelled out for the value that fails: building it for every value costs more than the check
const pathOf = (w: Walk): string => w.keys.reduce<string>((p, k) => childPath(p, k), w.rootPath) || w.field;

function walk(w: Walk, v: unknown, depth: number): Found | undefined {
  if (++w.nodes > MAX_NODES) return { field: pathOf(w), problem: `carries more than ${MAX_NODES} values` };
  if (typeof v === 'string') {
    const problem = textProblem(v);
    return problem ? { field: pathOf(w), problem } : undefined;
  }
  if (v === null || typeof v !== 'object') return undefined;
  if (!Array.isArray(v) && !isPlainObject(v)) return undefined;
  if (depth > MAX_DEPTH) return { field: pathOf(w), problem: `nests deeper than ${MAX_DEPTH} levels` };
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      w.keys.push(i);
      const found = walk(w, v[i], depth + 1);
      w.keys.pop();
      if (found) return found;
    }
    return undefined;
  }
  for (const k of Object.keys(v)) {
    const keyProblem = textProblem(k);
    if (keyProblem) return { field: `a key of ${pathOf(w)}`, problem: keyProblem };
    w.keys.push(k);
    const found = walk(w, (v as Record<string, unknown>)[k], depth + 1);
    w.keys.pop();
    if (found) return found;
  }
  return undefined;
}

/**
 * Walks a value (strings, plain objects with their keys, arrays) and returns the first problem as
 * `{ field, problem }`. Functions, dates, buffers and class instances are not text and are left alone.
 */
export function findUnsafeText(value: unknown, field: string, rootPath = field): Found | undefined {
  if (typeof value === 'string') {
    const problem = textProblem(value);
    return problem ? { field: rootPath || field, problem } : undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  return walk({ field, rootPath, nodes: 0, keys: [] }, value, 0);
}

/** Throws 400 INVALID_INPUT naming the field when `value` carries text PostgreSQL cannot take. */
export function assertSafeText(value: unknown, field: string, rootPath = field): void {
  const found = findUnsafeText(value, field, rootPath);
  if (found) {
    throw new TenantryError('INVALID_INPUT', `${found.field} ${found.problem}; send valid text (no NUL characters, no unpaired surrogates).`, { field: found.field });
  }
}

/** The names of a function's parameters, for error messages (`argument 2` where none can be read). */
function parameterNames(fn: (...args: never[]) => unknown): string[] {
  const src = Function.prototype.toString.call(fn);
  const open = src.indexOf('(');
  if (open < 0) return [];
  const names: string[] = [];
  let depth = 0;
  let current = '';
  for (let i = open + 1; i < src.length; i++) {
    const ch = src[i]!;
    if (depth === 0 && (ch === ',' || ch === ')')) {
      const m = /^\s*(?:\.\.\.)?([A-Za-z_$][\w$]*)/.exec(current);
      names.push(m ? m[1]! : '');
      current = '';
      if (ch === ')') break;
      continue;
    }
    if ('([{'.includes(ch)) depth++;
    else if (')]}'.includes(ch)) depth--;
    current += ch;
  }
  return names;
}

/**
 * Wraps an object so that every method call first checks its arguments with assertSafeText, naming
 * the argument (`reason` of tenants.suspend, `metadata.plan` of tenants.create). Getters and data
 * properties pass through untouched; the method runs with the original object as `this`.
 */
export function checkingInputs<T extends object>(target: T): T {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(obj, prop, receiver) {
      if (typeof prop !== 'string' || prop === 'constructor') return Reflect.get(obj, prop, receiver);
      const method = methodOf(obj, prop);
      if (!method) return Reflect.get(obj, prop, receiver);
      let w = wrapped.get(prop);
      if (!w) {
        const names = parameterNames(method);
        w = function (this: unknown, ...args: unknown[]) {
          for (let i = 0; i < args.length; i++) {
            const arg = args[i];
            if (typeof arg === 'string' || (arg !== null && typeof arg === 'object')) {
              const name = names[i] || `argument ${i + 1}`;
              // an options object names its own fields (`metadata.plan`); a plain value names the parameter
              assertSafeText(arg, name, typeof arg === 'string' || Array.isArray(arg) ? name : '');
            }
          }
          return (method as (...a: unknown[]) => unknown).apply(obj, args);
        };
        wrapped.set(prop, w);
      }
      return w;
    },
  });
}

/** The function stored as a method on the object or its prototypes (not a getter, not a data field). */
function methodOf(obj: object, prop: string): ((...args: never[]) => unknown) | undefined {
  for (let o: object | null = obj; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    const d = Object.getOwnPropertyDescriptor(o, prop);
    if (!d) continue;
    if (o === obj) return undefined; // an instance field (a service, a pool, a callback): not a method
    return typeof d.value === 'function' ? d.value as (...args: never[]) => unknown : undefined;
  }
  return undefined;
}
