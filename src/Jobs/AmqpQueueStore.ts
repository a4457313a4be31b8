/**
 * A `PersistedQueueStore` (`@effect/experimental/PersistedQueue`) on RabbitMQ, through amqplib, with
 * the semantics of `@effect/sql`'s `SqlPersistedQueue`: `take` hands an element out within the
 * caller's scope, and the scope's exit decides what becomes of it. Success acknowledges it; a
 * failure offers it again with its attempts counted (to the back of the queue), or, once
 * `maxAttempts` is reached, moves it to the dead-letter queue `<queue>.failed`; an interruption
 * gives it back untouched (the broker requeues it where it was).
 *
 * Each queue name `N` is the durable queue `${queuePrefix}N` holding persistent messages: the JSON
 * of `{ id, element }`, with the attempts made so far in the header `x-attempts`. A queue is only
 * consumed once something takes from it; up to `prefetch` of its messages are then held by this
 * instance, unacknowledged, so that other instances take the rest.
 *
 * Besides the store's two operations, `ping` (a round trip to the broker) and `waiting` (a queue's
 * ready messages) answer readiness and `/metrics`, on a channel of their own.
 *
 * Delivery is at least once: a connection lost while an element is being handled, or a broker
 * that loses the acknowledgement, has the broker deliver the element again. Unlike the SQL store,
 * ids are not deduplicated: RabbitMQ keeps no index of message ids, so offering twice with the same
 * custom id enqueues the element twice.
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import * as Amqp from "amqplib"
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  Layer,
  Redacted,
  Runtime,
  Schedule,
  Schema,
  Scope
} from "effect"

/** How to reach RabbitMQ, and how this store names its queues there. */
export interface AmqpQueueStoreOptions {
  /** `amqp://user:password@host:5672/vhost`; it never appears in a log line or an error. */
  readonly url: Redacted.Redacted<string>
  /** Prepended to every queue name: the queue for the name `N` is `${queuePrefix}N`, its dead letters `${queuePrefix}N.failed`. */
  readonly queuePrefix: string
  /** Deliveries each queue name holds unacknowledged, handed out or buffered (default 8). */
  readonly prefetch?: number
}

const defaultPrefetch = 8
const attemptsHeader = "x-attempts"
const lastFailureHeader = "x-last-failure"
/** A failure's report is kept in a header, and a header table may not exceed 64 KiB. */
const maxFailureBytes = 4 * 1024
/** An offer waits this long for the broker (a reconnection included) before it fails. */
const offerTimeout = Duration.seconds(30)
/** A finalizer's publish (retry or dead letter) waits this long; then the element is released as is. */
const settleTimeout = Duration.seconds(10)
/** Closing a channel or cancelling a consumer at shutdown waits this long on an unresponsive broker. */
const closeTimeout = Duration.seconds(5)
/** Backoff between attempts to start a consumer whose setup failed (the broker is up: it refused). */
const consumerRetry = Schedule.exponential(Duration.millis(200)).pipe(
  Schedule.union(Schedule.spaced(Duration.seconds(10))),
  Schedule.jittered
)

/** What a message's body is: the element (as the queue's schema encoded it) and its id. */
const Envelope = Schema.parseJson(Schema.Struct({ id: Schema.String, element: Schema.Unknown }))
const decodeEnvelope = Schema.decodeUnknownEither(Envelope)

/** Whether a channel can still acknowledge: false from its `close` event on. */
interface ChannelState {
  open: boolean
}

/** The channel this store publishes on (offers, retries, dead letters), with the queues it declared. */
interface Publisher {
  readonly channel: Amqp.ConfirmChannel
  readonly state: ChannelState
  readonly declared: Set<string>
}

/** One channel consuming one queue; replaced by a new one when it is lost. */
interface Generation {
  readonly channel: Amqp.Channel
  readonly state: ChannelState
  consumerTag: string | undefined
}

interface Delivery {
  readonly message: Amqp.ConsumeMessage
  /** Only this channel can acknowledge the message. */
  readonly generation: Generation
}

/** The consumer of one queue name: its buffered deliveries, and a latch open while there are any. */
interface Consumer {
  readonly queue: string
  readonly failedQueue: string
  buffer: Array<Delivery>
  readonly available: Effect.Latch
}

interface Job {
  readonly id: string
  readonly attempts: number
  readonly element: unknown
}

/**
 * Hides the URL and its password in a text from amqplib or the network (an error message), so
 * neither reaches a log line or a `PersistedQueueError`.
 */
const makeRedact = (url: string) => {
  const secrets = new Set([url])
  try {
    const password = new URL(url).password
    if (password !== "") {
      secrets.add(password)
      secrets.add(decodeURIComponent(password))
    }
  } catch {
    // Not a URL (or a malformed escape in it): connecting fails anyway, and the whole string is still hidden.
  }
  // Longest first, so that the password inside the URL does not leave the rest of the URL behind.
  const ordered = [...secrets].filter((secret) => secret.length > 0).sort((a, b) => b.length - a.length)
  return (text: string) => ordered.reduce((redacted, secret) => redacted.split(secret).join("<redacted>"), text)
}

/** The first `maxBytes` bytes of `text` (in UTF-8), cut between characters, with an ellipsis when cut. */
const truncateUtf8 = (text: string, maxBytes: number) => {
  if (Buffer.byteLength(text, "utf8") <= maxBytes) return text
  const ellipsis = "…"
  const budget = maxBytes - Buffer.byteLength(ellipsis, "utf8")
  let bytes = 0
  let end = 0
  for (const char of text) {
    const size = Buffer.byteLength(char, "utf8")
    if (bytes + size > budget) break
    bytes += size
    end += char.length
  }
  return text.slice(0, end) + ellipsis
}

/** A message's job, or why it is not one (it is then dead-lettered: no attempt could read it). */
const decodeJob = (message: Amqp.ConsumeMessage): Either.Either<Job, string> => {
  const attempts: unknown = message.properties.headers?.[attemptsHeader] ?? 0
  if (typeof attempts !== "number" || !Number.isSafeInteger(attempts) || attempts < 0) {
    return Either.left(`header ${attemptsHeader} is not a count of attempts`)
  }
  return Either.mapBoth(decodeEnvelope(message.content.toString("utf8")), {
    onLeft: (error) => `body is not the JSON of { id, element }: ${error.message}`,
    onRight: ({ element, id }) => ({ id, attempts, element })
  })
}

/** A copy of `message` for publishing again: persistent, with its id and headers, and `headers` over them. */
const republishOptions = (
  message: Amqp.ConsumeMessage,
  headers: Record<string, string | number>
): Amqp.Options.Publish => {
  const { contentType, messageId } = message.properties
  return {
    deliveryMode: 2,
    contentType: typeof contentType === "string" ? contentType : "application/json",
    ...(typeof messageId === "string" ? { messageId } : {}),
    headers: { ...message.properties.headers, ...headers }
  }
}

/** The store, and what else can be asked of the broker through its connection: is it there, how full is a queue. */
export type AmqpQueueStore = PersistedQueue.PersistedQueueStore["Type"] & {
  /** A round trip to the broker; fails at once while the connection is lost (and being re-established). */
  readonly ping: Effect.Effect<void, PersistedQueue.PersistedQueueError>
  /**
   * The messages of the queue for the name `name` that are ready: offered (or offered again) and not
   * delivered to any instance. Those delivered and not yet acknowledged (up to `prefetch` per
   * instance) are not counted. 0 for a queue the broker does not have.
   */
  readonly waiting: (name: string) => Effect.Effect<number, PersistedQueue.PersistedQueueError>
}

/**
 * A store on the RabbitMQ of `options.url`, for the life of the scope. It connects at once (and
 * fails if the broker cannot be reached within a few seconds); later, a lost connection is
 * re-established with backoff, in the background, and each queue's consumer started again.
 *
 * When the scope closes, the deliveries buffered and not taken are given back to the broker
 * (requeued), consumers are cancelled, and the channels and connection closed. Elements still being
 * handled then are redelivered by the broker, since their channel is gone.
 */
export const make = (
  options: AmqpQueueStoreOptions
): Effect.Effect<AmqpQueueStore, PersistedQueue.PersistedQueueError, Scope.Scope> =>
  Effect.gen(function*() {
    const url = Redacted.value(options.url)
    const prefetch = options.prefetch ?? defaultPrefetch
    const redact = makeRedact(url)
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    /** For amqplib's events, which are not in a fiber. */
    const log = (effect: Effect.Effect<void>) => {
      runFork(Effect.annotateLogs(effect, "queueStore", "amqp"))
    }

    const describe = (error: unknown) => redact(error instanceof Error ? error.message : String(error))
    const queueError = (doing: string, error: unknown) => {
      const detail = describe(error)
      // A new Error rather than the original: its message and stack could carry the URL.
      const cause = new Error(detail)
      if (error instanceof Error) cause.name = error.name
      return new PersistedQueue.PersistedQueueError({ message: `RabbitMQ, ${doing}: ${detail}`, cause })
    }
    const tryAmqp = <A>(doing: string, f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (error) => queueError(doing, error) })
    const storeClosed = () => new PersistedQueue.PersistedQueueError({ message: "The RabbitMQ queue store is closed" })

    /** Whether amqplib holds a connection now (false from a 'disconnect' until the next 'connect'). */
    let connected = false
    const connection = yield* Effect.acquireRelease(
      tryAmqp("connecting", () =>
        Amqp.connect(url, {
          clientProperties: { connection_name: `${options.queuePrefix}queue-store` },
          recovery: {
            // Startup fails within about 3 s; once connected, reconnection never gives up.
            initialMaxRetries: 5,
            maxDelay: 10_000,
            // Returned before the first attempt, so that the listeners below are there for it
            // (and closing the scope cancels it).
            waitForConnect: false
          }
        }).then((connection) => {
          // Attached in the same tick as the model is returned, before amqplib's first attempt: an
          // 'error' event without a listener would throw, and crash the process.
          let connectedBefore = false
          connection.on("connect", () => {
            connected = true
            if (connectedBefore) log(Effect.logWarning("RabbitMQ connection re-established"))
            connectedBefore = true
          })
          connection.on("disconnect", (error: Error) => {
            connected = false
            log(Effect.logWarning("RabbitMQ connection lost; reconnecting", describe(error)))
          })
          connection.on("reconnect-scheduled", (info: { attempt: number; delay: number; error: Error }) => {
            log(
              Effect.logWarning(
                `RabbitMQ unreachable; connecting again in ${info.delay} ms (attempt ${info.attempt})`,
                describe(info.error)
              )
            )
          })
          connection.on("reconnect-failed", (error: Error) => {
            log(
              Effect.logError(
                connectedBefore ? "RabbitMQ reconnection given up" : "RabbitMQ could not be reached; giving up",
                describe(error)
              )
            )
          })
          // Reported with the 'disconnect' that follows; logged here only for debugging.
          connection.on("error", (error: Error) => log(Effect.logDebug("RabbitMQ connection error", describe(error))))
          connection.on("blocked", (reason: string) => {
            log(Effect.logWarning(`RabbitMQ blocks publishing (${reason}); offers wait until it unblocks`))
          })
          connection.on("unblocked", () => log(Effect.logInfo("RabbitMQ publishing unblocked")))
          connection.on("handler-error", (error: Error, event: string) => {
            log(Effect.logError(`RabbitMQ connection listener of ${event} failed`, describe(error)))
          })
          return connection
        })),
      (connection) =>
        Effect.promise(() => connection.close().catch(() => undefined)).pipe(
          Effect.timeout(closeTimeout),
          Effect.ignore
        )
    )
    yield* tryAmqp("connecting", () => connection.waitForConnect())

    /**
     * A new channel, with the listeners that keep a broker's error from crashing the process and
     * mark it closed. `onClose` runs when it closes for any reason (the connection lost included).
     */
    const openChannel = <C extends Amqp.Channel>(purpose: string, create: () => Promise<C>, onClose: () => void) =>
      Effect.async<{ readonly channel: C; readonly state: ChannelState }, PersistedQueue.PersistedQueueError>(
        (resume, signal) => {
          create().then(
            (channel) => {
              const state: ChannelState = { open: true }
              channel.on("error", (error: Error) => {
                log(Effect.logWarning(`RabbitMQ closed the ${purpose} channel`, describe(error)))
              })
              channel.on("close", () => {
                state.open = false
                onClose()
              })
              channel.on("handler-error", (error: Error, event: string) => {
                log(Effect.logError(`RabbitMQ ${purpose} channel listener of ${event} failed`, describe(error)))
              })
              // Opened for a fiber that was interrupted meanwhile (an offer that timed out): no one
              // would close it.
              if (signal.aborted) channel.close().catch(() => undefined)
              else resume(Effect.succeed({ channel, state }))
            },
            (error: unknown) => resume(Effect.fail(queueError(`opening a ${purpose} channel`, error)))
          )
        }
      )

    // Publishing: one confirm channel for every queue, opened on first use and again after a loss.
    let publisher: Publisher | undefined
    const publisherLock = yield* Effect.makeSemaphore(1)
    const getPublisher = publisherLock.withPermits(1)(Effect.suspend(() => {
      if (publisher !== undefined && publisher.state.open) return Effect.succeed(publisher)
      // Waits for the connection, while amqplib re-establishes it.
      return Effect.map(
        openChannel("publishing", () => connection.createConfirmChannel(), () => undefined),
        ({ channel, state }) => (publisher = { channel, state, declared: new Set() })
      )
    }))
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const current = publisher
        if (current === undefined || !current.state.open) return Effect.void
        return tryAmqp("closing the publishing channel", () => current.channel.close()).pipe(
          Effect.timeout(closeTimeout),
          Effect.ignore
        )
      })
    )

    /** Publishes `content` to `queue` (declared durable first) and waits for the broker's confirm. */
    const publishConfirmed = (queue: string, content: Buffer, publishOptions: Amqp.Options.Publish) =>
      Effect.gen(function*() {
        const { channel, declared } = yield* getPublisher
        // Declared once per channel: after a reconnection it is declared again, in case the broker
        // lost it (a broker reset), which a declare is cheap enough to cover.
        if (!declared.has(queue)) {
          yield* tryAmqp(`declaring ${queue}`, () => channel.assertQueue(queue, { durable: true }))
          declared.add(queue)
        }
        yield* Effect.async<void, PersistedQueue.PersistedQueueError>((resume) => {
          try {
            // The return value (false: amqplib's buffer is full) is ignored: the confirm comes anyway.
            channel.sendToQueue(queue, content, publishOptions, (error: unknown) => {
              resume(error == null ? Effect.void : Effect.fail(queueError(`publishing to ${queue}`, error)))
            })
          } catch (error) {
            // Thrown when the channel closed since it was handed out.
            resume(Effect.fail(queueError(`publishing to ${queue}`, error)))
          }
        })
      })

    // Acknowledging a delivery its channel no longer has throws; the broker requeued it already.
    const ack = (delivery: Delivery) =>
      Effect.sync(() => {
        try {
          delivery.generation.channel.ack(delivery.message)
        } catch {
          // The channel closed meanwhile: the broker delivers the message again.
        }
      })
    const requeue = (delivery: Delivery) =>
      Effect.sync(() => {
        try {
          delivery.generation.channel.nack(delivery.message, false, true)
        } catch {
          // As for ack: a closed channel has requeued it already.
        }
      })

    /**
     * Publishes a copy of the delivery (to its queue again or to the dead letters), then
     * acknowledges the original. If the copy cannot be published, the original is requeued as it
     * is: processed again rather than lost.
     */
    const moveDelivery = (delivery: Delivery, queue: string, headers: Record<string, string | number>) =>
      publishConfirmed(queue, delivery.message.content, republishOptions(delivery.message, headers)).pipe(
        Effect.timeoutFail({
          duration: settleTimeout,
          onTimeout: () =>
            new PersistedQueue.PersistedQueueError({ message: `RabbitMQ, publishing to ${queue}: timed out` })
        }),
        Effect.matchCauseEffect({
          onSuccess: () => ack(delivery),
          onFailure: (cause) =>
            Effect.zipRight(
              Effect.logWarning(`Could not publish to ${queue}; the message is requeued unchanged`, cause),
              requeue(delivery)
            )
        })
      )

    const deadLetter = (consumer: Consumer, delivery: Delivery, attempts: number, failure: string) =>
      moveDelivery(delivery, consumer.failedQueue, {
        [attemptsHeader]: attempts,
        [lastFailureHeader]: truncateUtf8(failure, maxFailureBytes)
      })

    /** The take's finalizer: what the handler's exit makes of the element. */
    const settle = (
      consumer: Consumer,
      delivery: Delivery,
      job: Job,
      maxAttempts: number,
      exit: Exit.Exit<unknown, unknown>
    ) =>
      Effect.suspend(() => {
        // Its channel is gone: the broker has requeued the message, and only that channel could
        // acknowledge it. Publishing a retry now would duplicate it.
        if (!delivery.generation.state.open) {
          return Effect.logDebug(`Channel of ${consumer.queue} lost; message ${job.id} is redelivered by the broker`)
        }
        if (Exit.isSuccess(exit)) return ack(delivery)
        if (Cause.isInterruptedOnly(exit.cause)) return requeue(delivery)
        const attempts = job.attempts + 1
        const failure = Cause.pretty(exit.cause, { renderErrorCause: true })
        if (attempts >= maxAttempts) return deadLetter(consumer, delivery, attempts, failure)
        return moveDelivery(delivery, consumer.queue, {
          [attemptsHeader]: attempts,
          [lastFailureHeader]: truncateUtf8(failure, maxFailureBytes)
        })
      }).pipe(Effect.annotateLogs("queueStore", "amqp"))

    // Consuming: one consumer per queue name, started by its first take, living as long as the store.
    let closed = false
    const consumers = new Map<string, Consumer>()
    const scope = yield* Effect.scope
    // Closed (interrupting the consumers) before the publisher and the connection, added earlier.
    const consumersScope = yield* Scope.fork(scope, ExecutionStrategy.parallel)
    // Runs first: no take gets anything from now on, and the ones waiting fail.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const consumer of consumers.values()) consumer.available.unsafeOpen()
      })
    )

    /**
     * Stops a channel's consumer: the deliveries it buffered are requeued (or, its channel lost,
     * dropped: the broker requeued them), then the channel is closed.
     */
    const releaseGeneration = (consumer: Consumer, generation: Generation) =>
      Effect.gen(function*() {
        const { channel, consumerTag, state } = generation
        if (state.open && consumerTag !== undefined) {
          // First, so that no delivery arrives after the buffer is given back.
          yield* tryAmqp(`cancelling the consumer of ${consumer.queue}`, () => channel.cancel(consumerTag)).pipe(
            Effect.timeout(closeTimeout),
            Effect.ignore
          )
        }
        const mine = consumer.buffer.filter((delivery) => delivery.generation === generation)
        consumer.buffer = consumer.buffer.filter((delivery) => delivery.generation !== generation)
        if (!state.open) return
        for (const delivery of mine) yield* requeue(delivery)
        yield* tryAmqp(`closing the channel of ${consumer.queue}`, () => channel.close()).pipe(
          Effect.timeout(closeTimeout),
          Effect.ignore
        )
      })

    /** Consumes on one channel until it is lost (or its consumer cancelled by the broker); says why it stopped. */
    const consumeOnce = (consumer: Consumer) =>
      Effect.scoped(Effect.gen(function*() {
        const stopped = yield* Deferred.make<string>()
        const generation: Generation = yield* Effect.acquireRelease(
          Effect.map(
            // Interruptible: while the broker is away this waits for amqplib's reconnection, which the
            // store's closing must not wait for (a channel opened after all is closed by `openChannel`).
            Effect.interruptible(openChannel(
              `${consumer.queue} consumer`,
              () => connection.createChannel(),
              () => Deferred.unsafeDone(stopped, Exit.succeed("its channel closed"))
            )),
            ({ channel, state }): Generation => ({ channel, state, consumerTag: undefined })
          ),
          (generation) => releaseGeneration(consumer, generation)
        )
        const { channel } = generation
        yield* tryAmqp(`setting the prefetch of ${consumer.queue}`, () => channel.prefetch(prefetch))
        yield* tryAmqp(`declaring ${consumer.queue}`, () => channel.assertQueue(consumer.queue, { durable: true }))
        const { consumerTag } = yield* tryAmqp(`consuming ${consumer.queue}`, () =>
          channel.consume(consumer.queue, (message) => {
            // null: the broker cancelled the consumer (the queue was deleted, say).
            if (message === null) {
              Deferred.unsafeDone(stopped, Exit.succeed("the broker cancelled it"))
            } else {
              consumer.buffer.push({ message, generation })
              consumer.available.unsafeOpen()
            }
          }, { noAck: false }))
        generation.consumerTag = consumerTag
        return yield* Deferred.await(stopped)
      }))

    /** Keeps a consumer running: started again after each loss, once amqplib has reconnected. */
    const supervise = (consumer: Consumer) =>
      consumeOnce(consumer).pipe(
        Effect.tapError((error) => Effect.logWarning(`Cannot consume ${consumer.queue}; trying again`, error.message)),
        Effect.retry(consumerRetry),
        Effect.flatMap((reason) =>
          Effect.logWarning(`Consumer of ${consumer.queue} stopped (${reason}); starting it again`).pipe(
            // Not a busy loop should the channel keep closing at once.
            Effect.zipRight(Effect.sleep(Duration.millis(200)))
          )
        ),
        Effect.forever,
        Effect.annotateLogs("queueStore", "amqp")
      )

    const getConsumer = (name: string) =>
      Effect.suspend(() => {
        if (closed) return Effect.fail(storeClosed())
        const existing = consumers.get(name)
        if (existing !== undefined) return Effect.succeed(existing)
        const queue = `${options.queuePrefix}${name}`
        const consumer: Consumer = {
          queue,
          failedQueue: `${queue}.failed`,
          buffer: [],
          available: Effect.unsafeMakeLatch(false)
        }
        // Set before anything yields, so that concurrent first takes share one consumer.
        consumers.set(name, consumer)
        // Interruptible although forked from a take's uninterruptible region: the scope's closing
        // must be able to stop it.
        return supervise(consumer).pipe(Effect.interruptible, Effect.forkIn(consumersScope), Effect.as(consumer))
      })

    /** The next delivery of a channel still open; waits (interruptibly) while there is none. */
    const nextDelivery = (
      consumer: Consumer,
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
    ) =>
      Effect.gen(function*() {
        while (true) {
          if (closed) return yield* Effect.fail(storeClosed())
          // Taken while uninterruptible, so that an interruption cannot lose a delivery in between.
          const delivery = consumer.buffer.shift()
          if (delivery === undefined) {
            consumer.available.unsafeClose()
            yield* restore(consumer.available.await)
            continue
          }
          // Otherwise stale: its channel closed after buffering it, and the broker requeued it.
          if (delivery.generation.state.open) return delivery
        }
      })

    // Inspecting (`ping`, `waiting`): a channel of its own, since the broker closes a channel that
    // asks after a queue it does not have, and that must cost no publish and no delivery. One
    // question at a time, so that such a closing fails no other question.
    let inspector: { readonly channel: Amqp.Channel; readonly state: ChannelState } | undefined
    const inspectorLock = yield* Effect.makeSemaphore(1)
    const inspect = <A>(f: (channel: Amqp.Channel) => Effect.Effect<A, PersistedQueue.PersistedQueueError>) =>
      inspectorLock.withPermits(1)(Effect.suspend(() => {
        if (closed) return Effect.fail(storeClosed())
        if (inspector !== undefined && inspector.state.open) return f(inspector.channel)
        // Not waiting for amqplib to reconnect, as an offer does: whoever inspects wants to know now.
        if (!connected) {
          return Effect.fail(
            new PersistedQueue.PersistedQueueError({ message: "RabbitMQ: not connected (reconnecting)" })
          )
        }
        return openChannel("inspection", () => connection.createChannel(), () => undefined).pipe(
          Effect.flatMap((opened) => {
            inspector = opened
            return f(opened.channel)
          })
        )
      }))
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const current = inspector
        if (current === undefined || !current.state.open) return Effect.void
        return tryAmqp("closing the inspection channel", () => current.channel.close()).pipe(
          Effect.timeout(closeTimeout),
          Effect.ignore
        )
      })
    )

    const store: AmqpQueueStore = {
      ping: inspect((channel) =>
        // A passive declare of an exchange every virtual host has: an answer, and nothing changed.
        tryAmqp("checking the broker", () => channel.checkExchange("amq.direct"))
      ).pipe(Effect.asVoid),
      waiting: (name) => {
        const queue = `${options.queuePrefix}${name}`
        return inspect((channel) =>
          Effect.tryPromise({ try: () => channel.checkQueue(queue), catch: (error) => error }).pipe(
            Effect.map(({ messageCount }) => messageCount),
            Effect.catchAll((error) =>
              // Not declared yet (nothing offered, nothing consuming): nothing waits in it.
              typeof error === "object" && error !== null && "code" in error && error.code === 404
                ? Effect.succeed(0)
                : Effect.fail(queueError(`checking ${queue}`, error))
            )
          )
        )
      },
      offer: ({ element, id, name }) =>
        Effect.gen(function*() {
          if (closed) return yield* Effect.fail(storeClosed())
          const content = yield* Effect.try({
            try: () => Buffer.from(JSON.stringify({ id, element }), "utf8"),
            catch: (error) =>
              new PersistedQueue.PersistedQueueError({
                message: `Element ${id} cannot be written as JSON`,
                cause: error
              })
          })
          yield* publishConfirmed(`${options.queuePrefix}${name}`, content, {
            deliveryMode: 2,
            contentType: "application/json",
            messageId: id,
            headers: { [attemptsHeader]: 0 }
          }).pipe(
            // A channel lost between being handed out and the confirm; the next attempt opens
            // another (a message that did reach the queue is then there twice: at least once).
            Effect.retry({ times: 2, schedule: Schedule.exponential(Duration.millis(100)) }),
            Effect.timeoutFail({
              duration: offerTimeout,
              onTimeout: () =>
                new PersistedQueue.PersistedQueueError({
                  message: `RabbitMQ, offering ${id}: not confirmed within ${Duration.format(offerTimeout)}`
                })
            })
          )
        }),
      take: ({ maxAttempts, name }) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const consumer = yield* getConsumer(name)
            while (true) {
              const delivery = yield* nextDelivery(consumer, restore)
              const decoded = decodeJob(delivery.message)
              if (Either.isLeft(decoded)) {
                yield* Effect.logWarning(`Unreadable message in ${consumer.queue} dead-lettered`, decoded.left)
                yield* deadLetter(consumer, delivery, 0, `Unreadable message: ${decoded.left}`)
                continue
              }
              const job = decoded.right
              // As the SQL store, which never hands out an element with maxAttempts reached (taken
              // before with a higher maxAttempts).
              if (job.attempts >= maxAttempts) {
                yield* deadLetter(consumer, delivery, job.attempts, `Attempts exhausted (maxAttempts ${maxAttempts})`)
                continue
              }
              yield* Effect.addFinalizer((exit) => settle(consumer, delivery, job, maxAttempts, exit))
              return { id: job.id, attempts: job.attempts, element: job.element }
            }
          })
        ).pipe(Effect.annotateLogs("queueStore", "amqp"))
    }
    return store
  })

/** The `PersistedQueueStore` of `make`, for the life of the layer; `PersistedQueue.layer` over it gives the queues. */
export const layerStore = (
  options: AmqpQueueStoreOptions
): Layer.Layer<PersistedQueue.PersistedQueueStore, PersistedQueue.PersistedQueueError> =>
  Layer.scoped(PersistedQueue.PersistedQueueStore, make(options))
