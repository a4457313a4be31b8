/**
 * Tasks that keep the database tidy: each runs at start and then every hour, on every instance (each
 * is idempotent, so instances need not agree on who runs it).
 */
import { Duration, Effect, Schedule, type Scope } from "effect"

/**
 * Runs `task` now and every hour while the enclosing scope lasts, in a fiber of its own. When it
 * did something (`counts` above zero) `done` is logged with the counts; a failure is logged as
 * `failed`, and the next hour tries again.
 */
export const everyHour = <A, E, R>(
  task: Effect.Effect<A, E, R>,
  report: { readonly done: string; readonly failed: string; readonly counts: (result: A) => Record<string, number> }
): Effect.Effect<void, never, R | Scope.Scope> =>
  task.pipe(
    Effect.tap((result) => {
      const counts = report.counts(result)
      return Object.values(counts).some((count) => count > 0)
        ? Effect.logInfo(report.done).pipe(Effect.annotateLogs(counts))
        : Effect.void
    }),
    Effect.catchAllCause((cause) => Effect.logWarning(report.failed, cause)),
    Effect.repeat(Schedule.spaced(Duration.hours(1))),
    Effect.forkScoped,
    Effect.asVoid
  )
