/**
 * `GET /metrics`: this instance's metrics in Prometheus's text format, counted
 * as requests and chat answers go through the real server, and the format
 * itself.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries, MetricLabel } from "effect"
import { prometheusText } from "../src/Metrics.js"
import { call, signUp } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
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
