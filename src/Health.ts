/**
 * Liveness and readiness, and the metrics. Ready means: the database answers,
 * and every migration this build knows has been applied to it.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Duration, Effect, Metric, Option, Redacted } from "effect"
import * as Crypto from "node:crypto"
import { latestMigrationId } from "../migrations/index.js"
import { bearerIn } from "./Auth.js"
import { AppConfig } from "./Config.js"
import { Unauthorized } from "./Domain/Errors.js"
import { Live, NotReady, ReadinessCheck, Ready } from "./Health/Api.js"
import { processFigures, prometheusText } from "./Metrics.js"
import { appliedMigrationId } from "./Migrations.js"

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

/** Whether `authorization` is `Bearer <token>`, compared in constant time. */
const bearerMatches = (authorization: string | undefined, token: string) => {
  const given = Buffer.from(bearerIn(authorization) ?? "")
  const expected = Buffer.from(token)
  return given.length === expected.length && Crypto.timingSafeEqual(given, expected)
}

export class Health extends Effect.Service<Health>()("Health", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { metricsToken } = yield* AppConfig
    const startedAt = yield* Clock.currentTimeMillis

    const live = Effect.map(
      Clock.currentTimeMillis,
      (now) => new Live({ status: "live", uptimeSeconds: Math.round((now - startedAt) / 1000) })
    )

    const ready: Effect.Effect<Ready, NotReady> = Effect.gen(function*() {
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
      const checks = { database, migrations }
      if (database.status === "ok" && migrations.status === "ok") return new Ready({ status: "ready", checks })
      const failing = Object.entries(checks).filter(([, check]) => check.status === "failing").map(([name]) => name)
      return yield* new NotReady({ message: `Not ready: ${failing.join(", ")} failing`, checks })
    }).pipe(Effect.withSpan("Health.ready"))

    /** The metrics as text, for a scraper that shows the token (when one is set). */
    const metrics = (authorization: string | undefined): Effect.Effect<string, Unauthorized> =>
      Effect.gen(function*() {
        if (Option.isSome(metricsToken) && !bearerMatches(authorization, Redacted.value(metricsToken.value))) {
          return yield* new Unauthorized({ message: "The metrics need METRICS_TOKEN as a bearer token" })
        }
        return prometheusText(yield* Metric.snapshot, processFigures())
      })

    return { live, ready, metrics } as const
  })
}) {}
