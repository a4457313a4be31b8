/**
 * Ollama's own API: `GET /api/tags` (installed models), `GET /api/ps` (loaded
 * models), `POST /api/show` (details, context length), `POST /api/generate`
 * with `keep_alive` to load (-1: until unloaded) or unload (0), and
 * `POST /api/pull` streaming NDJSON progress.
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Schema, Stream } from "effect"
import { ProviderError } from "../Models/Errors.js"
import {
  type DiscoveredModel,
  joinUrl,
  type ProviderClient,
  type ProviderConnection,
  requestJson,
  requestNdjson,
  requestVoid,
  withBearer
} from "./Client.js"

const TagsResponse = Schema.Struct({
  models: Schema.Array(Schema.Struct({
    name: Schema.String,
    model: Schema.optional(Schema.String),
    size: Schema.optional(Schema.Number),
    digest: Schema.optional(Schema.String),
    details: Schema.optional(Schema.Struct({
      family: Schema.optional(Schema.NullOr(Schema.String)),
      parameter_size: Schema.optional(Schema.NullOr(Schema.String)),
      quantization_level: Schema.optional(Schema.NullOr(Schema.String))
    }))
  }))
})

const PsResponse = Schema.Struct({
  models: Schema.Array(Schema.Struct({ name: Schema.String, model: Schema.optional(Schema.String) }))
})

const ShowResponse = Schema.Struct({
  model_info: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  capabilities: Schema.optional(Schema.Array(Schema.String))
})

const PullLine = Schema.Struct({
  status: Schema.optional(Schema.String),
  total: Schema.optional(Schema.Number),
  completed: Schema.optional(Schema.Number),
  error: Schema.optional(Schema.String)
})

/** `llama.context_length`, `qwen2.context_length`, …: the architecture prefixes the key. */
const contextLengthOf = (info: Record<string, unknown> | undefined): number | null => {
  for (const [key, value] of Object.entries(info ?? {})) {
    if (key.endsWith(".context_length") && typeof value === "number" && Number.isInteger(value) && value > 0) {
      return value
    }
  }
  return null
}

export const make = (http: HttpClient.HttpClient, connection: ProviderConnection): ProviderClient => {
  const url = (path: string) => joinUrl(connection.baseUrl, path)
  const get = (path: string) => withBearer(connection)(HttpClientRequest.get(url(path)))
  const post = (path: string, body: unknown) =>
    withBearer(connection)(HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post(url(path)), body))

  const tags = requestJson(http, connection, get("/api/tags"), TagsResponse)

  const describe = (model: string) =>
    Effect.map(
      requestJson(http, connection, post("/api/show", { model }), ShowResponse),
      (show): DiscoveredModel => ({
        providerModel: model,
        displayName: model,
        contextWindow: contextLengthOf(show.model_info),
        capabilities: show.capabilities ?? ["completion"],
        metadata: {}
      })
    )

  const listModels = Effect.flatMap(tags, ({ models }) =>
    Effect.forEach(models, (entry) =>
      // Details are a bonus: a model whose `show` fails is still listed.
      describe(entry.name).pipe(
        Effect.orElseSucceed(() => ({ contextWindow: null, capabilities: ["completion"] })),
        Effect.map((details): DiscoveredModel => ({
          providerModel: entry.name,
          displayName: entry.name,
          contextWindow: details.contextWindow,
          capabilities: details.capabilities,
          metadata: {
            ...(entry.size !== undefined ? { sizeBytes: entry.size } : {}),
            ...(entry.digest !== undefined ? { digest: entry.digest } : {}),
            ...(entry.details?.family ? { family: entry.details.family } : {}),
            ...(entry.details?.parameter_size ? { parameterSize: entry.details.parameter_size } : {}),
            ...(entry.details?.quantization_level ? { quantization: entry.details.quantization_level } : {})
          }
        }))
      ), { concurrency: 4 }))

  return {
    listModels,
    ping: Effect.asVoid(tags),
    runtime: Option.some({
      running: Effect.map(
        requestJson(http, connection, get("/api/ps"), PsResponse),
        ({ models }) => models.map((entry) => entry.name)
      ),
      load: (model) =>
        requestVoid(
          http,
          connection,
          post("/api/generate", { model, keep_alive: -1, stream: false }),
          connection.requestTimeoutMs
        ),
      unload: (model) =>
        requestVoid(
          http,
          connection,
          post("/api/generate", { model, keep_alive: 0, stream: false }),
          connection.requestTimeoutMs
        ),
      pull: (model) =>
        requestNdjson(
          http,
          connection,
          post("/api/pull", { model, stream: true }),
          PullLine,
          connection.requestTimeoutMs
        )
          .pipe(Stream.mapEffect((line) =>
            line.error !== undefined
              ? Effect.fail(
                new ProviderError({ message: `${connection.name} could not pull ${model}`, upstreamStatus: null })
              )
              : Effect.succeed({
                status: line.status ?? "",
                total: line.total ?? null,
                completed: line.completed ?? null
              })
          )),
      describe
    })
  }
}
