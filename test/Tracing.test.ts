import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Tracer } from "effect"
import { TracingLive } from "../src/Tracing.js"

const nativeTracer = Effect.runSync(Effect.tracer)

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
      const { child, other, parent, tracer } = yield* threeSpans.pipe(Effect.provide(TracingLive))
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
        Effect.provide(TracingLive.pipe(Layer.provide(Layer.setTracer(recording))))
      )
      expect(tracer).toBe(recording)
      expect(names).toEqual(["parent", "child", "other"])
    }))
})
