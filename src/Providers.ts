/**
 * The adapters of every provider kind behind one `ProviderClient` interface
 * (`Providers/Client.ts`), chosen by the provider's kind.
 */
import { HttpClient } from "@effect/platform"
import { Effect } from "effect"
import * as Anthropic from "./Providers/Anthropic.js"
import type { ProviderClient, ProviderConnection } from "./Providers/Client.js"
import * as Ollama from "./Providers/Ollama.js"
import * as OpenAi from "./Providers/OpenAi.js"

export class ProviderClients extends Effect.Service<ProviderClients>()("Providers/ProviderClients", {
  effect: Effect.gen(function*() {
    const http = yield* HttpClient.HttpClient
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
