/**
 * A loopback OpenAI-compatible provider that streams at a fixed pace, for
 * `bench/chat.ts`, which starts it as a child process (`fork`, with an IPC
 * channel) so that neither the server nor the load generator shares its
 * event loop.
 *
 * - `GET /v1/models` lists `paced` (`PACED_CHUNKS` chunks, one every
 *   `PACED_INTERVAL_MS`) and `paced-slow` (`PACED_SLOW_CHUNKS`, one every
 *   `PACED_SLOW_INTERVAL_MS`), both with a context length of 8,192.
 * - `POST /v1/chat/completions` reads the body, answers `200` with
 *   `text/event-stream` at once, sends the first `chat.completion.chunk`
 *   `PACED_FIRST_CHUNK_MS` after the body was read, then the others at the
 *   model's pace; then a chunk with `finish_reason`, a usage chunk and
 *   `data: [DONE]`. The text is the same on every request.
 *
 * Plain `node:http` on purpose: the baseline the server is compared with must
 * cost as little as possible. Over IPC it reports its port once listening,
 * answers `{ type: "cpu" }` with its `process.cpuUsage()`, and
 * `{ type: "arrivals" }` with when (epoch ms, fractional) each request whose
 * last message ends with a tag `[#tag]` arrived (its headers were read), by
 * tag, forgetting them: the benchmark splits a first token's latency into the
 * way to the provider and the way back.
 */
import * as Http from "node:http"
import { performance } from "node:perf_hooks"

const positive = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number`)
  return value
}

const firstChunkMs = positive("PACED_FIRST_CHUNK_MS", 50)
const models = {
  paced: { chunks: positive("PACED_CHUNKS", 60), intervalMs: positive("PACED_INTERVAL_MS", 50) },
  "paced-slow": { chunks: positive("PACED_SLOW_CHUNKS", 24), intervalMs: positive("PACED_SLOW_INTERVAL_MS", 5_000) }
} as const

type PacedModel = keyof typeof models

const words = (
  "the quick brown fox jumps over lazy dogs while streams of tokens arrive at a steady pace " +
  "from a loopback provider so that the server overhead can be measured"
).split(" ")

/** The `index`th piece of every answer (a word and a space, about one token). */
const pacedPiece = (index: number): string => `${words[index % words.length]} `

const created = Math.floor(Date.now() / 1000)

const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`

const chunk = (id: string, model: string, delta: object, finishReason: string | null) =>
  sse({
    id,
    object: "chat.completion.chunk",
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finishReason }]
  })

let completions = 0

/** When the tagged requests arrived (epoch ms), by tag, since the benchmark last asked. */
let arrivals = new Map<string, number>()

/** The tag at the end of the request's last message, if any. */
const tagOf = (body: unknown): string | undefined => {
  const messages = (body as { messages?: unknown } | null)?.messages
  const last = Array.isArray(messages) ? (messages.at(-1) as { content?: unknown } | undefined) : undefined
  return typeof last?.content === "string" ? /\[#([\w-]+)\]$/.exec(last.content)?.[1] : undefined
}

const stream = (res: Http.ServerResponse, model: PacedModel) => {
  const id = `chatcmpl-${++completions}`
  const { chunks: total, intervalMs } = models[model]
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
  res.flushHeaders()
  let sent = 0
  let timer: NodeJS.Timeout | undefined
  const next = () => {
    if (res.destroyed) return
    res.write(
      chunk(id, model, sent === 0 ? { role: "assistant", content: pacedPiece(0) } : { content: pacedPiece(sent) }, null)
    )
    sent++
    if (sent < total) {
      timer = setTimeout(next, intervalMs)
      return
    }
    res.write(chunk(id, model, {}, "stop"))
    res.write(sse({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [],
      usage: { prompt_tokens: 12, completion_tokens: total, total_tokens: 12 + total }
    }))
    res.end("data: [DONE]\n\n")
  }
  timer = setTimeout(next, firstChunkMs)
  res.on("close", () => clearTimeout(timer))
}

const server = Http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (req.method === "GET" && req.url === "/v1/models") {
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify({
      object: "list",
      data: Object.keys(models).map((id) => ({
        id,
        object: "model",
        created,
        owned_by: "bench",
        context_length: 8192
      }))
    }))
    return
  }
  if (req.method === "POST" && req.url === "/v1/chat/completions") {
    const arrived = performance.timeOrigin + performance.now()
    const parts: Array<Buffer> = []
    req.on("data", (part: Buffer) => parts.push(part))
    req.on("end", () => {
      let model: unknown
      try {
        const body = JSON.parse(Buffer.concat(parts).toString("utf8")) as { model?: unknown }
        model = body.model
        const tag = tagOf(body)
        if (tag !== undefined) arrivals.set(tag, arrived)
      } catch {
        model = undefined
      }
      if (model !== "paced" && model !== "paced-slow") {
        res.writeHead(404, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: `No model ${String(model)}`, type: "invalid_request_error" } }))
        return
      }
      stream(res, model)
    })
    return
  }
  res.writeHead(404, { "content-type": "application/json" })
  res.end(JSON.stringify({ error: { message: "Not found" } }))
})
server.maxConnections = 100_000

if (process.send !== undefined) {
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    process.send!({ type: "listening", port: typeof address === "object" && address ? address.port : 0 })
  })
  process.on("message", (message: { type?: string }) => {
    if (message.type === "cpu") process.send!({ type: "cpu", cpu: process.cpuUsage() })
    if (message.type === "arrivals") {
      process.send!({ type: "arrivals", arrivals: Object.fromEntries(arrivals) })
      arrivals = new Map()
    }
  })
  // The benchmark owns this process: when it goes, so does the provider.
  process.on("disconnect", () => process.exit(0))
}
