/**
 * The one `SqlClient` of the server, chosen from configuration: embedded
 * SQLite under `DATA_DIR` by default, a PostgreSQL pool when `DATABASE_URL`
 * is set. Both are scoped resources, closed when the server shuts down.
 *
 * SQL speaks snake_case, code speaks camelCase: the client's name transforms
 * map between them, so repositories never spell a column twice.
 */
import { FileSystem, Path } from "@effect/platform"
import { SqlClient, SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Cause, ConfigError, DateTime, Duration, Effect, Layer, Option, Redacted, Runtime, String } from "effect"
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"
import Pg from "pg"
import { AppConfig, type DatabaseSettings } from "./Config.js"

export type Dialect = "sqlite" | "pg"

const transforms = {
  transformQueryNames: String.camelToSnake,
  transformResultNames: String.snakeToCamel
} as const

/** The SQLite file of the embedded mode. */
export const sqliteFilename = (dataDir: string, path: Path.Path) => path.join(dataDir, "webplus.db")

/**
 * Checkpoints of the write-ahead log happen on a worker thread, on a connection of its own, once a
 * second. Left to itself, SQLite copies the log into the database (with an fsync) within whichever
 * commit takes the log past 1,000 pages: on the serving connection, which blocks the event loop for
 * milliseconds (5–8 ms on about one commit in a hundred under chat load). The serving connection
 * keeps a far higher threshold, in case the worker falls behind or is gone.
 */
const checkpointEveryMs = 1_000
const servingCheckpointPages = 10_000

/** The worker's code: opens the database and checkpoints it, passively, until told to stop. */
const checkpointerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const Database = require(workerData.driver)
const db = new Database(workerData.filename, { fileMustExist: true })
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)")
  } catch {
    // Busy or failing: the next round, or the serving connection's own threshold, will do it.
  }
}, workerData.everyMs)
parentPort.once("message", () => {
  clearInterval(timer)
  db.close()
  parentPort.close()
})
`

const sqliteDriver = createRequire(import.meta.url).resolve("better-sqlite3")

const walCheckpointer = (filename: string) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const worker = new Worker(checkpointerSource, {
          eval: true,
          workerData: { driver: sqliteDriver, filename, everyMs: checkpointEveryMs }
        })
        worker.on("error", (error) => {
          runFork(Effect.logWarning("The WAL checkpointer stopped; commits checkpoint the database themselves", error))
        })
        worker.unref()
        const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()))
        return { worker, exited }
      }),
      ({ exited, worker }) =>
        Effect.promise(() => {
          worker.postMessage("stop")
          return exited
        }).pipe(
          Effect.timeout(Duration.seconds(5)),
          Effect.catchAll(() => Effect.asVoid(Effect.promise(() => worker.terminate())))
        )
    )
  }))

/**
 * The embedded database. `busyTimeout`: how long a statement waits for a lock held by another
 * process (a command-line tool writing the file, say) before it fails with `SQLITE_BUSY` (answered
 * 503): better-sqlite3 waits synchronously, so the whole server waits with it.
 */
export const sqliteLayer = (filename: string, busyTimeout: Duration.Duration = Duration.seconds(1)) =>
  walCheckpointer(filename).pipe(
    Layer.provideMerge(
      SqliteClient.layer({ filename, ...transforms }).pipe(
        Layer.tap((context) => {
          const sql = context.unsafeMap.get(SqlClient.SqlClient.key) as SqlClient.SqlClient
          // Per-connection settings: the client keeps one connection for its whole life.
          return Effect.all([
            sql.unsafe("PRAGMA foreign_keys = ON"),
            sql.unsafe(`PRAGMA busy_timeout = ${Math.round(Duration.toMillis(busyTimeout))}`),
            sql.unsafe("PRAGMA synchronous = NORMAL"),
            sql.unsafe(`PRAGMA wal_autocheckpoint = ${servingCheckpointPages}`)
          ], { discard: true })
        })
      )
    )
  )

/**
 * PostgreSQL values are read in the representation SQLite produces, so one row
 * schema (`Model.Class`) decodes both dialects: booleans as 0/1, timestamps as
 * ISO-8601 UTC text, JSON as text, 64-bit integers as numbers.
 */
const pgTypeOids = { bool: 16, int8: 20, json: 114, timestamp: 1114, timestamptz: 1184, jsonb: 3802 } as const

/** `2026-01-02 03:04:05.678+00` (sessions speak UTC) as `2026-01-02T03:04:05.678Z`, without a `Date` in between. */
const pgUtcTimestamp = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(?:\+00)?$/

const isoFromPg = (value: string): string | undefined => {
  const match = pgUtcTimestamp.exec(value)
  return match === null ? undefined : `${match[1]}T${match[2]}.${(match[3] ?? "").padEnd(3, "0").slice(0, 3)}Z`
}

const pgTypes: Pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    switch (oid) {
      case pgTypeOids.bool:
        return (value: string) => (value === "t" ? 1 : 0)
      case pgTypeOids.int8:
        return (value: string) => Number(value)
      case pgTypeOids.json:
      case pgTypeOids.jsonb:
        return (value: string) => value
      case pgTypeOids.timestamp:
      case pgTypeOids.timestamptz: {
        const parse = Pg.types.getTypeParser(oid, "text") as (value: string) => Date
        return (value: string) => isoFromPg(value) ?? parse(value).toISOString()
      }
      default:
        return Pg.types.getTypeParser(oid, format)
    }
  }) as Pg.CustomTypesConfig["getTypeParser"]
}

export const pgLayer = (
  url: Redacted.Redacted<string>,
  settings: Omit<DatabaseSettings, "url" | "migrateOnStart" | "sqliteBusyTimeout">
) =>
  PgClient.layerFromPool({
    ...transforms,
    transformJson: false,
    applicationName: "webplus",
    acquire: Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const pool = new Pg.Pool({
            connectionString: Redacted.value(url),
            max: settings.poolSize,
            connectionTimeoutMillis: Duration.toMillis(settings.connectTimeout),
            statement_timeout: Duration.toMillis(settings.statementTimeout),
            application_name: "webplus",
            types: pgTypes,
            // Sessions speak UTC so `now()` and text timestamps agree with the application clock.
            options: "-c TimeZone=UTC"
          })
          // An idle client losing its connection must not crash the process; the pool replaces it.
          pool.on("error", () => {})
          try {
            await pool.query("SELECT 1")
          } catch (cause) {
            await pool.end()
            throw cause
          }
          return pool
        },
        catch: (cause) => new SqlError.SqlError({ cause, message: "Could not connect to PostgreSQL" })
      }),
      (pool) => Effect.promise(() => pool.end())
    )
  })

/**
 * The current time as timestamps are stored: ISO-8601 UTC text with milliseconds, from the
 * Effect clock. Keyset cursors carry stored values back, so every write uses this one form.
 */
export const storedNow: Effect.Effect<string> = Effect.map(DateTime.now, DateTime.formatIso)

/** The dialect a client speaks, for the few places where SQL must differ. */
export const dialectOf = (sql: SqlClient.SqlClient): Dialect =>
  sql.onDialectOrElse({ pg: () => "pg" as const, orElse: () => "sqlite" as const })

export const SqlLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const config = yield* AppConfig
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const { url, ...settings } = config.database
    if (Option.isSome(url)) return pgLayer(url.value, settings)
    yield* fs.makeDirectory(config.dataDir, { recursive: true }).pipe(
      Effect.mapError((error) =>
        ConfigError.InvalidData(["DATA_DIR"], `Cannot create ${config.dataDir}: ${error.message}`)
      )
    )
    return sqliteLayer(sqliteFilename(config.dataDir, path), config.database.sqliteBusyTimeout)
  })
)

/**
 * Where a newest-first page, ordered by `(created_at, id)` descending, continues: the rows before
 * `after`; every row when there is none.
 */
export const createdBefore = (
  sql: SqlClient.SqlClient,
  after: Option.Option<{ readonly at: string; readonly id: string }>
) =>
  Option.match(after, {
    onNone: () => sql`TRUE`,
    onSome: ({ at, id }) => sql`(created_at < ${at} OR (created_at = ${at} AND id < ${id}))`
  })

/**
 * Runs `effect` in a transaction. Repositories already turn query failures
 * into defects; what is left (BEGIN or COMMIT failing) is one too.
 */
export const inTransaction =
  (sql: SqlClient.SqlClient) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    sql.withTransaction(effect).pipe(
      Effect.catchIf((error: E | SqlError.SqlError) => error instanceof SqlError.SqlError, Effect.die)
    ) as Effect.Effect<A, E, R>

/**
 * Counts a repository's writes in this process, for copies of its rows kept in memory: a copy
 * taken when the count was lower may be out of date. (Writes by other instances are not counted:
 * such a copy must also expire.)
 */
export const writeCounter = () => {
  let count = 0
  return {
    /** Runs a write, and counts it whether or not it succeeded. */
    counted: <A, E, R>(write: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.ensuring(write, Effect.sync(() => count++)),
    /** How many writes were made (or tried) so far. */
    writes: (): number => count
  }
}

/**
 * Serialises the transactions that take the same named lock, for checks that
 * span rows ("is this the last admin?"). PostgreSQL: a transaction-scoped
 * advisory lock. SQLite already runs one write transaction at a time.
 */
export const transactionLock = (sql: SqlClient.SqlClient, name: string): Effect.Effect<void> =>
  dialectOf(sql) === "pg"
    ? Effect.orDie(Effect.asVoid(sql`SELECT pg_advisory_xact_lock(hashtext(${`webplus.${name}`}))`))
    : Effect.void

/** PostgreSQL's SQLSTATEs of a server that is gone or refuses work: connection exceptions, shutdown, no free connection. */
const unavailableStates = /^(08|57P0[123]$|53300$)/

/** Node's errors of a connection that could not be made or was cut; SQLite's of a database locked past its busy timeout. */
const unavailableCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
  "SQLITE_BUSY"
])

/** `pg`'s own words for a connection that broke, or that the pool could not open in time. */
const unavailableMessages = /Connection terminated|timeout exceeded when trying to connect|not queryable/

const cannotReach = (error: SqlError.SqlError): boolean => {
  // @effect/sql-pg's failures to get or keep a connection.
  if (error.message === "Failed to acquire connection" || error.message === "Connection error") return true
  const cause: unknown = error.cause
  if (typeof cause !== "object" || cause === null) return false
  const code = (cause as { readonly code?: unknown }).code
  if (typeof code === "string" && (unavailableCodes.has(code) || unavailableStates.test(code))) return true
  return cause instanceof Error && unavailableMessages.test(cause.message)
}

/**
 * The database failure `cause` comes down to, when it is one of reaching the database (the server
 * gone or refusing connections, a connection cut, SQLite locked past its busy timeout) rather than
 * a fault of the request or of the code: the client may try again shortly, and the answer says so
 * (503 with `Retry-After`) instead of a 500.
 */
export const databaseUnavailable = (cause: Cause.Cause<unknown>): Option.Option<SqlError.SqlError> =>
  Option.fromNullable(
    [...Cause.defects(cause), ...Cause.failures(cause)].find(
      (error): error is SqlError.SqlError => error instanceof SqlError.SqlError && cannotReach(error)
    )
  )

/** How long a client is asked to wait when the database cannot be reached (`Retry-After`, seconds). */
export const databaseRetryAfterSeconds = 5

export const databaseUnavailableMessage = "The database cannot be reached; try again shortly"

/** One warning line per refused request, with what the driver said (no stack: an outage would flood the log). */
export const logDatabaseUnavailable = (error: SqlError.SqlError): Effect.Effect<void> =>
  Effect.logWarning("Database unavailable").pipe(
    Effect.annotateLogs({
      error: error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message
    })
  )
