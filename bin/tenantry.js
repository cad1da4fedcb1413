#!/usr/bin/env node
// Built entry point (npm run build); in a source checkout use `npm run tenantry -- <command>`.
import '../dist/cli/main.js';
