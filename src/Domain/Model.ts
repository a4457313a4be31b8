/** Model providers, the language models they serve, and named parameter presets. */
import { Model } from "@effect/sql"
import { Schema } from "effect"
import { JsonObjectColumn, OptionalDateTime, StringListColumn } from "./Fields.js"
import { IdInsert, LlmModelId, ModelConfigId, ProviderId, UserId } from "./Ids.js"

export const ProviderKind = Schema.Literal("ollama", "openai-compatible", "openai", "anthropic")
export type ProviderKind = typeof ProviderKind.Type

/** A connection to a model server. The credential is stored encrypted (AES-256-GCM) under a key id. */
export class Provider extends Model.Class<Provider>("Provider")({
  id: IdInsert(ProviderId),
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)),
  kind: ProviderKind,
  baseUrl: Schema.String,
  credentialCiphertext: Model.Sensitive(Schema.NullOr(Schema.String)),
  credentialKeyId: Model.Sensitive(Schema.NullOr(Schema.String)),
  credentialLast4: Schema.NullOr(Schema.String),
  enabled: Model.BooleanFromNumber,
  source: Schema.Literal("admin", "environment"),
  connectTimeoutMs: Schema.Int.pipe(Schema.positive()),
  requestTimeoutMs: Schema.Int.pipe(Schema.positive()),
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

export const ModelStatus = Schema.Literal("available", "loading", "running", "stopped", "error")
export type ModelStatus = typeof ModelStatus.Type

/** A language model served by a provider. */
export class LlmModel extends Model.Class<LlmModel>("LlmModel")({
  id: IdInsert(LlmModelId),
  providerId: ProviderId,
  providerModel: Schema.String,
  displayName: Schema.String,
  status: ModelStatus,
  statusMessage: Schema.NullOr(Schema.String),
  isLocal: Model.BooleanFromNumber,
  enabled: Model.BooleanFromNumber,
  contextWindow: Schema.NullOr(Schema.Int.pipe(Schema.positive())),
  capabilities: StringListColumn,
  metadata: JsonObjectColumn,
  lastSyncedAt: OptionalDateTime,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

/** Named generation parameters: global when `ownerId` is null, else personal. */
export class ModelConfig extends Model.Class<ModelConfig>("ModelConfig")({
  id: IdInsert(ModelConfigId),
  ownerId: Schema.NullOr(UserId),
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)),
  modelId: Schema.NullOr(LlmModelId),
  systemPrompt: Schema.NullOr(Schema.String),
  temperature: Schema.NullOr(Schema.Number.pipe(Schema.between(0, 2))),
  topP: Schema.NullOr(Schema.Number.pipe(Schema.between(0, 1))),
  maxTokens: Schema.NullOr(Schema.Int.pipe(Schema.positive())),
  stop: StringListColumn,
  extraParams: JsonObjectColumn,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}
