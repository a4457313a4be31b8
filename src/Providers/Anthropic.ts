/**
 * Anthropic's API: `GET /v1/models` with `x-api-key` and
 * `anthropic-version: 2023-06-01`, paginated (`has_more`, `last_id`, `after_id`).
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Redacted, Schema } from "effect"
import { ProviderError } from "../Models/Errors.js"
import { type DiscoveredModel, joinUrl, type ProviderClient, type ProviderConnection, requestJson } from "./Client.js"

export const anthropicVersion = "2023-06-01"

const ModelsPage = Schema.Struct({
  data: Schema.Array(Schema.Struct({
    id: Schema.String,
    display_name: Schema.optional(Schema.NullOr(Schema.String)),
    created_at: Schema.optional(Schema.NullOr(Schema.String))
  })),
  has_more: Schema.optional(Schema.Boolean),
  last_id: Schema.optional(Schema.NullOr(Schema.String))
})

/** More pages than any real listing has: a provider that never stops paginating is broken. */
const maxPages = 50

export const make = (http: HttpClient.HttpClient, connection: ProviderConnection): ProviderClient => {
  const page = (afterId: string | null) =>
    requestJson(
      http,
      connection,
      HttpClientRequest.get(joinUrl(connection.baseUrl, "/v1/models")).pipe(
        HttpClientRequest.setUrlParams({ limit: "1000", ...(afterId ? { after_id: afterId } : {}) }),
        HttpClientRequest.setHeaders({
          "anthropic-version": anthropicVersion,
          ...(connection.credential._tag === "Some" ? { "x-api-key": Redacted.value(connection.credential.value) } : {})
        })
      ),
      ModelsPage
    )

  const listModels = Effect.gen(function*() {
    const models: Array<DiscoveredModel> = []
    let afterId: string | null = null
    for (let pages = 0; pages < maxPages; pages++) {
      const answer: typeof ModelsPage.Type = yield* page(afterId)
      for (const entry of answer.data) {
        models.push({
          providerModel: entry.id,
          displayName: entry.display_name ?? entry.id,
          contextWindow: null,
          capabilities: ["completion", "vision"],
          metadata: entry.created_at ? { createdAt: entry.created_at } : {}
        })
      }
      if (!answer.has_more || !answer.last_id) return models
      afterId = answer.last_id
    }
    return yield* new ProviderError({ message: `${connection.name} paginates without end`, upstreamStatus: null })
  })

  return { listModels, ping: Effect.asVoid(page(null)), runtime: Option.none() }
}
