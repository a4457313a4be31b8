# syntax=docker/dockerfile:1
#
# Web+ server image.
#
#   docker build -t webplus-server .
#   docker run --init -p 3000:3000 -v webplus-data:/data \
#     -e JWT_SECRET=... -e ENCRYPTION_KEYS=... webplus-server
#
# In production mode (NODE_ENV=production, set below) the server refuses to
# start without:
#   JWT_SECRET       at least 32 characters
#   ENCRYPTION_KEYS  comma-separated list of keyId:base64-of-32-bytes
# No secret is baked into this image; supply them at run time.

############################
# Stage 1: build
############################
FROM node:20-bookworm-slim AS build

# Toolchain for node-gyp: better-sqlite3 builds its native addon from source
# when no prebuilt binary matches (its install script is approved in
# package.json "allowScripts").
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so this layer is cached until the manifest changes.
# NODE_ENV is deliberately not "production" here: the build needs devDependencies.
COPY package.json package-lock.json ./
RUN npm ci

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations

# tsc emits to dist/: entry point dist/src/bin/server.js, migrations in dist/migrations/.
RUN npm run build \
 && npm prune --omit=dev

############################
# Stage 2: runtime
############################
FROM node:20-bookworm-slim AS runtime

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data

WORKDIR /app

# Application files stay owned by root (read-only for the runtime user);
# only the data directory is writable by "node".
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/package.json ./package.json

RUN mkdir -p /data && chown node:node /data

USER node

VOLUME ["/data"]
EXPOSE 3000

# The slim image has no curl; Node 20 has a global fetch.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health/ready',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# The app installs its own SIGTERM handler and drains in-flight work, so node
# can run as PID 1. For zombie reaping, run with `docker run --init`
# (compose: `init: true`).
STOPSIGNAL SIGTERM

CMD ["node", "dist/src/bin/server.js"]
