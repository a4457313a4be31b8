/**
 * `POST /v1/embeddings` through the real server, called by the official
 * `openai` client and by plain HTTP, in front of loopback providers speaking
 * OpenAI's and Ollama's embeddings APIs, on both dialects: vectors in order,
 * `float` and `base64` encodings, batches, `dimensions`, token arrays; the
 * development model's own vectors; an Anthropic model refused; bad input
 * answered before anything is sent; the key's scope and model list, its rate
 * limit and token budget; usage recorded per key; provider faults retried or
 * answered in OpenAI's format.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import OpenAI from "openai"
import { call, createKey, expectStatus, signUp, uniqueName } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import {
  embeddingOf,
  embedPath,
  embedRequests,
  fakeProvider,
  type GatewayCast,
  gatewayCast,
  gatewayModelTotals,
  gatewayTestEnv,
  registerFake,
  unreachableUrl,
  upstreamSecret
} from "./fixtures/Providers.js"
import { startTestServer, TestServer, testServer } from "./fixtures/Server.js"

/**
 * The gateway's cast: an OpenAI-compatible server with `embed-small`, Ollama with `nomic-embed:v1`,
 * Anthropic with `claude-loop`.
 */
class TheCast extends Context.Tag("test/Embeddings/Cast")<TheCast, GatewayCast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    gatewayCast({
      openai: { name: "embed-small" },
      ollama: { name: "nomic-embed:v1" },
      anthropic: { name: "claude-loop" }
    }, 1_500)
  ).pipe(
    Layer.provideMerge(testServer({
      dialect,
      env: {
        ...gatewayTestEnv,
        DEVELOPMENT_MODEL: "true",
        // Two quick retries: enough to see a fault overcome, short enough to see one that lasts.
        CHAT_RETRY_ATTEMPTS: "2",
        CHAT_RETRY_BASE_DELAY: "20 millis",
        CHAT_RETRY_MAX_DELAY: "2 seconds"
      }
    }))
  )

/** The official client, pointed at the gateway; no retries of its own, so failures arrive as they are. */
const clientFor = (apiKey: string) =>
  Effect.map(TestServer, ({ baseUrl }) => new OpenAI({ apiKey, baseURL: `${baseUrl}/v1`, maxRetries: 0 }))

const promise = <A>(run: () => Promise<A>) => Effect.promise(run)

/** The error a client call rejects with. */
const failure = <A>(run: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: run, catch: (error) => error }))

/** `POST /v1/embeddings` with `body` as it is, over plain HTTP. */
const postEmbeddings = (secret: string | undefined, body: unknown) =>
  call("POST", "/v1/embeddings", { ...(secret ? { auth: secret } : {}), body })

/** A base64 vector as OpenAI's format has it: float32 values, little-endian. */
const decodeBase64 = (text: string): Array<number> => {
  const bytes = Buffer.from(text, "base64")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return Array.from({ length: bytes.byteLength / 4 }, (_, index) => view.getFloat32(index * 4, true))
}

const norm = (vector: ReadonlyArray<number>) => Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0))

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`embeddings through the gateway on ${dialect}`, (it) => {
    describe("OpenAI's format, in front of an OpenAI-compatible server", () => {
      it.effect("the official client's default (base64) gets the provider's vectors, decoded", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.embedding = { promptTokens: 2 }
          const client = yield* clientFor(key.secret)
          const result = yield* promise(() => client.embeddings.create({ model: "embed-small", input: "hello world" }))
          expect(result.object).toBe("list")
          expect(result.model).toBe("embed-small")
          expect(result.data).toEqual([{ object: "embedding", index: 0, embedding: embeddingOf("hello world", 0) }])
          expect(result.usage).toEqual({ prompt_tokens: 2, total_tokens: 2 })
          // The provider is asked for floats, whatever the client asked for.
          expect(embedRequests(openai).at(-1)!.body).toEqual({
            model: "embed-small",
            input: ["hello world"],
            encoding_format: "float"
          })
        }))

      it.effect("base64 is each vector's float32 bytes, little-endian", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.embedding = { dimensions: 5 }
          const reply = expectStatus(
            yield* postEmbeddings(key.secret, {
              model: "embed-small",
              input: ["one", "three"],
              encoding_format: "base64"
            }),
            200
          )
          expect(reply.data.map((entry: any) => typeof entry.embedding)).toEqual(["string", "string"])
          expect(reply.data.map((entry: any) => decodeBase64(entry.embedding))).toEqual([
            embeddingOf("one", 0, 5),
            embeddingOf("three", 1, 5)
          ])
          expect(Buffer.from(reply.data[0].embedding, "base64").byteLength).toBe(20)
        }))

      it.effect("a batch as floats, in the inputs' order whatever order the provider sent, with dimensions", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.embedding = { shuffled: true, promptTokens: 6 }
          const client = yield* clientFor(key.secret)
          const input = ["alpha", "beta gamma", "delta"]
          const result = yield* promise(() =>
            client.embeddings.create({
              model: "embed-small",
              input,
              encoding_format: "float",
              dimensions: 6,
              user: "someone"
            })
          )
          expect(result.data.map((entry) => entry.index)).toEqual([0, 1, 2])
          expect(result.data.map((entry) => entry.embedding)).toEqual(
            input.map((text, position) => embeddingOf(text, position, 6))
          )
          expect(result.usage).toEqual({ prompt_tokens: 6, total_tokens: 6 })
          expect(embedRequests(openai).at(-1)!.body).toEqual({
            model: "embed-small",
            input,
            dimensions: 6,
            encoding_format: "float"
          })
        }))

      it.effect("token arrays are passed on as they are", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.embedding = {}
          const one = expectStatus(
            yield* postEmbeddings(key.secret, {
              model: "embed-small",
              input: [101, 102, 103],
              encoding_format: "float"
            }),
            200
          )
          expect(one.data).toEqual([{ object: "embedding", index: 0, embedding: embeddingOf([101, 102, 103], 0) }])
          expect(embedRequests(openai).at(-1)!.body.input).toEqual([[101, 102, 103]])
          // Without an encoding_format, floats.
          const two = expectStatus(
            yield* postEmbeddings(key.secret, { model: "embed-small", input: [[1, 2], [3]] }),
            200
          )
          expect(two.data.map((entry: any) => entry.embedding)).toEqual([
            embeddingOf([1, 2], 0),
            embeddingOf([3], 1)
          ])
          expect(embedRequests(openai).at(-1)!.body.input).toEqual([[1, 2], [3]])
        }))
    })

    describe("other providers", () => {
      it.effect("Ollama embeds a batch through /api/embed, with dimensions and its token count", () =>
        Effect.gen(function*() {
          const { key, ollama } = yield* TheCast
          ollama.embedding = { promptTokens: 9 }
          const client = yield* clientFor(key.secret)
          const result = yield* promise(() =>
            client.embeddings.create({ model: "nomic-embed:v1", input: ["first", "second"], dimensions: 3 })
          )
          expect(result.model).toBe("nomic-embed:v1")
          expect(result.data.map((entry) => entry.embedding)).toEqual([
            embeddingOf("first", 0, 3),
            embeddingOf("second", 1, 3)
          ])
          expect(result.usage).toEqual({ prompt_tokens: 9, total_tokens: 9 })
          expect(embedRequests(ollama).at(-1)!.body).toEqual({
            model: "nomic-embed:v1",
            input: ["first", "second"],
            dimensions: 3
          })
        }))

      it.effect("Ollama takes no token arrays: 400 on input, nothing sent", () =>
        Effect.gen(function*() {
          const { key, ollama } = yield* TheCast
          const before = embedRequests(ollama).length
          const reply = yield* postEmbeddings(key.secret, { model: "nomic-embed:v1", input: [[1, 2], [3]] })
          expect(expectStatus(reply, 400).error).toMatchObject({
            type: "invalid_request_error",
            param: "input",
            code: null
          })
          expect(reply.body.error.message).toContain("text only")
          expect(embedRequests(ollama)).toHaveLength(before)
        }))

      it.effect("an Anthropic model cannot embed: 400 on model, nothing sent", () =>
        Effect.gen(function*() {
          const { anthropic, key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const error = yield* failure(() => client.embeddings.create({ model: "claude-loop", input: "Hello" }))
          expect(error).toBeInstanceOf(OpenAI.BadRequestError)
          expect(error).toMatchObject({ status: 400, type: "invalid_request_error", param: "model" })
          expect((error as InstanceType<typeof OpenAI.APIError>).message).toContain("cannot create embeddings")
          expect(anthropic.requests.filter((request) => request.method === "POST")).toEqual([])
        }))

      it.effect("the development model's vectors: the same text the same vector, of length 1, any size", () =>
        Effect.gen(function*() {
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const result = yield* promise(() =>
            client.embeddings.create({
              model: "webplus-development",
              input: ["The cat sat", "the CAT sat", "A dog ran far"]
            })
          )
          const [cat, sameCat, dog] = result.data.map((entry) => entry.embedding)
          expect(cat).toHaveLength(256)
          expect(sameCat).toEqual(cat)
          expect(dog).not.toEqual(cat)
          for (const vector of [cat!, dog!]) expect(norm(vector)).toBeCloseTo(1, 5)
          expect(result.usage).toEqual({ prompt_tokens: 10, total_tokens: 10 })
          const again = yield* promise(() =>
            client.embeddings.create({ model: "webplus-development", input: "The cat sat", encoding_format: "float" })
          )
          // Floats as computed; base64 as their float32 rounding.
          expect(again.data[0]!.embedding.map(Math.fround)).toEqual(cat)
          const small = yield* promise(() =>
            client.embeddings.create({ model: "webplus-development", input: "The cat sat", dimensions: 16 })
          )
          expect(small.data[0]!.embedding).toHaveLength(16)
          const refused = yield* postEmbeddings(key.secret, { model: "webplus-development", input: [1, 2] })
          expect(expectStatus(refused, 400).error).toMatchObject({ param: "input" })
          const tooLarge = yield* postEmbeddings(key.secret, {
            model: "webplus-development",
            input: "x",
            dimensions: 100_000
          })
          expect(expectStatus(tooLarge, 400).error).toMatchObject({ param: "dimensions" })
        }))
    })

    describe("bad input", () => {
      it.effect("400 naming the param, nothing sent upstream", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const before = embedRequests(openai).length
          const model = "embed-small"
          const cases: ReadonlyArray<[unknown, string | null]> = [
            [{ model, input: "" }, "input"],
            [{ model, input: [] }, "input"],
            [{ model, input: [""] }, "input[0]"],
            [{ model, input: ["fine", ""] }, "input[1]"],
            [{ model, input: [[1], []] }, "input[1]"],
            [{ model, input: Array.from({ length: 2049 }, () => "x") }, "input"],
            [{ model, input: [1.5, 2] }, "input"],
            [{ model, input: ["a", 1] }, "input"],
            [{ model, input: { text: "a" } }, "input"],
            [{ model }, "input"],
            [{ input: "a" }, "model"],
            [{ model, input: "a", dimensions: 0 }, "dimensions"],
            [{ model, input: "a", encoding_format: "hex" }, "encoding_format"],
            ["just a string", null]
          ]
          for (const [body, param] of cases) {
            const reply = yield* postEmbeddings(key.secret, body)
            expect(reply.status, JSON.stringify(body).slice(0, 100)).toBe(400)
            expect(reply.body.error, JSON.stringify(body).slice(0, 100)).toMatchObject({
              type: "invalid_request_error",
              param
            })
            expect(typeof reply.body.error.message).toBe("string")
          }
          // 2048 inputs are fine.
          const most = yield* postEmbeddings(key.secret, { model, input: Array.from({ length: 2048 }, () => "x") })
          expect(expectStatus(most, 200).data).toHaveLength(2048)
          // One text as 8,000 token ids is one input: the limit counts inputs, not a text's tokens.
          const longTokens = Array.from({ length: 8_000 }, (_, index) => index % 50_000)
          const oneText = yield* postEmbeddings(key.secret, { model, input: longTokens })
          expect(expectStatus(oneText, 200).data).toHaveLength(1)
          expect(embedRequests(openai).at(-1)!.body.input).toEqual([longTokens])
          expect(embedRequests(openai)).toHaveLength(before + 2)
        }))

      it.effect("413 for a body over MAX_BODY_SIZE, nothing sent upstream", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const before = embedRequests(openai).length
          const client = yield* clientFor(key.secret)
          const error = yield* failure(() =>
            client.embeddings.create({ model: "embed-small", input: "x".repeat(70 * 1024) })
          )
          expect(error).toMatchObject({ status: 413, type: "invalid_request_error", code: "request_too_large" })
          expect(embedRequests(openai)).toHaveLength(before)
        }))
    })

    describe("who may embed", () => {
      it.effect("401 without a key, with a wrong key, or with an access token", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const anonymous = yield* postEmbeddings(undefined, { model: "embed-small", input: "a" })
          expect(expectStatus(anonymous, 401).error).toMatchObject({ code: "invalid_api_key" })
          for (const credential of ["wp_not-a-real-key", user.accessToken]) {
            const client = yield* clientFor(credential)
            const error = yield* failure(() => client.embeddings.create({ model: "embed-small", input: "a" }))
            expect(error).toBeInstanceOf(OpenAI.AuthenticationError)
          }
        }))

      it.effect("403 for a key without models:use; 404 for a model it may not use or none has", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          const before = embedRequests(openai).length
          const readOnly = yield* createKey(user, ["models:read"])
          const readOnlyClient = yield* clientFor(readOnly.secret)
          expect(yield* failure(() => readOnlyClient.embeddings.create({ model: "embed-small", input: "a" })))
            .toBeInstanceOf(OpenAI.PermissionDeniedError)

          const models = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const idOf = (providerModel: string) => models.find((model: any) => model.providerModel === providerModel).id
          const limited = yield* createKey(user, ["models:use"], { models: [idOf("nomic-embed:v1")] })
          const limitedClient = yield* clientFor(limited.secret)
          for (const model of ["embed-small", idOf("embed-small"), "no-such-model"]) {
            expect(yield* failure(() => limitedClient.embeddings.create({ model, input: "a" })))
              .toMatchObject({ status: 404, code: "model_not_found", param: "model" })
          }
          const allowed = yield* promise(() =>
            limitedClient.embeddings.create({ model: "nomic-embed:v1", input: "a", encoding_format: "float" })
          )
          expect(allowed.data[0]!.embedding).toEqual(embeddingOf("a", 0))
          expect(embedRequests(openai)).toHaveLength(before)
        }))

      it.effect("a key's rate limit and token budget hold for embeddings as for completions", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          openai.embedding = { promptTokens: 5 }
          const perMinute = yield* createKey(user, ["models:use"], { rateLimitPerMinute: 1 })
          expectStatus(yield* postEmbeddings(perMinute.secret, { model: "embed-small", input: "a" }), 200)
          const limited = yield* postEmbeddings(perMinute.secret, { model: "embed-small", input: "a" })
          expect(expectStatus(limited, 429).error).toMatchObject({ code: "rate_limit_exceeded" })
          expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0)

          const budgeted = yield* createKey(user, ["models:use"], { tokenBudget: 5 })
          expectStatus(yield* postEmbeddings(budgeted.secret, { model: "embed-small", input: "a" }), 200)
          const before = embedRequests(openai).length
          const spent = yield* postEmbeddings(budgeted.secret, { model: "embed-small", input: "a" })
          expect(expectStatus(spent, 429).error.message).toContain("token budget")
          expect(embedRequests(openai)).toHaveLength(before)
        }))
    })

    describe("usage", () => {
      it.effect("is recorded per key and user with the model: prompt tokens, no completion tokens", () =>
        Effect.gen(function*() {
          const { ollama, openai, user } = yield* TheCast
          const key = yield* createKey(user, ["models:use"])
          const client = yield* clientFor(key.secret)
          openai.embedding = { promptTokens: 4 }
          yield* promise(() => client.embeddings.create({ model: "embed-small", input: ["a", "b"] }))
          openai.embedding = { promptTokens: 3 }
          yield* promise(() => client.embeddings.create({ model: "embed-small", input: "c" }))
          ollama.embedding = { promptTokens: 2 }
          yield* promise(() => client.embeddings.create({ model: "nomic-embed:v1", input: "d" }))
          const usage = expectStatus(
            yield* call("GET", `/api/v1/auth/api-keys/${key.id}/usage`, { auth: user.accessToken }),
            200
          )
          expect(usage).toEqual({
            apiKeyId: key.id,
            requests: 3,
            promptTokens: 9,
            completionTokens: 0,
            totalTokens: 9,
            byModel: [gatewayModelTotals("embed-small", 2, 7), gatewayModelTotals("nomic-embed:v1", 1, 2)]
          })
          // The user's own report has them too, under the model.
          const mine = expectStatus(yield* call("GET", "/api/v1/me/usage", { auth: user.accessToken }), 200)
          const embedSmall = mine.groups.find((group: any) => group.modelName === "embed-small")
          expect(embedSmall.promptTokens).toBeGreaterThanOrEqual(7)
          expect(embedSmall.completionTokens).toBe(0)
        }))
    })

    describe("provider faults", () => {
      it.effect("429 with Retry-After is waited out, then the answer", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.embedding = {}
          const before = embedRequests(openai).length
          openai.faults.set(embedPath.openai, {
            kind: "status",
            status: 429,
            times: 1,
            headers: { "retry-after": "1" }
          })
          const started = Date.now()
          const reply = yield* postEmbeddings(key.secret, {
            model: "embed-small",
            input: "a",
            encoding_format: "float"
          })
          expect(expectStatus(reply, 200).data[0].embedding).toEqual(embeddingOf("a", 0))
          expect(Date.now() - started).toBeGreaterThanOrEqual(950)
          expect(embedRequests(openai)).toHaveLength(before + 2)
        }))

      it.effect("5xx is retried with backoff; past the attempts, 502 without the upstream body", () =>
        Effect.gen(function*() {
          const { key, ollama } = yield* TheCast
          ollama.embedding = {}
          const before = embedRequests(ollama).length
          ollama.faults.set(embedPath.ollama, { kind: "status", status: 503, times: 2 })
          expectStatus(yield* postEmbeddings(key.secret, { model: "nomic-embed:v1", input: "a" }), 200)
          expect(embedRequests(ollama)).toHaveLength(before + 3)

          ollama.faults.set(embedPath.ollama, { kind: "status", status: 500, times: 3 })
          const failed = yield* postEmbeddings(key.secret, { model: "nomic-embed:v1", input: "a" })
          expect(expectStatus(failed, 502).error).toMatchObject({ type: "api_error", code: "provider_error" })
          expect(JSON.stringify(failed.body)).not.toContain(upstreamSecret)
          expect(embedRequests(ollama)).toHaveLength(before + 6)
        }))

      it.effect("a malformed body or a wrong count of vectors is a 502, not retried", () =>
        Effect.gen(function*() {
          const { key, ollama, openai } = yield* TheCast
          const before = embedRequests(openai).length
          openai.faults.set(embedPath.openai, { kind: "malformed", times: 1 })
          const malformed = yield* postEmbeddings(key.secret, { model: "embed-small", input: "a" })
          expect(expectStatus(malformed, 502).error).toMatchObject({ code: "provider_error" })
          expect(embedRequests(openai)).toHaveLength(before + 1)

          for (const [provider, model] of [[openai, "embed-small"], [ollama, "nomic-embed:v1"]] as const) {
            provider.embedding = { missing: 1 }
            const short = yield* postEmbeddings(key.secret, { model, input: ["a", "b", "c"] })
            expect(expectStatus(short, 502).error).toMatchObject({ type: "api_error", code: "provider_error" })
            expect(short.body.error.message).toContain("2 embeddings for 3 inputs")
            provider.embedding = {}
          }
        }))

      it.effect("a refused connection is a 503 after the retries; silence past the timeout a 504", () =>
        Effect.gen(function*() {
          const { admin, key, openai } = yield* TheCast
          const dead = expectStatus(
            yield* call("POST", "/api/v1/providers", {
              auth: admin.accessToken,
              body: { name: uniqueName("dead"), kind: "openai-compatible", baseUrl: yield* unreachableUrl }
            }),
            201
          )
          expectStatus(
            yield* call("POST", "/api/v1/models", {
              auth: admin.accessToken,
              body: { providerId: dead.id, providerModel: "ghost-embed" }
            }),
            201
          )
          const unreachable = yield* postEmbeddings(key.secret, { model: "ghost-embed", input: "a" })
          expect(expectStatus(unreachable, 503).error).toMatchObject({ code: "provider_unreachable" })

          openai.faults.set(embedPath.openai, { kind: "hang", times: 1 })
          const silent = yield* postEmbeddings(key.secret, { model: "embed-small", input: "a" })
          expect(expectStatus(silent, 504).error).toMatchObject({ type: "api_error", code: "provider_timeout" })
        }))
    })
  })

  it.scopedLive(`RATE_LIMIT_PER_USER counts embeddings with the user's other requests on ${dialect}`, () =>
    Effect.gen(function*() {
      const server = yield* startTestServer(testServer({
        dialect,
        env: { DEVELOPMENT_MODEL: "true", MODEL_STATUS_POLL_INTERVAL: "0 seconds", RATE_LIMIT_PER_USER: "3" }
      }))
      yield* Effect.gen(function*() {
        yield* signUp()
        const user = yield* signUp()
        // The key's creation is the user's first request of the window.
        const key = yield* createKey(user, ["models:use"])
        const request = { model: "webplus-development", input: "a" }
        expectStatus(yield* postEmbeddings(key.secret, request), 200)
        expectStatus(yield* postEmbeddings(key.secret, request), 200)
        const limited = yield* postEmbeddings(key.secret, request)
        expect(expectStatus(limited, 429).error).toMatchObject({ code: "rate_limit_exceeded" })
        expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0)
        // Through the REST API too: one limit for every credential of the user.
        expectStatus(yield* call("GET", "/api/v1/auth/me", { auth: user.accessToken }), 429)
      }).pipe(Effect.provideService(TestServer, server))
    }))

  layer(
    testServer({
      dialect,
      env: {
        DEVELOPMENT_MODEL: "false",
        MODEL_STATUS_POLL_INTERVAL: "0 seconds",
        CHAT_RETRY_ATTEMPTS: "0",
        PROVIDER_BREAKER_THRESHOLD: "2",
        PROVIDER_BREAKER_COOLDOWN: "30 seconds"
      }
    }),
    { excludeTestServices: true }
  )(`embeddings in front of a failing provider on ${dialect}`, (it) => {
    it.scoped("its circuit opens after failures in a row, for embeddings and chats alike: 503 with Retry-After", () =>
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const failing = yield* fakeProvider("openai", [{ name: "flaky-embed" }])
        yield* registerFake(admin, failing, { name: uniqueName("flaky"), kind: "openai", connectTimeoutMs: 1_000 })
        const key = yield* createKey(user, ["models:use"])
        failing.faults.set(embedPath.openai, { kind: "status", status: 502 })
        for (let attempt = 0; attempt < 2; attempt++) {
          const failed = yield* postEmbeddings(key.secret, { model: "flaky-embed", input: "a" })
          expect(expectStatus(failed, 502).error).toMatchObject({ code: "provider_error" })
        }
        const open = yield* postEmbeddings(key.secret, { model: "flaky-embed", input: "a" })
        expect(expectStatus(open, 503).error).toMatchObject({ type: "api_error", code: "provider_unavailable" })
        const retryAfter = Number(open.headers["retry-after"])
        expect(retryAfter).toBeGreaterThan(0)
        expect(retryAfter).toBeLessThanOrEqual(30)
        // Short-circuited: the provider was not called a third time, and its chats wait too.
        expect(embedRequests(failing)).toHaveLength(2)
        const chat = yield* call("POST", "/v1/chat/completions", {
          auth: key.secret,
          body: { model: "flaky-embed", messages: [{ role: "user", content: "Hi" }] }
        })
        expect(expectStatus(chat, 503).error).toMatchObject({ code: "provider_unavailable" })
      }))
  })
}
