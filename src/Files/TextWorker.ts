/**
 * A document's text, read on a worker thread of its own (PDFs in `Pdf.ts`, office documents in
 * `Office.ts`): parsing a large document takes CPU time that must not hold up the event loop (every
 * open stream with it), and a hostile or malformed one must take neither the server's memory nor the
 * server down. The worker is stopped when the read ends, fails, times out or is interrupted.
 */
import { Duration, Effect } from "effect"
import { Worker } from "node:worker_threads"
import { TextUnreadable } from "./Content.js"

/** How long one document may take. */
const readTimeout = Duration.seconds(60)

/** Documents read at once, server-wide, whatever their kind (each reader may take up to 512 MB); the rest wait their turn. */
const readers = Effect.unsafeMakeSemaphore(2)

/**
 * Runs `source` (CommonJS, evaluated) on a worker with `workerData`; it answers with one message,
 * `{ text }` or `{ error }`.
 */
export const textOnWorker = (source: string, workerData: unknown): Effect.Effect<string, TextUnreadable> =>
  Effect.async<string, TextUnreadable>((resume) => {
    const worker = new Worker(source, {
      eval: true,
      workerData,
      // A hostile document cannot take more than this of the server's memory.
      resourceLimits: { maxOldGenerationSizeMb: 512 }
    })
    let settled = false
    const settle = (outcome: Effect.Effect<string, TextUnreadable>) => {
      if (settled) return
      settled = true
      resume(outcome)
      void worker.terminate()
    }
    worker.once("message", (message: { readonly text?: string; readonly error?: string }) =>
      settle(
        typeof message.text === "string"
          ? Effect.succeed(message.text)
          : Effect.fail(new TextUnreadable({ reason: message.error ?? "no text" }))
      ))
    worker.once("error", (error) => settle(Effect.fail(new TextUnreadable({ reason: error.message }))))
    worker.once("exit", (code) => settle(Effect.fail(new TextUnreadable({ reason: `the reader stopped (${code})` }))))
    return Effect.sync(() => {
      settled = true
      void worker.terminate()
    })
  }).pipe(
    Effect.timeoutFail({ duration: readTimeout, onTimeout: () => new TextUnreadable({ reason: "it took too long" }) }),
    readers.withPermits(1)
  )
