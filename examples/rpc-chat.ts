/**
 * A typed client of Web+ over RPC, with no hand-written client code: it signs
 * in, starts a chat and prints the answer's tokens as they stream in.
 *
 *   WEBPLUS_URL=http://127.0.0.1:3000 WEBPLUS_LOGIN=you@example.com WEBPLUS_PASSWORD=… \
 *     npx tsx examples/rpc-chat.ts "Tell me a joke"
 *
 * It imports only `src/Rpc/Api.ts` (schemas) from the server. `WEBPLUS_MODEL_ID`
 * picks a model; otherwise the server chooses (the development model, when it
 * is on, answers without an LLM).
 */
import { FetchHttpClient } from "@effect/platform"
import { NodeRuntime } from "@effect/platform-node"
import { RpcClient, RpcSerialization } from "@effect/rpc"
import { Config, Console, Effect, Layer, Option, Redacted, Stream } from "effect"
import type { LlmModelId } from "../src/Domain/Ids.js"
import { WebPlusRpcs } from "../src/Rpc/Api.js"

const program = Effect.gen(function*() {
  const login = yield* Config.string("WEBPLUS_LOGIN")
  const password = yield* Config.redacted("WEBPLUS_PASSWORD")
  const modelId = yield* Config.option(Config.string("WEBPLUS_MODEL_ID"))
  const question = process.argv.slice(2).join(" ") || "Hello!"

  const client = yield* RpcClient.make(WebPlusRpcs)
  const { accessToken } = yield* client.login({ login, password })
  const signedIn = { authorization: `Bearer ${Redacted.value(accessToken)}` }

  yield* client.newChat({
    content: question,
    ...(Option.isSome(modelId) ? { modelId: modelId.value as LlmModelId } : {})
  }).pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "start":
          return Console.error(`conversation ${event.conversationId}, answer ${event.answer.id}`)
        case "delta":
          return Effect.sync(() => process.stdout.write(event.text))
        case "error":
          return Console.error(`\n${event.error._tag}: ${event.error.message}`)
        case "done":
          return Console.log(`\n[${event.message.status}]`)
        default:
          return Effect.void
      }
    }),
    RpcClient.withHeaders(signedIn)
  )
})

const ProtocolLive = Layer.unwrapEffect(
  Effect.map(
    Config.string("WEBPLUS_URL").pipe(Config.withDefault("http://127.0.0.1:3000")),
    (url) => RpcClient.layerProtocolHttp({ url: `${url.replace(/\/+$/, "")}/rpc` })
  )
).pipe(Layer.provide([RpcSerialization.layerNdjson, FetchHttpClient.layer]))

program.pipe(Effect.scoped, Effect.provide(ProtocolLive), NodeRuntime.runMain)
