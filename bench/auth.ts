/**
 * What authentication costs: the real server, in process, on an ephemeral
 * port, with SQLite in a temporary data directory.
 *
 * 1. `Auth.authenticate` called directly, in a loop, for an access token and
 *    for an API key: microseconds per check (mean, p50, p99).
 * 2. Throughput over real HTTP (keep-alive, 32 concurrent requests) of an
 *    authenticated trivial endpoint (`GET /api/v1/auth/me`) against an
 *    unauthenticated one (`GET /health/live`), and their ratio.
 *
 * The load generator runs in the same process as the server: the absolute
 * figures are lower than with a separate client, the ratio is what to compare.
 *
 * Run with `npm run bench:auth`.
 */
import { HttpServer } from "@effect/platform"
import { ConfigProvider, Context, Effect, Layer, Redacted } from "effect"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import { Auth } from "../src/Auth.js"
import { Tokens } from "../src/Auth/Tokens.js"
import { SessionFamilyId, UserId } from "../src/Domain/Ids.js"
import { ApiLive, serve, ServicesLive } from "../src/Http.js"
import { withInfrastructure } from "../src/Server.js"
import { json, percentile, request as sendRequest } from "./Support.js"

const checks = { warmup: 500, iterations: 5_000 }
const load = { warmup: 2_000, requests: 20_000, concurrency: 32 }

const round = (n: number) => (n >= 100 ? Math.round(n) : Math.round(n * 10) / 10)

const summarise = (samples: ReadonlyArray<number>) => {
  const sorted = [...samples].sort((a, b) => a - b)
  const mean = samples.reduce((sum, sample) => sum + sample, 0) / samples.length
  return { mean, p50: percentile(sorted, 50), p99: percentile(sorted, 99) }
}

/** Runs `check` `iterations` times after a warm-up; the duration of each run, in microseconds. */
const timeChecks = <A, E>(check: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    for (let i = 0; i < checks.warmup; i++) yield* check
    const samples: Array<number> = []
    for (let i = 0; i < checks.iterations; i++) {
      const start = process.hrtime.bigint()
      yield* check
      samples.push(Number(process.hrtime.bigint() - start) / 1_000)
    }
    return summarise(samples)
  })

// --- a bounded HTTP load generator on keep-alive connections

const agent = new Http.Agent({ keepAlive: true, maxSockets: load.concurrency })

const request = (
  baseUrl: string,
  method: string,
  path: string,
  options: { readonly auth?: string; readonly body?: unknown } = {}
) => sendRequest(agent, `${baseUrl}${path}`, method, options)

/** Sends `total` requests, `concurrency` at a time; requests per second. Every answer must be 200. */
const hammer = async (baseUrl: string, path: string, total: number, auth?: string) => {
  let sent = 0
  let failed = 0
  const worker = async () => {
    while (sent < total) {
      sent++
      const { status } = await request(baseUrl, "GET", path, auth ? { auth } : {})
      if (status !== 200) failed++
    }
  }
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: load.concurrency }, worker))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  if (failed > 0) throw new Error(`${path}: ${failed} of ${total} requests did not answer 200`)
  return total / seconds
}

// --- the server

const dataDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "webplus-bench-"))

const env: Record<string, string> = {
  NODE_ENV: "test",
  HOST: "127.0.0.1",
  PORT: "0",
  DATA_DIR: dataDir,
  LOG_LEVEL: "none",
  PASSWORD_HASH_COST: "14"
}

// `ServicesLive` is the very layer the API is built on: built once, it is shared, so this `Auth` is the server's.
const ServerWithAuth = withInfrastructure(Layer.merge(serve(ApiLive), ServicesLive)).pipe(
  Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
)

const main = Effect.gen(function*() {
  const context = yield* Layer.build(ServerWithAuth)
  const auth = Context.get(context, Auth)
  const tokens = Context.get(context, Tokens)
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
  const baseUrl = `http://127.0.0.1:${address.port}`

  const { accessToken, apiKey } = yield* Effect.promise(async () => {
    const user = { email: "bench@example.com", username: "bench", password: "bench-password-phrase" }
    await json(
      request(baseUrl, "POST", "/api/v1/auth/register", { body: { ...user, acceptTerms: true } }),
      201,
      "register"
    )
    const tokens = await json(
      request(baseUrl, "POST", "/api/v1/auth/login", { body: { login: user.email, password: user.password } }),
      200,
      "login"
    )
    const key = await json(
      request(baseUrl, "POST", "/api/v1/auth/api-keys", {
        auth: tokens.accessToken,
        body: { name: "bench", scopes: ["models:read"] }
      }),
      201,
      "create API key"
    )
    return { accessToken: tokens.accessToken as string, apiKey: key.secret as string }
  })

  console.log(`Web+ authentication benchmark — Node ${process.version}, ${Os.cpus().length} cores, SQLite`)
  console.log("")
  console.log(`a. Auth.authenticate, called directly (${checks.iterations} ops after ${checks.warmup} warm-up)`)
  for (
    const [label, credential] of [["token check", accessToken], ["API-key check", apiKey]] as const
  ) {
    const stats = yield* timeChecks(auth.authenticate(Redacted.make(credential)))
    console.log(
      `   ${label}: mean ${round(stats.mean)} µs, p50 ${round(stats.p50)} µs, p99 ${round(stats.p99)} µs ` +
        `(${checks.iterations} ops)`
    )
  }
  // A token's first use pays for the signature check (jose); later uses hit the verified-token cache.
  const claims = JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString()) as {
    sub: string
    sid: string
  }
  const fresh: Array<Redacted.Redacted<string>> = []
  for (let i = 0; i < checks.warmup + checks.iterations; i++) {
    const issued = yield* tokens.issueAccessToken({
      userId: UserId.make(claims.sub),
      sessionFamilyId: SessionFamilyId.make(claims.sid)
    })
    fresh.push(issued.accessToken)
  }
  let next = 0
  const firstUse = yield* timeChecks(Effect.suspend(() => auth.authenticate(fresh[next++]!)))
  console.log(
    `   token check, first use of each token (signature verified): mean ${round(firstUse.mean)} µs, ` +
      `p50 ${round(firstUse.p50)} µs, p99 ${round(firstUse.p99)} µs (${checks.iterations} ops)`
  )
  // Part of the token check: the signature and claims alone, without the database (cached after first use).
  const jwt = yield* timeChecks(tokens.verifyAccessToken(Redacted.make(accessToken)))
  console.log(
    `   of which JWT verification, repeated token: mean ${round(jwt.mean)} µs, p50 ${round(jwt.p50)} µs, ` +
      `p99 ${round(jwt.p99)} µs (${checks.iterations} ops)`
  )

  console.log("")
  console.log(
    `b. HTTP throughput, keep-alive, ${load.concurrency} concurrent, ${load.requests} requests each ` +
      `after ${load.warmup} warm-up`
  )
  const throughput = yield* Effect.promise(async () => {
    await hammer(baseUrl, "/health/live", load.warmup)
    await hammer(baseUrl, "/api/v1/auth/me", load.warmup, accessToken)
    const unauthenticated = await hammer(baseUrl, "/health/live", load.requests)
    const authenticated = await hammer(baseUrl, "/api/v1/auth/me", load.requests, accessToken)
    return { unauthenticated, authenticated }
  })
  console.log(`   unauthenticated GET /health/live: ${Math.round(throughput.unauthenticated)} req/s`)
  console.log(`   authenticated GET /api/v1/auth/me: ${Math.round(throughput.authenticated)} req/s`)
  console.log(
    `   ratio authenticated/unauthenticated: ${(throughput.authenticated / throughput.unauthenticated).toFixed(2)}`
  )
  agent.destroy()
}).pipe(Effect.scoped)

Effect.runPromiseExit(main).then((exit) => {
  Fs.rmSync(dataDir, { recursive: true, force: true })
  if (exit._tag === "Failure") {
    console.error(exit.cause)
    process.exit(1)
  }
  process.exit(0)
})
