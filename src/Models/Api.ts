/**
 * The model registry's contract: providers (admins), the models they serve,
 * and named parameter presets. Credentials go in, never out: a provider shows
 * only whether it has one and its last four characters.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Conflict, Forbidden, NotFound } from "../Domain/Errors.js"
import { JsonObject } from "../Domain/Fields.js"
import { LlmModelId, ModelConfigId, ProviderId } from "../Domain/Ids.js"
import { ModelStatus, ProviderKind } from "../Domain/Model.js"
import { request } from "../Domain/Request.js"
import { ProviderError, ProviderTimeout, ProviderUnavailable, ProviderUnreachable } from "./Errors.js"

const BaseUrl = Schema.String.pipe(
  Schema.maxLength(2000),
  Schema.filter((value) => {
    try {
      const url = new URL(value)
      return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" && url.password === ""
        ? undefined
        : "Expected an http(s) URL without user or password (put the credential in `credential`)"
    } catch {
      return "Expected an absolute http(s) URL"
    }
  })
).annotations({ description: "e.g. http://127.0.0.1:11434, https://api.openai.com/v1, https://api.anthropic.com" })

const Credential = Schema.Redacted(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096))).annotations({
  description: "API key or token; stored encrypted, never returned"
})

const TimeoutMs = Schema.Int.pipe(Schema.between(100, 3_600_000))
const ProviderName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100))

export class ProviderView extends Schema.Class<ProviderView>("ProviderView")({
  id: ProviderId,
  name: Schema.String,
  kind: ProviderKind,
  baseUrl: Schema.String,
  hasCredential: Schema.Boolean,
  credentialLast4: Schema.NullOr(Schema.String),
  enabled: Schema.Boolean,
  source: Schema.Literal("admin", "environment"),
  connectTimeoutMs: Schema.Int,
  requestTimeoutMs: Schema.Int,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

export class CreateProviderPayload extends Schema.Class<CreateProviderPayload>("CreateProviderPayload")({
  name: ProviderName,
  kind: ProviderKind,
  baseUrl: BaseUrl,
  credential: Schema.optional(Credential),
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  connectTimeoutMs: Schema.optionalWith(TimeoutMs, { default: () => 10_000 }).annotations({
    description: "Bounds health checks, listings and the wait for a connection (ms)"
  }),
  requestTimeoutMs: Schema.optionalWith(TimeoutMs, { default: () => 600_000 }).annotations({
    description: "Bounds long calls such as loading a model, and silences within a stream (ms)"
  })
}) {}

export class UpdateProviderPayload extends Schema.Class<UpdateProviderPayload>("UpdateProviderPayload")({
  name: Schema.optional(ProviderName),
  baseUrl: Schema.optional(BaseUrl),
  credential: Schema.optional(Schema.NullOr(Credential)).annotations({ description: "null removes the credential" }),
  enabled: Schema.optional(Schema.Boolean),
  connectTimeoutMs: Schema.optional(TimeoutMs),
  requestTimeoutMs: Schema.optional(TimeoutMs)
}) {}

export class ProviderHealth extends Schema.Class<ProviderHealth>("ProviderHealth")({
  reachable: Schema.Boolean,
  latencyMs: Schema.NullOr(Schema.Int),
  error: Schema.NullOr(Schema.Struct({ _tag: Schema.String, message: Schema.String })),
  checkedAt: Schema.DateTimeUtc
}) {}

export class ModelView extends Schema.Class<ModelView>("ModelView")({
  id: LlmModelId,
  providerId: ProviderId,
  providerModel: Schema.String,
  displayName: Schema.String,
  status: ModelStatus,
  statusMessage: Schema.NullOr(Schema.String),
  isLocal: Schema.Boolean,
  enabled: Schema.Boolean,
  contextWindow: Schema.NullOr(Schema.Int),
  capabilities: Schema.Array(Schema.String),
  metadata: JsonObject,
  lastSyncedAt: Schema.NullOr(Schema.DateTimeUtc),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

export class SyncResult extends Schema.Class<SyncResult>("SyncResult")({
  added: Schema.Int,
  updated: Schema.Int,
  unlisted: Schema.Array(Schema.String).annotations({
    description: "Registered models the provider no longer lists (kept as they are)"
  }),
  models: Schema.Array(ModelView)
}) {}

export class PullPayload extends Schema.Class<PullPayload>("PullPayload")({
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200), Schema.pattern(/^[A-Za-z0-9._:/-]+$/))
    .annotations({ description: "The Ollama model to download, e.g. `llama3.2:1b`" })
}) {}

const ProviderModelName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))
const DisplayName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))
const ContextWindow = Schema.Int.pipe(Schema.between(1, 100_000_000))
const Capabilities = Schema.Array(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(50))).pipe(
  Schema.maxItems(20)
)

export class CreateModelPayload extends Schema.Class<CreateModelPayload>("CreateModelPayload")({
  providerId: ProviderId,
  providerModel: ProviderModelName,
  displayName: Schema.optional(DisplayName),
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  contextWindow: Schema.optional(Schema.NullOr(ContextWindow)),
  capabilities: Schema.optional(Capabilities)
}) {}

export class UpdateModelPayload extends Schema.Class<UpdateModelPayload>("UpdateModelPayload")({
  displayName: Schema.optional(DisplayName),
  enabled: Schema.optional(Schema.Boolean),
  contextWindow: Schema.optional(Schema.NullOr(ContextWindow)),
  capabilities: Schema.optional(Capabilities)
}) {}

export const ModelsQuery = request(Schema.Struct({
  status: Schema.optional(ModelStatus),
  providerId: Schema.optional(ProviderId)
}))

export class ModelConfigView extends Schema.Class<ModelConfigView>("ModelConfigView")({
  id: ModelConfigId,
  scope: Schema.Literal("global", "personal"),
  name: Schema.String,
  modelId: Schema.NullOr(LlmModelId),
  systemPrompt: Schema.NullOr(Schema.String),
  temperature: Schema.NullOr(Schema.Number),
  topP: Schema.NullOr(Schema.Number),
  maxTokens: Schema.NullOr(Schema.Int),
  stop: Schema.Array(Schema.String),
  extraParams: JsonObject,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

const configFields = {
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)),
  modelId: Schema.NullOr(LlmModelId),
  systemPrompt: Schema.NullOr(Schema.String.pipe(Schema.maxLength(100_000))),
  temperature: Schema.NullOr(Schema.Number.pipe(Schema.between(0, 2))),
  topP: Schema.NullOr(Schema.Number.pipe(Schema.between(0, 1))),
  maxTokens: Schema.NullOr(Schema.Int.pipe(Schema.between(1, 10_000_000))),
  stop: Schema.Array(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))).pipe(Schema.maxItems(16)),
  extraParams: JsonObject.annotations({
    description: "Provider-specific parameters passed through (e.g. Ollama `num_ctx`, OpenAI `seed`)"
  })
}

export class CreateModelConfigPayload extends Schema.Class<CreateModelConfigPayload>("CreateModelConfigPayload")({
  name: configFields.name,
  scope: Schema.optionalWith(Schema.Literal("global", "personal"), { default: () => "personal" as const })
    .annotations({ description: "global presets are for everyone and need `admin:model-configs`" }),
  modelId: Schema.optionalWith(configFields.modelId, { default: () => null }),
  systemPrompt: Schema.optionalWith(configFields.systemPrompt, { default: () => null }),
  temperature: Schema.optionalWith(configFields.temperature, { default: () => null }),
  topP: Schema.optionalWith(configFields.topP, { default: () => null }),
  maxTokens: Schema.optionalWith(configFields.maxTokens, { default: () => null }),
  stop: Schema.optionalWith(configFields.stop, { default: () => [] }),
  extraParams: Schema.optionalWith(configFields.extraParams, { default: () => ({}) })
}) {}

export class UpdateModelConfigPayload extends Schema.Class<UpdateModelConfigPayload>("UpdateModelConfigPayload")({
  name: Schema.optional(configFields.name),
  modelId: Schema.optional(configFields.modelId),
  systemPrompt: Schema.optional(configFields.systemPrompt),
  temperature: Schema.optional(configFields.temperature),
  topP: Schema.optional(configFields.topP),
  maxTokens: Schema.optional(configFields.maxTokens),
  stop: Schema.optional(configFields.stop),
  extraParams: Schema.optional(configFields.extraParams)
}) {}

/** The pagination shape for lists that always fit in one page. */
export const Whole = <A, I, R>(item: Schema.Schema<A, I, R>) =>
  Schema.Struct({ items: Schema.Array(item), nextCursor: Schema.Null })

const ProviderPath = request(Schema.Struct({ id: ProviderId }))
const ModelPath = request(Schema.Struct({ id: LlmModelId }))
const ConfigPath = request(Schema.Struct({ id: ModelConfigId }))

export class ProvidersApi extends HttpApiGroup.make("providers")
  .add(
    HttpApiEndpoint.post("createProvider", "/api/v1/providers")
      .setPayload(request(CreateProviderPayload))
      .addSuccess(ProviderView, { status: 201 })
      .addError(Conflict)
  )
  .add(HttpApiEndpoint.get("listProviders", "/api/v1/providers").addSuccess(Whole(ProviderView)))
  .add(
    HttpApiEndpoint.get("getProvider", "/api/v1/providers/:id").setPath(ProviderPath).addSuccess(ProviderView)
  )
  .add(
    HttpApiEndpoint.patch("updateProvider", "/api/v1/providers/:id")
      .setPath(ProviderPath)
      .setPayload(request(UpdateProviderPayload))
      .addSuccess(ProviderView)
      .addError(Conflict)
  )
  .add(
    HttpApiEndpoint.del("deleteProvider", "/api/v1/providers/:id")
      .setPath(ProviderPath)
      .addSuccess(HttpApiSchema.NoContent)
      .annotate(OpenApi.Summary, "Delete a provider and its models")
  )
  .add(
    HttpApiEndpoint.get("providerHealth", "/api/v1/providers/:id/health")
      .setPath(ProviderPath)
      .addSuccess(ProviderHealth)
      .annotate(OpenApi.Summary, "Whether the provider answers, and how fast")
  )
  .add(
    HttpApiEndpoint.post("syncProvider", "/api/v1/providers/:id/sync")
      .setPath(ProviderPath)
      .addSuccess(SyncResult)
      .annotate(OpenApi.Summary, "Discover the provider's models; operator edits are kept")
  )
  .add(
    HttpApiEndpoint.post("pullModel", "/api/v1/providers/:id/pull")
      .setPath(ProviderPath)
      .setPayload(request(PullPayload))
      .addSuccess(ModelView, { status: 202 })
      .addError(Conflict)
      .annotate(
        OpenApi.Summary,
        "Download an Ollama model: answers at once with the model `loading`; progress arrives as `model.pull` events"
      )
  )
  .addError(NotFound)
  .addError(Forbidden)
  .addError(ProviderUnreachable)
  .addError(ProviderTimeout)
  .addError(ProviderError)
  .addError(ProviderUnavailable)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Connections to model servers (admins)")
{}

export class ModelsApi extends HttpApiGroup.make("models")
  .add(
    HttpApiEndpoint.get("listModels", "/api/v1/models")
      .setUrlParams(ModelsQuery)
      .addSuccess(Whole(ModelView))
      .annotate(OpenApi.Summary, "The models you may use (admins with `admin:models` see all)")
  )
  .add(HttpApiEndpoint.get("getModel", "/api/v1/models/:id").setPath(ModelPath).addSuccess(ModelView))
  .add(
    HttpApiEndpoint.post("createModel", "/api/v1/models")
      .setPayload(request(CreateModelPayload))
      .addSuccess(ModelView, { status: 201 })
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Register a model by hand")
  )
  .add(
    HttpApiEndpoint.patch("updateModel", "/api/v1/models/:id")
      .setPath(ModelPath)
      .setPayload(request(UpdateModelPayload))
      .addSuccess(ModelView)
  )
  .add(
    HttpApiEndpoint.del("deleteModel", "/api/v1/models/:id").setPath(ModelPath).addSuccess(HttpApiSchema.NoContent)
  )
  .add(
    HttpApiEndpoint.post("startModel", "/api/v1/models/:id/start")
      .setPath(ModelPath)
      .addSuccess(ModelView)
      .annotate(OpenApi.Summary, "Ollama: load into memory. Remote APIs: enable")
  )
  .add(
    HttpApiEndpoint.post("stopModel", "/api/v1/models/:id/stop")
      .setPath(ModelPath)
      .addSuccess(ModelView)
      .annotate(OpenApi.Summary, "Ollama: unload from memory. Remote APIs: disable")
  )
  .addError(NotFound)
  .addError(Forbidden)
  .addError(ProviderUnreachable)
  .addError(ProviderTimeout)
  .addError(ProviderError)
  .addError(ProviderUnavailable)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Language models and their status")
{}

export class ModelConfigsApi extends HttpApiGroup.make("modelConfigs")
  .add(
    HttpApiEndpoint.get("listModelConfigs", "/api/v1/model-configs")
      .addSuccess(Whole(ModelConfigView))
      .annotate(OpenApi.Summary, "Global presets and your own")
  )
  .add(
    HttpApiEndpoint.post("createModelConfig", "/api/v1/model-configs")
      .setPayload(request(CreateModelConfigPayload))
      .addSuccess(ModelConfigView, { status: 201 })
      .addError(Conflict)
  )
  .add(
    HttpApiEndpoint.get("getModelConfig", "/api/v1/model-configs/:id").setPath(ConfigPath).addSuccess(ModelConfigView)
  )
  .add(
    HttpApiEndpoint.patch("updateModelConfig", "/api/v1/model-configs/:id")
      .setPath(ConfigPath)
      .setPayload(request(UpdateModelConfigPayload))
      .addSuccess(ModelConfigView)
      .addError(Conflict)
  )
  .add(
    HttpApiEndpoint.del("deleteModelConfig", "/api/v1/model-configs/:id")
      .setPath(ConfigPath)
      .addSuccess(HttpApiSchema.NoContent)
  )
  .addError(NotFound)
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Named generation presets: global (admins) or personal")
{}
