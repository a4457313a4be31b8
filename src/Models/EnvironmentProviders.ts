/**
 * Providers declared by the environment (`OLLAMA_URL`, `OPENAI_API_KEY` /
 * `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`), registered
 * at start-up, idempotently: one row per kind with `source = environment`,
 * updated when the environment changes, never duplicated. Their models are
 * then synced in the background.
 *
 * Without `OLLAMA_URL` (and unless `OLLAMA_AUTODETECT=false`), an Ollama at
 * its default address is registered if it answers within a second; the probe
 * runs in the background, so readiness never waits for it.
 *
 * The development model (`DEVELOPMENT_MODEL`, on outside production) is an
 * environment provider too, found by its base URL, with its one model synced
 * before start-up goes on; turned off, its provider is disabled.
 */
import { Model, SqlClient } from "@effect/sql"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { AppConfig } from "../Config.js"
import { generateUuid, ProviderId } from "../Domain/Ids.js"
import { Provider, type ProviderKind } from "../Domain/Model.js"
import { ModelRegistry } from "../Models.js"
import { ProviderClients } from "../Providers.js"
import { developmentBaseUrl } from "../Providers/Development.js"
import { inTransaction, transactionLock } from "../Sql.js"
import { CredentialCipher, SealContext } from "./CredentialCipher.js"
import { ProvidersRepo } from "./ProvidersRepo.js"

/** Where the embedded mode looks for an Ollama: its default address (a test points it at a loopback one). */
export class OllamaDefaultUrl extends Context.Reference<OllamaDefaultUrl>()("Models/OllamaDefaultUrl", {
  defaultValue: () => "http://127.0.0.1:11434"
}) {}

interface Declared {
  readonly kind: ProviderKind
  readonly name: string
  readonly baseUrl: string
  readonly credential: Option.Option<Redacted.Redacted<string>>
}

const names: Record<ProviderKind, string> = {
  ollama: "Ollama",
  openai: "OpenAI",
  "openai-compatible": "OpenAI-compatible",
  anthropic: "Anthropic"
}

export const EnvironmentProvidersLive = Layer.scopedDiscard(Effect.gen(function*() {
  const { chat, models: settings } = yield* AppConfig
  const sql = yield* SqlClient.SqlClient
  const providers = yield* ProvidersRepo
  const cipher = yield* CredentialCipher
  const clients = yield* ProviderClients
  const registry = yield* ModelRegistry

  // Instances starting together register each provider once.
  const register = (declared: Declared) =>
    Effect.gen(function*() {
      yield* transactionLock(sql, "environment-providers")
      const existing = yield* providers.findFromEnvironment(declared.kind)
      // A new row's id is chosen here: the credential is sealed for that provider.
      const id = Option.isSome(existing) ? existing.value.id : ProviderId.make(yield* generateUuid)
      const context = SealContext.providerCredential(id)
      const current = Option.isSome(existing) && existing.value.credentialCiphertext && existing.value.credentialKeyId
        ? Option.some(Redacted.value(
          yield* cipher.open(existing.value.credentialCiphertext, existing.value.credentialKeyId, context)
        ))
        : Option.none<string>()
      const wanted = Option.map(declared.credential, Redacted.value)
      const sameCredential = Option.getEquivalence<string>((a, b) => a === b)(current, wanted)
      const sealed = Option.map(declared.credential, (credential) => cipher.seal(credential, context))
      const credential = {
        credentialCiphertext: Option.getOrNull(Option.map(sealed, (s) => s.ciphertext)),
        credentialKeyId: Option.getOrNull(Option.map(sealed, (s) => s.keyId)),
        credentialLast4: Option.getOrNull(Option.flatMapNullable(sealed, (s) => s.last4))
      }
      if (Option.isSome(existing)) {
        const provider = existing.value
        if (provider.baseUrl === declared.baseUrl && sameCredential) return provider
        const { createdAt: _createdAt, updatedAt: _updatedAt, ...rest } = provider
        return yield* providers.update(Provider.update.make({
          ...rest,
          baseUrl: declared.baseUrl,
          ...(sameCredential ? {} : credential)
        }))
      }
      const taken = Option.isSome(yield* providers.findByName(declared.name))
      return yield* providers.insert(Provider.insert.make({
        id: Model.Override(id),
        name: taken ? `${declared.name} (environment)` : declared.name,
        kind: declared.kind,
        baseUrl: declared.baseUrl,
        ...credential,
        enabled: true,
        source: "environment",
        connectTimeoutMs: 10_000,
        requestTimeoutMs: 600_000
      }))
    }).pipe(
      inTransaction(sql),
      Effect.tap((provider) =>
        Effect.forkScoped(
          registry.syncAsSystem(provider.id).pipe(
            Effect.catchAll((error) =>
              Effect.logWarning("Could not list the models of a provider declared by the environment").pipe(
                Effect.annotateLogs({ provider: provider.name, error: error.message })
              )
            )
          )
        )
      )
    )

  const declared: Array<Declared> = []
  if (Option.isSome(settings.ollamaUrl)) {
    declared.push({ kind: "ollama", name: names.ollama, baseUrl: settings.ollamaUrl.value, credential: Option.none() })
  }
  if (Option.isSome(settings.openAiApiKey) || Option.isSome(settings.openAiBaseUrl)) {
    const custom = Option.isSome(settings.openAiBaseUrl)
    declared.push({
      kind: custom && Option.isNone(settings.openAiApiKey) ? "openai-compatible" : "openai",
      name: names.openai,
      baseUrl: Option.getOrElse(settings.openAiBaseUrl, () => "https://api.openai.com/v1"),
      credential: settings.openAiApiKey
    })
  }
  if (Option.isSome(settings.anthropicApiKey)) {
    declared.push({
      kind: "anthropic",
      name: names.anthropic,
      baseUrl: settings.anthropicBaseUrl,
      credential: settings.anthropicApiKey
    })
  }
  // A database not migrated yet (MIGRATE_ON_START=false) must not stop the server: readiness reports it.
  for (const entry of declared) {
    yield* register(entry).pipe(
      Effect.catchAllCause((cause) =>
        Effect.logWarning("Could not register a provider declared by the environment", cause).pipe(
          Effect.annotateLogs({ kind: entry.kind })
        )
      )
    )
  }

  const development = Effect.gen(function*() {
    yield* transactionLock(sql, "environment-providers")
    const existing = Option.getOrUndefined(yield* providers.findByBaseUrl(developmentBaseUrl))
    if (existing === undefined) {
      if (!chat.developmentModel) return Option.none()
      const taken = Option.isSome(yield* providers.findByName("Development"))
      return Option.some(
        yield* providers.insert(Provider.insert.make({
          name: taken ? "Development (environment)" : "Development",
          kind: "openai-compatible",
          baseUrl: developmentBaseUrl,
          credentialCiphertext: null,
          credentialKeyId: null,
          credentialLast4: null,
          enabled: true,
          source: "environment",
          connectTimeoutMs: 10_000,
          requestTimeoutMs: 600_000
        }))
      )
    }
    if (existing.enabled !== chat.developmentModel) {
      const { createdAt: _createdAt, updatedAt: _updatedAt, ...rest } = existing
      yield* providers.update(Provider.update.make({ ...rest, enabled: chat.developmentModel }))
    }
    return chat.developmentModel ? Option.some(existing) : Option.none()
  }).pipe(
    inTransaction(sql),
    // No network involved: synced at once, so the model is usable as soon as the server is.
    Effect.flatMap(
      Option.match({ onNone: () => Effect.void, onSome: (provider) => registry.syncAsSystem(provider.id) })
    ),
    Effect.catchAllCause((cause) => Effect.logWarning("Could not register the development model", cause))
  )
  yield* development

  if (Option.isNone(settings.ollamaUrl) && settings.ollamaAutodetect) {
    const defaultOllamaUrl = yield* OllamaDefaultUrl
    const probe = clients.forConnection({
      name: "Ollama",
      kind: "ollama",
      baseUrl: defaultOllamaUrl,
      credential: Option.none(),
      connectTimeoutMs: 1_000,
      requestTimeoutMs: 1_000
    }).ping
    yield* Effect.forkScoped(
      probe.pipe(
        Effect.zipRight(
          register({ kind: "ollama", name: names.ollama, baseUrl: defaultOllamaUrl, credential: Option.none() })
        ),
        Effect.tap(() => Effect.logInfo("Registered the Ollama answering at its default address")),
        Effect.ignore
      )
    )
  }
}))
