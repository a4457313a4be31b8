/**
 * The server as `src/bin/server.ts` runs it, plus a probe for `bench/chat.ts`,
 * which starts this file as a child process (`fork` with `--expose-gc` and an
 * IPC channel). Over IPC it answers:
 *
 * - `{ type: "probe", gc? }` with the process's CPU time and memory, after a
 *   full garbage collection when `gc` is set;
 * - `{ type: "loop" }` with the event loop's delay (ms: p50, p99, max) since
 *   the last such question (`perf_hooks.monitorEventLoopDelay`): how long
 *   ready work waited for the loop, whatever kept it busy. A timer every
 *   10 ms is late by that much (it records the time between two runs, less
 *   the 10 ms): a finer one would cost the server CPU time of its own (at 1
 *   ms, 3% of a core when idle, a tenth of that at 10 ms);
 * - `{ type: "spans" }` with the durations of the spans ended since the last
 *   such question, by name, when `BENCH_SPANS=1` installed a tracer that
 *   records them (a diagnostic: the tracer has a cost of its own).
 *
 * Nothing else differs from the real entry point.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option, Tracer } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { environment } from "../src/Config.js"
import { describeStartupFailure, ServerLive } from "../src/Server.js"

interface ProbeRequest {
  readonly type?: string
  readonly gc?: boolean
}

/** Milliseconds each span took, by name, since they were last handed out. */
let durations = new Map<string, Array<number>>()

let nextSpanId = 0

/** A tracer that only remembers how long each span took. */
const timingTracer = Tracer.make({
  span: (name, parent, context, links, startTime, kind) => {
    const attributes = new Map<string, unknown>()
    const span: Tracer.Span = {
      _tag: "Span",
      name,
      spanId: String(++nextSpanId),
      traceId: Option.match(parent, { onNone: () => "bench", onSome: (span) => span.traceId }),
      parent,
      context,
      status: { _tag: "Started", startTime },
      attributes,
      links,
      sampled: true,
      kind,
      end: (endTime) => {
        const list = durations.get(name) ?? []
        list.push(Number(endTime - startTime) / 1e6)
        durations.set(name, list)
      },
      attribute: (key, value) => void attributes.set(key, value),
      event: () => {},
      addLinks: () => {}
    }
    return span
  },
  context: (f) => f()
})

const loopResolutionMs = 10
const loopDelay = monitorEventLoopDelay({ resolution: loopResolutionMs })
loopDelay.enable()

if (process.send !== undefined) {
  process.on("message", (message: ProbeRequest) => {
    if (message.type === "probe") {
      const rssBefore = process.memoryUsage.rss()
      if (message.gc === true) globalThis.gc?.()
      process.send!({ type: "probe", cpu: process.cpuUsage(), rssBefore, memory: process.memoryUsage() })
    } else if (message.type === "loop") {
      const ms = (nanos: number) => Math.max(0, nanos / 1e6 - loopResolutionMs)
      process.send!({
        type: "loop",
        p50: ms(loopDelay.percentile(50)),
        p99: ms(loopDelay.percentile(99)),
        max: ms(loopDelay.max)
      })
      loopDelay.reset()
    } else if (message.type === "spans") {
      process.send!({ type: "spans", spans: Object.fromEntries(durations) })
      durations = new Map()
    }
  })
  // The benchmark owns this process: when it goes, so does the server.
  process.on("disconnect", () => {
    process.kill(process.pid, "SIGTERM")
    setTimeout(() => process.exit(1), 30_000).unref()
  })
}

const server = process.env.BENCH_SPANS === "1"
  ? ServerLive.pipe(Layer.provide(Layer.setTracer(timingTracer)))
  : ServerLive

Layer.launch(server).pipe(
  Effect.withConfigProvider(environment()),
  Effect.tapErrorCause((cause) => Effect.sync(() => process.stderr.write(`${describeStartupFailure(cause)}\n`))),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
