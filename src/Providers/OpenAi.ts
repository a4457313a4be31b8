/**
 * OpenAI's API and the servers that copy it (vLLM, llama.cpp server, LM
 * Studio, OpenRouter, Groq…): `GET /v1/models` with a bearer credential.
 * Context windows are read where a server reports them (`context_length`,
 * `max_model_len`, `context_window`).
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Schema } from "effect"
import {
  type DiscoveredModel,
  joinUrl,
  type ProviderClient,
  type ProviderConnection,
  requestJson,
  withBearer
} from "./Client.js"

const ModelsResponse = Schema.Struct({
  data: Schema.Array(Schema.Struct({
    id: Schema.String,
    owned_by: Schema.optional(Schema.NullOr(Schema.String)),
    created: Schema.optional(Schema.NullOr(Schema.Number)),
    context_length: Schema.optional(Schema.NullOr(Schema.Number)),
    max_model_len: Schema.optional(Schema.NullOr(Schema.Number)),
    context_window: Schema.optional(Schema.NullOr(Schema.Number))
  }))
})

const positiveInt = (value: number | null | undefined): number | null =>
  typeof value === "number" && Number.isInteger(value) && value > 0 ? value : null

export const make = (http: HttpClient.HttpClient, connection: ProviderConnection): ProviderClient => {
  const models = requestJson(
    http,
    connection,
    withBearer(connection)(HttpClientRequest.get(joinUrl(connection.baseUrl, "/v1/models"))),
    ModelsResponse
  )
  return {
    listModels: Effect.map(models, ({ data }) =>
      data.map((entry): DiscoveredModel => ({
        providerModel: entry.id,
        displayName: entry.id,
        contextWindow: positiveInt(entry.context_length ?? entry.max_model_len ?? entry.context_window),
        capabilities: ["completion"],
        metadata: entry.owned_by ? { ownedBy: entry.owned_by } : {}
      }))),
    ping: Effect.asVoid(models),
    runtime: Option.none()
  }
}
