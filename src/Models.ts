/**
 * The model registry: which providers exist, which models they serve, their
 * status, and the named presets users pick. Policies are applied here, so any
 * transport gets the same rules; status changes are published as events.
 */
import { Model, SqlClient } from "@effect/sql"
import { Clock, DateTime, Duration, Effect, FiberSet, Option, Schedule, Stream } from "effect"
import { AuditLog } from "./Audit.js"
import { requirePermission } from "./Auth/Policy.js"
import { AppConfig } from "./Config.js"
import { type Actor, CurrentActor } from "./Domain/Actor.js"
import {
  Conflict,
  FieldIssue,
  type Forbidden,
  invalid as invalidField,
  NotFound,
  orNotFound,
  ValidationError
} from "./Domain/Errors.js"
import { generateUuid, type LlmModelId, type ModelConfigId, ProviderId } from "./Domain/Ids.js"
import { LlmModel, ModelConfig, type ModelStatus, Provider, type ProviderKind } from "./Domain/Model.js"
import {
  type CreateModelConfigPayload,
  type CreateModelPayload,
  type CreateProviderPayload,
  ModelConfigView,
  ModelView,
  ProviderHealth,
  ProviderView,
  SyncResult,
  type UpdateModelConfigPayload,
  type UpdateModelPayload,
  type UpdateProviderPayload
} from "./Models/Api.js"
import { CredentialCipher, SealContext } from "./Models/CredentialCipher.js"
import type { ProviderFailure } from "./Models/Errors.js"
import { EventHub, ModelPullEvent, ModelRemovedEvent, ModelStatusEvent } from "./Models/Events.js"
import { ModelConfigsRepo } from "./Models/ModelConfigsRepo.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { ProvidersRepo } from "./Models/ProvidersRepo.js"
import { ProviderClients } from "./Providers.js"
import type { LocalRuntime, ProviderClient, ProviderConnection } from "./Providers/Client.js"
import { inTransaction, storedNow, transactionLock } from "./Sql.js"

export const toProviderView = (provider: Provider) =>
  new ProviderView({
    id: provider.id,
    name: provider.name,
    kind: provider.kind,
    baseUrl: provider.baseUrl,
    hasCredential: provider.credentialCiphertext !== null,
    credentialLast4: provider.credentialCiphertext !== null ? provider.credentialLast4 : null,
    enabled: provider.enabled,
    source: provider.source,
    connectTimeoutMs: provider.connectTimeoutMs,
    requestTimeoutMs: provider.requestTimeoutMs,
    createdAt: provider.createdAt,
    updatedAt: provider.updatedAt
  })

/** A row without the timestamps the repository sets itself, to build its update from. */
const editable = <T extends { readonly createdAt: unknown; readonly updatedAt: unknown }>(
  row: T
): Omit<T, "createdAt" | "updatedAt"> => {
  const { createdAt: _createdAt, updatedAt: _updatedAt, ...rest } = row
  return rest
}

/** The names of the fields a partial update sets (for the audit trail: names only, never values). */
const changedFields = (payload: object): Array<string> =>
  Object.entries(payload).filter(([, value]) => value !== undefined).map(([key]) => key)

/** Fields an operator changed by hand, kept in the model's metadata so a sync leaves them alone. */
const editedFieldsKey = "editedFields"

const editedFieldsOf = (model: LlmModel): ReadonlyArray<string> => {
  const value = model.metadata[editedFieldsKey]
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : []
}

export const toModelView = (model: LlmModel) =>
  new ModelView({
    id: model.id,
    providerId: model.providerId,
    providerModel: model.providerModel,
    displayName: model.displayName,
    status: model.status,
    statusMessage: model.statusMessage,
    isLocal: model.isLocal,
    enabled: model.enabled,
    contextWindow: model.contextWindow,
    capabilities: model.capabilities,
    metadata: model.metadata,
    lastSyncedAt: Option.getOrNull(model.lastSyncedAt),
    createdAt: model.createdAt,
    updatedAt: model.updatedAt
  })

export const toModelConfigView = (config: ModelConfig) =>
  new ModelConfigView({
    id: config.id,
    scope: config.ownerId === null ? "global" : "personal",
    name: config.name,
    modelId: config.modelId,
    systemPrompt: config.systemPrompt,
    temperature: config.temperature,
    topP: config.topP,
    maxTokens: config.maxTokens,
    stop: config.stop,
    extraParams: config.extraParams,
    createdAt: config.createdAt,
    updatedAt: config.updatedAt
  })

/** Parameters the server sets itself when it calls a provider: a preset cannot override them. */
const reservedParams = ["model", "messages", "prompt", "stream", "system", "tools"]

const invalid = (message: string, issues: ReadonlyArray<{ path: ReadonlyArray<string>; message: string }>) =>
  new ValidationError({ message, issues: issues.map((issue) => new FieldIssue(issue)) })

/** What a provider accepts, checked before a preset is stored (422 with the failing fields). */
const checkAgainstProvider = (
  kind: ProviderKind | null,
  model: LlmModel | null,
  config: Pick<ModelConfig, "temperature" | "topP" | "maxTokens" | "stop" | "extraParams">
) => {
  const issues: Array<{ path: ReadonlyArray<string>; message: string }> = []
  if (kind === "anthropic" && config.temperature !== null && config.temperature > 1) {
    issues.push({ path: ["temperature"], message: "Anthropic accepts a temperature from 0 to 1" })
  }
  if ((kind === "openai" || kind === "openai-compatible") && config.stop.length > 4) {
    issues.push({ path: ["stop"], message: "OpenAI-style APIs accept at most 4 stop sequences" })
  }
  if (kind === "anthropic" && config.stop.some((sequence) => sequence.trim().length === 0)) {
    issues.push({ path: ["stop"], message: "Anthropic refuses stop sequences made only of whitespace" })
  }
  if (model?.contextWindow != null && config.maxTokens !== null && config.maxTokens > model.contextWindow) {
    issues.push({
      path: ["maxTokens"],
      message: `The model's context window is ${model.contextWindow} tokens`
    })
  }
  for (const key of Object.keys(config.extraParams)) {
    if (reservedParams.includes(key)) {
      issues.push({ path: ["extraParams", key], message: `"${key}" is set by the server and cannot be preset` })
    }
  }
  return issues.length > 0
    ? Effect.fail(invalid("The preset does not fit what the provider accepts", issues))
    : Effect.void
}

/** A model and the connection to its provider, for the chat engine. */
export interface ResolvedModel {
  readonly model: LlmModel
  readonly provider: Provider
  readonly connection: ProviderConnection
  readonly client: ProviderClient
}

export class ModelRegistry extends Effect.Service<ModelRegistry>()("Models/ModelRegistry", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const providers = yield* ProvidersRepo
    const models = yield* ModelsRepo
    const configs = yield* ModelConfigsRepo
    const cipher = yield* CredentialCipher
    const clients = yield* ProviderClients
    const events = yield* EventHub
    const audit = yield* AuditLog
    const settings = yield* AppConfig
    // Background work (downloads) ends with the server.
    const background = yield* FiberSet.make()

    const now = storedNow

    /** Serialises the transactions that add a provider's models (sync, pull, by hand), so none adds one twice. */
    const lockModelsOf = (providerId: ProviderId) => transactionLock(sql, `models.${providerId}`)

    // A download or load cut short by a restart would otherwise stay `loading` (and block a new pull).
    // (Without the schema yet, with MIGRATE_ON_START=false, there is nothing to repair.)
    yield* models.failInterrupted("Interrupted by a server restart").pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("Could not check for interrupted model loads", cause))
    )

    const findProvider = (id: ProviderId) => providers.findById(id).pipe(orNotFound("No such provider"))
    const findModel = (id: LlmModelId) => models.findById(id).pipe(orNotFound("No such model"))

    const connectionOf = (provider: Provider): Effect.Effect<ProviderConnection> =>
      Effect.map(
        provider.credentialCiphertext !== null && provider.credentialKeyId !== null
          ? Effect.map(
            cipher.open(
              provider.credentialCiphertext,
              provider.credentialKeyId,
              SealContext.providerCredential(provider.id)
            ),
            Option.some
          )
          : Effect.succeedNone,
        (credential) => ({
          name: provider.name,
          kind: provider.kind,
          baseUrl: provider.baseUrl,
          credential,
          connectTimeoutMs: provider.connectTimeoutMs,
          requestTimeoutMs: provider.requestTimeoutMs
        })
      )

    const clientOf = (provider: Provider) => Effect.map(connectionOf(provider), clients.forConnection)

    const runtimeOf = (provider: Provider): Effect.Effect<Option.Option<LocalRuntime>> =>
      Effect.map(clientOf(provider), (client) => client.runtime)

    const statusEvent = (model: LlmModel, providerEnabled: boolean) =>
      Effect.map(now, (at) =>
        new ModelStatusEvent({
          modelId: model.id,
          providerId: model.providerId,
          providerModel: model.providerModel,
          status: model.status,
          statusMessage: model.statusMessage,
          enabled: model.enabled,
          usable: model.enabled && providerEnabled,
          at
        }))

    /** Reads the model back and announces its state. */
    const announce = (id: LlmModelId) =>
      Effect.gen(function*() {
        const model = yield* models.findById(id)
        if (Option.isNone(model)) return Option.none<LlmModel>()
        const provider = yield* providers.findById(model.value.providerId)
        yield* events.publish(yield* statusEvent(model.value, Option.exists(provider, (p) => p.enabled)))
        return model
      })

    const setStatus = (model: LlmModel, status: ModelStatus, message: string | null, enabled?: boolean) =>
      Effect.gen(function*() {
        const changed = model.status !== status || model.statusMessage !== message ||
          (enabled !== undefined && enabled !== model.enabled)
        if (changed) yield* models.setStatus(model.id, status, message, enabled)
        const updated = changed ? yield* announce(model.id) : Option.some(model)
        return Option.getOrElse(updated, () => model)
      })

    // --- providers

    const createProvider = (payload: CreateProviderPayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:providers")
        if (Option.isSome(yield* providers.findByName(payload.name))) {
          return yield* new Conflict({ message: "A provider with that name exists" })
        }
        // Its id first: the credential is sealed for this provider.
        const id = ProviderId.make(yield* generateUuid)
        const sealed = payload.credential ? cipher.seal(payload.credential, SealContext.providerCredential(id)) : null
        const provider = yield* providers.insert(Provider.insert.make({
          id: Model.Override(id),
          name: payload.name,
          kind: payload.kind,
          baseUrl: payload.baseUrl,
          credentialCiphertext: sealed?.ciphertext ?? null,
          credentialKeyId: sealed?.keyId ?? null,
          credentialLast4: sealed?.last4 ?? null,
          enabled: payload.enabled,
          source: "admin",
          connectTimeoutMs: payload.connectTimeoutMs,
          requestTimeoutMs: payload.requestTimeoutMs
        }))
        yield* audit.record({
          action: "provider.created",
          actor,
          target: { type: "provider", id: provider.id },
          metadata: { name: provider.name, kind: provider.kind, hasCredential: sealed !== null }
        })
        return toProviderView(provider)
      }).pipe(inTransaction(sql), Effect.withSpan("ModelRegistry.createProvider"))

    const listProviders = Effect.gen(function*() {
      yield* requirePermission("admin:providers")
      return { items: (yield* providers.list).map(toProviderView), nextCursor: null }
    }).pipe(Effect.withSpan("ModelRegistry.listProviders"))

    const getProvider = (id: ProviderId) =>
      Effect.gen(function*() {
        yield* requirePermission("admin:providers")
        return toProviderView(yield* findProvider(id))
      }).pipe(Effect.withSpan("ModelRegistry.getProvider"))

    const updateProvider = (id: ProviderId, payload: UpdateProviderPayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:providers")
        const provider = yield* findProvider(id)
        if (payload.name !== undefined && payload.name !== provider.name) {
          if (Option.isSome(yield* providers.findByName(payload.name))) {
            return yield* new Conflict({ message: "A provider with that name exists" })
          }
        }
        const sealed = payload.credential ? cipher.seal(payload.credential, SealContext.providerCredential(id)) : null
        const credential = payload.credential === undefined
          ? {
            credentialCiphertext: provider.credentialCiphertext,
            credentialKeyId: provider.credentialKeyId,
            credentialLast4: provider.credentialLast4
          }
          : {
            credentialCiphertext: sealed?.ciphertext ?? null,
            credentialKeyId: sealed?.keyId ?? null,
            credentialLast4: sealed?.last4 ?? null
          }
        const updated = yield* providers.update(Provider.update.make({
          ...editable(provider),
          ...credential,
          name: payload.name ?? provider.name,
          baseUrl: payload.baseUrl ?? provider.baseUrl,
          enabled: payload.enabled ?? provider.enabled,
          connectTimeoutMs: payload.connectTimeoutMs ?? provider.connectTimeoutMs,
          requestTimeoutMs: payload.requestTimeoutMs ?? provider.requestTimeoutMs
        }))
        yield* audit.record({
          action: "provider.updated",
          actor,
          target: { type: "provider", id },
          metadata: { fields: changedFields(payload) }
        })
        return { updated, enabledChanged: updated.enabled !== provider.enabled }
      }).pipe(
        inTransaction(sql),
        Effect.tap(({ enabledChanged, updated }) =>
          enabledChanged
            ? Effect.flatMap(
              models.list({ providerId: updated.id, status: null, usableOnly: false }),
              Effect.forEach((model) => Effect.flatMap(statusEvent(model, updated.enabled), events.publish))
            )
            : Effect.void
        ),
        Effect.map(({ updated }) => toProviderView(updated)),
        Effect.withSpan("ModelRegistry.updateProvider")
      )

    const deleteProvider = (id: ProviderId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:providers")
        const provider = yield* findProvider(id)
        const removed = yield* models.list({ providerId: id, status: null, usableOnly: false })
        yield* providers.delete(id)
        yield* audit.record({
          action: "provider.deleted",
          actor,
          target: { type: "provider", id },
          metadata: { name: provider.name }
        })
        return removed
      }).pipe(
        inTransaction(sql),
        Effect.flatMap((removed) =>
          Effect.forEach(removed, (model) =>
            Effect.flatMap(now, (at) =>
              events.publish(new ModelRemovedEvent({ modelId: model.id, providerId: model.providerId, at }))))
        ),
        Effect.asVoid,
        Effect.withSpan("ModelRegistry.deleteProvider")
      )

    const health = (id: ProviderId) =>
      Effect.gen(function*() {
        yield* requirePermission("admin:providers")
        const client = yield* clientOf(yield* findProvider(id))
        const [elapsed, result] = yield* Effect.timed(Effect.either(client.ping))
        return new ProviderHealth({
          reachable: result._tag === "Right",
          latencyMs: result._tag === "Right" ? Math.round(Duration.toMillis(elapsed)) : null,
          error: result._tag === "Left" ? { _tag: result.left._tag, message: result.left.message } : null,
          checkedAt: yield* DateTime.now
        })
      }).pipe(Effect.withSpan("ModelRegistry.health"))

    // --- models

    /**
     * Brings Ollama models in line with what Ollama reports as loaded: listed
     * ones are `running`; ones that were running and are no longer listed
     * (unloaded, expired) are `stopped`.
     */
    const reconcileRunning = (provider: Provider, running: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const registered = yield* models.list({ providerId: provider.id, status: null, usableOnly: false })
        for (const model of registered) {
          const loaded = running.includes(model.providerModel)
          if (loaded && model.status !== "running") yield* setStatus(model, "running", null)
          if (!loaded && model.status === "running") yield* setStatus(model, "stopped", null)
        }
      })

    type AuditActor = Actor | { readonly type: "system"; readonly id: null }

    const syncAs = (actor: AuditActor, id: ProviderId) =>
      Effect.gen(function*() {
        const provider = yield* findProvider(id)
        const client = yield* clientOf(provider)
        const discovered = yield* client.listModels
        const running = yield* Option.match(client.runtime, {
          onNone: () => Effect.succeed<ReadonlyArray<string>>([]),
          onSome: (runtime) => runtime.running
        })
        const at = yield* DateTime.now
        const isLocal = provider.kind === "ollama"
        const { added, touched, updated } = yield* Effect.gen(function*() {
          yield* lockModelsOf(provider.id)
          let added = 0
          let updated = 0
          const touched: Array<LlmModelId> = []
          for (const found of discovered) {
            const existing = yield* models.findByProviderModel(provider.id, found.providerModel)
            if (Option.isNone(existing)) {
              const inserted = yield* models.insert(LlmModel.insert.make({
                providerId: provider.id,
                providerModel: found.providerModel,
                displayName: found.displayName,
                status: running.includes(found.providerModel) ? "running" : "available",
                statusMessage: null,
                isLocal,
                enabled: true,
                contextWindow: found.contextWindow,
                capabilities: found.capabilities,
                metadata: found.metadata,
                lastSyncedAt: Option.some(at)
              }))
              touched.push(inserted.id)
              added++
            } else {
              const model = existing.value
              const edited = editedFieldsOf(model)
              // Listed again: an earlier failure (a provider that was down, a download that failed) is over.
              const recovered = model.status === "error"
              if (recovered) touched.push(model.id)
              yield* models.update(LlmModel.update.make({
                ...editable(model),
                ...(recovered
                  ? {
                    status: running.includes(model.providerModel) ? "running" as const : "available" as const,
                    statusMessage: null
                  }
                  : {}),
                contextWindow: edited.includes("contextWindow") ? model.contextWindow : found.contextWindow,
                capabilities: edited.includes("capabilities") ? model.capabilities : found.capabilities,
                metadata: { ...found.metadata, ...(edited.length > 0 ? { [editedFieldsKey]: edited } : {}) },
                lastSyncedAt: Option.some(at)
              }))
              updated++
            }
          }
          yield* audit.record({
            action: "provider.synced",
            actor,
            target: { type: "provider", id: provider.id },
            metadata: { added, updated }
          })
          return { added, updated, touched }
        }).pipe(inTransaction(sql))
        for (const modelId of touched) yield* announce(modelId)
        if (Option.isSome(client.runtime)) yield* reconcileRunning(provider, running)
        const all = yield* models.list({ providerId: provider.id, status: null, usableOnly: false })
        const listed = new Set(discovered.map((found) => found.providerModel))
        return new SyncResult({
          added,
          updated,
          unlisted: all.filter((model) => !listed.has(model.providerModel)).map((model) => model.providerModel),
          models: all.map(toModelView)
        })
      })

    const sync = (id: ProviderId) =>
      Effect.flatMap(requirePermission("admin:models"), (actor) => syncAs(actor, id)).pipe(
        Effect.withSpan("ModelRegistry.sync")
      )

    /** A sync the server starts itself (providers declared by the environment). */
    const syncAsSystem = (id: ProviderId) =>
      syncAs({ type: "system", id: null }, id).pipe(Effect.withSpan("ModelRegistry.syncAsSystem"))

    /**
     * Whether the actor may use the model: admins see every model, users the enabled ones of enabled
     * providers; an API key limited to some models, only those.
     */
    const visibleModel = (actor: Actor, id: LlmModelId) =>
      (!actor.mayUse(id)
        ? Effect.succeedNone
        : actor.can("admin:models")
        ? models.findById(id)
        : models.findUsable(id)).pipe(orNotFound("No such model"))

    const listModels = (
      query: { readonly status?: ModelStatus | undefined; readonly providerId?: ProviderId | undefined }
    ) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("models:read")
        const rows = yield* models.list({
          status: query.status ?? null,
          providerId: query.providerId ?? null,
          usableOnly: !actor.can("admin:models")
        })
        return { items: rows.filter((row) => actor.mayUse(row.id)).map(toModelView), nextCursor: null }
      }).pipe(Effect.withSpan("ModelRegistry.listModels"))

    const getModel = (id: LlmModelId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("models:read")
        return toModelView(yield* visibleModel(actor, id))
      }).pipe(Effect.withSpan("ModelRegistry.getModel"))

    const createModel = (payload: CreateModelPayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const provider = yield* findProvider(payload.providerId)
        yield* lockModelsOf(provider.id)
        if (Option.isSome(yield* models.findByProviderModel(provider.id, payload.providerModel))) {
          return yield* new Conflict({ message: "This provider already has that model" })
        }
        const edited = [
          ...(payload.displayName !== undefined ? ["displayName"] : []),
          ...(payload.contextWindow !== undefined ? ["contextWindow"] : []),
          ...(payload.capabilities !== undefined ? ["capabilities"] : [])
        ]
        const model = yield* models.insert(LlmModel.insert.make({
          providerId: provider.id,
          providerModel: payload.providerModel,
          displayName: payload.displayName ?? payload.providerModel,
          status: payload.enabled ? "available" : "stopped",
          statusMessage: null,
          isLocal: provider.kind === "ollama",
          enabled: payload.enabled,
          contextWindow: payload.contextWindow ?? null,
          capabilities: payload.capabilities ?? ["completion"],
          metadata: edited.length > 0 ? { [editedFieldsKey]: edited } : {},
          lastSyncedAt: Option.none()
        }))
        yield* audit.record({
          action: "model.created",
          actor,
          target: { type: "model", id: model.id },
          metadata: { providerId: provider.id, providerModel: model.providerModel }
        })
        return model
      }).pipe(
        inTransaction(sql),
        Effect.tap((model) => announce(model.id)),
        Effect.map(toModelView),
        Effect.withSpan("ModelRegistry.createModel")
      )

    const updateModel = (id: LlmModelId, payload: UpdateModelPayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const model = yield* findModel(id)
        const edited = new Set(editedFieldsOf(model))
        for (const field of ["displayName", "contextWindow", "capabilities"] as const) {
          if (payload[field] !== undefined) edited.add(field)
        }
        const enabled = payload.enabled ?? model.enabled
        const status: ModelStatus = model.isLocal
          ? model.status
          : enabled
          ? (model.status === "stopped" ? "available" : model.status)
          : "stopped"
        const updated = yield* models.update(LlmModel.update.make({
          ...editable(model),
          displayName: payload.displayName ?? model.displayName,
          enabled,
          status,
          contextWindow: payload.contextWindow !== undefined ? payload.contextWindow : model.contextWindow,
          capabilities: payload.capabilities ?? model.capabilities,
          metadata: { ...model.metadata, [editedFieldsKey]: Array.from(edited) }
        }))
        yield* audit.record({
          action: "model.updated",
          actor,
          target: { type: "model", id },
          metadata: { fields: changedFields(payload) }
        })
        return { updated, changed: updated.enabled !== model.enabled || updated.status !== model.status }
      }).pipe(
        inTransaction(sql),
        Effect.tap(({ changed, updated }) => changed ? announce(updated.id) : Effect.void),
        Effect.map(({ updated }) => toModelView(updated)),
        Effect.withSpan("ModelRegistry.updateModel")
      )

    const deleteModel = (id: LlmModelId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const model = yield* findModel(id)
        yield* models.delete(id)
        yield* audit.record({
          action: "model.deleted",
          actor,
          target: { type: "model", id },
          metadata: { providerModel: model.providerModel }
        })
        return model
      }).pipe(
        inTransaction(sql),
        Effect.flatMap((model) =>
          Effect.flatMap(now, (at) =>
            events.publish(new ModelRemovedEvent({ modelId: model.id, providerId: model.providerId, at })))
        ),
        Effect.withSpan("ModelRegistry.deleteModel")
      )

    /** Records a provider failure on the model (status `error`), then fails with it. */
    const failOn = (model: LlmModel) => (error: ProviderFailure) =>
      Effect.zipRight(setStatus(model, "error", error.message), Effect.fail(error))

    const start = (id: LlmModelId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const model = yield* findModel(id)
        const provider = yield* findProvider(model.providerId)
        const runtime = yield* runtimeOf(provider)
        yield* audit.record({ action: "model.started", actor, target: { type: "model", id } })
        if (Option.isNone(runtime)) return toModelView(yield* setStatus(model, "available", null, true))
        const loading = yield* setStatus(model, "loading", null, true)
        return yield* Effect.gen(function*() {
          yield* runtime.value.load(model.providerModel).pipe(Effect.catchAll(failOn(loading)))
          const running = yield* runtime.value.running.pipe(Effect.catchAll(failOn(loading)))
          return toModelView(
            running.includes(model.providerModel)
              ? yield* setStatus(loading, "running", null)
              : yield* setStatus(loading, "error", "Ollama loaded the model but does not list it as running")
          )
        }).pipe(
          // The caller went away mid-load: say so; the status read-back settles it later.
          Effect.onInterrupt(() => Effect.asVoid(setStatus(loading, "error", "The start was interrupted")))
        )
      }).pipe(Effect.withSpan("ModelRegistry.start"))

    const stop = (id: LlmModelId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const model = yield* findModel(id)
        const provider = yield* findProvider(model.providerId)
        const runtime = yield* runtimeOf(provider)
        yield* audit.record({ action: "model.stopped", actor, target: { type: "model", id } })
        if (Option.isNone(runtime)) return toModelView(yield* setStatus(model, "stopped", null, false))
        yield* runtime.value.unload(model.providerModel).pipe(Effect.catchAll(failOn(model)))
        const running = yield* runtime.value.running.pipe(Effect.catchAll(failOn(model)))
        return toModelView(
          running.includes(model.providerModel)
            ? yield* setStatus(model, "running", "Ollama still lists the model as running")
            : yield* setStatus(model, "stopped", null)
        )
      }).pipe(Effect.withSpan("ModelRegistry.stop"))

    /** Progress lines worth announcing: a new phase, a finished part, or one every `pullEventInterval`. */
    const pullEventInterval = Duration.millis(250)

    const pull = (providerId: ProviderId, name: string) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:models")
        const provider = yield* findProvider(providerId)
        const runtime = yield* runtimeOf(provider)
        if (Option.isNone(runtime)) {
          return yield* new Conflict({ message: "Only Ollama providers download models" })
        }
        const { created, model } = yield* Effect.gen(function*() {
          yield* lockModelsOf(provider.id)
          const existing = yield* models.findByProviderModel(provider.id, name)
          if (Option.isSome(existing)) {
            if (existing.value.status === "loading") {
              return yield* new Conflict({ message: "This model is already being downloaded or loaded" })
            }
            yield* models.setStatus(existing.value.id, "loading", "Downloading")
            return { created: false, model: existing.value }
          }
          const inserted = yield* models.insert(LlmModel.insert.make({
            providerId: provider.id,
            providerModel: name,
            displayName: name,
            status: "loading",
            statusMessage: "Downloading",
            isLocal: true,
            enabled: true,
            contextWindow: null,
            capabilities: ["completion"],
            metadata: {},
            lastSyncedAt: Option.none()
          }))
          return { created: true, model: inserted }
        }).pipe(inTransaction(sql))
        const loading = Option.getOrElse(yield* announce(model.id), () => model)
        yield* audit.record({
          action: "model.pulled",
          actor,
          target: { type: "model", id: model.id },
          metadata: { providerModel: name, created }
        })
        let lastStatus = ""
        let lastAt = 0
        const download = runtime.value.pull(name).pipe(
          Stream.runForEach((progress) =>
            Effect.gen(function*() {
              const nowMs = Date.now()
              const finished = progress.total !== null && progress.completed === progress.total
              if (
                progress.status === lastStatus && !finished && nowMs - lastAt < Duration.toMillis(pullEventInterval)
              ) {
                return
              }
              lastStatus = progress.status
              lastAt = nowMs
              yield* events.publish(
                new ModelPullEvent({
                  modelId: model.id,
                  providerId: provider.id,
                  providerModel: name,
                  status: progress.status,
                  total: progress.total,
                  completed: progress.completed,
                  at: yield* now
                })
              )
            })
          ),
          Effect.zipRight(runtime.value.describe(name).pipe(Effect.option)),
          Effect.flatMap((details) =>
            Effect.gen(function*() {
              if (Option.isSome(details)) {
                const current = yield* models.findById(model.id)
                if (Option.isSome(current)) {
                  const edited = editedFieldsOf(current.value)
                  yield* models.update(LlmModel.update.make({
                    ...editable(current.value),
                    contextWindow: edited.includes("contextWindow")
                      ? current.value.contextWindow
                      : details.value.contextWindow,
                    capabilities: edited.includes("capabilities")
                      ? current.value.capabilities
                      : details.value.capabilities,
                    lastSyncedAt: Option.some(yield* DateTime.now)
                  }))
                }
              }
              const current = yield* models.findById(model.id)
              if (Option.isSome(current)) yield* setStatus(current.value, "available", null)
            })
          ),
          Effect.catchAll((error) =>
            Effect.flatMap(models.findById(model.id), (current) =>
              Option.isSome(current)
                ? Effect.asVoid(setStatus(current.value, "error", `Download failed: ${error.message}`))
                : Effect.void)
          ),
          Effect.catchAllDefect((defect) => Effect.logError("Model download failed", defect))
        )
        yield* FiberSet.run(background, download)
        return toModelView(loading)
      }).pipe(Effect.withSpan("ModelRegistry.pull"))

    /** The current state of every model `actor` may see, for a client that just connected. */
    const snapshot = (actor: Actor) =>
      Effect.gen(function*() {
        const all = yield* models.list({ providerId: null, status: null, usableOnly: !actor.can("admin:models") })
        const rows = all.filter((model) => actor.mayUse(model.id))
        const enabledProviders = new Set((yield* providers.list).filter((p) => p.enabled).map((p) => p.id))
        return yield* Effect.forEach(rows, (model) => statusEvent(model, enabledProviders.has(model.providerId)))
      })

    // Every chat turn resolves its model: the model and its provider, as read, are kept for
    // `MODEL_CACHE_TTL`, and forgotten as soon as this instance writes either table.
    const resolveTtl = Duration.toMillis(settings.models.resolveCacheTtl)
    const resolved = new Map<
      LlmModelId,
      { readonly entry: ResolvedModel; readonly writes: number; readonly until: number }
    >()
    const maxResolved = 1024
    const tableWrites = () => models.writes() + providers.writes()

    /** The model and its provider's connection (credential decrypted, redacted), whether usable or not. */
    const resolveAny = (id: LlmModelId): Effect.Effect<ResolvedModel, NotFound> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const writes = tableWrites()
        const kept = resolved.get(id)
        if (kept !== undefined && kept.writes === writes && kept.until > now) return Effect.succeed(kept.entry)
        return Effect.gen(function*() {
          const model = yield* findModel(id)
          const provider = yield* findProvider(model.providerId)
          const connection = yield* connectionOf(provider)
          const entry: ResolvedModel = { model, provider, connection, client: clients.forConnection(connection) }
          if (resolveTtl > 0) {
            if (resolved.size >= maxResolved) resolved.clear()
            resolved.set(id, { entry, writes, until: now + resolveTtl })
          }
          return entry
        })
      })

    /** The model and its provider's connection (credential decrypted, redacted), for a caller allowed to chat. */
    const resolve = (id: LlmModelId): Effect.Effect<ResolvedModel, NotFound | Forbidden, CurrentActor> =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("models:use")
        const entry = yield* resolveAny(id)
        // What `visibleModel` allows: an administrator any model, anyone else a usable one; a key its own.
        if (!actor.mayUse(id) || (!actor.can("admin:models") && !(entry.model.enabled && entry.provider.enabled))) {
          return yield* new NotFound({ message: "No such model" })
        }
        return entry
      })

    /**
     * The model used when none is named: a running one, else the first usable one (of those the
     * caller's key allows); null when there is none.
     */
    const firstUsableModelId = (actor: Actor) =>
      Effect.map(models.list({ providerId: null, status: null, usableOnly: true }), (all) => {
        const rows = all.filter((model) => actor.mayUse(model.id))
        return (rows.find((model) => model.status === "running") ?? rows[0])?.id ?? null
      })

    /**
     * The model a request asked for (`chosen`), else the first usable one, checked for the caller:
     * an unknown or unusable model, or none at all, is a 422 on `modelId`.
     */
    const usableModel = (
      chosen: LlmModelId | null | undefined
    ): Effect.Effect<ResolvedModel, ValidationError | Forbidden, CurrentActor> =>
      Effect.gen(function*() {
        const id = chosen ?? (yield* firstUsableModelId(yield* CurrentActor))
        if (id === null) {
          return yield* invalidField(["modelId"], "No model is available: an administrator has to add a provider first")
        }
        return yield* resolve(id).pipe(Effect.catchTag("NotFound", () => invalidField(["modelId"], "No such model")))
      })

    /** One round of reading Ollama's running models back, for every enabled Ollama provider. */
    const pollRunning = Effect.gen(function*() {
      for (const provider of yield* providers.list) {
        if (!provider.enabled || provider.kind !== "ollama") continue
        const runtime = yield* runtimeOf(provider)
        if (Option.isNone(runtime)) continue
        yield* runtime.value.running.pipe(
          Effect.flatMap((running) => reconcileRunning(provider, running)),
          Effect.catchAll((error) =>
            Effect.logDebug("Ollama status poll failed").pipe(
              Effect.annotateLogs({ provider: provider.name, error: error._tag })
            )
          )
        )
      }
    })

    if (Duration.toMillis(settings.models.statusPollInterval) > 0) {
      yield* FiberSet.run(
        background,
        pollRunning.pipe(
          Effect.catchAllCause((cause) => Effect.logWarning("Model status poll failed", cause)),
          Effect.repeat(Schedule.spaced(settings.models.statusPollInterval)),
          Effect.delay(settings.models.statusPollInterval)
        )
      )
    }

    // --- model configs

    const findVisibleConfig = (actor: Actor, id: ModelConfigId) =>
      configs.findVisible(id, actor.userId).pipe(orNotFound("No such model config"))

    /** Global presets are changed by admins; personal ones by their owner. */
    const requireWritable = (config: ModelConfig) =>
      config.ownerId === null
        ? requirePermission("admin:model-configs")
        : requirePermission("models:use")

    const validateConfig = (
      actor: Actor,
      config: Pick<ModelConfig, "modelId" | "temperature" | "topP" | "maxTokens" | "stop" | "extraParams">
    ) =>
      Effect.gen(function*() {
        if (config.modelId === null) return yield* checkAgainstProvider(null, null, config)
        const model = yield* visibleModel(actor, config.modelId).pipe(
          Effect.catchTag("NotFound", () =>
            Effect.fail(invalid("No such model", [{ path: ["modelId"], message: "No such model" }])))
        )
        const provider = yield* findProvider(model.providerId).pipe(Effect.orDie)
        yield* checkAgainstProvider(provider.kind, model, config)
      })

    const listConfigs = Effect.gen(function*() {
      const actor = yield* requirePermission("models:read")
      return { items: (yield* configs.listVisible(actor.userId)).map(toModelConfigView), nextCursor: null }
    }).pipe(Effect.withSpan("ModelRegistry.listConfigs"))

    const getConfig = (id: ModelConfigId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("models:read")
        return toModelConfigView(yield* findVisibleConfig(actor, id))
      }).pipe(Effect.withSpan("ModelRegistry.getConfig"))

    const createConfig = (payload: CreateModelConfigPayload) =>
      Effect.gen(function*() {
        const actor = yield* (payload.scope === "global"
          ? requirePermission("admin:model-configs")
          : requirePermission("models:use"))
        const ownerId = payload.scope === "global" ? null : actor.userId
        yield* validateConfig(actor, payload)
        if (Option.isSome(yield* configs.findByName(payload.name, ownerId))) {
          return yield* new Conflict({ message: "A preset with that name exists" })
        }
        const config = yield* configs.insert(ModelConfig.insert.make({
          ownerId,
          name: payload.name,
          modelId: payload.modelId,
          systemPrompt: payload.systemPrompt,
          temperature: payload.temperature,
          topP: payload.topP,
          maxTokens: payload.maxTokens,
          stop: payload.stop,
          extraParams: payload.extraParams
        }))
        if (ownerId === null) {
          yield* audit.record({
            action: "model_config.created",
            actor,
            target: { type: "model_config", id: config.id },
            metadata: { name: config.name }
          })
        }
        return toModelConfigView(config)
      }).pipe(inTransaction(sql), Effect.withSpan("ModelRegistry.createConfig"))

    const updateConfig = (id: ModelConfigId, payload: UpdateModelConfigPayload) =>
      Effect.gen(function*() {
        const reader = yield* requirePermission("models:read")
        const config = yield* findVisibleConfig(reader, id)
        const actor = yield* requireWritable(config)
        const next = {
          ...config,
          name: payload.name ?? config.name,
          modelId: payload.modelId !== undefined ? payload.modelId : config.modelId,
          systemPrompt: payload.systemPrompt !== undefined ? payload.systemPrompt : config.systemPrompt,
          temperature: payload.temperature !== undefined ? payload.temperature : config.temperature,
          topP: payload.topP !== undefined ? payload.topP : config.topP,
          maxTokens: payload.maxTokens !== undefined ? payload.maxTokens : config.maxTokens,
          stop: payload.stop ?? config.stop,
          extraParams: payload.extraParams ?? config.extraParams
        }
        yield* validateConfig(actor, next)
        if (next.name !== config.name && Option.isSome(yield* configs.findByName(next.name, config.ownerId))) {
          return yield* new Conflict({ message: "A preset with that name exists" })
        }
        const updated = yield* configs.update(ModelConfig.update.make(editable(next)))
        if (config.ownerId === null) {
          yield* audit.record({ action: "model_config.updated", actor, target: { type: "model_config", id } })
        }
        return toModelConfigView(updated)
      }).pipe(inTransaction(sql), Effect.withSpan("ModelRegistry.updateConfig"))

    const deleteConfig = (id: ModelConfigId) =>
      Effect.gen(function*() {
        const reader = yield* requirePermission("models:read")
        const config = yield* findVisibleConfig(reader, id)
        const actor = yield* requireWritable(config)
        yield* configs.delete(id)
        if (config.ownerId === null) {
          yield* audit.record({ action: "model_config.deleted", actor, target: { type: "model_config", id } })
        }
      }).pipe(inTransaction(sql), Effect.withSpan("ModelRegistry.deleteConfig"))

    return {
      createProvider,
      listProviders,
      getProvider,
      updateProvider,
      deleteProvider,
      health,
      sync,
      syncAsSystem,
      pull,
      listModels,
      getModel,
      createModel,
      updateModel,
      deleteModel,
      start,
      stop,
      snapshot,
      resolve,
      resolveAny,
      firstUsableModelId,
      usableModel,
      pollRunning,
      listConfigs,
      getConfig,
      createConfig,
      updateConfig,
      deleteConfig
    } as const
  })
}) {}
