/**
 * The adapters of every provider kind behind one `ProviderClient` interface
 * (`Providers/Client.ts`), chosen by the provider's kind (the development
 * model by its base URL), each chat and embedding made resilient
 * (`Providers/Resilience.ts`) with one circuit breaker per provider, held here.
 */
import { FetchHttpClient, HttpClient } from "@effect/platform"
import { Effect, Option, Redacted } from "effect"
import { AppConfig } from "./Config.js"
import * as Anthropic from "./Providers/Anthropic.js"
import type { ChatRequest } from "./Providers/Chat.js"
import { type ProviderClient, type ProviderConnection, streamOf } from "./Providers/Client.js"
import * as Development from "./Providers/Development.js"
import type { EmbedRequest } from "./Providers/Embeddings.js"
import * as Ollama from "./Providers/Ollama.js"
import * as OpenAi from "./Providers/OpenAi.js"
import { type CircuitBreaker, makeCircuitBreaker, resilient, resilientCall } from "./Providers/Resilience.js"

export class ProviderClients extends Effect.Service<ProviderClients>()("Providers/ProviderClients", {
  effect: Effect.gen(function*() {
    const { chat: settings } = yield* AppConfig
    // Redirects are not followed: a provider answering 3xx is reported as an error, and a
    // credential header is never replayed to another host. (The fetch client reads its options
    // from the calling fiber, so they are provided around each request.)
    const http = (yield* HttpClient.HttpClient).pipe(
      HttpClient.transformResponse(Effect.provideService(FetchHttpClient.RequestInit, { redirect: "manual" }))
    )

    const timeouts = { firstChunk: settings.firstChunkTimeout, idle: settings.idleTimeout }
    const adapterFor = (connection: ProviderConnection): ProviderClient => {
      if (connection.baseUrl === Development.developmentBaseUrl) return Development.make()
      switch (connection.kind) {
        case "ollama":
          return Ollama.make(http, connection, timeouts)
        case "anthropic":
          return Anthropic.make(http, connection, timeouts)
        case "openai":
        case "openai-compatible":
          return OpenAi.make(http, connection, timeouts)
      }
    }

    // One breaker per provider, whichever client object a caller holds.
    const breakers = new Map<string, CircuitBreaker>()
    const breakerOf = (connection: ProviderConnection) => {
      const key = `${connection.name}\n${connection.baseUrl}`
      const breaker = breakers.get(key) ?? makeCircuitBreaker(connection.name, settings)
      breakers.set(key, breaker)
      return breaker
    }

    const build = (connection: ProviderConnection): ProviderClient => {
      const client = adapterFor(connection)
      const breaker = breakerOf(connection)
      const answer = resilient(settings, breaker, client.answer)
      const embedder = Option.map(client.embedder, (embedder) => ({
        ...embedder,
        embed: (request: EmbedRequest) => resilientCall(settings, breaker, embedder.embed(request))
      }))
      const tokenCounter = Option.map(
        client.tokenCounter,
        (count) => (request: ChatRequest) => resilientCall(settings, breaker, count(request))
      )
      return { ...client, answer, chat: streamOf(answer), embedder, tokenCounter }
    }

    // A client is built once per connection (an adapter compiles its decoders): every turn asks
    // for one. Keyed by everything a client is made of, so a changed provider gets a new one; the
    // key holds the decrypted credential, which never leaves this map.
    const built = new Map<string, ProviderClient>()
    const maxBuilt = 256
    const forConnection = (connection: ProviderConnection): ProviderClient => {
      const key = [
        connection.kind,
        connection.name,
        connection.baseUrl,
        connection.connectTimeoutMs,
        connection.requestTimeoutMs,
        Option.match(connection.credential, { onNone: () => "", onSome: (secret) => `:${Redacted.value(secret)}` })
      ].join("\n")
      const cached = built.get(key)
      if (cached !== undefined) return cached
      if (built.size >= maxBuilt) built.clear()
      const client = build(connection)
      built.set(key, client)
      return client
    }
    return { forConnection } as const
  })
}) {}
