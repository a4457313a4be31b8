/**
 * Applies `migrations/` with the `@effect/sql` Migrator, safely when several
 * instances start at once against one database.
 *
 * The Migrator runs every pending migration in one transaction and, on
 * PostgreSQL, serialises runs with a table lock. What it leaves open is the
 * race to create its bookkeeping table, and (on SQLite) an instance that loses
 * the write race returning before the winner has committed. So the table is
 * created ahead with retries, and every instance waits until the newest
 * migration is recorded before it reports success.
 */
import { Migrator, SqlClient } from "@effect/sql"
import { Data, Duration, Effect, Layer, Option, Schedule } from "effect"
import { latestMigrationId, migrations } from "../migrations/index.js"
import { AppConfig } from "./Config.js"
import { dialectOf } from "./Sql.js"

export const migrationsTable = "effect_sql_migrations"

export class MigrationsError extends Data.TaggedError("MigrationsError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** The newest migration recorded in the database; `None` when none is (or the table does not exist). */
export const appliedMigrationId = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const exists = dialectOf(sql) === "pg"
    ? sql<{ exists: string | null }>`SELECT to_regclass(${migrationsTable}) AS exists`.pipe(
      Effect.map((rows) => rows[0]?.exists != null)
    )
    : sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' AND name = ${migrationsTable}`.pipe(
      Effect.map((rows) => rows.length > 0)
    )
  if (!(yield* exists)) return Option.none<number>()
  const rows = yield* sql<{ id: number | null }>`SELECT max(migration_id) AS id FROM ${sql(migrationsTable)}`
  return Option.fromNullable(rows[0]?.id)
})

const ensureMigrationsTable = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Same shape as the Migrator's own, so it recognises the table and skips creating it.
  yield* dialectOf(sql) === "pg"
    ? sql`CREATE TABLE IF NOT EXISTS ${sql(migrationsTable)} (
        migration_id integer primary key,
        created_at timestamp with time zone not null default now(),
        name text not null
      )`
    : sql`CREATE TABLE IF NOT EXISTS ${sql(migrationsTable)} (
        migration_id integer PRIMARY KEY NOT NULL,
        created_at datetime NOT NULL DEFAULT current_timestamp,
        name VARCHAR(255) NOT NULL
      )`
}).pipe(
  // Concurrent CREATE TABLE IF NOT EXISTS can still collide on PostgreSQL's catalog; the loser retries.
  Effect.retry({ schedule: Schedule.spaced(Duration.millis(50)), times: 20 })
)

const migrate = Migrator.make({})({ loader: Migrator.fromRecord(migrations), table: migrationsTable })

const awaitLatest = appliedMigrationId.pipe(
  Effect.flatMap((applied) =>
    Option.getOrElse(applied, () => 0) >= latestMigrationId
      ? Effect.void
      : Effect.fail(new MigrationsError({ message: "Migrations are being applied by another instance" }))
  ),
  Effect.retry({ schedule: Schedule.spaced(Duration.millis(100)), times: 600 })
)

/**
 * A database a newer build has migrated further than this one knows: this build would run against
 * a schema it was not written for. Refused, saying what to do (roll forward, or restore the backup
 * taken before the upgrade).
 */
const refuseNewerSchema = Effect.flatMap(
  appliedMigrationId,
  (applied) =>
    Option.isSome(applied) && applied.value > latestMigrationId
      ? Effect.fail(
        new MigrationsError({
          message: `The database is at migration ${applied.value}, newer than this build knows ` +
            `(${latestMigrationId}): a newer version upgraded it. Run that version again, or restore the ` +
            "backup taken before the upgrade (README, \"Upgrading and rolling back\")"
        })
      )
      : Effect.void
)

/** Applies pending migrations; returns the ones this call applied. */
export const runMigrations: Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  MigrationsError,
  SqlClient.SqlClient
> = Effect.gen(function*() {
  yield* ensureMigrationsTable
  yield* refuseNewerSchema
  const applied = yield* migrate.pipe(
    // A busy SQLite database or a serialisation failure is transient: try the whole run again.
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(20)),
      times: 10,
      while: (error) => error._tag === "SqlError"
    })
  )
  yield* awaitLatest
  for (const [id, name] of applied) {
    yield* Effect.logInfo("Applied migration").pipe(Effect.annotateLogs({ migrationId: id, migration: name }))
  }
  return applied
}).pipe(
  Effect.catchAll((error) =>
    error._tag === "MigrationsError"
      ? Effect.fail(error)
      : Effect.fail(new MigrationsError({ message: `Migrations failed: ${error.message}`, cause: error }))
  ),
  Effect.withSpan("Migrations.run")
)

/** Applies migrations while the server starts, unless `MIGRATE_ON_START=false`. */
export const MigrationsLive = Layer.effectDiscard(
  Effect.gen(function*() {
    const { database } = yield* AppConfig
    if (database.migrateOnStart) yield* runMigrations
    else yield* Effect.logInfo("MIGRATE_ON_START=false: not applying migrations")
  })
)
