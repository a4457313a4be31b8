/**
 * `ModelRegistry.resolve`, what the chat engine asks for: a model the caller
 * may use, with its provider's connection and the credential opened (and
 * redacted), on both dialects, through the services the server runs; and how
 * long what it read is kept.
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Option, Redacted } from "effect"
import { AppConfig } from "../src/Config.js"
import { Actor, CurrentActor, type Permission } from "../src/Domain/Actor.js"
import { generateUuid, type LlmModelId, UserId } from "../src/Domain/Ids.js"
import { RoleName } from "../src/Domain/User.js"
import { ServicesLive } from "../src/Http.js"
import { MigrationsLive } from "../src/Migrations.js"
import { ModelRegistry } from "../src/Models.js"
import {
  CreateModelPayload,
  CreateProviderPayload,
  UpdateModelPayload,
  UpdateProviderPayload
} from "../src/Models/Api.js"
import { Secrets } from "../src/Secrets.js"
import { dialects, freshDatabase, freshDirectory } from "./fixtures/Database.js"

/** How long a resolved model is kept here (`MODEL_CACHE_TTL`). */
const cacheTtlMs = 400

const services = (dialect: (typeof dialects)[number]) =>
  Layer.unwrapScoped(Effect.map(freshDirectory, (dataDir) =>
    ServicesLive.pipe(
      Layer.provide(MigrationsLive),
      Layer.provideMerge(freshDatabase(dialect)),
      Layer.provideMerge(Secrets.Default),
      Layer.provideMerge(AppConfig.Default),
      Layer.provide(NodeContext.layer),
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(
        new Map([
          ["NODE_ENV", "test"],
          ["DATA_DIR", dataDir],
          ["MODEL_STATUS_POLL_INTERVAL", "0 seconds"],
          ["MODEL_CACHE_TTL", `${cacheTtlMs} millis`]
        ])
      )))
    )))

const newUser = (role: "admin" | "user") =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const id = UserId.make(yield* generateUuid)
    yield* sql`INSERT INTO users (id, email, username, role_id, terms_accepted_at)
               SELECT ${id}, ${`${id}@example.com`}, ${`u${id.slice(-12)}`}, id, ${new Date().toISOString()}
               FROM roles WHERE name = ${role}`
    return id
  }).pipe(Effect.orDie)

const as = (userId: UserId, role: "admin" | "user", permissions: ReadonlyArray<Permission>) =>
  Effect.provideService(CurrentActor, new Actor({ userId, role: RoleName.make(role), permissions, via: "session" }))

const adminPermissions: ReadonlyArray<Permission> = ["admin:providers", "admin:models", "models:read", "models:use"]

for (const dialect of dialects) {
  describe(`resolve on ${dialect}`, () => {
    layer(services(dialect), { excludeTestServices: true })((it) => {
      it.effect("hands over the model, its provider and the opened credential, to users allowed to chat", () =>
        Effect.gen(function*() {
          const registry = yield* ModelRegistry
          const admin = yield* newUser("admin")
          const user = yield* newUser("user")
          const credential = "sk-resolve-0123456789-abcd"
          const provider = yield* registry.createProvider(
            new CreateProviderPayload({
              name: "resolve-openai",
              kind: "openai",
              baseUrl: "https://api.example.com/v1",
              credential: Redacted.make(credential),
              enabled: true,
              connectTimeoutMs: 1_000,
              requestTimeoutMs: 5_000
            })
          ).pipe(as(admin, "admin", adminPermissions))
          const model = yield* registry.createModel(
            new CreateModelPayload({ providerId: provider.id, providerModel: "gpt-x", enabled: true })
          ).pipe(as(admin, "admin", adminPermissions))

          const resolved = yield* registry.resolve(model.id as LlmModelId).pipe(
            as(user, "user", ["models:read", "models:use"])
          )
          expect(resolved.model.providerModel).toBe("gpt-x")
          expect(resolved.connection).toMatchObject({
            kind: "openai",
            baseUrl: "https://api.example.com/v1",
            connectTimeoutMs: 1_000,
            requestTimeoutMs: 5_000
          })
          expect(Option.map(resolved.connection.credential, Redacted.value)).toEqual(Option.some(credential))
          expect(JSON.stringify(resolved.connection)).not.toContain(credential)
          expect(String(resolved.connection.credential)).not.toContain(credential)

          // A key without `models:use` may not; a disabled model is not found for users.
          const readOnly = yield* Effect.exit(
            registry.resolve(model.id as LlmModelId).pipe(
              as(user, "user", ["models:read"])
            )
          )
          expect(Exit.isFailure(readOnly) && readOnly.cause._tag === "Fail" && readOnly.cause.error._tag).toBe(
            "Forbidden"
          )
          yield* registry.updateModel(model.id as LlmModelId, new UpdateModelPayload({ enabled: false })).pipe(
            as(admin, "admin", adminPermissions)
          )
          const disabled = yield* Effect.exit(
            registry.resolve(model.id as LlmModelId).pipe(
              as(user, "user", ["models:read", "models:use"])
            )
          )
          expect(Exit.isFailure(disabled) && disabled.cause._tag === "Fail" && disabled.cause.error._tag).toBe(
            "NotFound"
          )
        }))

      it.effect("keeps what it read for MODEL_CACHE_TTL, and forgets it at once when this instance changes it", () =>
        Effect.gen(function*() {
          const registry = yield* ModelRegistry
          const sql = yield* SqlClient.SqlClient
          const admin = yield* newUser("admin")
          const user = yield* newUser("user")
          const asAdmin = as(admin, "admin", adminPermissions)
          const asUser = as(user, "user", ["models:read", "models:use"])
          const provider = yield* registry.createProvider(
            new CreateProviderPayload({ name: "cached", kind: "openai-compatible", baseUrl: "http://127.0.0.1:9/v1" })
          ).pipe(asAdmin)
          const model = yield* registry.createModel(
            new CreateModelPayload({ providerId: provider.id, providerModel: "kept", enabled: true })
          ).pipe(asAdmin)
          const id = model.id as LlmModelId
          expect((yield* registry.resolve(id).pipe(asUser)).connection.baseUrl).toBe("http://127.0.0.1:9/v1")

          // Changed through this instance: the next turn sees it.
          yield* registry.updateProvider(provider.id, new UpdateProviderPayload({ baseUrl: "http://127.0.0.1:10/v1" }))
            .pipe(asAdmin)
          expect((yield* registry.resolve(id).pipe(asUser)).connection.baseUrl).toBe("http://127.0.0.1:10/v1")

          // Changed by another instance (straight in the database): seen once what was read has expired.
          yield* sql`UPDATE llm_models SET enabled = FALSE WHERE id = ${id}`
          expect((yield* registry.resolve(id).pipe(asUser)).model.enabled).toBe(true)
          yield* Effect.sleep(`${cacheTtlMs + 100} millis`)
          const expired = yield* Effect.exit(registry.resolve(id).pipe(asUser))
          expect(Exit.isFailure(expired) && expired.cause._tag === "Fail" && expired.cause.error._tag).toBe("NotFound")
        }))
    })
  })
}
