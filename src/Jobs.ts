/**
 * Background jobs: durable queues that outlive the request that filled them and the instance that
 * runs them. In the embedded mode the queue is a table of the database (`SqlPersistedQueue`, table
 * `job_queue`), so a job offered inside a transaction exists exactly when the transaction commits.
 * With `AMQP_URL` the queues are RabbitMQ's (`Jobs/AmqpQueueStore.ts`).
 *
 * Whichever holds them, a job is taken by one worker of any instance; it is completed when its
 * handler succeeds, offered again (its attempts counted) when it fails, and released untouched when
 * its worker is interrupted (the instance stopping), so another instance takes it. In the table, a
 * worker's instance renews the locks of the jobs it holds every 30 seconds, however long they run;
 * a job whose instance vanished is taken again two minutes after the last renewal.
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import { SqlClient, SqlPersistedQueue } from "@effect/sql"
import { Cause, Context, Data, Duration, Effect, Layer, Metric, Option, Schedule, type Scope } from "effect"
import { createHash } from "node:crypto"
import { AppConfig, type JobsSettings } from "./Config.js"
import { everyHour } from "./Housekeeping.js"
import * as AmqpQueueStore from "./Jobs/AmqpQueueStore.js"
import { jobDuration, jobsRun, labels } from "./Metrics.js"

/** The table of the embedded mode's queue (created by migration 0007). */
export const jobTable = "job_queue"

/** How many jobs of one queue wait: offered, and not yet taken by a worker of any instance. */
export interface QueueDepth {
  readonly queue: string
  readonly waiting: number
}

/**
 * The job queues' store seen from outside, for readiness and `/metrics`: the jobs waiting in each
 * queue this instance works, and, on RabbitMQ, whether the broker answers.
 */
export class JobQueueMonitor extends Context.Tag("Jobs/JobQueueMonitor")<JobQueueMonitor, {
  /** Counts queue `name` among those this instance works (`runWorkers` does). */
  readonly watch: (name: string) => Effect.Effect<void>
  /** Each watched queue's depth, read from the store now (the same figure on every instance). */
  readonly depths: Effect.Effect<ReadonlyArray<QueueDepth>, PersistedQueue.PersistedQueueError>
  /**
   * RabbitMQ: a round trip to the broker on the store's connection. `None` for the database queue,
   * which the database's own check covers.
   */
  readonly broker: Option.Option<Effect.Effect<void, PersistedQueue.PersistedQueueError>>
}>() {}

const makeMonitor = (options: {
  readonly waiting: (name: string) => Effect.Effect<number, PersistedQueue.PersistedQueueError>
  readonly broker: JobQueueMonitor["Type"]["broker"]
}): JobQueueMonitor["Type"] => {
  const watched = new Set<string>()
  return {
    watch: (name) => Effect.sync(() => void watched.add(name)),
    // One after the other: a few cheap questions, and the broker's are asked on one channel anyway.
    depths: Effect.suspend(() =>
      Effect.forEach(
        [...watched].sort(),
        (queue) => Effect.map(options.waiting(queue), (waiting): QueueDepth => ({ queue, waiting }))
      )
    ),
    broker: options.broker
  }
}

/**
 * The database queue's depths: its rows neither completed, nor given up (`maxAttempts` reached), nor
 * held by a worker (a worker that vanished holds its job until its lock expires). One count per
 * queue, on the store's own index (`queue_name, completed, attempts, acquired_at`).
 */
const databaseMonitor = (maxAttempts: number) =>
  Layer.effect(
    JobQueueMonitor,
    Effect.map(SqlClient.SqlClient, (client) => {
      const sql = client.withoutTransforms()
      return makeMonitor({
        waiting: (name) =>
          sql<{ readonly waiting: number | string }>`
            SELECT COUNT(*) AS waiting FROM ${sql(jobTable)}
            WHERE queue_name = ${name} AND completed = FALSE AND attempts < ${maxAttempts} AND acquired_at IS NULL`
            .pipe(
              // PostgreSQL's count is a bigint, which the driver gives as text.
              Effect.map((rows) => Number(rows[0]?.waiting ?? 0)),
              Effect.mapError((error) =>
                new PersistedQueue.PersistedQueueError({
                  message: "The job queue table could not be read",
                  cause: error
                })
              )
            ),
        broker: Option.none()
      })
    })
  )

/** The queues' store, chosen from configuration: the database, or RabbitMQ with `AMQP_URL`; and its monitor. */
export const JobQueuesLive = Layer.unwrapEffect(
  Effect.map(AppConfig, ({ jobs }) => {
    const store: Layer.Layer<
      PersistedQueue.PersistedQueueStore | JobQueueMonitor,
      unknown,
      SqlClient.SqlClient
    > = Option.match(jobs.amqpUrl, {
      onNone: () =>
        Layer.merge(
          SqlPersistedQueue.layerStore({ tableName: jobTable, pollInterval: jobs.pollInterval }),
          databaseMonitor(jobs.maxAttempts)
        ),
      onSome: (url) =>
        Layer.scopedContext(
          Effect.map(
            // Each instance holds no more jobs than it runs at once: the rest stay for other instances.
            AmqpQueueStore.make({ url, queuePrefix: jobs.queuePrefix, prefetch: jobs.concurrency }),
            (amqp) =>
              Context.make(PersistedQueue.PersistedQueueStore, amqp).pipe(
                Context.add(JobQueueMonitor, makeMonitor({ waiting: amqp.waiting, broker: Option.some(amqp.ping) }))
              )
          )
        )
    })
    // A store that cannot be set up (the broker unreachable) stops the start-up, as the database does.
    return Layer.merge(PersistedQueue.layer, Layer.context<JobQueueMonitor>()).pipe(
      Layer.provide(store),
      Layer.orDie
    )
  })
)

/** The wait after a job's attempt `attempts` (0 for the first) failed: doubled each time, capped, ±25% jitter. */
export const retryDelay = (
  jobs: Pick<JobsSettings, "retryBaseDelay" | "retryMaxDelay">,
  attempts: number
): Duration.Duration => {
  const base = Duration.toMillis(jobs.retryBaseDelay) * 2 ** Math.min(attempts, 20)
  const capped = Math.min(base, Duration.toMillis(jobs.retryMaxDelay))
  return Duration.millis(Math.round(capped * (0.75 + Math.random() * 0.5)))
}

/**
 * Removes the jobs of the database queue that ended (completed, or given up after `maxAttempts`)
 * more than `retention` ago: `SqlPersistedQueue` keeps every row. Their outcome is kept where it
 * matters (an analysis' or an extraction's own row). Returns how many were removed.
 */
export const sweepJobs = (retention: Duration.Duration, maxAttempts: number) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const seconds = Math.ceil(Duration.toSeconds(retention))
    // The store writes its own clock's times (SQLite's CURRENT_TIMESTAMP, PostgreSQL's NOW()).
    const before = sql.onDialectOrElse({
      pg: () => sql`NOW() - make_interval(secs => ${seconds})`,
      orElse: () => sql`datetime('now', ${`-${seconds} seconds`})`
    })
    const removed = yield* sql<{ readonly sequence: number }>`
      DELETE FROM ${sql(jobTable)}
      WHERE (completed = ${sql.onDialectOrElse({ pg: () => sql`TRUE`, orElse: () => sql`1` })}
             OR attempts >= ${maxAttempts})
        AND updated_at < ${before}
      RETURNING sequence`
    return removed.length
  })

/** With the database queue, sweeps `job_queue` once an hour (from one instance or several: it is idempotent). */
export const JobsSweepLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const { jobs } = yield* AppConfig
    if (Option.isSome(jobs.amqpUrl)) return
    yield* everyHour(sweepJobs(jobs.retention, jobs.maxAttempts), {
      done: "Old jobs removed",
      failed: "The job queue could not be swept",
      counts: (count) => ({ count })
    })
  })
)

/**
 * A job id made of `parts` (the work and the state it starts from): the same work offered twice with
 * it, by two instances or two callers, is queued once by the database queue (`SqlPersistedQueue`
 * keeps one row per id, for `JOBS_RETENTION` after it ends). Shaped as a UUID, as the table's ids are
 * (36 characters at most). RabbitMQ does not deduplicate ids.
 */
export const stableJobId = (...parts: ReadonlyArray<string>): string => {
  const hex = createHash("sha256").update(parts.join("\u0000")).digest("hex")
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`
}

/** What a job's handler is told besides the job: its id, and the attempts made before this one. */
export interface Attempt {
  readonly id: string
  readonly attempts: number
}

/** An attempt at a job failed, for a reason worth trying again (a provider unreachable, say). */
export class JobFailed extends Data.TaggedError("JobFailed")<{ readonly message: string }> {}

/** A job's handler did not finish within `JOBS_TIMEOUT`. */
export class JobTimedOut extends Data.TaggedError("JobTimedOut")<{ readonly after: Duration.Duration }> {
  override get message() {
    return `It did not finish within ${Duration.format(this.after)}`
  }
}

/** A job's handler died of a defect (logged where it happened). */
export class JobCrashed extends Data.TaggedError("JobCrashed")<Record<never, never>> {
  override get message() {
    return "It failed unexpectedly"
  }
}

/**
 * Runs `JOBS_CONCURRENCY` workers of one kind of job for as long as the enclosing scope lasts.
 *
 * A handler that fails, dies or runs past `JOBS_TIMEOUT` has its job offered again after a wait
 * (`JOBS_RETRY_BASE_DELAY`, doubled at each attempt up to `JOBS_RETRY_MAX_DELAY`), up to
 * `JOBS_MAX_ATTEMPTS` attempts in all; after the last, `giveUp` records why. A handler that wants a
 * failure recorded rather than retried records it and succeeds. Each job is counted
 * (`webplus_jobs_total`) and timed (`webplus_job_duration_seconds`), and the jobs waiting in the
 * queue are reported (`webplus_jobs_waiting`, through `JobQueueMonitor`). A queue that cannot be read
 * (the database or the broker away) is tried again every second.
 */
export const runWorkers = <A, E extends { readonly message: string }, R, R2>(
  queue: PersistedQueue.PersistedQueue<A>,
  options: {
    readonly name: string
    readonly handle: (job: A, attempt: Attempt) => Effect.Effect<void, E, R>
    /** Records that the job was given up, and why (the failure's message). */
    readonly giveUp: (job: A, reason: string) => Effect.Effect<void, never, R2>
  }
): Effect.Effect<void, never, R | R2 | AppConfig | JobQueueMonitor | Scope.Scope> =>
  Effect.gen(function*() {
    const { jobs } = yield* AppConfig
    yield* (yield* JobQueueMonitor).watch(options.name)
    const queueLabel = labels(["queue", options.name])
    const outcomeLabels = {
      done: labels(["queue", options.name], ["outcome", "done"]),
      retried: labels(["queue", options.name], ["outcome", "retried"]),
      givenUp: labels(["queue", options.name], ["outcome", "given up"])
    }
    const takeOne = queue.take(
      (job, { attempts, id }) => {
        const last = attempts + 1 >= jobs.maxAttempts
        return options.handle(job, { id, attempts }).pipe(
          Effect.timeoutFail({ duration: jobs.timeout, onTimeout: () => new JobTimedOut({ after: jobs.timeout }) }),
          Effect.catchAllDefect((defect) =>
            Effect.zipRight(Effect.logError("Job failed unexpectedly", defect), Effect.fail(new JobCrashed()))
          ),
          Metric.trackDurationWith(jobDuration.pipe(Metric.taggedWithLabels(queueLabel)), Duration.toSeconds),
          Effect.tapBoth({
            onSuccess: () => Effect.sync(() => jobsRun.unsafeUpdate(1, outcomeLabels.done)),
            // The job is offered again once the handler's failure is returned: waiting here first
            // spaces its attempts out (a provider given time to recover), holding this worker meanwhile.
            onFailure: (error) =>
              Effect.zipRight(
                Effect.sync(() => jobsRun.unsafeUpdate(1, last ? outcomeLabels.givenUp : outcomeLabels.retried)),
                last ? options.giveUp(job, error.message) : Effect.sleep(retryDelay(jobs, attempts))
              )
          }),
          Effect.withSpan(`Jobs.${options.name}`, { attributes: { "job.id": id, "job.attempts": attempts } })
        )
      },
      { maxAttempts: jobs.maxAttempts }
    )
    const worker = takeOne.pipe(
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.gen(function*() {
          const failure = Cause.failureOption(cause)
          const unreadable = Option.isSome(failure) && failure.value instanceof PersistedQueue.PersistedQueueError
          yield* Effect.logWarning(unreadable ? "Job queue unavailable" : "Job failed", cause).pipe(
            Effect.annotateLogs({ job: options.name })
          )
          if (unreadable) yield* Effect.sleep("1 second")
        })
      ),
      Effect.repeat(Schedule.forever),
      Effect.annotateLogs({ job: options.name })
    )
    for (let i = 0; i < jobs.concurrency; i++) yield* Effect.forkScoped(worker)
  })

/**
 * Stores a job's row and offers the job. On the database queue both happen in one transaction: the
 * job exists exactly when its row does. On RabbitMQ the job is offered once the row is committed
 * (offered earlier, a worker could take it before the row is visible to it); if the broker then
 * refuses it, `abandon` marks the row, and the request fails.
 */
export const storeAndOffer = <Row, A, E, R, R2>(options: {
  readonly transaction: <X, XE, XR>(effect: Effect.Effect<X, XE, XR>) => Effect.Effect<X, XE, XR>
  readonly store: Effect.Effect<Row, E, R>
  readonly queue: PersistedQueue.PersistedQueue<A>
  readonly job: (row: Row) => { readonly value: A; readonly id: string }
  readonly abandon: (row: Row) => Effect.Effect<void, never, R2>
}): Effect.Effect<Row, E, R | R2 | AppConfig> =>
  Effect.flatMap(AppConfig, ({ jobs }) => {
    const offer = (row: Row) => {
      const { id, value } = options.job(row)
      return Effect.orDie(options.queue.offer(value, { id }))
    }
    return Option.isNone(jobs.amqpUrl)
      ? options.transaction(Effect.tap(options.store, offer))
      : Effect.tap(
        options.transaction(options.store),
        (row) => Effect.tapErrorCause(offer(row), () => options.abandon(row))
      )
  })
