/**
 * `GET /metrics`: this instance's metrics in Prometheus's text format, counted
 * as requests and chat answers go through the real server, the job queues'
 * depths read from their store (the database's table, RabbitMQ) when scraped,
 * and the format itself.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Metric, MetricBoundaries, MetricLabel } from "effect"
import { analysisQueue } from "../src/Files.js"
import { extractionQueue } from "../src/Graph.js"
import { prometheusText } from "../src/Metrics.js"
import { amqpUrl, queuesRemovedAfter, readyMessages, uniqueQueuePrefix } from "./fixtures/Amqp.js"
import { call, signUp } from "./fixtures/Auth.js"
import { uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { chatPath, chatRequests, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { testServer } from "./fixtures/Server.js"

/** The value of the one sample `series` (name and labels, as written) in `text`. */
const sample = (text: string, series: string): number => {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `))
  if (line === undefined) return expect.fail(`no sample ${series} in:\n${text}`)
  return Number(line.slice(series.length + 1))
}

describe("the text format", () => {
  it.effect("writes counters, gauges and cumulative histograms with their HELP and TYPE, labels escaped", () =>
    Effect.gen(function*() {
      const counter = Metric.counter("test_format_requests_total", { description: "Requests\nseen" })
      const gauge = Metric.gauge("test_format_open")
      const histogram = Metric.histogram(
        "test_format_seconds",
        MetricBoundaries.fromIterable([0.1, 1]),
        "How long"
      )
      counter.unsafeUpdate(2, [MetricLabel.make("path", "a \"quoted\" \\ path\n")])
      gauge.unsafeUpdate(3, [])
      for (const seconds of [0.05, 0.5, 0.7, 5]) histogram.unsafeUpdate(seconds, [])
      const text = prometheusText(yield* Metric.snapshot, [
        { name: "test_format_extra_bytes", type: "gauge", help: "Read now", value: 42 }
      ])

      expect(text).toContain(
        "# HELP test_format_requests_total Requests\\nseen\n# TYPE test_format_requests_total counter\n"
      )
      expect(sample(text, "test_format_requests_total{path=\"a \\\"quoted\\\" \\\\ path\\n\"}")).toBe(2)
      expect(text).toContain("# TYPE test_format_open gauge\n")
      expect(sample(text, "test_format_open")).toBe(3)
      expect(text).toContain("# HELP test_format_seconds How long\n# TYPE test_format_seconds histogram\n")
      expect(sample(text, "test_format_seconds_bucket{le=\"0.1\"}")).toBe(1)
      expect(sample(text, "test_format_seconds_bucket{le=\"1\"}")).toBe(3)
      expect(sample(text, "test_format_seconds_bucket{le=\"+Inf\"}")).toBe(4)
      expect(sample(text, "test_format_seconds_count")).toBe(4)
      expect(sample(text, "test_format_seconds_sum")).toBeCloseTo(6.25)
      expect(sample(text, "test_format_extra_bytes")).toBe(42)
      // Buckets in the order of their bounds, +Inf last, then the sum and the count.
      const histogramLines = text.split("\n").filter((line) => line.startsWith("test_format_seconds_"))
      expect(histogramLines.map((line) => line.split(" ")[0])).toEqual([
        "test_format_seconds_bucket{le=\"0.1\"}",
        "test_format_seconds_bucket{le=\"1\"}",
        "test_format_seconds_bucket{le=\"+Inf\"}",
        "test_format_seconds_sum",
        "test_format_seconds_count"
      ])
      expect(text.endsWith("\n")).toBe(true)
    }))
})

for (const dialect of dialects) {
  describe(`metrics on ${dialect}`, () => {
    layer(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }), { excludeTestServices: true })((it) => {
      it.effect("counts requests by route and status, and chat answers from start to end", () =>
        Effect.gen(function*() {
          const scrape = Effect.map(call("GET", "/metrics"), (reply) => {
            expect(reply.status).toBe(200)
            return reply.body as string
          })
          const before = yield* scrape
          const count = (text: string, series: string) => text.includes(`${series} `) ? sample(text, series) : 0

          expect((yield* call("GET", "/health/live")).status).toBe(200)
          expect((yield* call("GET", "/no/such/path/4711")).status).toBe(404)
          const user = yield* signUp()
          const chat = yield* call("POST", "/api/v1/chat", {
            auth: user.accessToken,
            body: { content: "Count this answer" }
          })
          expect(chat.status).toBe(200)
          expect(chat.body.answer.status).toBe("complete")

          const after = yield* scrape
          const live = "webplus_http_requests_total{method=\"GET\",route=\"/health/live\",status=\"200\"}"
          expect(count(after, live) - count(before, live)).toBe(1)
          // A path no route matched is one series, whatever its text.
          const unmatched = "webplus_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
          expect(count(after, unmatched) - count(before, unmatched)).toBe(1)
          expect(after).not.toContain("/no/such/path/4711")
          const chatRoute = "webplus_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/chat\"}"
          expect(count(after, chatRoute) - count(before, chatRoute)).toBe(1)

          const started = "webplus_chat_answers_started_total"
          const complete = "webplus_chat_answers_ended_total{status=\"complete\"}"
          const firstTokens = "webplus_chat_first_token_seconds_count"
          const completion = "webplus_chat_tokens_total{kind=\"completion\"}"
          // The title is written by a second, background call to the model: at least the answer counts.
          expect(count(after, started) - count(before, started)).toBeGreaterThanOrEqual(1)
          expect(count(after, complete) - count(before, complete)).toBeGreaterThanOrEqual(1)
          expect(count(after, firstTokens) - count(before, firstTokens)).toBeGreaterThanOrEqual(1)
          expect(count(after, completion) - count(before, completion)).toBeGreaterThan(0)
          expect(sample(after, "webplus_chat_answers_streaming")).toBeGreaterThanOrEqual(0)
          expect(sample(after, "process_resident_memory_bytes")).toBeGreaterThan(0)
          expect(sample(after, "process_cpu_seconds_total")).toBeGreaterThan(0)
        }))
    })
  })
}

/** One worker per queue, and a model that may take its time: jobs wait behind the one it holds. */
const oneWorker = {
  JOBS_CONCURRENCY: "1",
  JOBS_POLL_INTERVAL: "50 millis",
  JOBS_TIMEOUT: "30 seconds",
  CHAT_RETRY_ATTEMPTS: "0",
  CHAT_FIRST_CHUNK_TIMEOUT: "30 seconds",
  MODEL_STATUS_POLL_INTERVAL: "0 seconds"
}

const scrapeText = Effect.map(call("GET", "/metrics"), (reply) => {
  expect(reply.status).toBe(200)
  return reply.body as string
})

const waitingIn = (queue: string) => `webplus_jobs_waiting{queue="${queue}"}`

/** Runs `effect` until `done` holds for its result (every 50 ms, for 15 s at most); that result. */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      const result = yield* effect
      if (done(result)) return result
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("the condition never held within 15 s")
  })

/**
 * Three analyses for one worker, whose model answers only once the test lets it: the worker holds
 * the first, two wait, and `webplus_jobs_waiting` says so; once the model answers, all three run
 * and it falls back to 0. `broker`: the same figure as RabbitMQ's own count, when it holds the queue.
 */
const jobsWaitThenRun = (broker?: (queue: string) => Effect.Effect<number>) =>
  Effect.gen(function*() {
    const admin = yield* signUp()
    const user = yield* signUp()
    const openai = yield* fakeProvider("openai", [{ name: "gpt-queue" }])
    yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 30_000 })
    openai.chat = { text: [`{"summary": "Waited its turn."}`] }
    const answer = yield* Deferred.make<void>()
    const route = `POST ${chatPath.openai}`
    const answerNow = openai.routes.get(route)!
    openai.routes.set(route, async (request, response) => {
      await Effect.runPromise(Deferred.await(answer))
      await answerNow(request, response)
    })

    // Both queues are reported from the start, empty.
    const idle = yield* scrapeText
    expect(sample(idle, waitingIn(analysisQueue))).toBe(0)
    expect(sample(idle, waitingIn(extractionQueue))).toBe(0)
    expect(idle).toContain("# TYPE webplus_jobs_waiting gauge\n")

    const file = yield* uploadOne(user.accessToken, "queued.txt", "Three analyses for one worker.")
    const analyses = yield* Effect.forEach([1, 2, 3], () =>
      Effect.map(
        call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
        (reply) => {
          expect(reply.status, JSON.stringify(reply.body)).toBe(202)
          return reply.body.id as string
        }
      ))

    // The worker has taken one (its model call is waiting); the other two wait for it.
    const busy = yield* eventually(
      scrapeText,
      (text) => chatRequests(openai).length === 1 && sample(text, waitingIn(analysisQueue)) === 2
    )
    expect(sample(busy, waitingIn(extractionQueue))).toBe(0)
    if (broker) expect(yield* broker(analysisQueue)).toBe(2)

    yield* Deferred.succeed(answer, undefined)
    for (const id of analyses) {
      const done = yield* eventually(
        call("GET", `/api/v1/files/${file.id}/analyses/${id}`, { auth: user.accessToken }),
        (reply) => reply.body.status === "complete" || reply.body.status === "error"
      )
      expect(done.body.status, JSON.stringify(done.body)).toBe("complete")
    }
    expect(chatRequests(openai)).toHaveLength(3)
    expect(sample(yield* scrapeText, waitingIn(analysisQueue))).toBe(0)
    if (broker) expect(yield* broker(analysisQueue)).toBe(0)
  })

describe("jobs waiting", () => {
  for (const dialect of dialects) {
    layer(testServer({ dialect, env: oneWorker }), { excludeTestServices: true })((it) => {
      it.scoped(`in the database's queue on ${dialect}: rises while jobs wait for a worker, falls once run`, () =>
        jobsWaitThenRun())
    })
  }

  const prefix = uniqueQueuePrefix()
  layer(
    testServer({ env: { ...oneWorker, AMQP_URL: amqpUrl, AMQP_QUEUE_PREFIX: prefix } }).pipe(
      Layer.provideMerge(queuesRemovedAfter(prefix))
    ),
    { excludeTestServices: true }
  )((it) => {
    it.scoped("in RabbitMQ's queues: rises while jobs wait for a worker, falls once run, as the broker counts", () =>
      jobsWaitThenRun((queue) => readyMessages(prefix, queue)))
  })
})

describe("a metrics token", () => {
  const token = "metrics-token-0123456789abcdef"
  layer(testServer({ env: { METRICS_TOKEN: token } }), { excludeTestServices: true })((it) => {
    it.effect("is required as a bearer token, and never shown", () =>
      Effect.gen(function*() {
        const missing = yield* call("GET", "/metrics")
        expect(missing.status).toBe(401)
        expect(missing.body._tag).toBe("Unauthorized")
        expect((yield* call("GET", "/metrics", { auth: "metrics-token-wrong" })).status).toBe(401)
        expect((yield* call("GET", "/metrics", { auth: `${token}x` })).status).toBe(401)
        const scraped = yield* call("GET", "/metrics", { auth: token })
        expect(scraped.status).toBe(200)
        expect(scraped.body).toContain("# TYPE webplus_http_requests_total counter")
        expect(JSON.stringify(missing.body)).not.toContain(token)
        expect(scraped.body).not.toContain(token)
      }))
  })
})
