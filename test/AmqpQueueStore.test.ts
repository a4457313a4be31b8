/**
 * The RabbitMQ store of the persisted job queues (`src/Jobs/AmqpQueueStore.ts`), through the real
 * factory (`PersistedQueue.layer`): offer and take, retries counted to the dead letters,
 * interruptions released untouched, concurrent takers, durability across store instances, shutdown
 * with deliveries buffered, unreadable messages, and a lost connection.
 *
 * RabbitMQ is required (`TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672`): when it is
 * unreachable these tests fail, they are never skipped. Each test works under a queue prefix of its
 * own, and deletes its queues at the end.
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import { describe, expect, it } from "@effect/vitest"
import * as Amqp from "amqplib"
import {
  Cause,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  Option,
  Redacted,
  Schedule,
  Schema,
  Scope
} from "effect"
import * as Crypto from "node:crypto"
import * as AmqpQueueStore from "../src/Jobs/AmqpQueueStore.js"
import { tcpRelay } from "./fixtures/Outage.js"

const amqpUrl = process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"

/** Runs `f` on a channel of the test's own connection (not the store's), closed afterwards. */
const withChannel = <A>(f: (channel: Amqp.Channel) => Promise<A>) =>
  Effect.promise(async () => {
    const connection = await Amqp.connect(amqpUrl)
    connection.on("error", () => undefined)
    try {
      const channel = await connection.createChannel()
      channel.on("error", () => undefined)
      return await f(channel)
    } finally {
      await connection.close()
    }
  })

/** A queue prefix no other run uses; the queues `names` (and their dead letters) are deleted when the test ends. */
const testQueues = (names: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => `test-${Crypto.randomUUID()}.`),
    (prefix) =>
      withChannel(async (channel) => {
        for (const name of names) {
          await channel.deleteQueue(`${prefix}${name}`)
          await channel.deleteQueue(`${prefix}${name}.failed`)
        }
      })
  )

/** The queue factory over one store instance: built when provided, closed when the effect it is provided to ends. */
const store = (queuePrefix: string, options: { readonly url?: string; readonly prefetch?: number } = {}) =>
  PersistedQueue.layer.pipe(
    Layer.provide(
      AmqpQueueStore.layerStore({
        url: Redacted.make(options.url ?? amqpUrl),
        queuePrefix,
        ...(options.prefetch === undefined ? {} : { prefetch: options.prefetch })
      })
    )
  )

/** The broker behind a relay the test can cut: the relay, and the URL that goes through it. */
const relayedBroker = Effect.gen(function*() {
  const url = new URL(amqpUrl)
  const relay = yield* tcpRelay({ host: url.hostname, port: Number(url.port || 5672) })
  url.hostname = "127.0.0.1"
  url.port = String(relay.port)
  return { relay, url: url.toString() }
})

/** A job whose date is a string on the wire, so that a take shows the schema decoded it. */
const Job = Schema.Struct({ n: Schema.Number, at: Schema.DateFromString })
type Job = typeof Job.Type
const job = (n: number): Job => ({ n, at: new Date(Date.UTC(2024, 0, n)) })
const jobs = PersistedQueue.make({ name: "jobs", schema: Job })
type Jobs = PersistedQueue.PersistedQueue<Job>

class JobFailed extends Data.TaggedError("JobFailed")<{ readonly message: string }> {}

/**
 * How long a take that must find something may wait: far more than it needs, and a broken store
 * fails the test in seconds rather than at the test's own timeout.
 */
const takeTimeout = "5 seconds"

const succeedWithJob = (queue: Jobs) => queue.take((value, { attempts, id }) => Effect.succeed({ value, id, attempts }))

/** Takes one job, successfully: the job and what the store said of it. */
const takeOne = (queue: Jobs) => succeedWithJob(queue).pipe(Effect.timeout(takeTimeout))

/** A take that gives up after a while: `None` when there was nothing to take. */
const takeNothing = (queue: Jobs) => succeedWithJob(queue).pipe(Effect.timeoutOption("300 millis"))

/** Messages ready in `queue` (not held by a consumer). */
const readyCount = (queue: string) =>
  withChannel((channel) => channel.checkQueue(queue)).pipe(Effect.map((ok) => ok.messageCount))

/** Every message of `queue`, taken off it. */
const drain = (queue: string) =>
  withChannel(async (channel) => {
    const messages: Array<Amqp.GetMessage> = []
    for (let message = await channel.get(queue, { noAck: true }); message !== false;) {
      messages.push(message)
      message = await channel.get(queue, { noAck: true })
    }
    return messages
  })

describe("AmqpQueueStore", () => {
  it.scopedLive("an offered element is taken decoded, with attempts 0, and is gone once handled", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const id = yield* queue.offer(job(1))
        const taken = yield* takeOne(queue)
        expect(taken).toEqual({ value: job(1), id, attempts: 0 })
        expect(taken.value.at).toBeInstanceOf(Date)
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix)))
      expect(yield* readyCount(`${prefix}jobs`)).toBe(0)
    }))

  it.scopedLive("a failing handler gets the element again, attempts counted, until it is dead-lettered", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const id = yield* queue.offer(job(2))
        const seen: Array<{ readonly id: string; readonly attempts: number }> = []
        for (let i = 0; i < 3; i++) {
          const exit = yield* queue.take(
            (_, { attempts, id }) => {
              seen.push({ id, attempts })
              return Effect.fail(new JobFailed({ message: `boom ${attempts}` }))
            },
            { maxAttempts: 3 }
          ).pipe(Effect.exit, Effect.timeout(takeTimeout))
          expect(Exit.isFailure(exit)).toBe(true)
        }
        expect(seen).toEqual([{ id, attempts: 0 }, { id, attempts: 1 }, { id, attempts: 2 }])
        expect(yield* takeNothing(queue)).toEqual(Option.none())

        const dead = yield* drain(`${prefix}jobs.failed`)
        expect(dead).toHaveLength(1)
        const [message] = dead
        expect(JSON.parse(message!.content.toString())).toEqual({ id, element: Schema.encodeSync(Job)(job(2)) })
        expect(message!.properties.messageId).toBe(id)
        expect(message!.properties.deliveryMode).toBe(2)
        expect(message!.properties.headers?.["x-attempts"]).toBe(3)
        const failure = message!.properties.headers?.["x-last-failure"]
        expect(String(failure)).toContain("boom 2")
      }).pipe(Effect.provide(store(prefix)))
      expect(yield* readyCount(`${prefix}jobs`)).toBe(0)
    }))

  it.scopedLive("an interrupted handler gives the element back with its attempts unchanged", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const id = yield* queue.offer(job(3))
        // A failure first, so that "unchanged" is 1 and not merely the initial 0.
        yield* queue.take(() => Effect.fail(new JobFailed({ message: "once" }))).pipe(
          Effect.exit,
          Effect.timeout(takeTimeout)
        )
        const started = yield* Deferred.make<void>()
        const handling = yield* queue.take((_, { attempts }) =>
          Deferred.succeed(started, undefined).pipe(Effect.zipRight(Effect.never), Effect.as(attempts))
        ).pipe(Effect.fork)
        yield* Deferred.await(started).pipe(Effect.timeout(takeTimeout))
        yield* Fiber.interrupt(handling)
        const again = yield* takeOne(queue)
        expect(again).toEqual({ value: job(3), id, attempts: 1 })
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix)))
      expect(yield* readyCount(`${prefix}jobs`)).toBe(0)
    }))

  it.scopedLive("elements offered before any consumer are taken in order, each once, by concurrent takers", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const ns = Array.from({ length: 20 }, (_, i) => i + 1)
        const ids = yield* Effect.forEach(ns, (n) => queue.offer(job(n)))
        const taken: Array<{ readonly n: number; readonly id: string }> = []
        yield* Effect.forEach(
          ns,
          () => queue.take((value, { id }) => Effect.sync(() => taken.push({ n: value.n, id }))),
          { concurrency: 4, discard: true }
        ).pipe(Effect.timeout(takeTimeout))
        expect(taken).toEqual(ns.map((n, i) => ({ n, id: ids[i] })))
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix, { prefetch: 8 })))
    }))

  it.scopedLive("elements outlive the store instance that offered them", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      const custom = `custom-${Crypto.randomUUID()}`
      const ids = yield* Effect.gen(function*() {
        const queue = yield* jobs
        return [
          yield* queue.offer(job(1)),
          yield* queue.offer(job(2), { id: custom }),
          yield* queue.offer(job(3))
        ]
      }).pipe(Effect.provide(store(prefix)))
      expect(ids[1]).toBe(custom)

      // In the broker, persistent, while no store is running.
      expect(yield* readyCount(`${prefix}jobs`)).toBe(3)
      const head = yield* withChannel(async (channel) => {
        const message = await channel.get(`${prefix}jobs`, { noAck: false })
        if (message !== false) channel.nack(message, false, true)
        return message
      })
      expect(
        head && {
          body: JSON.parse(head.content.toString()),
          contentType: head.properties.contentType,
          deliveryMode: head.properties.deliveryMode,
          messageId: head.properties.messageId,
          attempts: head.properties.headers?.["x-attempts"]
        }
      ).toEqual({
        body: { id: ids[0], element: Schema.encodeSync(Job)(job(1)) },
        contentType: "application/json",
        deliveryMode: 2,
        messageId: ids[0],
        attempts: 0
      })

      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const taken = [yield* takeOne(queue), yield* takeOne(queue), yield* takeOne(queue)]
        expect(taken).toEqual([1, 2, 3].map((n, i) => ({ value: job(n), id: ids[i], attempts: 0 })))
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix)))
    }))

  it.scopedLive("closing a store with deliveries buffered gives them back to the broker", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      const ids = yield* Effect.gen(function*() {
        const queue = yield* jobs
        const ids = yield* Effect.forEach([1, 2, 3, 4, 5], (n) => queue.offer(job(n)))
        expect((yield* takeOne(queue)).id).toBe(ids[0])
        // The other four are delivered to this store, held unacknowledged in its buffer.
        yield* readyCount(`${prefix}jobs`).pipe(
          Effect.repeat({ until: (ready) => ready === 0, schedule: Schedule.spaced("20 millis") }),
          Effect.timeout("5 seconds")
        )
        return ids
      }).pipe(Effect.provide(store(prefix, { prefetch: 8 })))

      expect(yield* readyCount(`${prefix}jobs`)).toBe(4)
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const taken = [yield* takeOne(queue), yield* takeOne(queue), yield* takeOne(queue), yield* takeOne(queue)]
        expect(taken).toEqual([2, 3, 4, 5].map((n, i) => ({ value: job(n), id: ids[i + 1], attempts: 0 })))
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix)))
    }))

  it.scopedLive("unreadable messages are dead-lettered at once, without stopping the queue", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      yield* withChannel(async (channel) => {
        await channel.assertQueue(`${prefix}jobs`, { durable: true })
        channel.sendToQueue(`${prefix}jobs`, Buffer.from("not json"), { persistent: true })
        channel.sendToQueue(`${prefix}jobs`, Buffer.from(JSON.stringify({ element: 1 })), { persistent: true })
        // A round trip on the same channel: the broker has enqueued both before it answers.
        await channel.checkQueue(`${prefix}jobs`)
      })
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const id = yield* queue.offer(job(7))
        expect(yield* takeOne(queue)).toEqual({ value: job(7), id, attempts: 0 })
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix)))
      const dead = yield* drain(`${prefix}jobs.failed`)
      expect(dead.map((message) => message.content.toString())).toEqual(["not json", JSON.stringify({ element: 1 })])
      for (const message of dead) {
        expect(String(message.properties.headers?.["x-last-failure"])).toContain("Unreadable message")
      }
    }))

  it.live("refused credentials fail the store, and neither the error nor the logs show the URL or password", () =>
    Effect.gen(function*() {
      const url = new URL(amqpUrl)
      const password = `wrong-${Crypto.randomUUID()}`
      url.password = password
      const logs: Array<string> = []
      const exit = yield* jobs.pipe(
        Effect.provide(store(`test-${Crypto.randomUUID()}.`, { url: url.toString() })),
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))),
        Effect.exit
      )
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isSuccess(exit)) return
      const failure = Cause.failureOption(exit.cause)
      expect(Option.getOrUndefined(failure)).toBeInstanceOf(PersistedQueue.PersistedQueueError)
      const error = Option.getOrThrow(failure)
      const shown = [Cause.pretty(exit.cause, { renderErrorCause: true }), error.message, String(error.cause)].join(
        "\n"
      )
      expect(shown).toContain("ACCESS_REFUSED")
      expect(logs.length).toBeGreaterThan(0)
      for (const text of [shown, ...logs]) {
        expect(text).not.toContain(password)
        expect(text).not.toContain(url.toString())
      }
    }))

  it.scopedLive("a lost connection is re-established; the element being handled then is delivered again", () =>
    Effect.gen(function*() {
      const prefix = yield* testQueues(["jobs"])
      const { relay, url } = yield* relayedBroker
      yield* Effect.gen(function*() {
        const queue = yield* jobs
        const id = yield* queue.offer(job(8))
        const started = yield* Deferred.make<void>()
        const proceed = yield* Deferred.make<void>()
        const handling = yield* queue.take((_, { attempts, id }) =>
          Deferred.succeed(started, undefined).pipe(
            Effect.zipRight(Deferred.await(proceed)),
            Effect.as({ id, attempts })
          )
        ).pipe(Effect.fork)
        yield* Deferred.await(started).pipe(Effect.timeout(takeTimeout))
        // A network failure: every connection cut; the broker reachable again at once.
        yield* relay.cut
        yield* relay.restore
        // The handler succeeds after the loss: its acknowledgement cannot reach the broker.
        yield* Effect.sleep("200 millis")
        yield* Deferred.succeed(proceed, undefined)
        expect(yield* Fiber.join(handling)).toEqual({ id, attempts: 0 })

        const again = yield* takeOne(queue)
        expect(again).toEqual({ value: job(8), id, attempts: 0 })
        const next = yield* queue.offer(job(9))
        expect(yield* takeOne(queue)).toEqual({ value: job(9), id: next, attempts: 0 })
        expect(yield* takeNothing(queue)).toEqual(Option.none())
      }).pipe(Effect.provide(store(prefix, { url })))
    }))

  it.scopedLive(
    "stops at once while the broker is unreachable, its consumers waiting for it",
    () =>
      Effect.gen(function*() {
        const prefix = yield* testQueues(["jobs"])
        const { relay, url } = yield* relayedBroker
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(store(prefix, { url }), scope)
        const queue = yield* Effect.provide(jobs, context)
        // A consumer running: a take waiting for a job.
        const waiting = yield* Effect.fork(queue.take(() => Effect.void))
        yield* Effect.sleep("300 millis")
        // The broker gone, for good: the consumer waits to open a channel again.
        yield* relay.cut
        yield* Effect.sleep("500 millis")
        yield* Fiber.interrupt(waiting)
        const [closing] = yield* Effect.timed(Scope.close(scope, Exit.void))
        expect(Duration.toMillis(closing)).toBeLessThan(10_000)
      }),
    { timeout: 60_000 }
  )
})
