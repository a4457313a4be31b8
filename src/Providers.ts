/**
 * The adapters of every provider kind behind one `ProviderClient` interface
 * (`Providers/Client.ts`), chosen by the provider's kind.
 */
import { FetchHttpClient, HttpClient } from "@effect/platform"
import { Effect } from "effect"
import * as Anthropic from "./Providers/Anthropic.js"
import type { ProviderClient, ProviderConnection } from "./Providers/Client.js"
import * as Ollama from "./Providers/Ollama.js"
import * as OpenAi from "./Providers/OpenAi.js"

export class ProviderClients extends Effect.Service<ProviderClients>()("Providers/ProviderClients", {
  effect: Effect.gen(function*() {
    // Redirects are not followed: a provider answering 3xx is reported as an error, and a
    // credential header is never replayed to another host. (The fetch client reads its options
    // from the calling fiber, so they are provided around each request.)
    const http = (yield* HttpClient.HttpClient).pipe(
      HttpClient.transformResponse(Effect.provideService(FetchHttpClient.RequestInit, { redirect: "manual" }))
    )
    const forConnection = (connection: ProviderConnection): ProviderClient => {
      switch (connection.kind) {
        case "ollama":
          return Ollama.make(http, connection)
        case "anthropic":
          return Anthropic.make(http, connection)
        case "openai":
        case "openai-compatible":
          return OpenAi.make(http, connection)
      }
    }
    return { forConnection } as const
  })
}) {}
