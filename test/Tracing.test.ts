/**
 * Where the server's spans go: kept in the process with flat ids, or exported
 * over OTLP/HTTP to a collector (a loopback one here, which records what it
 * is sent), continuing a client's trace.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Option, Tracer } from "effect"
import * as Http from "node:http"
import { AppConfig } from "../src/Config.js"
import { TracingLive } from "../src/Tracing.js"
import { signUp } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { TestServer, testServer } from "./fixtures/Server.js"

const nativeTracer = Effect.runSync(Effect.tracer)

/** The tracing layer as the server builds it, with `env` as its configuration. */
const tracing = (env: Record<string, string> = {}) =>
  TracingLive.pipe(
    Layer.provide(AppConfig.Default),
    Layer.provide(
      Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ NODE_ENV: "test", ...env }))))
    )
  )

/** A span, a child of it, and another span of its own trace. */
const threeSpans = Effect.gen(function*() {
  const [parent, child] = yield* Effect.withSpan(
    Effect.zip(Effect.currentSpan, Effect.withSpan(Effect.currentSpan, "child")),
    "parent"
  )
  const other = yield* Effect.withSpan(Effect.currentSpan, "other")
  return { parent, child, other, tracer: yield* Effect.tracer }
})

describe("tracing", () => {
  it.effect("spans get random ids of their own; a child keeps its parent's trace", () =>
    Effect.gen(function*() {
      const { child, other, parent, tracer } = yield* threeSpans.pipe(Effect.provide(tracing()))
      expect(tracer).not.toBe(nativeTracer)
      for (const span of [parent, child, other]) {
        expect(span.spanId).toMatch(/^[0-9a-f]{16}$/)
        expect(span.traceId).toMatch(/^[0-9a-f]{32}$/)
      }
      expect(new Set([parent.spanId, child.spanId, other.spanId]).size).toBe(3)
      expect(child.traceId).toBe(parent.traceId)
      expect(other.traceId).not.toBe(parent.traceId)
      expect(Option.map(child.parent, (span) => span.spanId)).toEqual(Option.some(parent.spanId))
      // Still the native spans, recording what they record.
      expect(parent.attributes).toBeInstanceOf(Map)
    }))

  it.effect("a tracer the program set is kept", () =>
    Effect.gen(function*() {
      const names: Array<string> = []
      const recording = Tracer.make({
        span: (name, parent, context, links, startTime, kind, options) => {
          names.push(name)
          return nativeTracer.span(name, parent, context, links, startTime, kind, options)
        },
        context: nativeTracer.context
      })
      const { tracer } = yield* threeSpans.pipe(
        Effect.provide(tracing().pipe(Layer.provide(Layer.setTracer(recording))))
      )
      expect(tracer).toBe(recording)
      expect(names).toEqual(["parent", "child", "other"])
    }))
})

interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue?: string } }>
}

interface Export {
  readonly headers: Http.IncomingHttpHeaders
  readonly serviceName: string | undefined
  readonly spans: ReadonlyArray<OtlpSpan>
}

/** A loopback OTLP/HTTP collector: what was posted to `/v1/traces`, as JSON. */
const collector = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly exports: Array<Export>; readonly server: Http.Server }>((resume) => {
    const exports: Array<Export> = []
    const server = Http.createServer((request, response) => {
      let body = ""
      request.on("data", (chunk: Buffer) => body += chunk.toString("utf8"))
      request.on("end", () => {
        if (request.method === "POST" && request.url === "/v1/traces") {
          const parsed = JSON.parse(body) as {
            resourceSpans: Array<{
              resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }
              scopeSpans: Array<{ spans: Array<OtlpSpan> }>
            }>
          }
          for (const resourceSpans of parsed.resourceSpans) {
            exports.push({
              headers: request.headers,
              serviceName: resourceSpans.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue,
              spans: resourceSpans.scopeSpans.flatMap((scope) => scope.spans)
            })
          }
        }
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as { port: number }
      resume(Effect.succeed({ url: `http://127.0.0.1:${address.port}`, exports, server }))
    })
  }),
  ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)

for (const dialect of dialects) {
  describe(`exporting spans on ${dialect}`, () => {
    it.scopedLive("sends the request's spans to the collector in the client's trace, with its headers, and no credentials", () =>
      Effect.gen(function*() {
        const { exports, url } = yield* collector
        const server = testServer({
          dialect,
          env: {
            OTEL_EXPORTER_OTLP_ENDPOINT: `${url}/`,
            OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Bearer%20collector-secret,x-team=web%2Bplus",
            OTEL_SERVICE_NAME: "webplus-test",
            OTEL_BSP_SCHEDULE_DELAY: "50"
          }
        })
        const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
        // Sent with node:http: the test's Effect client would put its own span's trace in the header.
        const get = (path: string, headers: Record<string, string>) =>
          Effect.flatMap(TestServer, ({ baseUrl }) =>
            Effect.async<number>((resume) => {
              Http.get(`${baseUrl}${path}`, { headers }, (response) => {
                response.resume()
                response.on("end", () => resume(Effect.succeed(response.statusCode ?? 0)))
              })
            }))
        const spansOf = () => exports.flatMap((batch) => batch.spans)
        yield* Effect.gen(function*() {
          const statuses = yield* Effect.all([
            get("/health/ready", { traceparent: `00-${traceId}-00f067aa0ba902b7-01` }),
            // Credentials where a browser's WebSocket sends them stay out of the spans.
            get("/health/live?access_token=query-secret-4711&x=1", {
              "sec-websocket-protocol": "webplus.bearer, protocol-secret-4711"
            })
          ])
          expect(statuses).toEqual([200, 200])
          // A new account: its row (with the password's hash) is on the repository's insert span.
          yield* signUp()
          // Exported while the server runs, every OTEL_BSP_SCHEDULE_DELAY.
          for (let attempt = 0; attempt < 100; attempt++) {
            const names = spansOf().map((span) => span.name)
            if (names.includes("UsersRepo.insert") && names.filter((name) => name === "http.server GET").length >= 2) {
              break
            }
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.provide(server))
        const exported = JSON.stringify(exports)
        expect(exports.flatMap((batch) => batch.spans).some((span) => span.name === "UsersRepo.insert")).toBe(true)
        expect(exported).not.toMatch(/scrypt\$/)
        expect(exported).not.toContain("query-secret-4711")
        expect(exported).not.toContain("protocol-secret-4711")
        expect(exported).toContain("access_token=%3Credacted%3E&x=1")

        const spans = exports.flatMap((batch) => batch.spans).filter((span) => span.traceId === traceId)
        const request = spans.find((span) => span.name === "http.server GET")
        expect(request, JSON.stringify(spans.map((span) => span.name))).toBeDefined()
        expect(request!.parentSpanId).toBe("00f067aa0ba902b7")
        expect(request!.attributes).toContainEqual({ key: "http.route", value: { stringValue: "/health/ready" } })
        const check = spans.find((span) => span.name === "Health.ready")
        expect(check?.parentSpanId).toBe(request!.spanId)
        expect(spans.some((span) => span.name === "sql.execute")).toBe(true)
        expect(exports[0]!.serviceName).toBe("webplus-test")
        expect(exports[0]!.headers.authorization).toBe("Bearer collector-secret")
        expect(exports[0]!.headers["x-team"]).toBe("web+plus")
      }))
  })
}

describe("the telemetry settings", () => {
  layer(Layer.empty)((it) => {
    it.effect("refuse an endpoint that is not a URL and malformed headers, without echoing the headers", () =>
      Effect.gen(function*() {
        const settings = (env: Record<string, string>) =>
          Effect.either(Effect.provide(
            AppConfig,
            AppConfig.Default.pipe(
              Layer.provide(
                Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ NODE_ENV: "test", ...env }))))
              )
            )
          ))
        const badUrl = yield* settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })
        expect(badUrl._tag).toBe("Left")
        const badHeaders = yield* settings({ OTEL_EXPORTER_OTLP_HEADERS: "no-equals-sign-secret-value" })
        expect(badHeaders._tag).toBe("Left")
        expect(String(badHeaders._tag === "Left" ? badHeaders.left : "")).not.toContain("secret-value")
        const fine = yield* settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.example:4318/" })
        expect(fine._tag === "Right" && fine.right.telemetry.otlpEndpoint).toEqual(
          Option.some("https://otel.example:4318")
        )
      }))
  })
})
