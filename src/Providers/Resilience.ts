/**
 * What every chat stream and every embedding goes through, whatever the provider
 * (`ProviderClients` applies it to each adapter's `chat` and `embed`):
 * - retries with exponential backoff and jitter, only while nothing has been
 *   emitted, only on connection failures, 429 (honouring `Retry-After`) and 5xx;
 * - a circuit breaker per provider: after `breakerThreshold` failed calls in a
 *   row, calls fail at once with `ProviderUnavailable` for `breakerCooldown`,
 *   then one trial call decides.
 */
import { Cause, Chunk, Clock, Duration, Effect, ExecutionStrategy, Exit, Option, Ref, Schedule, Scope } from "effect"
import type { ChatSettings } from "../Config.js"
import { type ProviderFailure, ProviderUnavailable } from "../Models/Errors.js"
import type { ChatChunk, ChatRequest } from "./Chat.js"
import type { AnswerFeed, OpenAnswer } from "./Client.js"

const retryable = (error: ProviderFailure) =>
  error._tag === "ProviderUnreachable" ||
  (error._tag === "ProviderError" && error.upstreamStatus !== null &&
    (error.upstreamStatus === 429 || error.upstreamStatus >= 500))

/** A 4xx other than 429 is the request's fault, not the provider's: the provider did answer. */
const providerAtFault = (error: ProviderFailure) =>
  !(error._tag === "ProviderError" && error.upstreamStatus !== null && error.upstreamStatus >= 400 &&
    error.upstreamStatus < 500 && error.upstreamStatus !== 429)

/** `unknown`: the call was interrupted before the provider answered anything. */
type Verdict = "healthy" | "failing" | "unknown"

export interface CircuitBreaker {
  /** Fails at once while the circuit is open; after the cooldown, lets one trial call through. */
  readonly enter: Effect.Effect<void, ProviderUnavailable>
  /** Records how a call that entered ended. */
  readonly record: (verdict: Verdict) => Effect.Effect<void>
}

interface BreakerState {
  readonly failures: number
  /** While set, calls fail at once until this time (epoch milliseconds). */
  readonly openUntil: number | null
}

export const makeCircuitBreaker = (name: string, settings: ChatSettings): CircuitBreaker => {
  const state = Ref.unsafeMake<BreakerState>({ failures: 0, openUntil: null })
  const cooldownMs = Duration.toMillis(settings.breakerCooldown)
  const enter = Effect.flatMap(
    Clock.currentTimeMillis,
    (now) =>
      Ref.modify(state, (current): [number | null, BreakerState] =>
        current.openUntil === null
          ? [null, current]
          : now < current.openUntil
          ? [current.openUntil - now, current]
          // Half-open: this call is the trial; the others fail fast until it closes or reopens the circuit.
          : [null, { ...current, openUntil: now + cooldownMs }])
  ).pipe(
    Effect.flatMap((waitMs) =>
      waitMs === null ? Effect.void : Effect.fail(
        new ProviderUnavailable({
          message: `${name} failed ${settings.breakerThreshold} times in a row; it will be tried again in ${
            Math.ceil(waitMs / 1000)
          } s`,
          retryAfterMs: Math.ceil(waitMs)
        })
      )
    )
  )
  const record = (verdict: Verdict) =>
    verdict === "unknown" ?
      Effect.void :
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(state, ({ failures }): BreakerState =>
          verdict === "healthy" ? { failures: 0, openUntil: null } : {
            failures: failures + 1,
            openUntil: failures + 1 >= settings.breakerThreshold ? now + cooldownMs : null
          }))
  return { enter, record }
}

/**
 * Exponential backoff with jitter, or the provider's own `Retry-After`, never
 * longer than `retryMaxDelay`, for at most `retryAttempts` retries, while
 * `allowed` holds.
 */
const retrySchedule = (settings: ChatSettings, allowed: (error: ProviderFailure) => boolean) =>
  Schedule.intersect(
    Schedule.identity<ProviderFailure>(),
    Schedule.jittered(Schedule.exponential(settings.retryBaseDelay))
  )
    .pipe(
      Schedule.modifyDelay(([error], delay) =>
        Duration.min(
          error._tag === "ProviderError" && error.retryAfterMs !== undefined
            ? Duration.millis(error.retryAfterMs)
            : delay,
          settings.retryMaxDelay
        )
      ),
      Schedule.intersect(Schedule.recurs(settings.retryAttempts)),
      Schedule.whileInput(allowed)
    )

/**
 * Waits for the first chunks of `feed`; an answer that ends at once gives none. Failures up to
 * here are before anything was emitted: they may be retried.
 */
const firstChunks = (feed: AnswerFeed): Effect.Effect<Chunk.Chunk<ChatChunk>, ProviderFailure> =>
  Effect.flatMap(Effect.either(feed.pull), (next) =>
    next._tag === "Right"
      ? next.right.length === 0 ? firstChunks(feed) : Effect.succeed(next.right)
      : Option.match(next.left, { onNone: () => Effect.succeed(Chunk.empty()), onSome: Effect.fail }))

/** How a call that failed with `error` counts for its provider's breaker. */
const verdictOf = (error: ProviderFailure): Verdict => providerAtFault(error) ? "failing" : "healthy"

/**
 * One attempt at opening `answer` up to its first chunks, in a scope of its own (forked from
 * `scope`): a failed attempt's request is aborted before the next. Apart from `resilient`, so that
 * the feed's callbacks do not keep the request (the whole branch sent) for as long as it streams.
 */
const attempt = (answer: OpenAnswer, request: ChatRequest, scope: Scope.Scope) =>
  Effect.flatMap(
    Scope.fork(scope, ExecutionStrategy.sequential),
    (attemptScope) =>
      Scope.extend(answer(request), attemptScope).pipe(
        Effect.flatMap((feed) => Effect.map(firstChunks(feed), (first) => ({ feed, first }))),
        Effect.onError((cause) => Scope.close(attemptScope, Exit.failCause(cause)))
      )
  )

/**
 * `answer` with the retries and circuit breaker above. Retrying concerns only the opening of the
 * answer (up to its first chunk): after that its chunks pass through unchanged.
 */
export const resilient =
  (settings: ChatSettings, breaker: CircuitBreaker, answer: OpenAnswer): OpenAnswer => (request) =>
    Effect.flatMap(Effect.zipRight(breaker.enter, Effect.scope), (scope) =>
      attempt(answer, request, scope).pipe(
        Effect.retry(retrySchedule(settings, retryable)),
        // Interrupted before the provider answered anything: that says nothing about the provider.
        Effect.tapError((error) => breaker.record(verdictOf(error))),
        Effect.flatMap((opened) => answered(breaker, scope, opened.feed, opened.first))
      ))

/**
 * The feed of an answer the provider has started, `first` its first chunks. From here on only a
 * failure of the answer counts against the provider (an answer stopped by its reader does not).
 * Built apart from `resilient`, whose context holds the request: the feed's callbacks live as long
 * as the answer streams.
 */
const answered = (
  breaker: CircuitBreaker,
  scope: Scope.Scope,
  feed: AnswerFeed,
  opening: Chunk.Chunk<ChatChunk>
): Effect.Effect<AnswerFeed> => {
  let failure: ProviderFailure | null = null
  const note = (error: ProviderFailure | null) => {
    if (error !== null) failure = error
  }
  let first: Chunk.Chunk<ChatChunk> | null = opening
  return Effect.as(
    Scope.addFinalizer(scope, Effect.suspend(() => breaker.record(failure === null ? "healthy" : verdictOf(failure)))),
    {
      pull: Effect.suspend(() => {
        if (first === null || first.length === 0) {
          return first === null
            ? Effect.tapError(feed.pull, (error) => Effect.sync(() => note(Option.getOrNull(error))))
            : Effect.fail(Option.none())
        }
        const taken = first
        first = null
        return Effect.succeed(taken)
      }),
      listen: (onChunks, onEnd) => {
        const over = first !== null && first.length === 0
        if (first !== null && !over) {
          const taken = first
          first = null
          try {
            onChunks(Chunk.toReadonlyArray(taken))
          } catch (defect) {
            onEnd(Exit.die(defect))
            return () => {}
          }
        }
        if (over) {
          onEnd(Exit.void)
          return () => {}
        }
        return feed.listen(onChunks, (exit) => {
          if (Exit.isFailure(exit)) note(Option.getOrNull(Cause.failureOption(exit.cause)))
          onEnd(exit)
        })
      }
    } satisfies AnswerFeed
  )
}

/**
 * `call`, one request answered whole (an embedding), with the retries and circuit breaker above:
 * retried on connection failures, 429 and 5xx until it succeeds, its outcome counted for the
 * provider's breaker.
 */
export const resilientCall = <A>(
  settings: ChatSettings,
  breaker: CircuitBreaker,
  call: Effect.Effect<A, ProviderFailure>
): Effect.Effect<A, ProviderFailure> =>
  Effect.zipRight(
    breaker.enter,
    call.pipe(
      Effect.retry(retrySchedule(settings, retryable)),
      Effect.onExit((exit) =>
        breaker.record(
          Exit.isSuccess(exit)
            ? "healthy"
            // Interrupted (the client left): that says nothing about the provider.
            : Option.match(Cause.failureOption(exit.cause), { onNone: () => "unknown", onSome: verdictOf })
        )
      )
    )
  )
