/**
 * Connections to the Redis of `REDIS_URL`, which every instance shares.
 *
 * The server owns each connection's life: an outage is logged once, with what
 * it costs (`whileDown`), not once per command; commands fail within about a
 * second while it lasts; the client reconnects on its own (a subscriber
 * subscribes again); and shutdown never waits on, or fails because of, an
 * unreachable Redis.
 */
import { Effect, Redacted, Runtime, type Scope } from "effect"
import { Redis, type RedisOptions } from "ioredis"

export interface RedisConnection {
  readonly url: Redacted.Redacted<string>
  /** What is lost while Redis cannot be reached, for the log line that says it is down. */
  readonly whileDown: string
  /** Prepended to every key (not to pub/sub channels). */
  readonly keyPrefix?: string
}

/** A connection for the life of the scope. */
export const redisConnection = (connection: RedisConnection): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.flatMap(Effect.runtime<never>(), (runtime) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const runFork = Runtime.runFork(runtime)
        const options: RedisOptions = {
          maxRetriesPerRequest: 1,
          retryStrategy: (attempt) => Math.min(attempt * 200, 1_000),
          connectTimeout: 2_000,
          commandTimeout: 1_000,
          ...(connection.keyPrefix === undefined ? {} : { keyPrefix: connection.keyPrefix })
        }
        const client = new Redis(Redacted.value(connection.url), options)
        let down = false
        client.on("error", (error: Error) => {
          if (down) return
          down = true
          runFork(Effect.logWarning(`Redis unreachable; ${connection.whileDown} until it is back`, error.message))
        })
        client.on("ready", () => {
          if (!down) return
          down = false
          runFork(Effect.logInfo("Redis reachable again"))
        })
        return client
      }),
      (client) =>
        Effect.promise(() =>
          client.quit().then(
            () => undefined,
            () => client.disconnect()
          )
        )
    ))
