/**
 * What the server adds to a streamed chat answer (issue #6): the latency to the
 * first token, the chunks it relays per CPU-second, and the memory an open
 * stream holds.
 *
 * Three processes, so that none shares an event loop with another:
 *
 * - the provider: `bench/pacedProvider.ts`, a loopback OpenAI-compatible API
 *   whose answers stream at a fixed pace (first chunk `firstChunkMs` after
 *   the request, then one every `intervalMs`, `chunks` in all);
 * - the server: `bench/chatServer.ts`, the real server (`src/bin/server.ts`
 *   plus a probe for CPU time and memory over IPC), compiled by `tsc` and run
 *   by `node` as in production (`npm run start:prod`, the container image),
 *   with `NODE_ENV=production`, with
 *   SQLite in a temporary `DATA_DIR` (with `--pg`, a new PostgreSQL database
 *   instead, dropped at the end), the provider registered and synced
 *   through the API like an administrator does;
 * - this process: the load generator, on `node:http` keep-alive connections.
 *
 * Each stream is a turn in a conversation of its own (one per client, created
 * beforehand, so the history grows by two messages a round): `POST
 * /api/v1/conversations/{id}/chat` with `Accept: text/event-stream`, read to
 * its `done` event. The direct baseline sends the same question to the
 * provider (`POST /v1/chat/completions`, streamed) and reads it to `[DONE]`.
 *
 * 1. Warm-up: 50 clients, 2 rounds, through the server.
 * 2. Memory: the server's RSS idle (after a full GC) and while 1,000 streams
 *    of the slow model (one chunk every 5 s) are open and past their first
 *    token; the difference over the number of open streams. Also the live heap
 *    (after a full GC in both states): the RSS difference can be smaller than
 *    what a stream holds when the idle server kept the pages its heap grew to
 *    during the warm-up, so the target is met only if both are within it.
 *    Then the answers are cancelled through the API.
 * 3. For 1, 100 and 1,000 concurrent streams, first direct to the provider,
 *    then through the server: that many clients, each opening a stream as soon
 *    as its previous one ended (`rounds` each), their first streams started
 *    evenly over one stream's duration so the arrivals spread out. The first
 *    stream of each client is ramp-up: it counts for errors and chunks, not for
 *    the latency figures, which are then taken while the level's streams are
 *    open. First-token latency: from sending the request to the first `delta`
 *    event (server) or the first content chunk (direct). The added latency is
 *    the server's p50 (p99) minus the direct p50 (p99) of the same level.
 *    Chunks per second per core: `delta` events received over the wall time,
 *    divided by the server's CPU use (user + system time over wall time).
 *    An error is a status other than 200, a connection failure, an `error`
 *    event, a stream ending without `done`, or a `done` whose stored answer is
 *    not `complete` or differs from the relayed text. A request that meets a
 *    keep-alive connection the server has just closed as idle is sent again
 *    (counted apart); connections the kernel dropped on a full listen queue
 *    during a server phase are printed.
 *
 * Run with `npm run bench:chat` (about 8 minutes). Options: `--quick` runs
 * fewer rounds; `--levels=1,100` only those levels; `--pg` runs the server on
 * PostgreSQL (a database created for the run on the server of
 * `BENCH_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`,
 * as a deployment of several instances would); `--no-memory` skips the
 * memory phase; `--cpu-prof` writes a CPU profile of the server (V8
 * `--cpu-prof`) to a temporary directory, printed at the end; `--spans` prints
 * the durations of the server's spans at each level (a diagnostic: recording
 * them costs time too); `--tsx` runs the server under `tsx` as `npm start` does
 * instead of compiled (its closures are larger: see `buildServer`). The
 * machine's other load shows in every figure: run it on a quiet machine and
 * read the load average printed at the start and the end.
 */
import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { performance } from "node:perf_hooks"
import Pg from "pg"
import { json, percentile, request as sendRequest } from "./Support.js"

const args = process.argv.slice(2)
const quick = args.includes("--quick")

/**
 * The provider's pace: an answer of `chunks` lasts about `firstChunkMs + chunks × intervalMs`. The
 * memory phase uses a slow model (`slow`), so that relaying does not saturate the server before
 * all of its streams have started.
 */
const pace = {
  firstChunkMs: 50,
  intervalMs: 50,
  chunks: 60,
  slow: { intervalMs: 5_000, chunks: 24 }
} as const
const streamMs = pace.firstChunkMs + pace.chunks * pace.intervalMs

const warmup = { streams: 50, rounds: 2 } as const
const memoryStreams = 1_000
const allLevels = [
  { streams: 1, rounds: quick ? 6 : 16 },
  { streams: 100, rounds: quick ? 2 : 4 },
  { streams: 1_000, rounds: 2 }
] as const

const levelsArg = args.find((arg) => arg.startsWith("--levels="))?.slice("--levels=".length)
const options = {
  levels: levelsArg === undefined
    ? allLevels
    : allLevels.filter((level) => levelsArg.split(",").map(Number).includes(level.streams)),
  memory: !args.includes("--no-memory"),
  cpuProf: args.includes("--cpu-prof"),
  spans: args.includes("--spans"),
  pg: args.includes("--pg"),
  tsx: args.includes("--tsx")
} as const

/** Targets of issue #6 on this 2-core machine. */
const targets = { addedP50Ms: 2, addedP99Ms: 10, atStreams: 100, errorsAt: 1_000, kibPerStream: 64 } as const

const question = "Tell me a short story about a fox."

const root = Path.resolve(import.meta.dirname, "..")

// --- figures

const summarise = (samples: ReadonlyArray<number>) => {
  const sorted = [...samples].sort((a, b) => a - b)
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN }
}

const ms = (n: number) => (Number.isNaN(n) ? "–" : Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2))
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const pad = (text: string, width: number) => text.padStart(width)
const padEnd = (text: string, width: number) => text.padEnd(width)
const sleep = (millis: number) => new Promise<void>((resolve) => setTimeout(resolve, millis))
const load = () => Os.loadavg().map((n) => n.toFixed(2)).join(", ")
const began = performance.now()
/** Where the run is, on stderr: the figures go to stdout. */
const progress = (what: string) =>
  process.stderr.write(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${what}\n`)

// --- child processes

interface Child {
  readonly process: ChildProcess.ChildProcess
  readonly output: () => string
  /** Sends `message` over IPC and waits for the answer of the same `type`. */
  readonly ask: <A>(message: { readonly type: string; readonly [key: string]: unknown }) => Promise<A>
}

/**
 * Compiles the server and its probe as `npm run build` does (into `dist/bench-server`, beside the
 * production build), so that the server runs as it does in production (`node dist/src/bin/server.js`):
 * `tsx`, which `npm start` uses, compiles with esbuild's `keepNames`, whose `__name` calls give
 * every named closure a property of its own and so a larger footprint. Returns the probe's path.
 */
const buildServer = () => {
  progress("compiling the server (tsc -p tsconfig.bench.json)")
  ChildProcess.execFileSync(process.execPath, [
    Path.join(root, "node_modules/typescript/bin/tsc"),
    "-p",
    "tsconfig.bench.json"
  ], {
    cwd: root,
    stdio: "inherit"
  })
  return "dist/bench-server/bench/chatServer.js"
}

const forkChild = (file: string, env: Record<string, string>, execArgv: ReadonlyArray<string> = []): Child => {
  const child = ChildProcess.fork(Path.join(root, file), [], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", ...env },
    execArgv: file.endsWith(".ts") ? ["--import", "tsx", ...execArgv] : [...execArgv],
    stdio: ["ignore", "pipe", "pipe", "ipc"]
  })
  let output = ""
  const keep = (chunk: Buffer) => {
    // The last lines are enough to explain a failure.
    output = (output + chunk.toString("utf8")).slice(-20_000)
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  const ask = <A>(message: { readonly type: string }) =>
    new Promise<A>((resolve, reject) => {
      const onMessage = (answer: { type?: string }) => {
        if (answer.type !== message.type) return
        child.off("message", onMessage)
        resolve(answer as A)
      }
      child.on("message", onMessage)
      child.send(message, (error) => error && reject(error))
    })
  return { process: child, output: () => output, ask }
}

const waitForMessage = <A>(child: Child, type: string, timeoutMs: number) =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${type}" message\n${child.output()}`)), timeoutMs)
    child.process.on("message", (message: { type?: string }) => {
      if (message.type !== type) return
      clearTimeout(timer)
      resolve(message as A)
    })
    child.process.once("exit", (code) => reject(new Error(`exited with ${code}\n${child.output()}`)))
  })

/** Asks a child to stop (SIGTERM), and kills it if it has not exited within 20 s. */
const stop = (child: Child, name: string) =>
  new Promise<void>((resolve) => {
    if (child.process.exitCode !== null || child.process.signalCode !== null) return resolve()
    const asked = performance.now()
    const timer = setTimeout(() => {
      progress(
        `the ${name} did not stop within 20 s of SIGTERM: killed; its last output:\n${child.output().slice(-4_000)}`
      )
      child.process.kill("SIGKILL")
    }, 20_000)
    child.process.once("exit", () => {
      clearTimeout(timer)
      progress(`the ${name} stopped after ${((performance.now() - asked) / 1000).toFixed(1)} s`)
      resolve()
    })
    child.process.kill("SIGTERM")
  })

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const probe = Net.createServer()
    probe.on("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address()
      const port = typeof address === "object" && address ? address.port : 0
      probe.close(() => resolve(port))
    })
  })

interface CpuUsage {
  readonly user: number
  readonly system: number
}
interface ServerProbe {
  readonly cpu: CpuUsage
  readonly rssBefore: number
  readonly memory: NodeJS.MemoryUsage
}

const probeServer = (server: Child, gc = false) => server.ask<ServerProbe>({ type: "probe", gc })
const providerCpu = async (provider: Child) => (await provider.ask<{ cpu: CpuUsage }>({ type: "cpu" })).cpu
/** The kernel's count of connections dropped because a listen queue was full (machine-wide; Linux only). */
const listenOverflows = () => {
  try {
    const lines = Fs.readFileSync("/proc/net/netstat", "utf8").split("\n").filter((line) => line.startsWith("TcpExt:"))
    const names = lines[0]?.split(" ") ?? []
    const values = lines[1]?.split(" ") ?? []
    return Number(values[names.indexOf("ListenOverflows")] ?? Number.NaN)
  } catch {
    return Number.NaN
  }
}

const cpuSeconds = (from: CpuUsage, to: CpuUsage) => (to.user - from.user + to.system - from.system) / 1e6

// --- HTTP clients

const agent = new Http.Agent({ keepAlive: true, maxSockets: 4_096, maxFreeSockets: 4_096 })

const request = (url: string, method: string, options: { readonly auth?: string; readonly body?: unknown } = {}) =>
  sendRequest(agent, url, method, options)

/** How one stream went: when its first token came, how many it relayed, and what went wrong if anything did. */
interface StreamResult {
  /** The tag at the end of the question, by which the provider reports when the request reached it. */
  readonly tag: string
  /** When the request was sent and when its first token came (epoch ms, fractional). */
  readonly sentAt: number
  readonly firstTokenAt: number | null
  readonly firstTokenMs: number | null
  /** Server only: when the `start` event came (the turn stored, the provider being called). */
  readonly startMs: number | null
  readonly chunks: number
  readonly error: string | null
}

const staleConnection = "stale keep-alive connection"

let streamSequence = 0

/** Streams open right now, and those of them that have had their first token. */
const gauge = { open: 0, flowing: 0 }

/** The server's or the provider's answer to one question, read to its end. */
type Target = "server" | "direct"

interface Setup {
  readonly serverUrl: string
  readonly providerUrl: string
  readonly accessToken: string
  readonly models: Readonly<Record<"paced" | "paced-slow", string>>
  readonly conversations: ReadonlyArray<string>
}

/** Filled in when the server's `start` event arrives: the answer to cancel, if the caller wants to. */
interface Answer {
  readonly conversationId?: string
  id?: string
  /** A cancelled answer is then expected, not an error. */
  cancelled?: boolean
}

const openStream = (
  setup: Setup,
  target: Target,
  client: number,
  model: "paced" | "paced-slow",
  answer: Answer = {}
) =>
  new Promise<StreamResult>((resolve) => {
    const tag = `${target}-${++streamSequence}`
    const content = `${question} [#${tag}]`
    const payload = JSON.stringify(
      target === "server"
        ? { content, modelId: setup.models[model] }
        : {
          model,
          messages: [{ role: "user", content }],
          stream: true,
          stream_options: { include_usage: true }
        }
    )
    const url = target === "server"
      ? `${setup.serverUrl}/api/v1/conversations/${setup.conversations[client]}/chat`
      : `${setup.providerUrl}/v1/chat/completions`
    let firstTokenMs: number | null = null
    let startMs: number | null = null
    let chunks = 0
    let text = ""
    let settled = false
    let opened = false
    const finish = (error: string | null) => {
      if (settled) return
      settled = true
      if (opened) {
        gauge.open--
        if (firstTokenMs !== null) gauge.flowing--
      }
      resolve({
        tag,
        sentAt: performance.timeOrigin + start,
        firstTokenAt: firstTokenMs === null ? null : performance.timeOrigin + start + firstTokenMs,
        firstTokenMs,
        startMs,
        chunks,
        error
      })
    }
    const start = performance.now()
    const req = Http.request(url, {
      method: "POST",
      agent,
      headers: {
        accept: "text/event-stream",
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
        ...(target === "server" ? { authorization: `Bearer ${setup.accessToken}` } : {})
      }
    }, (res) => {
      res.setEncoding("utf8")
      if (res.statusCode !== 200) {
        let body = ""
        res.on("data", (piece: string) => (body += piece))
        res.on("end", () => finish(`status ${res.statusCode} ${body.slice(0, 120)}`))
        res.on("error", () => finish(`status ${res.statusCode}`))
        return
      }
      opened = true
      gauge.open++
      let buffer = ""
      let done = false
      const token = (piece: string) => {
        if (settled) return
        if (firstTokenMs === null) {
          firstTokenMs = performance.now() - start
          gauge.flowing++
        }
        chunks++
        text += piece
      }
      const onEvent = (block: string) => {
        if (target === "direct") {
          if (!block.startsWith("data: ")) return
          const data = block.slice(6)
          if (data === "[DONE]") {
            done = true
            return
          }
          const content = (JSON.parse(data) as { choices: Array<{ delta?: { content?: string } }> }).choices[0]?.delta
            ?.content
          if (content) token(content)
          return
        }
        let event = ""
        let data = ""
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7)
          else if (line.startsWith("data: ")) data += line.slice(6)
        }
        if (event === "delta") token((JSON.parse(data) as { text: string }).text)
        else if (event === "error") finish(`error event ${data.slice(0, 160)}`)
        else if (event === "start") {
          startMs = performance.now() - start
          answer.id = (JSON.parse(data) as { answer: { id: string } }).answer.id
        } else if (event === "done") {
          done = true
          const message = (JSON.parse(data) as { message: { status: string; content: string } }).message
          if (message.status === "cancelled" && answer.cancelled === true) return
          if (message.status !== "complete") finish(`answer stored as ${message.status}`)
          else if (message.content !== text) finish("stored answer differs from the relayed text")
        }
      }
      res.on("data", (piece: string) => {
        buffer += piece
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          onEvent(block)
        }
      })
      res.on("end", () => finish(done ? null : "stream ended without done"))
      res.on("error", (error) => finish(`stream broke: ${error.message}`))
      res.on("close", () => finish(done ? null : "connection closed before the end"))
    })
    req.on("error", (error) => {
      const code = (error as NodeJS.ErrnoException).code ?? error.message
      // A keep-alive connection the server closed as idle just as it was reused: the request never
      // reached the server, and clients send it again (as Node's documentation advises).
      if (!opened && req.reusedSocket && (code === "ECONNRESET" || code === "EPIPE")) finish(staleConnection)
      else finish(`request failed: ${code}`)
    })
    req.end(payload)
  })

interface Phase {
  readonly latencies: Array<number>
  /** The latency samples' streams, to split their latency at the provider. */
  readonly sampled: Array<StreamResult>
  readonly starts: Array<number>
  /** Requests sent again because they met a keep-alive connection the server had just closed. */
  resent: number
  streams: number
  chunks: number
  readonly errors: Map<string, number>
  wallSeconds: number
}

const errorCount = (phase: Phase) => [...phase.errors.values()].reduce((sum, n) => sum + n, 0)

/**
 * `clients` clients, each opening `rounds` streams one after the other; their first streams
 * start evenly over `spreadMs`. The first stream of each client is ramp-up: not a latency sample.
 */
const runPhase = async (
  setup: Setup,
  target: Target,
  clients: number,
  rounds: number,
  spreadMs: number,
  model: "paced" | "paced-slow" = "paced",
  answers: Array<Answer> = []
): Promise<Phase> => {
  const phase: Phase = {
    latencies: [],
    sampled: [],
    starts: [],
    resent: 0,
    streams: 0,
    chunks: 0,
    errors: new Map(),
    wallSeconds: 0
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: clients }, async (_, client) => {
    await sleep((client * spreadMs) / clients)
    for (let round = 0; round < rounds; round++) {
      const answer: Answer = target === "server" ? { conversationId: setup.conversations[client]! } : {}
      answers.push(answer)
      const result = await openStream(setup, target, client, model, answer)
      if (result.error === staleConnection) {
        phase.resent++
        round--
        continue
      }
      phase.streams++
      phase.chunks += result.chunks
      if (result.error !== null) {
        const kind = result.error.replace(/\d{2,}/g, "#")
        phase.errors.set(kind, (phase.errors.get(kind) ?? 0) + 1)
      } else if (round > 0 && result.firstTokenMs !== null) {
        phase.latencies.push(result.firstTokenMs)
        phase.sampled.push(result)
        if (result.startMs !== null) phase.starts.push(result.startMs)
      }
    }
  }))
  phase.wallSeconds = (performance.now() - start) / 1000
  return phase
}

// --- setting up the server

const serverEnvironment = (port: number, dataDir: string, databaseUrl: string | undefined): Record<string, string> => ({
  ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }),
  NODE_ENV: "production",
  HOST: "127.0.0.1",
  PORT: String(port),
  DATA_DIR: dataDir,
  LOG_LEVEL: process.env.BENCH_SERVER_LOG_LEVEL ?? "warn",
  LOG_FORMAT: "json",
  JWT_SECRET: Crypto.randomBytes(48).toString("base64url"),
  ENCRYPTION_KEYS: `bench:${Crypto.randomBytes(32).toString("base64")}`,
  DEVELOPMENT_MODEL: "false",
  OLLAMA_AUTODETECT: "false",
  ACCESS_TOKEN_TTL: "2 hours",
  // Cheaper password hashes; the benchmark signs in once.
  PASSWORD_HASH_COST: "14",
  AUTH_RATE_LIMIT_PER_ADDRESS: "100000",
  AUTH_RATE_LIMIT_PER_ACCOUNT: "100000",
  ...(options.spans ? { BENCH_SPANS: "1" } : {})
})

const waitUntilReady = async (baseUrl: string, server: Child) => {
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (server.process.exitCode !== null) throw new Error(`the server exited\n${server.output()}`)
    const status = await request(`${baseUrl}/health/ready`, "GET").then((reply) => reply.status, () => 0)
    if (status === 200) return
    await sleep(100)
  }
  throw new Error(`the server did not get ready\n${server.output()}`)
}

const prepare = async (serverUrl: string, providerUrl: string): Promise<Setup> => {
  const user = { email: "bench@example.com", username: "bench", password: "bench-password-phrase" }
  await json(
    request(`${serverUrl}/api/v1/auth/register`, "POST", { body: { ...user, acceptTerms: true } }),
    201,
    "register"
  )
  const tokens = await json(
    request(`${serverUrl}/api/v1/auth/login`, "POST", { body: { login: user.email, password: user.password } }),
    200,
    "login"
  )
  const auth = tokens.accessToken as string
  const provider = await json(
    request(`${serverUrl}/api/v1/providers`, "POST", {
      auth,
      body: { name: "paced", kind: "openai-compatible", baseUrl: providerUrl }
    }),
    201,
    "register the provider"
  )
  const synced = await json(
    request(`${serverUrl}/api/v1/providers/${provider.id}/sync`, "POST", { auth }),
    200,
    "sync the provider"
  )
  const listed = synced.models as Array<{ id: string; providerModel: string }>
  const modelId = (name: string) => {
    const found = listed.find((model) => model.providerModel === name)
    if (!found) throw new Error(`the sync did not list ${name}: ${JSON.stringify(synced)}`)
    return found.id
  }
  const models = { paced: modelId("paced"), "paced-slow": modelId("paced-slow") }
  const clients = Math.max(memoryStreams, ...allLevels.map((level) => level.streams))
  const conversations: Array<string> = []
  for (let i = 0; i < clients; i++) {
    const conversation = await json(
      request(`${serverUrl}/api/v1/conversations`, "POST", {
        auth,
        body: { title: `Bench ${i + 1}`, modelId: models.paced }
      }),
      201,
      "create a conversation"
    )
    conversations.push(conversation.id)
  }
  return { serverUrl, providerUrl, accessToken: auth, models, conversations }
}

// --- the run

const describeErrors = (phase: Phase) =>
  phase.errors.size === 0 ? "" : [...phase.errors].map(([kind, n]) => `${n}× ${kind}`).join("; ")

const verdict = (pass: boolean) => (pass ? "PASS" : "MISS")

const heapOf = (memory: NodeJS.MemoryUsage) => memory.heapUsed + memory.external

interface MemoryResult {
  readonly idle: ServerProbe
  readonly open: number
  readonly flowing: number
  readonly midFlight: ServerProbe
  readonly midFlightAfterGc: ServerProbe
  readonly ended: ServerProbe
  readonly phase: Phase
  readonly rssPerStream: number
  /** Live heap (after a full GC in both states): what a stream holds, whichever pages were already resident. */
  readonly heapPerStream: number
}

/** The server's memory idle, then with `memoryStreams` long streams open and past their first token. */
const measureMemory = async (setup: Setup, server: Child): Promise<MemoryResult> => {
  await sleep(1_000)
  const idle = await probeServer(server, true)
  progress(`memory: opening ${memoryStreams} streams`)
  const answers: Array<Answer> = []
  const run = runPhase(setup, "server", memoryStreams, 1, 2_000, "paced-slow", answers)
  const ramp = performance.now()
  while (performance.now() - ramp < 90_000 && gauge.flowing < memoryStreams) await sleep(100)
  await sleep(1_000)
  const open = gauge.open
  const flowing = gauge.flowing
  const midFlight = await probeServer(server)
  const midFlightAfterGc = await probeServer(server, true)
  // The answers are slow: stop them (as a user would), so the next phases start on an idle server.
  progress(`memory: ${open} streams open, ${flowing} of them past their first token; cancelling them`)
  let cancelFailures = 0
  const cancelled = new Set<Answer>()
  const cancelAll = async () => {
    for (const answer of answers) {
      if (answer.id === undefined || cancelled.has(answer)) continue
      cancelled.add(answer)
      answer.cancelled = true
      const reply = await request(
        `${setup.serverUrl}/api/v1/conversations/${answer.conversationId}/messages/${answer.id}/cancel`,
        "POST",
        { auth: setup.accessToken }
      ).catch(() => ({ status: 0 }))
      if (reply.status !== 200) cancelFailures++
    }
  }
  let finished = false
  const phase = run.finally(() => (finished = true))
  // Streams that start late are cancelled as they start.
  while (!finished) {
    await Promise.all(Array.from({ length: 20 }, cancelAll))
    await sleep(200)
  }
  const result = await phase
  if (cancelFailures > 0) result.errors.set("cancel failed", cancelFailures)
  await sleep(1_000)
  const ended = await probeServer(server, true)
  return {
    idle,
    open,
    flowing,
    midFlight,
    midFlightAfterGc,
    ended,
    phase: result,
    rssPerStream: (midFlight.memory.rss - idle.memory.rss) / open,
    heapPerStream: (heapOf(midFlightAfterGc.memory) - heapOf(idle.memory)) / open
  }
}

const printMemory = (result: MemoryResult) => {
  const { ended, flowing, heapPerStream, idle, midFlight, midFlightAfterGc, open, phase, rssPerStream } = result
  console.log(
    `Memory: ${memoryStreams} slow answers opened over 2 s, measured once all had their first token ` +
      "(or after 90 s), then cancelled"
  )
  console.log(
    `   idle (after a full GC):    RSS ${mib(idle.memory.rss)} (${mib(idle.rssBefore)} before the GC), ` +
      `heap used + external ${mib(heapOf(idle.memory))}`
  )
  console.log(
    `   ${open} streams open (${flowing} past their first token): RSS ${mib(midFlight.memory.rss)}; after a full GC: ` +
      `RSS ${mib(midFlightAfterGc.memory.rss)}, heap used + external ${mib(heapOf(midFlightAfterGc.memory))}`
  )
  console.log(
    `   per open stream:           RSS ${kib(rssPerStream)}; live heap (both after a full GC) ${kib(heapPerStream)}`
  )
  console.log(
    `   after they ended (answers kept in memory for resumption), after a full GC: RSS ${mib(ended.memory.rss)}, ` +
      `heap used + external ${mib(heapOf(ended.memory))}`
  )
  console.log(
    `   ${phase.streams} streams in ${phase.wallSeconds.toFixed(1)} s, ${phase.chunks} chunks, ` +
      `${errorCount(phase)} errors${errorCount(phase) > 0 ? ` (${describeErrors(phase)})` : ""}` +
      (phase.resent > 0 ? `, ${phase.resent} requests sent again on a fresh connection` : "")
  )
  console.log("")
}

interface LevelResult {
  readonly streams: number
  readonly direct: Phase
  readonly server: Phase
  /** The latency samples split where their request reached the provider. */
  readonly legs: { readonly direct: Legs; readonly server: Legs }
  /** CPU seconds used during the server phase. */
  readonly serverCpu: number
  readonly providerCpu: number
  readonly benchCpu: number
  /** Connections the kernel dropped during the server phase because the listen queue was full. */
  readonly listenOverflows: number
  /** With `--spans`: the server's span durations (ms) during the server phase, by name. */
  readonly spans: Record<string, Array<number>>
  /** The server's event-loop delay during the server phase (ms). */
  readonly loop: LoopDelay
}

interface LoopDelay {
  readonly p50: number
  readonly p99: number
  readonly max: number
}

const runLevel = async (
  setup: Setup,
  server: Child,
  provider: Child,
  level: { readonly streams: number; readonly rounds: number }
): Promise<LevelResult> => {
  progress(`${level.streams} streams, direct`)
  await arrivals(provider)
  const direct = await runPhase(setup, "direct", level.streams, level.rounds, streamMs)
  const directLegs = legs(direct, await arrivals(provider))
  await sleep(500)
  progress(`${level.streams} streams, through the server`)
  const serverBefore = await probeServer(server)
  const providerBefore = await providerCpu(provider)
  const benchBefore = process.cpuUsage()
  const overflowsBefore = listenOverflows()
  await server.ask<LoopDelay>({ type: "loop" })
  const through = await runPhase(setup, "server", level.streams, level.rounds, streamMs)
  const serverAfter = await probeServer(server)
  const loop = await server.ask<LoopDelay>({ type: "loop" })
  const providerAfter = await providerCpu(provider)
  const serverLegs = legs(through, await arrivals(provider))
  const bench = process.cpuUsage(benchBefore)
  const overflows = listenOverflows() - overflowsBefore
  const spans = options.spans
    ? (await server.ask<{ spans: Record<string, Array<number>> }>({ type: "spans" })).spans
    : {}
  await sleep(500)
  return {
    streams: level.streams,
    direct,
    server: through,
    legs: { direct: directLegs, server: serverLegs },
    serverCpu: cpuSeconds(serverBefore.cpu, serverAfter.cpu),
    providerCpu: cpuSeconds(providerBefore, providerAfter),
    benchCpu: (bench.user + bench.system) / 1e6,
    listenOverflows: overflows,
    spans,
    loop
  }
}

/**
 * A first token's latency in two legs, split where the request reached the provider (as the
 * provider's clock tells it; both processes read the same system clock): from sending the
 * request to its arrival at the provider, and from there to the first token at the client.
 */
interface Legs {
  readonly out: Array<number>
  readonly back: Array<number>
}

const arrivals = async (provider: Child) =>
  (await provider.ask<{ arrivals: Record<string, number> }>({ type: "arrivals" })).arrivals

const legs = (phase: Phase, arrived: Record<string, number>): Legs => {
  const out: Array<number> = []
  const back: Array<number> = []
  for (const sample of phase.sampled) {
    const at = arrived[sample.tag]
    if (at === undefined || sample.firstTokenAt === null) continue
    out.push(at - sample.sentAt)
    back.push(sample.firstTokenAt - at)
  }
  return { out, back }
}

const latencyHeader = () => {
  console.log("First-token latency (ms): from sending the request to the first token; the first stream of each")
  console.log("client is ramp-up, not counted. `start` (server): when the `start` event came, the turn stored.")
  console.log("The same samples in two legs, p50 / p99, split where the request reached the provider (by its clock):")
  console.log("the way there (for the server: the turn) and from there to the first token (for the server: the relay)")
  console.log(
    `${padEnd("streams", 9)}${padEnd("path", 8)}${pad("n", 6)}${pad("p50", 9)}${pad("p99", 9)}${pad("max", 9)}` +
      `${pad("errors", 8)}   added p50 / p99 (server/direct)          start p50 / p99`
  )
}

const printLatency = (result: LevelResult) => {
  const direct = summarise(result.direct.latencies)
  const server = summarise(result.server.latencies)
  const starts = summarise(result.server.starts)
  const row = (streams: string, path: string, stats: ReturnType<typeof summarise>, phase: Phase, added: string) =>
    console.log(
      `${padEnd(streams, 9)}${padEnd(path, 8)}${pad(String(stats.n), 6)}${pad(ms(stats.p50), 9)}` +
        `${pad(ms(stats.p99), 9)}${pad(ms(stats.max), 9)}${pad(String(errorCount(phase)), 8)}${added}`
    )
  row(result.streams.toLocaleString("en"), "direct", direct, result.direct, "")
  row(
    "",
    "server",
    server,
    result.server,
    padEnd(
      `   +${ms(server.p50 - direct.p50)} / +${ms(server.p99 - direct.p99)} ms ` +
        `(${(server.p50 / direct.p50).toFixed(2)}× / ${(server.p99 / direct.p99).toFixed(2)}×)`,
      43
    ) + `${ms(starts.p50)} / ${ms(starts.p99)}`
  )
  const leg = (what: string, direct: ReadonlyArray<number>, server: ReadonlyArray<number>) => {
    const d = summarise(direct)
    const s = summarise(server)
    console.log(
      `${padEnd("", 9)}${padEnd(what, 25)}direct ${ms(d.p50)} / ${ms(d.p99)}, server ${ms(s.p50)} / ${ms(s.p99)}: ` +
        `+${ms(s.p50 - d.p50)} / +${ms(s.p99 - d.p99)} ms (n ${d.n} / ${s.n})`
    )
  }
  leg("to the provider", result.legs.direct.out, result.legs.server.out)
  leg("provider to first token", result.legs.direct.back, result.legs.server.back)
}

const printSpans = (result: LevelResult) => {
  const names = Object.keys(result.spans).sort()
  if (names.length === 0) return
  for (const name of names) {
    const stats = summarise(result.spans[name]!)
    console.log(
      `${padEnd("", 9)}${padEnd("span", 8)}${pad(String(stats.n), 6)}${pad(ms(stats.p50), 9)}${pad(ms(stats.p99), 9)}` +
        `${pad(ms(stats.max), 9)}   ${name}`
    )
  }
}

const printThroughput = (results: ReadonlyArray<LevelResult>) => {
  console.log("")
  console.log(
    "Through the server: chunks = delta events the clients received; cores = CPU time / wall time; event-loop " +
      "delay: how long ready work waited for the server's event loop"
  )
  console.log(
    `${padEnd("streams", 9)}${pad("answers", 8)}${pad("chunks", 9)}${pad("wall s", 8)}${pad("chunks/s", 10)}` +
      `${pad("server cores", 14)}${pad("chunks/CPU-s", 14)}${pad("provider cores", 16)}${pad("bench cores", 13)}` +
      "   event-loop delay p50 / p99 / max ms"
  )
  for (const result of results) {
    const wall = result.server.wallSeconds
    console.log(
      `${padEnd(result.streams.toLocaleString("en"), 9)}${pad(String(result.server.streams), 8)}` +
        `${pad(String(result.server.chunks), 9)}${pad(wall.toFixed(1), 8)}${
          pad((result.server.chunks / wall).toFixed(0), 10)
        }` +
        `${pad((result.serverCpu / wall).toFixed(2), 14)}${
          pad((result.server.chunks / result.serverCpu).toFixed(0), 14)
        }` +
        `${pad((result.providerCpu / wall).toFixed(2), 16)}${pad((result.benchCpu / wall).toFixed(2), 13)}` +
        `   ${ms(result.loop.p50)} / ${ms(result.loop.p99)} / ${ms(result.loop.max)}`
    )
  }
  for (const result of results) {
    for (const [path, phase] of [["direct", result.direct], ["server", result.server]] as const) {
      if (errorCount(phase) > 0) console.log(`errors, ${result.streams} streams, ${path}: ${describeErrors(phase)}`)
      if (path === "server" && result.listenOverflows > 0) {
        console.log(
          `${result.streams} streams, server: the kernel dropped ${result.listenOverflows} connection attempts on a ` +
            "full listen queue (TcpExt ListenOverflows, machine-wide)"
        )
      }
      if (phase.resent > 0) {
        console.log(
          `${result.streams} streams, ${path}: ${phase.resent} requests sent again (a keep-alive connection the ` +
            "server had closed as idle; not an error)"
        )
      }
    }
  }
}

const printTargets = (results: ReadonlyArray<LevelResult>, memory: MemoryResult | undefined) => {
  console.log("")
  console.log("Targets")
  const at = results.find((result) => result.streams === targets.atStreams)
  if (at) {
    const direct = summarise(at.direct.latencies)
    const server = summarise(at.server.latencies)
    for (
      const [label, added, target] of [
        ["p50", server.p50 - direct.p50, targets.addedP50Ms],
        ["p99", server.p99 - direct.p99, targets.addedP99Ms]
      ] as const
    ) {
      console.log(
        `   added first-token latency at ${targets.atStreams} streams, ${label}: ${ms(added)} ms ` +
          `(target ≤ ${target} ms): ${verdict(added <= target)}`
      )
    }
  }
  const busiest = results.find((result) => result.streams === targets.errorsAt)
  if (busiest || memory) {
    const errors = (busiest ? errorCount(busiest.server) : 0) + (memory ? errorCount(memory.phase) : 0)
    console.log(
      `   ${targets.errorsAt.toLocaleString("en")} concurrent streams (latency level and memory phase): ` +
        `${errors} errors (target 0): ${verdict(errors === 0)}`
    )
  }
  if (memory) {
    // The RSS difference can be smaller than what a stream holds (the idle server keeps pages its
    // heap grew to during the warm-up): the target counts as met only if the live heap is too.
    const limit = targets.kibPerStream * 1024
    console.log(
      `   resident memory per open stream: ${kib(memory.rssPerStream)} RSS, ${kib(memory.heapPerStream)} live heap ` +
        `(target ≤ ${targets.kibPerStream} KiB, both): ${
          verdict(memory.rssPerStream <= limit && memory.heapPerStream <= limit)
        }`
    )
  }
}

const children: Array<{ readonly name: string; readonly child: Child }> = []

/** The server first, while the provider still answers. */
const stopChildren = async () => {
  for (const { child, name } of children.splice(0).reverse()) await stop(child, name)
}

const dataDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "webplus-bench-chat-"))

/** With `--pg`: a database of the run's own on the PostgreSQL server of `BENCH_DATABASE_URL`. */
const pgAdminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const pgDatabase = options.pg ? `webplus_bench_${Crypto.randomBytes(6).toString("hex")}` : undefined

const withPgAdmin = async (query: string) => {
  const client = new Pg.Client({ connectionString: pgAdminUrl })
  await client.connect()
  try {
    await client.query(query)
  } finally {
    await client.end()
  }
}

const pgDatabaseUrl = () => {
  const url = new URL(pgAdminUrl)
  url.pathname = `/${pgDatabase}`
  return url.toString()
}

/** Removes what the run made: its directory, and its database. */
const cleanUp = async () => {
  Fs.rmSync(dataDir, { recursive: true, force: true })
  if (pgDatabase !== undefined) await withPgAdmin(`DROP DATABASE IF EXISTS ${pgDatabase} WITH (FORCE)`)
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void stopChildren().finally(() => cleanUp().finally(() => process.exit(130)))
  })
}

const main = async () => {
  const profileDir = options.cpuProf ? Fs.mkdtempSync(Path.join(Os.tmpdir(), "webplus-bench-chat-prof-")) : undefined
  try {
    if (pgDatabase !== undefined) await withPgAdmin(`CREATE DATABASE ${pgDatabase}`)
    const provider = forkChild("bench/pacedProvider.ts", {
      PACED_FIRST_CHUNK_MS: String(pace.firstChunkMs),
      PACED_INTERVAL_MS: String(pace.intervalMs),
      PACED_CHUNKS: String(pace.chunks),
      PACED_SLOW_INTERVAL_MS: String(pace.slow.intervalMs),
      PACED_SLOW_CHUNKS: String(pace.slow.chunks)
    })
    children.push({ name: "provider", child: provider })
    const { port: providerPort } = await waitForMessage<{ port: number }>(provider, "listening", 30_000)
    const providerUrl = `http://127.0.0.1:${providerPort}`

    const serverPort = await freePort()
    const server = forkChild(
      options.tsx ? "bench/chatServer.ts" : buildServer(),
      serverEnvironment(serverPort, dataDir, pgDatabase === undefined ? undefined : pgDatabaseUrl()),
      ["--expose-gc", ...(profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [])]
    )
    children.push({ name: "server", child: server })
    const serverUrl = `http://127.0.0.1:${serverPort}`
    await waitUntilReady(serverUrl, server)
    progress("server ready; registering the provider and creating conversations")
    const setup = await prepare(serverUrl, providerUrl)

    console.log(
      `Web+ chat streaming benchmark — Node ${process.version}, ${Os.cpus().length} × ${Os.cpus()[0]?.model ?? "?"}, ` +
        `${pgDatabase === undefined ? "SQLite" : "PostgreSQL"}, server in production mode (${
          options.tsx ? "under tsx" : "compiled"
        })`
    )
    console.log(
      `provider pace: first chunk ${pace.firstChunkMs} ms after the request, then one every ${pace.intervalMs} ms, ` +
        `${pace.chunks} chunks (${(streamMs / 1000).toFixed(2)} s) per answer; in the memory phase one every ` +
        `${pace.slow.intervalMs / 1000} s`
    )
    console.log(`load average at the start: ${load()}`)
    console.log("")

    progress("warm-up")
    const warm = await runPhase(setup, "server", warmup.streams, warmup.rounds, streamMs)
    if (errorCount(warm) > 0) console.log(`warm-up errors: ${describeErrors(warm)}`)

    const memory = options.memory ? await measureMemory(setup, server) : undefined
    if (memory) printMemory(memory)

    const results: Array<LevelResult> = []
    latencyHeader()
    for (const level of options.levels) {
      const result = await runLevel(setup, server, provider, level)
      results.push(result)
      printLatency(result)
      printSpans(result)
    }
    printThroughput(results)
    printTargets(results, memory)
    console.log(`load average at the end: ${load()}`)
  } finally {
    agent.destroy()
    await stopChildren()
    await cleanUp()
    if (profileDir) console.log(`server CPU profile: ${profileDir}`)
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  }
)
