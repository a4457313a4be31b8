/**
 * `GET /health/ready` with the shared services configured, on both dialects: Redis (`REDIS_URL`)
 * and RabbitMQ (`AMQP_URL`) each reported under `checks`. RabbitMQ is required (without it no job
 * can be queued or run): unreachable, the instance is not ready (503). Redis is not (every use of
 * it lets requests through): unreachable, the instance is ready (200) with Redis reported failing.
 * Either way the probe answers within its checks' time bound, and says nothing of URLs or
 * credentials.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { amqpUrl, queuePrefix, queuesRemovedAfter, uniqueQueuePrefix } from "./fixtures/Amqp.js"
import { call, type Reply } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { capturedLogs } from "./fixtures/Logs.js"
import { tcpRelay } from "./fixtures/Outage.js"
import { unreachableUrl } from "./fixtures/Providers.js"
import { redisUrl } from "./fixtures/Redis.js"
import { startTestServer, TestServer, testServer } from "./fixtures/Server.js"

/** `/health/ready`, and how long it took to answer. */
const probe = Effect.map(Effect.timed(call("GET", "/health/ready")), ([took, reply]) => ({
  ...reply,
  tookMs: Duration.toMillis(took)
}))

/** Probes until `done` holds for an answer (every `interval`, `attempts` times at most); that answer. */
const probeUntil = (done: (reply: Reply) => boolean, attempts = 100, interval = Duration.millis(100)) =>
  Effect.gen(function*() {
    for (let i = 0; i < attempts; i++) {
      const reply = yield* probe
      if (done(reply)) return reply
      yield* Effect.sleep(interval)
    }
    return yield* Effect.dieMessage("/health/ready never answered as expected")
  })

/** The URL of a relay to `target` (a `redis:` or `amqp:` URL): the same URL, through the relay's port. */
const through = (target: string, port: number) => {
  const url = new URL(target)
  url.port = String(port)
  return url.toString()
}

/** Where the relay of `target` connects to. */
const addressOf = (target: string, defaultPort: number) => {
  const url = new URL(target)
  return { host: url.hostname, port: Number(url.port || defaultPort) }
}

for (const dialect of dialects) {
  describe(`readiness with Redis and RabbitMQ on ${dialect}`, () => {
    const prefix = uniqueQueuePrefix()
    layer(
      testServer({ dialect, env: { REDIS_URL: redisUrl, AMQP_URL: amqpUrl, AMQP_QUEUE_PREFIX: prefix } }).pipe(
        Layer.provideMerge(queuesRemovedAfter(prefix))
      ),
      { excludeTestServices: true }
    )((it) => {
      it.effect("both reachable: 200, each reported ok beside the database and the migrations", () =>
        Effect.gen(function*() {
          const { body, status } = yield* probe
          expect(status, JSON.stringify(body)).toBe(200)
          expect(body).toEqual({
            status: "ready",
            checks: {
              database: { status: "ok", durationMs: expect.any(Number) },
              migrations: { status: "ok", durationMs: expect.any(Number) },
              redis: { status: "ok", durationMs: expect.any(Number) },
              rabbitmq: { status: "ok", durationMs: expect.any(Number) }
            }
          })
        }))
    })

    layer(testServer({ dialect }), { excludeTestServices: true })((it) => {
      it.effect("neither configured: the body is as it always was, without their checks", () =>
        Effect.gen(function*() {
          const { body, status } = yield* probe
          expect(status).toBe(200)
          expect(Object.keys(body.checks)).toEqual(["database", "migrations"])
        }))
    })

    it.scopedLive("Redis unreachable: still ready (200), Redis reported failing, answered at once", () =>
      Effect.gen(function*() {
        const secret = "redis-password-0xC0FFEE"
        const closed = new URL(yield* unreachableUrl)
        const url = `redis://:${secret}@127.0.0.1:${closed.port}`
        const logs = capturedLogs()
        const server = yield* startTestServer(
          testServer({ dialect, env: { REDIS_URL: url } }).pipe(Layer.provide(logs.layer))
        )
        const reply = yield* probe.pipe(Effect.provideService(TestServer, server))
        expect(reply.status, JSON.stringify(reply.body)).toBe(200)
        expect(reply.body).toMatchObject({
          status: "ready",
          checks: {
            database: { status: "ok" },
            migrations: { status: "ok" },
            redis: { status: "failing", message: "Redis unreachable" }
          }
        })
        expect(reply.body.checks.rabbitmq).toBeUndefined()
        // No waiting on a Redis that is not connected.
        expect(reply.tookMs).toBeLessThan(1_000)
        const said = JSON.stringify(reply.body) + JSON.stringify(logs.lines)
        expect(said).not.toContain(secret)
        expect(JSON.stringify(reply.body)).not.toContain(closed.port)
      }))

    it.scopedLive(
      "RabbitMQ lost: 503 naming it, answered at once; ready again once it is back",
      () =>
        Effect.gen(function*() {
          const prefix = yield* queuePrefix
          const relay = yield* tcpRelay(addressOf(amqpUrl, 5672))
          const url = through(amqpUrl, relay.port)
          const logs = capturedLogs()
          const server = yield* startTestServer(
            testServer({ dialect, env: { AMQP_URL: url, AMQP_QUEUE_PREFIX: prefix } }).pipe(Layer.provide(logs.layer))
          )
          yield* Effect.gen(function*() {
            expect((yield* probe).status).toBe(200)

            yield* relay.cut
            const down = yield* probeUntil((reply) => reply.status === 503)
            expect(down.body).toEqual({
              _tag: "NotReady",
              message: "Not ready: rabbitmq failing",
              checks: {
                database: { status: "ok", durationMs: expect.any(Number) },
                migrations: { status: "ok", durationMs: expect.any(Number) },
                rabbitmq: { status: "failing", message: "RabbitMQ unreachable", durationMs: expect.any(Number) }
              }
            })
            // The connection is known lost: no waiting for it.
            expect(down.tookMs).toBeLessThan(1_000)
            const said = JSON.stringify(down.body) + JSON.stringify(logs.lines)
            expect(said).not.toContain(url)
            expect(said).not.toContain("guest:guest")
            // The process is alive.
            expect((yield* call("GET", "/health/live")).status).toBe(200)

            yield* relay.restore
            // amqplib reconnects with a backoff of up to 10 s.
            const back = yield* probeUntil((reply) => reply.status === 200, 200)
            expect(back.body.checks.rabbitmq).toMatchObject({ status: "ok" })
          }).pipe(
            // Restored whatever happened: the server's shutdown waits for a broker it lost.
            Effect.ensuring(relay.restore),
            Effect.provideService(TestServer, server)
          )
        }),
      60_000
    )

    it.scopedLive(
      "Redis and RabbitMQ that stop answering: the probe still answers within its time bound",
      () =>
        Effect.gen(function*() {
          const prefix = yield* queuePrefix
          const amqpRelay = yield* tcpRelay(addressOf(amqpUrl, 5672))
          const redisRelay = yield* tcpRelay(addressOf(redisUrl, 6379))
          const server = yield* startTestServer(testServer({
            dialect,
            env: {
              AMQP_URL: through(amqpUrl, amqpRelay.port),
              AMQP_QUEUE_PREFIX: prefix,
              REDIS_URL: through(redisUrl, redisRelay.port)
            }
          }))
          yield* Effect.gen(function*() {
            expect((yield* probe).status).toBe(200)

            // Connected, and silent: only a time bound ends each check.
            yield* Effect.all([amqpRelay.freeze, redisRelay.freeze])
            const hung = yield* probe
            expect(hung.status, JSON.stringify(hung.body)).toBe(503)
            expect(hung.body).toMatchObject({
              _tag: "NotReady",
              message: "Not ready: rabbitmq failing",
              checks: {
                database: { status: "ok" },
                migrations: { status: "ok" },
                redis: { status: "failing" },
                rabbitmq: { status: "failing", message: "timed out after 2s" }
              }
            })
            // The checks run side by side, each within 2 s.
            expect(hung.tookMs).toBeGreaterThanOrEqual(1_900)
            expect(hung.tookMs).toBeLessThan(3_000)

            yield* Effect.all([amqpRelay.thaw, redisRelay.thaw])
            const back = yield* probeUntil((reply) => reply.status === 200 && reply.body.checks.redis.status === "ok")
            expect(back.body.checks.rabbitmq).toMatchObject({ status: "ok" })
          }).pipe(
            // Thawed whatever happened: a frozen Redis or broker would hold up the server's shutdown.
            Effect.ensuring(Effect.all([amqpRelay.thaw, redisRelay.thaw])),
            Effect.provideService(TestServer, server)
          )
        }),
      60_000
    )
  })
}
