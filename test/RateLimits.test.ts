/**
 * Abuse limits on the front door (register, login, refresh): per account and
 * per client address; and the budget of answers each user may ask models for
 * (`CHAT_RATE_LIMIT_PER_USER`: chat turns on every transport and the gateway's
 * completions together). In process memory and, with `REDIS_URL`, shared by
 * every instance through Redis.
 *
 * Redis is required (see `fixtures/Redis.ts`): when it is unreachable the
 * Redis tests fail, they are never skipped.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Duration, Effect, Stream } from "effect"
import * as Crypto from "node:crypto"
import OpenAI from "openai"
import WebSocket from "ws"
import { chatSocketPath } from "../src/ApiBeside.js"
import { budgetPeriod } from "../src/Auth/RateLimits.js"
import type { ConversationId } from "../src/Domain/Ids.js"
import { call, createKey, type Reply, signUp } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { redisPrefix, redisUrl, scanKeys, uniquePrefix, withRedis } from "./fixtures/Redis.js"
import { as, overHttp } from "./fixtures/Rpc.js"
import { startTestServer, startTwoInstances, TestServer, testServer } from "./fixtures/Server.js"

const unique = () => Crypto.randomBytes(5).toString("hex")

const register = (overrides: Partial<{ email: string; username: string; password: string }> = {}) =>
  Effect.gen(function*() {
    const id = unique()
    const user = {
      email: overrides.email ?? `user-${id}@example.com`,
      username: overrides.username ?? `user_${id}`,
      password: overrides.password ?? `pass-${id}-phrase`
    }
    const reply = yield* call("POST", "/api/v1/auth/register", { body: { ...user, acceptTerms: true } })
    expect(reply.status, JSON.stringify(reply.body)).toBe(201)
    return { ...user, reply }
  })

const login = (login: string, password: string) => call("POST", "/api/v1/auth/login", { body: { login, password } })

const refresh = (refreshToken: string) => call("POST", "/api/v1/auth/refresh", { body: { refreshToken } })

/** The `RateLimit-*` headers of a limited response, as numbers; fails the test when one is missing. */
const limitHeaders = (reply: Reply) => {
  for (const name of ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]) {
    expect(reply.headers[name], `${name} on a ${reply.status} answer`).toMatch(/^\d+$/)
  }
  return {
    limit: Number(reply.headers["ratelimit-limit"]),
    remaining: Number(reply.headers["ratelimit-remaining"]),
    reset: Number(reply.headers["ratelimit-reset"])
  }
}

/** Asserts a 429 answer in full; its `Retry-After` in seconds. */
const expectRateLimited = (reply: Reply, limit: number, windowSeconds: number) => {
  expect(reply.status).toBe(429)
  expect(reply.body).toEqual({
    _tag: "RateLimited",
    message: expect.any(String),
    retryAfterSeconds: expect.any(Number)
  })
  const retryAfter = Number(reply.headers["retry-after"])
  expect(reply.headers["retry-after"]).toMatch(/^\d+$/)
  expect(retryAfter).toBeGreaterThanOrEqual(1)
  expect(retryAfter).toBeLessThanOrEqual(windowSeconds)
  expect(reply.body.retryAfterSeconds).toBe(retryAfter)
  expect(limitHeaders(reply)).toEqual({ limit, remaining: 0, reset: retryAfter })
  return retryAfter
}

describe("rate limits in process memory", () => {
  it.live("the attempt after PER_ACCOUNT failed logins answers 429; other accounts are unaffected", () =>
    Effect.gen(function*() {
      const victim = yield* register()
      const bystander = yield* register()
      const remaining: Array<number> = []
      // One budget per account: its email and its username, in any case and with spaces around, share it.
      for (const attempt of [victim.email, `  ${victim.username.toUpperCase()} `, victim.email.toUpperCase()]) {
        const reply = yield* login(attempt, "wrong-password-123")
        expect(reply.status).toBe(401)
        const headers = limitHeaders(reply)
        expect(headers.limit).toBe(3)
        expect(headers.reset).toBeGreaterThanOrEqual(1)
        expect(headers.reset).toBeLessThanOrEqual(60)
        remaining.push(headers.remaining)
      }
      expect(remaining).toEqual([2, 1, 0])
      expectRateLimited(yield* login(victim.email, "wrong-password-123"), 3, 60)
      // Locked for the window, even with the right password: the password is not even checked.
      expectRateLimited(yield* login(victim.username, victim.password), 3, 60)

      const other = yield* login(bystander.email, bystander.password)
      expect(other.status).toBe(200)
      expect(limitHeaders(other)).toMatchObject({ limit: 3, remaining: 2 })
    }).pipe(Effect.provide(testServer({ env: { AUTH_RATE_LIMIT_PER_ACCOUNT: "3" } }))))

  it.live("successful register, login and refresh answers carry the RateLimit headers, remaining decreasing", () =>
    Effect.gen(function*() {
      const user = yield* register()
      // Register is limited per address and per email address: the headers describe the tighter one.
      expect(limitHeaders(user.reply)).toMatchObject({ limit: 5, remaining: 4 })

      const first = yield* login(user.username, user.password)
      expect(first.status).toBe(200)
      const second = yield* login(user.username, user.password)
      expect(second.status).toBe(200)
      // The headers describe the tightest limit: the account's.
      expect(limitHeaders(first)).toMatchObject({ limit: 5, remaining: 4 })
      expect(limitHeaders(second)).toMatchObject({ limit: 5, remaining: 3 })

      const rotated = yield* refresh(first.body.refreshToken)
      expect(rotated.status).toBe(200)
      const rotatedHeaders = limitHeaders(rotated)
      expect(rotatedHeaders).toMatchObject({ limit: 5, remaining: 4 })
      expect(rotatedHeaders.reset).toBeGreaterThanOrEqual(1)
      expect(rotatedHeaders.reset).toBeLessThanOrEqual(60)

      // Endpoints that are not limited say nothing about limits.
      const me = yield* call("GET", "/api/v1/auth/me", { auth: rotated.body.accessToken })
      expect(me.status).toBe(200)
      expect(me.headers["ratelimit-limit"]).toBeUndefined()
    }).pipe(
      Effect.provide(testServer({ env: { AUTH_RATE_LIMIT_PER_ADDRESS: "50", AUTH_RATE_LIMIT_PER_ACCOUNT: "5" } }))
    ))

  it.live("the per-address limit applies across different accounts", () =>
    Effect.gen(function*() {
      const remaining: Array<number> = []
      for (let i = 0; i < 4; i++) {
        const reply = yield* login(`nobody-${unique()}@example.com`, "wrong-password-123")
        expect(reply.status).toBe(401)
        const headers = limitHeaders(reply)
        expect(headers.limit).toBe(4)
        remaining.push(headers.remaining)
      }
      expect(remaining).toEqual([3, 2, 1, 0])
      expectRateLimited(yield* login(`nobody-${unique()}@example.com`, "wrong-password-123"), 4, 60)
    }).pipe(
      Effect.provide(testServer({ env: { AUTH_RATE_LIMIT_PER_ADDRESS: "4", AUTH_RATE_LIMIT_PER_ACCOUNT: "100" } }))
    ))

  it.live("after the window, attempts pass again", () =>
    Effect.gen(function*() {
      const user = yield* register()
      for (let i = 0; i < 2; i++) expect((yield* login(user.email, "wrong-password-123")).status).toBe(401)
      const retryAfter = expectRateLimited(yield* login(user.email, "wrong-password-123"), 2, 2)
      yield* Effect.sleep(Duration.millis(retryAfter * 1000 + 300))
      const again = yield* login(user.email, user.password)
      expect(again.status).toBe(200)
      expect(limitHeaders(again)).toMatchObject({ limit: 2, remaining: 1 })
    }).pipe(
      Effect.provide(testServer({ env: { AUTH_RATE_LIMIT_WINDOW: "2 seconds", AUTH_RATE_LIMIT_PER_ACCOUNT: "2" } }))
    ))

  it.live("refresh is limited per token and per address", () =>
    Effect.gen(function*() {
      const user = yield* signUp()
      const forged = `wpr_${Crypto.randomBytes(24).toString("base64url")}`
      const remaining: Array<number> = []
      for (let i = 0; i < 3; i++) {
        const reply = yield* refresh(forged)
        expect(reply.status).toBe(401)
        remaining.push(limitHeaders(reply).remaining)
      }
      expect(remaining).toEqual([2, 1, 0])
      expectRateLimited(yield* refresh(forged), 3, 60)

      // Another token has its own budget: the 5th refresh from this address passes, the 6th does not.
      const rotated = yield* refresh(user.refreshToken)
      expect(rotated.status).toBe(200)
      expect(limitHeaders(rotated)).toMatchObject({ limit: 5, remaining: 0 })
      expectRateLimited(yield* refresh(rotated.body.refreshToken), 5, 60)
    }).pipe(
      Effect.provide(testServer({ env: { AUTH_RATE_LIMIT_PER_ADDRESS: "5", AUTH_RATE_LIMIT_PER_ACCOUNT: "3" } }))
    ))
})

describe("rate limits in Redis", () => {
  it.scopedLive("two instances share one budget per account", () =>
    Effect.gen(function*() {
      const prefix = yield* redisPrefix
      const shared = {
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: prefix,
        // 60 000 ms / 1 000 and / 4: whole milliseconds per attempt (see the next test).
        AUTH_RATE_LIMIT_PER_ADDRESS: "1000",
        AUTH_RATE_LIMIT_PER_ACCOUNT: "4"
      }
      const { a, b, on } = yield* startTwoInstances(shared)

      const user = yield* register().pipe(on(a))
      const bystander = yield* register().pipe(on(b))
      const remaining: Array<number> = []
      for (const server of [a, b, a, b]) {
        const reply = yield* login(user.email, "wrong-password-123").pipe(on(server))
        expect(reply.status).toBe(401)
        remaining.push(limitHeaders(reply).remaining)
      }
      // One counter for both instances: 4 attempts in total, not 4 per instance.
      expect(remaining).toEqual([3, 2, 1, 0])
      expectRateLimited(yield* login(user.email, "wrong-password-123").pipe(on(a)), 4, 60)
      expectRateLimited(yield* login(user.email, user.password).pipe(on(b)), 4, 60)

      const other = yield* login(bystander.email, bystander.password).pipe(on(a))
      expect(other.status).toBe(200)
      expect(limitHeaders(other)).toMatchObject({ limit: 4, remaining: 3 })

      // The counters live under the configured prefix.
      const keys = yield* withRedis((redis) => scanKeys(redis, prefix))
      expect(keys.some((key) => key.startsWith(`${prefix}ratelimit:auth:login:account:`))).toBe(true)
      expect(keys.every((key) => key.startsWith(`${prefix}ratelimit:auth:`))).toBe(true)
    }))

  it.scopedLive("a limit that does not divide the window evenly still holds", () =>
    Effect.gen(function*() {
      const prefix = yield* redisPrefix
      // 60 000 ms / 7 attempts is not a whole number of milliseconds.
      yield* startTestServer(
        testServer({
          env: {
            REDIS_URL: redisUrl,
            REDIS_KEY_PREFIX: prefix,
            AUTH_RATE_LIMIT_PER_ADDRESS: "1000",
            AUTH_RATE_LIMIT_PER_ACCOUNT: "7"
          }
        })
      ).pipe(Effect.flatMap((server) =>
        Effect.gen(function*() {
          const user = yield* register()
          for (let i = 0; i < 7; i++) {
            const reply = yield* login(user.email, "wrong-password-123")
            expect(reply.status).toBe(401)
            expect(limitHeaders(reply)).toMatchObject({ limit: 7, remaining: 6 - i })
          }
          expectRateLimited(yield* login(user.email, "wrong-password-123"), 7, 60)
        }).pipe(Effect.provideService(TestServer, server))
      ))
    }))

  it.live(
    "a Redis that is down does not lock anyone out, and does not slow the front door down",
    () =>
      Effect.gen(function*() {
        const [elapsed, user] = yield* Effect.timed(signUp())
        // The store is unreachable: the request goes through (with a warning in the log), promptly.
        expect(Duration.toMillis(elapsed)).toBeLessThan(5000)
        expect(user.accessToken).toEqual(expect.any(String))
        expect((yield* login(user.email, "wrong-password-123")).status).toBe(401)
        // Still prompt once the store has been down for a while (the client's reconnection back-off has grown).
        yield* Effect.sleep("15 seconds")
        const [again, reply] = yield* Effect.timed(login(user.email, user.password))
        expect(reply.status).toBe(200)
        expect(Duration.toMillis(again)).toBeLessThan(2500)
      }).pipe(
        Effect.provide(testServer({
          env: {
            REDIS_URL: "redis://127.0.0.1:1",
            // Each request logs a warning with the store's error: keep the output readable.
            LOG_LEVEL: "error",
            REDIS_KEY_PREFIX: uniquePrefix(),
            // Were the store up, the logins after the first would be refused.
            AUTH_RATE_LIMIT_PER_ACCOUNT: "1"
          }
        })),
        Effect.timeout("45 seconds")
      ),
    60_000
  )
})

// --- answers

const developmentModel = "webplus-development"

/** A chat turn answered as JSON: a new conversation, or one more turn in `conversationId`. */
const chatTurn = (auth: string, content: string, conversationId?: string, headers: Record<string, string> = {}) =>
  call("POST", conversationId === undefined ? "/api/v1/chat" : `/api/v1/conversations/${conversationId}/chat`, {
    auth,
    body: { content },
    headers
  })

const expectAnswered = (reply: Reply) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(200)
  expect(reply.body.answer).toMatchObject({ status: "complete", content: expect.stringContaining("You said:") })
  return reply
}

/** A gateway completion with the official client (no retries of its own), or the error it rejects with. */
const complete = (apiKey: string) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    Effect.tryPromise({
      try: () =>
        new OpenAI({ apiKey, baseURL: `${baseUrl}/v1`, maxRetries: 0 }).chat.completions.create({
          model: developmentModel,
          messages: [{ role: "user", content: "Hello gateway" }]
        }),
      catch: (error) => error
    }))

/** The first frame the chat WebSocket answers a `chat` message with. */
const socketReply = (auth: string, content: string) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    Effect.async<Record<string, any>>((resume) => {
      const ws = new WebSocket(`${baseUrl.replace(/^http/, "ws")}${chatSocketPath}`, {
        headers: { authorization: `Bearer ${auth}` }
      })
      ws.on("message", (data) => {
        const frame = JSON.parse(String(data))
        if (frame.type === "ready") return ws.send(JSON.stringify({ type: "chat", ref: "r1", content }))
        ws.close()
        resume(Effect.succeed(frame))
      })
      ws.on("error", (error) => resume(Effect.die(error)))
      return Effect.sync(() => ws.close())
    }).pipe(Effect.timeout("10 seconds"), Effect.orDie))

for (const dialect of dialects) {
  layer(
    testServer({ dialect, env: { DEVELOPMENT_MODEL: "true", CHAT_RATE_LIMIT_PER_USER: "3" } }),
    { excludeTestServices: true }
  )(`the answers a user may ask for on ${dialect}`, (it) => {
    it.scoped("chat turns and gateway completions share one budget; beyond it 429 everywhere, nothing stored", () =>
      Effect.gen(function*() {
        yield* signUp() // the administrator
        const user = yield* signUp()
        const other = yield* signUp()
        const key = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"])

        const first = expectAnswered(yield* chatTurn(user.accessToken, "one"))
        expect(limitHeaders(first)).toMatchObject({ limit: 3, remaining: 2 })
        const conversationId: string = first.body.conversationId
        // The same budget through a key: the key's owner is counted.
        const second = expectAnswered(yield* chatTurn(key.secret, "two", conversationId))
        expect(limitHeaders(second)).toMatchObject({ limit: 3, remaining: 1 })
        const completion = yield* complete(key.secret)
        expect(completion).toMatchObject({ choices: [{ message: { content: expect.stringContaining("You said:") } }] })

        // Spent: every way of asking for an answer is refused, with when to try again.
        expectRateLimited(yield* chatTurn(user.accessToken, "three", conversationId), 3, 60)
        expectRateLimited(
          yield* chatTurn(user.accessToken, "streamed", conversationId, { accept: "text/event-stream" }),
          3,
          60
        )
        expectRateLimited(yield* chatTurn(user.accessToken, "new"), 3, 60)
        expectRateLimited(
          yield* call("POST", `/api/${user.id}/chat`, {
            auth: user.accessToken,
            body: { message: "simple", conversation_id: conversationId }
          }),
          3,
          60
        )
        const answerId: string = second.body.answer.id
        expectRateLimited(
          yield* call("POST", `/api/v1/conversations/${conversationId}/messages/${answerId}/regenerate`, {
            auth: user.accessToken,
            body: {}
          }),
          3,
          60
        )
        const refused = yield* Effect.flip(complete(key.secret))
        expect(refused).toBeInstanceOf(OpenAI.RateLimitError)
        const limited = refused as InstanceType<typeof OpenAI.RateLimitError>
        expect(limited.status).toBe(429)
        expect(limited.code).toBe("rate_limit_exceeded")
        expect(Number(limited.headers?.get("retry-after"))).toBeGreaterThanOrEqual(1)
        const rpc = yield* overHttp((yield* TestServer).baseUrl)
        const overRpc = yield* Effect.flip(
          as(user)(
            Stream.runCollect(rpc.chat({ id: conversationId as ConversationId, message: { content: "over rpc" } }))
          )
        )
        expect(overRpc).toMatchObject({ _tag: "RateLimited", retryAfterSeconds: expect.any(Number) })
        const frame = yield* socketReply(user.accessToken, "over the socket")
        expect(frame).toEqual({
          type: "error",
          ref: "r1",
          error: { _tag: "RateLimited", message: expect.any(String), retryAfterSeconds: expect.any(Number) }
        })

        // The refused turns stored nothing: two questions and two answers.
        const conversation = yield* call("GET", `/api/v1/conversations/${conversationId}`, { auth: user.accessToken })
        expect(conversation.body.messageCount).toBe(4)
        const conversations = yield* call("GET", "/api/v1/conversations", { auth: user.accessToken })
        expect(conversations.body.items).toHaveLength(1)
        // Reading is not asking: the answer's events and the conversation are still served.
        const events = yield* call("GET", `/api/v1/conversations/${conversationId}/messages/${answerId}/events`, {
          auth: user.accessToken
        })
        expect(events.status).toBe(200)
        expect(events.headers["ratelimit-limit"]).toBeUndefined()

        // Another user has a budget of their own.
        expect(limitHeaders(expectAnswered(yield* chatTurn(other.accessToken, "mine")))).toMatchObject({
          limit: 3,
          remaining: 2
        })
      }))
  })
}

for (const dialect of dialects) {
  layer(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }), { excludeTestServices: true })(
    `an API key's own limit on ${dialect}`,
    (it) => {
      it.effect("a key with rateLimitPerMinute is refused past it; its owner and other keys are not", () =>
        Effect.gen(function*() {
          yield* signUp() // the administrator
          const user = yield* signUp()
          const scopes = ["chat", "conversations:read", "conversations:write", "models:read", "models:use"]
          const limited = yield* createKey(user, scopes, { rateLimitPerMinute: 2 })
          const free = yield* createKey(user, scopes)
          const listed = yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken })
          expect(
            Object.fromEntries(
              listed.body.items.map((key: { id: string; rateLimitPerMinute: number | null }) => [
                key.id,
                key.rateLimitPerMinute
              ])
            )
          ).toEqual({ [limited.id]: 2, [free.id]: null })

          // Two answers, through the gateway and a chat turn: one budget for the key.
          expect(yield* complete(limited.secret)).toMatchObject({ object: "chat.completion" })
          const turn = expectAnswered(yield* chatTurn(limited.secret, "one"))
          expect(limitHeaders(turn)).toMatchObject({ limit: 2, remaining: 0 })
          expectRateLimited(yield* chatTurn(limited.secret, "two"), 2, 60)
          const refused = yield* Effect.flip(complete(limited.secret))
          expect(refused).toBeInstanceOf(OpenAI.RateLimitError)

          // The owner with a session, and the owner's other key, are not held back by it.
          const own = expectAnswered(yield* chatTurn(user.accessToken, "mine"))
          expect(own.headers["ratelimit-limit"]).toBeUndefined()
          expectAnswered(yield* chatTurn(free.secret, "free"))
          expect(yield* complete(free.secret)).toMatchObject({ object: "chat.completion" })

          // A limit must be a whole number from 1 to 60,000 (one a millisecond: the finest the store keeps).
          for (const rateLimitPerMinute of [0, -1, 1.5, "10", 60_001]) {
            const reply = yield* call("POST", "/api/v1/auth/api-keys", {
              auth: user.accessToken,
              body: { name: "bad", scopes: ["chat"], rateLimitPerMinute }
            })
            expect(reply.status, JSON.stringify(rateLimitPerMinute)).toBe(422)
          }
        }))
    }
  )
}

describe("the answers a user may ask for, in Redis", () => {
  it.scopedLive("two instances share one budget", () =>
    Effect.gen(function*() {
      const prefix = yield* redisPrefix
      const shared = {
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: prefix,
        DEVELOPMENT_MODEL: "true",
        CHAT_RATE_LIMIT_PER_USER: "2"
      }
      const { a, b, on } = yield* startTwoInstances(shared)

      yield* signUp().pipe(on(a)) // the administrator
      const user = yield* signUp().pipe(on(a))
      const first = expectAnswered(yield* chatTurn(user.accessToken, "on a").pipe(on(a)))
      expect(limitHeaders(first)).toMatchObject({ limit: 2, remaining: 1 })
      const second = expectAnswered(yield* chatTurn(user.accessToken, "on b", first.body.conversationId).pipe(on(b)))
      expect(limitHeaders(second)).toMatchObject({ limit: 2, remaining: 0 })
      expectRateLimited(yield* chatTurn(user.accessToken, "again on a", first.body.conversationId).pipe(on(a)), 2, 60)

      const keys = yield* withRedis((redis) => scanKeys(redis, prefix))
      expect(keys.some((key) => key.startsWith(`${prefix}ratelimit:chat:user:`))).toBe(true)
    }))
})

// --- the general limits: every request of an address, every authenticated request of a user

/** A request from `address` (the server trusts its proxy's `X-Forwarded-For`). */
const from = (
  address: string,
  path: string,
  options: { auth?: string; method?: "GET" | "POST"; body?: unknown } = {}
) =>
  call(options.method ?? "GET", path, {
    ...(options.auth ? { auth: options.auth } : {}),
    ...(options.body === undefined ? {} : { body: options.body }),
    headers: { "x-forwarded-for": address }
  })

for (const dialect of dialects) {
  layer(
    testServer({
      dialect,
      env: {
        TRUST_PROXY: "true",
        RATE_LIMIT_PER_ADDRESS: "5",
        RATE_LIMIT_EXEMPT_ADDRESSES: "10.1.0.0/16, 2001:db8::1"
      }
    }),
    { excludeTestServices: true }
  )(`the per-address limit on ${dialect}`, (it) => {
    it.effect("every route counts, answered or refused; past the limit 429 before routing, other addresses unaffected", () =>
      Effect.gen(function*() {
        const address = `192.0.2.${1 + Crypto.randomInt(250)}`
        const remaining: Array<number> = []
        // Unauthenticated (401), unknown route (404), public (200), a body that fails its schema (422).
        for (
          const reply of [
            yield* from(address, "/api/v1/conversations"),
            yield* from(address, "/api/v1/no-such-route"),
            yield* from(address, "/openapi.json"),
            yield* from(address, "/api/v1/auth/login", { method: "POST", body: { login: 1 } }),
            yield* from(address, "/api/v1/models")
          ]
        ) remaining.push(limitHeaders(reply).remaining)
        expect(remaining).toEqual([4, 3, 2, 1, 0])
        expectRateLimited(yield* from(address, "/api/v1/conversations"), 5, 60)
        expectRateLimited(yield* from(address, "/api/v1/auth/register", { method: "POST", body: {} }), 5, 60)

        // Probes and scrapers are never limited.
        expect((yield* from(address, "/health/live")).status).toBe(200)
        expect((yield* from(address, "/metrics")).status).toBe(200)

        // The OpenAI-compatible routes answer in OpenAI's format.
        const gateway = yield* from(address, "/v1/models")
        expect(gateway.status).toBe(429)
        expect(gateway.body).toEqual({
          error: { message: expect.any(String), type: "requests", param: null, code: "rate_limit_exceeded" }
        })
        expect(Number(gateway.headers["retry-after"])).toBeGreaterThanOrEqual(1)
        // Anthropic's route, and Anthropic's clients elsewhere under /v1, in Anthropic's.
        for (
          const reply of [
            yield* from(address, "/v1/messages", { method: "POST", body: {} }),
            yield* call("GET", "/v1/models", {
              headers: { "x-forwarded-for": address, "anthropic-version": "2023-06-01" }
            })
          ]
        ) {
          expect(reply.status).toBe(429)
          expect(reply.body).toEqual({
            type: "error",
            error: { type: "rate_limit_error", message: expect.any(String) }
          })
          expect(Number(reply.headers["retry-after"])).toBeGreaterThanOrEqual(1)
        }

        // Another address has its own budget.
        const other = yield* from(`198.51.100.${1 + Crypto.randomInt(250)}`, "/api/v1/conversations")
        expect(other.status).toBe(401)
        expect(limitHeaders(other)).toMatchObject({ limit: 5, remaining: 4 })
      }))

    it.effect("exempt addresses and networks are never limited (IPv4 written as IPv6 too)", () =>
      Effect.gen(function*() {
        for (const address of ["10.1.7.9", "::ffff:10.1.200.3", "2001:db8::1"]) {
          for (let i = 0; i < 8; i++) {
            const reply = yield* from(address, "/api/v1/conversations")
            expect(reply.status, `${address}, request ${i + 1}`).toBe(401)
            expect(reply.headers["ratelimit-limit"]).toBeUndefined()
          }
        }
        // Just outside the network: limited.
        const outside = "10.2.0.1"
        for (let i = 0; i < 5; i++) expect((yield* from(outside, "/api/v1/conversations")).status).toBe(401)
        expectRateLimited(yield* from(outside, "/api/v1/conversations"), 5, 60)
      }))
  })

  layer(
    testServer({
      dialect,
      env: {
        TRUST_PROXY: "true",
        DEVELOPMENT_MODEL: "true",
        RATE_LIMIT_PER_USER: "6",
        RATE_LIMIT_EXEMPT_ADDRESSES: "10.9.0.0/16"
      }
    }),
    { excludeTestServices: true }
  )(`the per-user limit on ${dialect}`, (it) => {
    it.scoped("one budget per user over sessions, API keys, RPC and the gateway; others and admins unaffected", () =>
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const other = yield* signUp()
        const key = yield* createKey(user, ["conversations:read", "models:read", "models:use"])

        // Spend what is left of the user's budget (signing up used some of it), alternating credentials.
        const first = yield* call("GET", "/api/v1/conversations", { auth: user.accessToken })
        expect(first.status).toBe(200)
        const left = limitHeaders(first)
        expect(left.limit).toBe(6)
        for (let i = left.remaining; i > 0; i--) {
          const reply = yield* call("GET", "/api/v1/conversations", {
            auth: i % 2 === 0 ? key.secret : user.accessToken
          })
          expect(reply.status).toBe(200)
          expect(limitHeaders(reply)).toMatchObject({ limit: 6, remaining: i - 1 })
        }
        // Past it: 429 with either credential, on REST, RPC and the gateway.
        expectRateLimited(yield* call("GET", "/api/v1/conversations", { auth: user.accessToken }), 6, 60)
        expectRateLimited(yield* call("GET", "/api/v1/conversations", { auth: key.secret }), 6, 60)
        const rpc = yield* overHttp((yield* TestServer).baseUrl)
        expect(yield* Effect.flip(as(user)(rpc.listConversations({})))).toMatchObject({
          _tag: "RateLimited",
          retryAfterSeconds: expect.any(Number)
        })
        const refused = yield* Effect.flip(complete(key.secret))
        expect(refused).toBeInstanceOf(OpenAI.RateLimitError)
        // A wrong credential is still told so, not counted.
        expect((yield* call("GET", "/api/v1/conversations", { auth: "wp_not-a-key" })).status).toBe(401)

        // From an exempt address the same user passes.
        const exempt = yield* from("10.9.1.1", "/api/v1/conversations", { auth: user.accessToken })
        expect(exempt.status).toBe(200)

        // Another user has their own budget; the administrator holds `ratelimit:exempt`.
        const others = yield* call("GET", "/api/v1/conversations", { auth: other.accessToken })
        expect(others.status).toBe(200)
        expect(limitHeaders(others).limit).toBe(6)
        for (let i = 0; i < 10; i++) {
          const reply = yield* call("GET", "/api/v1/conversations", { auth: admin.accessToken })
          expect(reply.status).toBe(200)
          expect(reply.headers["ratelimit-limit"]).toBeUndefined()
        }
        const roles = yield* call("GET", "/api/v1/admin/roles", { auth: admin.accessToken })
        const byName = Object.fromEntries(roles.body.map((role: any) => [role.name, role.permissions]))
        expect(byName.admin).toContain("ratelimit:exempt")
        expect(byName.user).not.toContain("ratelimit:exempt")
      }))
  })
}

// --- token budgets

describe("token budget periods (UTC calendar)", () => {
  it("a day, a week from Monday, a month; across the year's end", () => {
    const at = (iso: string) => Date.parse(iso)
    const iso = ({ end, start }: { start: number; end: number }) => [start, end].map((t) => new Date(t).toISOString())
    // Sunday 2026-11-22, late.
    expect(iso(budgetPeriod("day", at("2026-11-22T23:59:59.999Z")))).toEqual([
      "2026-11-22T00:00:00.000Z",
      "2026-11-23T00:00:00.000Z"
    ])
    expect(iso(budgetPeriod("week", at("2026-11-22T23:59:59.999Z")))).toEqual([
      "2026-11-16T00:00:00.000Z",
      "2026-11-23T00:00:00.000Z"
    ])
    // Monday at midnight opens a new week.
    expect(iso(budgetPeriod("week", at("2026-11-23T00:00:00.000Z")))[0]).toBe("2026-11-23T00:00:00.000Z")
    expect(iso(budgetPeriod("week", at("2026-12-31T12:00:00.000Z")))).toEqual([
      "2026-12-28T00:00:00.000Z",
      "2027-01-04T00:00:00.000Z"
    ])
    expect(iso(budgetPeriod("month", at("2026-12-31T12:00:00.000Z")))).toEqual([
      "2026-12-01T00:00:00.000Z",
      "2027-01-01T00:00:00.000Z"
    ])
    expect(iso(budgetPeriod("month", at("2028-02-29T08:00:00.000Z")))).toEqual([
      "2028-02-01T00:00:00.000Z",
      "2028-03-01T00:00:00.000Z"
    ])
  })
})

for (const dialect of dialects) {
  layer(
    testServer({ dialect, env: { DEVELOPMENT_MODEL: "true", TOKEN_BUDGET_PER_USER: "1", TOKEN_BUDGET_PERIOD: "day" } }),
    { excludeTestServices: true }
  )(`the token budget on ${dialect}`, (it) => {
    it.scoped("spent by a turn, then refused on every door until the period renews; others and admins go on", () =>
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const other = yield* signUp()
        const key = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"])

        // Nothing spent yet: the first answer is given (and takes the user past the budget).
        const before = yield* call("GET", "/api/v1/me/budget", { auth: user.accessToken })
        const today = budgetPeriod("day", Date.now())
        expect(before.body).toEqual({
          tokens: 1,
          spent: 0,
          remaining: 1,
          exempt: false,
          key: null,
          period: "day",
          periodStart: new Date(today.start).toISOString(),
          renewsAt: new Date(today.end).toISOString()
        })
        const first = expectAnswered(yield* chatTurn(user.accessToken, "first"))
        const after = yield* call("GET", "/api/v1/me/budget", { auth: key.secret })
        expect(after.body).toMatchObject({ tokens: 1, remaining: 0 })
        expect(after.body.spent).toBe(first.body.answer.promptTokens + first.body.answer.completionTokens)
        const conversationId = first.body.conversationId as ConversationId
        const refused = yield* chatTurn(user.accessToken, "again", conversationId)
        expect(refused.status).toBe(429)
        expect(refused.body).toEqual({
          _tag: "RateLimited",
          message: expect.stringMatching(/token budget for this day \(1 tokens\) is spent; it renews at \d{4}-/),
          retryAfterSeconds: expect.any(Number)
        })
        const untilMidnight = Math.ceil((budgetPeriod("day", Date.now()).end - Date.now()) / 1000)
        expect(refused.body.retryAfterSeconds).toBeGreaterThan(0)
        expect(refused.body.retryAfterSeconds).toBeLessThanOrEqual(untilMidnight + 1)
        expect(Number(refused.headers["retry-after"])).toBe(refused.body.retryAfterSeconds)

        // The same budget through the API key, at the gateway, over RPC and the socket.
        expect((yield* chatTurn(key.secret, "with the key", conversationId)).status).toBe(429)
        const gateway = yield* Effect.flip(complete(key.secret))
        expect(gateway).toBeInstanceOf(OpenAI.RateLimitError)
        const rpc = yield* overHttp((yield* TestServer).baseUrl)
        expect(
          yield* Effect.flip(as(user)(Stream.runCollect(rpc.chat({ id: conversationId, message: { content: "rpc" } }))))
        ).toMatchObject({ _tag: "RateLimited" })
        expect(yield* socketReply(user.accessToken, "socket")).toMatchObject({
          type: "error",
          error: { _tag: "RateLimited" }
        })
        // Nothing was stored for the refused turns: the first question and its answer.
        const messages = yield* call("GET", `/api/v1/conversations/${conversationId}/messages`, {
          auth: user.accessToken
        })
        expect(messages.body.items.map((message: any) => message.role)).toEqual(["user", "assistant"])

        // Another user has a budget of their own; the administrator holds ratelimit:exempt.
        expectAnswered(yield* chatTurn(other.accessToken, "mine"))
        expect((yield* call("GET", "/api/v1/me/budget", { auth: admin.accessToken })).body).toMatchObject({
          tokens: null,
          remaining: null,
          exempt: true
        })
        const admins = expectAnswered(yield* chatTurn(admin.accessToken, "one"))
        expectAnswered(yield* chatTurn(admin.accessToken, "two", admins.body.conversationId))
      }))

    it.scoped("a role's own budget replaces the server's for its holders, until it is taken away", () =>
      Effect.gen(function*() {
        // A server of its own: its first account is the administrator.
        const server = yield* startTestServer(testServer({
          dialect,
          env: { DEVELOPMENT_MODEL: "true", TOKEN_BUDGET_PER_USER: "1", TOKEN_BUDGET_PERIOD: "day" }
        }))
        yield* Effect.provideService(roleBudget, TestServer, server)
      }))

    it.scoped("an API key's own budget stops that key only", () =>
      Effect.gen(function*() {
        const server = yield* startTestServer(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }))
        yield* signUp().pipe(Effect.provideService(TestServer, server)) // the administrator
        yield* Effect.provideService(keyBudget, TestServer, server)
      }))
  })
}

/** A key with a budget of its own, on a server without one: the key stops, its owner goes on. */
const keyBudget = Effect.gen(function*() {
  const user = yield* signUp()
  const key = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"], {
    tokenBudget: 1
  })
  const keys = yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken })
  expect(keys.body.items.find((listed: any) => listed.id === key.id).tokenBudget).toBe(1)
  const first = expectAnswered(yield* chatTurn(key.secret, "through the key"))
  const conversationId = first.body.conversationId as string
  const refused = yield* chatTurn(key.secret, "again", conversationId)
  expect(refused.status).toBe(429)
  expect(refused.body.message).toMatch(/^This API key's token budget for this month \(1 tokens\) is spent/)
  expect(Number(refused.headers["retry-after"])).toBeGreaterThan(0)
  expect(yield* Effect.flip(complete(key.secret))).toBeInstanceOf(OpenAI.RateLimitError)
  const budget = yield* call("GET", "/api/v1/me/budget", { auth: key.secret })
  expect(budget.body).toMatchObject({ tokens: null, remaining: null, key: { tokens: 1, remaining: 0 } })
  expect(budget.body.key.spent).toBe(budget.body.spent)
  // The owner's session has no budget: it goes on.
  expectAnswered(yield* chatTurn(user.accessToken, "with the session", conversationId))
  expect((yield* call("GET", "/api/v1/me/budget", { auth: user.accessToken })).body.key).toBeNull()
  // Out of range: 422, no key made.
  const zero = yield* call("POST", "/api/v1/auth/api-keys", {
    auth: user.accessToken,
    body: { name: "zero", scopes: ["chat"], tokenBudget: 0 }
  })
  expect(zero.status).toBe(422)
})

/** A role with a roomy budget of its own on a server whose budget is 1 token a day; then taken away. */
const roleBudget = Effect.gen(function*() {
  const admin = yield* signUp()
  const holder = yield* signUp()
  const name = `roomy-${unique()}`
  const role = yield* call("POST", "/api/v1/admin/roles", {
    auth: admin.accessToken,
    body: {
      name,
      permissions: ["chat", "conversations:read", "conversations:write", "models:use"],
      tokenBudget: 1_000_000
    }
  })
  expect(role.status, JSON.stringify(role.body)).toBe(201)
  expect(role.body.tokenBudget).toBe(1_000_000)
  const zero = yield* call("POST", "/api/v1/admin/roles", {
    auth: admin.accessToken,
    body: { name: `zero-${unique()}`, permissions: ["chat"], tokenBudget: 0 }
  })
  expect(zero.status).toBe(422)
  const give = yield* call("PUT", `/api/v1/admin/users/${holder.id}/role`, {
    auth: admin.accessToken,
    body: { role: name }
  })
  expect(give.status).toBe(200)
  expect((yield* call("GET", "/api/v1/me/budget", { auth: holder.accessToken })).body).toMatchObject({
    tokens: 1_000_000,
    spent: 0
  })

  const first = expectAnswered(yield* chatTurn(holder.accessToken, "one"))
  const conversationId = first.body.conversationId as string
  expectAnswered(yield* chatTurn(holder.accessToken, "two", conversationId))
  expectAnswered(yield* chatTurn(holder.accessToken, "three", conversationId))

  // Back to the server's budget (1 token a day), long spent.
  const lifted = yield* call("PATCH", `/api/v1/admin/roles/${name}`, {
    auth: admin.accessToken,
    body: { tokenBudget: null }
  })
  expect(lifted.body.tokenBudget).toBeNull()
  expect((yield* chatTurn(holder.accessToken, "four", conversationId)).status).toBe(429)
})
