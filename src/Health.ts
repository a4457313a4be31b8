/**
 * Liveness and readiness, and the metrics. Ready means: the database answers, every migration this
 * build knows has been applied to it, and, with `AMQP_URL`, RabbitMQ answers: without it no request
 * that queues a job succeeds (its offer fails after a wait) and no job runs, as the broker's
 * absence at start-up stops the server. Redis, with `REDIS_URL`, is reported but not required:
 * every user of it lets requests through while it is down (rate limits unenforced, events not
 * passed between instances), and the server starts without it. With `FILES_STORAGE=s3`, the object
 * store must answer too: without it no file is stored or read.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Duration, Effect, Metric, Option, Redacted } from "effect"
import type { Redis } from "ioredis"
import * as Crypto from "node:crypto"
import { latestMigrationId } from "../migrations/index.js"
import { bearerIn } from "./Auth.js"
import { AppConfig } from "./Config.js"
import { Unauthorized } from "./Domain/Errors.js"
import { FileStorage } from "./Files/Storage.js"
import { Live, NotReady, ReadinessCheck, type ReadinessChecks, Ready } from "./Health/Api.js"
import { JobQueueMonitor } from "./Jobs.js"
import { jobsWaiting, processFigures, prometheusText } from "./Metrics.js"
import { appliedMigrationId } from "./Migrations.js"
import { redisConnection } from "./Redis.js"

const checkTimeout = Duration.seconds(2)

/** Runs one check with a time bound, reporting how long it took and why it failed. */
const runCheck = <E, R>(check: Effect.Effect<void, E, R>, describe: (error: E) => string) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const outcome = yield* check.pipe(
      Effect.timeoutFail({
        duration: checkTimeout,
        onTimeout: () => `timed out after ${Duration.format(checkTimeout)}`
      }),
      Effect.mapError((error) => typeof error === "string" ? error : describe(error)),
      Effect.either
    )
    const durationMs = (yield* Clock.currentTimeMillis) - start
    return outcome._tag === "Right"
      ? new ReadinessCheck({ status: "ok", durationMs })
      : new ReadinessCheck({ status: "failing", message: outcome.left, durationMs })
  })

/** A round trip to Redis; at once a failure while the client is not connected (it reconnects on its own). */
const pingRedis = (client: Redis): Effect.Effect<void, Error> =>
  Effect.suspend(() =>
    client.status === "ready"
      ? Effect.tryPromise({
        try: () => client.ping(),
        catch: (error) => error instanceof Error ? error : new Error(String(error))
      })
      : Effect.fail(new Error(`not connected (${client.status})`))
  )

/** The checks that must pass for the instance to be ready; the others are reported only. */
const required: ReadonlyArray<keyof typeof ReadinessChecks.Type> = ["database", "migrations", "rabbitmq", "storage"]

/** Whether `authorization` is `Bearer <token>`, compared in constant time. */
const bearerMatches = (authorization: string | undefined, token: string) => {
  const given = Buffer.from(bearerIn(authorization) ?? "")
  const expected = Buffer.from(token)
  return given.length === expected.length && Crypto.timingSafeEqual(given, expected)
}

export class Health extends Effect.Service<Health>()("Health", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { metricsToken, redis } = yield* AppConfig
    const jobQueues = yield* JobQueueMonitor
    const storage = yield* FileStorage
    const startedAt = yield* Clock.currentTimeMillis
    // A connection of its own: the others (rate limits, events) are their features' own business.
    const redisClient = yield* Effect.transposeOption(
      Option.map(redis.url, (url) => redisConnection({ url, whileDown: "readiness reports it failing" }))
    )

    const live = Effect.map(
      Clock.currentTimeMillis,
      (now) => new Live({ status: "live", uptimeSeconds: Math.round((now - startedAt) / 1000) })
    )

    const schema = Effect.gen(function*() {
      const database = yield* runCheck(sql`SELECT 1`, () => "database unreachable")
      const migrations = database.status === "ok"
        ? yield* runCheck(
          appliedMigrationId.pipe(
            Effect.mapError(() => "could not read the migrations table"),
            Effect.flatMap((applied) => {
              const id = Option.getOrElse(applied, () => 0)
              return id >= latestMigrationId
                ? Effect.void
                : Effect.fail(`schema at migration ${id}, this build needs ${latestMigrationId}`)
            }),
            Effect.provideService(SqlClient.SqlClient, sql)
          ),
          (message) => message
        )
        : new ReadinessCheck({ status: "failing", message: "skipped: database unreachable", durationMs: 0 })
      return { database, migrations }
    })

    // Only the services configured are checked, and only they appear in the body. Their errors'
    // details stay out of it (this endpoint is public): the store and the client log them.
    const shared = Effect.all({
      redis: Effect.transposeOption(
        Option.map(redisClient, (client) => runCheck(pingRedis(client), () => "Redis unreachable"))
      ),
      rabbitmq: Effect.transposeOption(
        Option.map(jobQueues.broker, (ping) => runCheck(ping, () => "RabbitMQ unreachable"))
      ),
      storage: Effect.transposeOption(Option.map(storage.check, (check) => runCheck(check, (message) => message)))
    }, { concurrency: "unbounded" })

    const ready: Effect.Effect<Ready, NotReady> = Effect.gen(function*() {
      const [core, { rabbitmq, redis, storage }] = yield* Effect.all([schema, shared], { concurrency: "unbounded" })
      const checks: typeof ReadinessChecks.Type = {
        ...core,
        ...(Option.isSome(redis) ? { redis: redis.value } : {}),
        ...(Option.isSome(rabbitmq) ? { rabbitmq: rabbitmq.value } : {}),
        ...(Option.isSome(storage) ? { storage: storage.value } : {})
      }
      const failing = required.filter((name) => checks[name]?.status === "failing")
      if (failing.length === 0) return new Ready({ status: "ready", checks })
      return yield* new NotReady({ message: `Not ready: ${failing.join(", ")} failing`, checks })
    }).pipe(Effect.withSpan("Health.ready"))

    /** The metrics as text, for a scraper that shows the token (when one is set). */
    const metrics = (authorization: string | undefined): Effect.Effect<string, Unauthorized> =>
      Effect.gen(function*() {
        if (Option.isSome(metricsToken) && !bearerMatches(authorization, Redacted.value(metricsToken.value))) {
          return yield* new Unauthorized({ message: "The metrics need METRICS_TOKEN as a bearer token" })
        }
        // Read from the queues' store now, within the checks' time bound; left out when it cannot be read.
        const depths = yield* jobQueues.depths.pipe(
          Effect.timeoutFail({
            duration: checkTimeout,
            onTimeout: () => `timed out after ${Duration.format(checkTimeout)}`
          }),
          Effect.catchAll((error) =>
            Effect.as(
              Effect.logWarning(
                "Job queue depths could not be read",
                typeof error === "string" ? error : error.message
              ),
              []
            )
          )
        )
        return prometheusText(yield* Metric.snapshot, [...processFigures(), ...jobsWaiting(depths)])
      })

    return { live, ready, metrics } as const
  })
}) {}
