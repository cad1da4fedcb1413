// Applies patches/ (postgres.js 3.4.9: issue #1154, a write after the socket closed threw from a timer
// and ended the process; and no Describe round trip when every parameter's type is known, which keeps a
// tenant transaction to one round trip) with patch-package where this package's own node_modules holds postgres: a
// clone of the repository, or an install that did not hoist it. Installed as a dependency of an app,
// npm hoists postgres beside Tenantry, out of patch-package's reach from here: the install goes on,
// and the server's last-resort handler still keeps `tenantry serve` alive.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

if (!existsSync('node_modules/postgres/package.json')) {
  process.stdout.write('tenantry: postgres.js is installed outside this package; its patch (patches/) is not applied here.\n');
  process.exit(0);
}
const require = createRequire(import.meta.url);
const bin = require.resolve('patch-package/index.js');
const r = spawnSync(process.execPath, [bin], { stdio: 'inherit' });
process.exit(r.status ?? 1);
