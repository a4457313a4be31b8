/**
 * What every chat stream goes through, whatever the provider (`ProviderClients`
 * applies it to each adapter's `chat`):
 * - a first-chunk timeout and an idle timeout between chunks;
 * - retries with exponential backoff and jitter, only while nothing has been
 *   emitted, only on connection failures, 429 (honouring `Retry-After`) and 5xx;
 * - an answer must end with a `finish` chunk, else it was cut short;
 * - a circuit breaker per provider: after `breakerThreshold` failed calls in a
 *   row, calls fail at once with `ProviderUnavailable` for `breakerCooldown`,
 *   then one trial call decides.
 */
import { Cause, Clock, Duration, Effect, Exit, Option, Ref, Schedule, Stream } from "effect"
import type { ChatSettings } from "../Config.js"
import { ProviderError, type ProviderFailure, ProviderTimeout, ProviderUnavailable } from "../Models/Errors.js"
import type { ChatChunk, ChatRequest } from "./Chat.js"

type Chat = (request: ChatRequest) => Stream.Stream<ChatChunk, ProviderFailure>

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

/** Fails a stream that stays silent: `first` until its first chunk, `idle` between two chunks. */
const withTimeouts = (name: string, first: Duration.Duration, idle: Duration.Duration) =>
<A>(
  stream: Stream.Stream<A, ProviderFailure>
): Stream.Stream<A, ProviderFailure> =>
  Stream.fromPull(Effect.map(Stream.toPull(stream), (pull) => {
    let started = false
    return Effect.suspend(() => {
      const limit = started ? idle : first
      return pull.pipe(
        Effect.timeoutFail({
          duration: limit,
          onTimeout: () =>
            Option.some(
              new ProviderTimeout({
                message: started
                  ? `${name} went silent for ${Duration.format(limit)} in the middle of an answer`
                  : `${name} did not start answering within ${Duration.format(limit)}`,
                timeoutMs: Math.round(Duration.toMillis(limit))
              })
            )
        }),
        Effect.tap((chunk) => {
          started ||= chunk.length > 0
        })
      )
    })
  }))

/** `chat` with the timeouts, retries, completeness check and circuit breaker above. */
export const resilient = (name: string, settings: ChatSettings, breaker: CircuitBreaker, chat: Chat): Chat =>
(
  request
) =>
  Stream.suspend(() => {
    let emitted = false
    let finished = false
    const attempt = chat(request).pipe(
      withTimeouts(name, settings.firstChunkTimeout, settings.idleTimeout),
      Stream.tap((chunk) =>
        Effect.sync(() => {
          emitted = true
          finished ||= chunk._tag === "finish"
        })
      ),
      Stream.concat(Stream.suspend(() =>
        finished ? Stream.empty : Stream.fail(
          new ProviderError({ message: `${name} ended its answer before it was complete`, upstreamStatus: null })
        )
      ))
    )
    const call = attempt.pipe(
      Stream.retry(retrySchedule(settings, (error) => !emitted && retryable(error))),
      Stream.ensuringWith((exit) =>
        breaker.record(
          Exit.isSuccess(exit)
            ? "healthy"
            : Option.match(Cause.failureOption(exit.cause), {
              onSome: (error) => providerAtFault(error) ? "failing" : "healthy",
              onNone: () => emitted ? "healthy" : "unknown"
            })
        )
      )
    )
    return Stream.unwrap(Effect.as(breaker.enter, call))
  })
