import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { type ConfigError, Duration, Effect, Either, Layer, LogLevel, Option, Redacted } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { AppConfig, environment, formatConfigError, parseByteSize } from "../src/Config.js"
import { parseEncryptionKeys, Secrets } from "../src/Secrets.js"
import { freshDirectory } from "./fixtures/Database.js"
import { runEntry } from "./fixtures/Process.js"

/** The environment `env`, read as the entry points read theirs (`environment`). */
const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(environment(env))

const loadConfig = (env: Record<string, string>) => AppConfig.pipe(Effect.provide(AppConfig.Default), withEnv(env))

const loadSecrets = (env: Record<string, string>) =>
  Secrets.pipe(
    Effect.provide(Secrets.Default.pipe(Layer.provide(AppConfig.Default), Layer.provide(NodeContext.layer))),
    withEnv(env)
  )

/** The one line a configuration failure is reported as. */
const failureLine = <A>(effect: Effect.Effect<A, ConfigError.ConfigError>) =>
  Effect.map(Effect.flip(effect), formatConfigError)

const key32 = () => Crypto.randomBytes(32).toString("base64")

describe("configuration", () => {
  it.effect("defaults need no environment at all", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({})
      expect(config.port).toBe(3000)
      expect(config.host).toBe("127.0.0.1")
      expect(config.dataDir).toBe("./data")
      expect(Option.isNone(config.database.url)).toBe(true)
      expect(config.database.poolSize).toBe(10)
      expect(Duration.toMillis(config.database.statementTimeout)).toBe(30_000)
      expect(config.database.migrateOnStart).toBe(true)
      expect(config.logLevel).toEqual(LogLevel.Info)
      expect(config.logFormat).toBe("pretty")
      expect(config.maxBodySize).toBe(1024 * 1024)
      expect(config.corsOrigins).toEqual([])
    }))

  it.effect("a variable set to the empty string (KEY= in an env file) counts as unset", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        PORT: "",
        DATABASE_URL: "",
        REDIS_URL: "",
        METRICS_TOKEN: "",
        OTEL_EXPORTER_OTLP_ENDPOINT: "",
        OTEL_EXPORTER_OTLP_HEADERS: "",
        OPENAI_API_KEY: "",
        LOG_LEVEL: "",
        RATE_LIMIT_PER_ADDRESS: "",
        RATE_LIMIT_EXEMPT_ADDRESSES: "",
        TOKEN_BUDGET_PER_USER: "",
        TOKEN_BUDGET_PERIOD: "",
        HOST: "0.0.0.0"
      })
      expect(config.port).toBe(3000)
      expect(config.host).toBe("0.0.0.0")
      expect(Option.isNone(config.database.url)).toBe(true)
      expect(Option.isNone(config.redis.url)).toBe(true)
      expect(Option.isNone(config.metricsToken)).toBe(true)
      expect(Option.isNone(config.telemetry.otlpEndpoint)).toBe(true)
      expect(Option.isNone(config.models.openAiApiKey)).toBe(true)
      expect(config.logLevel).toEqual(LogLevel.Info)
      expect(Option.isNone(config.apiRateLimit.perAddress)).toBe(true)
      expect(config.apiRateLimit.exemptAddresses).toEqual([])
      expect(config.chat.tokenBudget).toEqual({ perUser: Option.none(), period: "month" })
    }))

  it.effect("reads every variable", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        NODE_ENV: "production",
        PORT: "8080",
        HOST: "0.0.0.0",
        DATA_DIR: "/var/lib/webplus",
        DATABASE_URL: "postgres://user:pw@db:5432/webplus",
        DATABASE_POOL_SIZE: "25",
        DATABASE_STATEMENT_TIMEOUT: "5 seconds",
        MIGRATE_ON_START: "false",
        LOG_LEVEL: "debug",
        MAX_BODY_SIZE: "10mb",
        CORS_ORIGINS: "https://a.example, https://b.example",
        SHUTDOWN_TIMEOUT: "3 seconds",
        TRUST_PROXY: "true",
        ACCESS_TOKEN_TTL: "5 minutes",
        REFRESH_TOKEN_TTL: "7 days",
        PASSWORD_HASH_COST: "15",
        PASSWORD_HASH_CONCURRENCY: "4",
        PASSWORD_HASH_QUEUE_LIMIT: "0",
        AUTH_RATE_LIMIT_WINDOW: "30 seconds",
        AUTH_RATE_LIMIT_PER_ADDRESS: "50",
        AUTH_RATE_LIMIT_PER_ACCOUNT: "7",
        REDIS_URL: "redis://:hunter2@cache:6379/2",
        REDIS_KEY_PREFIX: "wp:"
      })
      expect(config.port).toBe(8080)
      expect(config.logFormat).toBe("json") // production default
      expect(Redacted.value(Option.getOrThrow(config.database.url))).toBe("postgres://user:pw@db:5432/webplus")
      expect(String(Option.getOrThrow(config.database.url))).not.toContain("pw")
      expect(config.database.poolSize).toBe(25)
      expect(Duration.toMillis(config.database.statementTimeout)).toBe(5000)
      expect(config.database.migrateOnStart).toBe(false)
      expect(config.logLevel).toEqual(LogLevel.Debug)
      expect(config.maxBodySize).toBe(10 * 1024 * 1024)
      expect(config.corsOrigins).toEqual(["https://a.example", "https://b.example"])
      expect(Duration.toMillis(config.shutdownTimeout)).toBe(3000)
      expect(config.trustProxy).toBe(true)
      expect(Duration.toMinutes(config.auth.accessTokenTtl)).toBe(5)
      expect(Duration.toHours(config.auth.refreshTokenTtl)).toBe(7 * 24)
      expect(config.auth.passwordHashCost).toBe(15)
      expect(config.auth.passwordHashConcurrency).toBe(4)
      expect(config.auth.passwordHashQueueLimit).toBe(0)
      expect(Duration.toSeconds(config.auth.rateLimitWindow)).toBe(30)
      expect(config.auth.rateLimitPerAddress).toBe(50)
      expect(config.auth.rateLimitPerAccount).toBe(7)
      expect(Redacted.value(Option.getOrThrow(config.redis.url))).toBe("redis://:hunter2@cache:6379/2")
      expect(String(Option.getOrThrow(config.redis.url))).not.toContain("hunter2")
      expect(config.redis.keyPrefix).toBe("wp:")
    }))

  it.effect("a malformed value fails with one line naming the variable", () =>
    Effect.gen(function*() {
      expect(yield* failureLine(loadConfig({ PORT: "eighty" }))).toMatch(/^Invalid configuration: PORT: /)
      expect(yield* failureLine(loadConfig({ PORT: "70000" }))).toMatch(/PORT/)
      expect(yield* failureLine(loadConfig({ LOG_FORMAT: "xml" }))).toMatch(/LOG_FORMAT/)
      expect(yield* failureLine(loadConfig({ DATABASE_POOL_SIZE: "0" }))).toMatch(/DATABASE_POOL_SIZE/)
      expect(yield* failureLine(loadConfig({ MAX_BODY_SIZE: "lots" }))).toMatch(/MAX_BODY_SIZE/)
      expect(yield* failureLine(loadConfig({ NODE_ENV: "staging" }))).toMatch(/NODE_ENV/)
      expect(yield* failureLine(loadConfig({ SHUTDOWN_TIMEOUT: "soon" }))).toMatch(/SHUTDOWN_TIMEOUT/)
      expect(yield* failureLine(loadConfig({ PASSWORD_HASH_COST: "30" }))).toMatch(/PASSWORD_HASH_COST/)
      expect(yield* failureLine(loadConfig({ AUTH_RATE_LIMIT_PER_ACCOUNT: "-1" }))).toMatch(
        /AUTH_RATE_LIMIT_PER_ACCOUNT/
      )
      const line = yield* failureLine(loadConfig({ MIGRATE_ON_START: "perhaps" }))
      expect(line).toMatch(/MIGRATE_ON_START/)
      expect(line).not.toContain("\n")
    }))

  it.effect("general rate limits: off by default; exempt addresses are addresses or CIDR networks", () =>
    Effect.gen(function*() {
      const defaults = yield* loadConfig({})
      expect(Option.isNone(defaults.apiRateLimit.perAddress)).toBe(true)
      expect(Option.isNone(defaults.apiRateLimit.perUser)).toBe(true)
      expect(defaults.apiRateLimit.exemptAddresses).toEqual([])
      const set = yield* loadConfig({
        RATE_LIMIT_PER_ADDRESS: "600",
        RATE_LIMIT_PER_USER: "300",
        RATE_LIMIT_WINDOW: "30 seconds",
        RATE_LIMIT_EXEMPT_ADDRESSES: "10.0.0.0/8, 192.0.2.7 ,fd00::/8"
      })
      expect(set.apiRateLimit.perAddress).toEqual(Option.some(600))
      expect(set.apiRateLimit.perUser).toEqual(Option.some(300))
      expect(Duration.toMillis(set.apiRateLimit.window)).toBe(30_000)
      expect(set.apiRateLimit.exemptAddresses).toEqual([
        { address: "10.0.0.0", prefix: 8, family: "ipv4" },
        { address: "192.0.2.7", prefix: 32, family: "ipv4" },
        { address: "fd00::", prefix: 8, family: "ipv6" }
      ])
      for (const bad of ["10.0.0.0/33", "example.com", "10.0.0.1/8/8", "::1/129", "10.0.0.0/x"]) {
        expect(yield* failureLine(loadConfig({ RATE_LIMIT_EXEMPT_ADDRESSES: bad }))).toContain(
          "RATE_LIMIT_EXEMPT_ADDRESSES"
        )
      }
      expect(yield* failureLine(loadConfig({ RATE_LIMIT_PER_USER: "0" }))).toContain("RATE_LIMIT_PER_USER")
    }))

  it("parses byte sizes", () => {
    expect(parseByteSize("1048576")).toEqual(Either.right(1048576))
    expect(parseByteSize("512kb")).toEqual(Either.right(512 * 1024))
    expect(parseByteSize("2MiB")).toEqual(Either.right(2 * 1024 * 1024))
    expect(Either.isLeft(parseByteSize("0"))).toBe(true)
    expect(Either.isLeft(parseByteSize("1tb"))).toBe(true)
    expect(Either.isLeft(parseByteSize("-5"))).toBe(true)
  })

  it("parses encryption keys: id:base64 of 32 bytes, unique ids, the first one encrypts", () => {
    const keys = parseEncryptionKeys(`new:${key32()},old:${key32()}`)
    expect(Either.getOrThrow(keys).map((key) => key.id)).toEqual(["new", "old"])
    expect(Either.isLeft(parseEncryptionKeys(`short:${Buffer.from("tiny").toString("base64")}`))).toBe(true)
    expect(Either.isLeft(parseEncryptionKeys(`a:${key32()},a:${key32()}`))).toBe(true)
    expect(Either.isLeft(parseEncryptionKeys(key32()))).toBe(true)
    expect(Either.isLeft(parseEncryptionKeys(""))).toBe(true)
  })
})

describe("secrets", () => {
  it.scopedLive("are generated once into DATA_DIR (mode 0600) and the same on every start", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const first = yield* loadSecrets({ DATA_DIR: dataDir })
      const second = yield* loadSecrets({ DATA_DIR: dataDir })
      expect(Redacted.value(first.jwtSecret).length).toBeGreaterThanOrEqual(32)
      expect(Redacted.value(second.jwtSecret)).toBe(Redacted.value(first.jwtSecret))
      expect(second.encryptionKeys.map((key) => key.id)).toEqual(first.encryptionKeys.map((key) => key.id))
      const file = Path.join(dataDir, "secrets.json")
      expect(Fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(Fs.readdirSync(dataDir)).toEqual(["secrets.json"])
    }))

  it.scopedLive("instances starting together agree on one generated set", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const all = yield* Effect.all(Array.from({ length: 8 }, () => loadSecrets({ DATA_DIR: dataDir })), {
        concurrency: "unbounded"
      })
      expect(new Set(all.map((secrets) => Redacted.value(secrets.jwtSecret))).size).toBe(1)
    }))

  it.scopedLive("come from the environment when set, and are never generated then", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const jwt = "x".repeat(40)
      const secrets = yield* loadSecrets({ DATA_DIR: dataDir, JWT_SECRET: jwt, ENCRYPTION_KEYS: `k1:${key32()}` })
      expect(Redacted.value(secrets.jwtSecret)).toBe(jwt)
      expect(secrets.encryptionKeys[0]!.id).toBe("k1")
      expect(Fs.readdirSync(dataDir)).toEqual([])
    }))

  it.scopedLive("are required in production, and validated", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const production = { NODE_ENV: "production", DATA_DIR: dataDir }
      expect(yield* failureLine(loadSecrets(production))).toMatch(/JWT_SECRET/)
      expect(yield* failureLine(loadSecrets({ ...production, JWT_SECRET: "y".repeat(40) }))).toMatch(
        /ENCRYPTION_KEYS/
      )
      expect(yield* failureLine(loadSecrets({ ...production, JWT_SECRET: "short", ENCRYPTION_KEYS: `k:${key32()}` })))
        .toMatch(/JWT_SECRET: Expected at least 32 characters/)
      expect(yield* failureLine(loadSecrets({ ...production, JWT_SECRET: "y".repeat(40), ENCRYPTION_KEYS: "k:abc" })))
        .toMatch(/ENCRYPTION_KEYS/)
      expect(Fs.readdirSync(dataDir)).toEqual([])
    }))
})

describe("start-up failures", () => {
  it.scopedLive("a malformed variable stops the server with one line naming it and a non-zero exit", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const run = yield* runEntry("server", { DATA_DIR: dataDir, PORT: "not-a-port" })
      expect(run.code).toBe(1)
      const lines = run.stderr.trim().split("\n")
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/^Invalid configuration: PORT: /)
    }))

  it.scopedLive("the entry points take a variable set to the empty string as unset", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const migrated = yield* runEntry("migrate", {
        DATA_DIR: dataDir,
        DATABASE_URL: "",
        METRICS_TOKEN: "",
        OTEL_EXPORTER_OTLP_ENDPOINT: "",
        LOG_LEVEL: ""
      })
      expect(migrated.stderr).toBe("")
      expect(migrated.code).toBe(0)
    }))

  it.scopedLive("production without secrets (unset or empty) refuses to start, naming what is missing", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      for (const secrets of [{}, { JWT_SECRET: "" }]) {
        const run = yield* runEntry("server", { DATA_DIR: dataDir, NODE_ENV: "production", PORT: "0", ...secrets })
        expect(run.code).toBe(1)
        expect(run.stderr.trim()).toMatch(/^Invalid configuration: JWT_SECRET is required$/)
      }
    }))

  it.scopedLive("an unreachable database stops the server with one line and no credentials", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const run = yield* runEntry("server", {
        DATA_DIR: dataDir,
        PORT: "0",
        DATABASE_URL: "postgres://webplus:sup3r-secret@127.0.0.1:1/webplus",
        DATABASE_CONNECT_TIMEOUT: "2 seconds"
      })
      expect(run.code).toBe(1)
      expect(run.stderr.trim().split("\n")).toHaveLength(1)
      expect(run.stderr).toMatch(/^Database unavailable: /)
      expect(run.stderr + run.stdout).not.toContain("sup3r-secret")
    }))
})
