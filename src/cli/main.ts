#!/usr/bin/env node
// `tenantry migrate` with nothing pending is answered before the rest of the CLI (and with it the
// HTTP server, Swagger, the job runner, the AWS SDK and the SQL parser) is even loaded: it runs in CI
// and deploy scripts on every release, where its start-up time was most of its cost.
import { quickMigrate } from './quick-migrate.js';

if (!(await quickMigrate(process.argv.slice(2)))) {
  const { main } = await import('./program.js');
  await main();
}
