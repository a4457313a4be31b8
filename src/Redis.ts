/**
 * Connections to the Redis of `REDIS_URL`, which every instance shares.
 *
 * The server owns each connection's life: an outage is logged once, with what
 * it costs (`whileDown`), not once per command; commands fail within about a
 * second while it lasts; the client reconnects on its own (a subscriber
 * subscribes again); and shutdown never waits on, or fails because of, an
 * unreachable Redis.
 */
import { Effect, Either, Redacted, Runtime, Schema, type Scope } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import * as Crypto from "node:crypto"

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

/**
 * A pub/sub channel every instance publishes to and listens on, in messages of `schema` (JSON
 * text) that name the instance they come from (`origin`). Publishing is not waited for: one
 * connection keeps the messages in order, and a Redis that is down slows no one (its messages are
 * lost). `listen` hands `receive` the other instances' messages; a message this instance sent, or
 * one it cannot read (another version's, another program's), is dropped.
 */
export const instanceChannel = <A extends { readonly origin: string }>(options: {
  readonly url: Redacted.Redacted<string>
  readonly channel: string
  readonly schema: Schema.Schema<A, string>
  /** What is lost while Redis cannot be reached, for publishing and for listening. */
  readonly whileDown: { readonly publishing: string; readonly listening: string }
}): Effect.Effect<
  {
    /** This instance's name in the messages it publishes. */
    readonly origin: string
    readonly publish: (message: A) => void
    /** Starts listening (once subscribed, and again after each reconnection). */
    readonly listen: (receive: (message: A) => void) => Effect.Effect<void>
  },
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const { channel } = options
    const encode = Schema.encodeSync(options.schema)
    const decode = Schema.decodeUnknownEither(options.schema)
    const origin = Crypto.randomUUID()
    const publisher = yield* redisConnection({ url: options.url, whileDown: options.whileDown.publishing })
    // A connection that subscribes can do nothing else.
    const subscriber = yield* redisConnection({ url: options.url, whileDown: options.whileDown.listening })
    const listen = (receive: (message: A) => void) =>
      Effect.suspend(() => {
        subscriber.on("message", (on: string, text: string) => {
          if (on !== channel) return
          const received = decode(text)
          if (Either.isRight(received) && received.right.origin !== origin) receive(received.right)
        })
        // On every connection (again after an outage, or first after a Redis that was down at
        // start-up, which does not stop the server).
        const subscribe = () => subscriber.subscribe(channel).catch(() => undefined)
        subscriber.on("ready", subscribe)
        return Effect.promise(subscribe)
      })
    return {
      origin,
      publish: (message: A) => void publisher.publish(channel, encode(message)).catch(() => undefined),
      listen
    }
  })
