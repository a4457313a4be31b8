/**
 * The spans the server records when no exporter is set up: Effect's own
 * (native) spans, with ids that hold less memory.
 *
 * The native tracer builds each id one character at a time. V8 keeps such a
 * string as a chain of pieces, one per character: about 1.5 KiB for a trace
 * id and a span id, held as long as the span is. The span of a request that
 * streams an answer lives as long as the stream, so every open stream pays it.
 * Here the same spans get ids cut from a buffer of random bytes, each one flat
 * string. A tracer that the program running the server has set (an exporter,
 * a benchmark's) is left as it is.
 */
import { Effect, Layer, Tracer } from "effect"
import * as Crypto from "node:crypto"

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

/** Native spans with flat ids, unless another tracer was set. */
export const TracingLive = Layer.unwrapEffect(
  Effect.map(Effect.tracer, (current) => current === nativeTracer ? Layer.setTracer(flatIdsTracer) : Layer.empty)
)
