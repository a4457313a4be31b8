/**
 * Where the server's spans go. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, to an
 * OpenTelemetry collector over OTLP/HTTP (JSON), every `OTEL_BSP_SCHEDULE_DELAY`
 * (`@effect/opentelemetry`'s `OtlpTracer`, which needs no OpenTelemetry SDK).
 * A request's span continues the trace of an incoming `traceparent` header.
 *
 * Without it, the spans stay in the process: Effect's own (native) spans, with
 * ids that hold less memory. The native tracer builds each id one character at
 * a time. V8 keeps such a string as a chain of pieces, one per character: about
 * 1.5 KiB for a trace id and a span id, held as long as the span is. The span
 * of a request that streams an answer lives as long as the stream, so every
 * open stream pays it. Here the same spans get ids cut from a buffer of random
 * bytes, each one flat string.
 *
 * Either way, a tracer that the program running the server has set (a
 * benchmark's, a test's) is left as it is.
 */
import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import { FetchHttpClient } from "@effect/platform"
import { Effect, Layer, Option, Redacted, Tracer } from "effect"
import * as Crypto from "node:crypto"
import { serverVersion } from "./Api.js"
import { AppConfig } from "./Config.js"

/** The tracer Effect uses by default. */
const nativeTracer = Effect.runSync(Effect.tracer)

const pool = Buffer.alloc(4096)
let used = pool.length

/** `bytes` random bytes in hex, as one flat string. */
const randomHex = (bytes: number): string => {
  if (used + bytes > pool.length) {
    Crypto.randomFillSync(pool)
    used = 0
  }
  const hex = pool.toString("hex", used, used + bytes)
  used += bytes
  return hex
}

/** A native span's ids, which its class leaves writable. */
interface Ids {
  traceId: string
  spanId: string
}

const flatIdsTracer = Tracer.make({
  span: (name, parent, context, links, startTime, kind, options) => {
    const span = nativeTracer.span(name, parent, context, links, startTime, kind, options)
    const ids = span as unknown as Ids
    ids.spanId = randomHex(8)
    // A child keeps its parent's trace id, which is already flat (or came from a client's header).
    if (parent._tag === "None") ids.traceId = randomHex(16)
    return span
  },
  context: nativeTracer.context
})

/** An attribute value that is a plain value, or a list of them. */
const isPlain = (value: unknown): boolean =>
  Array.isArray(value) ? value.every((item) => item === null || typeof item !== "object") : value === null ||
    typeof value !== "object"

/**
 * The spans of `tracer`, keeping only plain attributes (text, numbers, lists of them): `@effect/sql`'s
 * repositories put the whole row on their insert and update spans (a password's hash, a message's
 * text), which must not leave the server.
 */
const plainAttributesOnly = (tracer: Tracer.Tracer): Tracer.Tracer =>
  Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = tracer.span(name, parent, context, links, startTime, kind, options)
      const attribute = span.attribute.bind(span) // Replaced on the span itself: the exporter keeps this object.
      ;(span as { attribute: Tracer.Span["attribute"] }).attribute = (key, value) => {
        if (isPlain(value)) attribute(key, value)
      }
      return span
    },
    context: tracer.context
  })

/** The spans exported to the collector at `endpoint`. */
const otlpTracing = (endpoint: string, settings: AppConfig["telemetry"]) =>
  Layer.unwrapScoped(
    Effect.map(
      OtlpTracer.make({
        url: `${endpoint}/v1/traces`,
        resource: { serviceName: settings.serviceName, serviceVersion: serverVersion },
        headers: Redacted.value(settings.otlpHeaders),
        exportInterval: settings.exportInterval
      }),
      (tracer) => Layer.setTracer(plainAttributesOnly(tracer))
    )
  ).pipe(
    Layer.provide(OtlpSerialization.layerJson),
    Layer.provide(FetchHttpClient.layer)
  )

/** Exported spans with `OTEL_EXPORTER_OTLP_ENDPOINT`, else native spans with flat ids, unless another tracer was set. */
export const TracingLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    if ((yield* Effect.tracer) !== nativeTracer) return Layer.empty
    const { telemetry } = yield* AppConfig
    return Option.match(telemetry.otlpEndpoint, {
      onNone: () => Layer.setTracer(flatIdsTracer),
      onSome: (endpoint) => otlpTracing(endpoint, telemetry)
    })
  })
)
