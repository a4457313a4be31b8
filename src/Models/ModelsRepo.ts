import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { type LlmModelId, ProviderId } from "../Domain/Ids.js"
import { LlmModel, ModelStatus } from "../Domain/Model.js"
import { storedNow, writeCounter } from "../Sql.js"

export const ModelFilter = Schema.Struct({
  status: Schema.NullOr(ModelStatus),
  providerId: Schema.NullOr(ProviderId),
  /** Only enabled models of enabled providers: what a user may pick. */
  usableOnly: Schema.Boolean
})
export type ModelFilter = typeof ModelFilter.Type

export class ModelsRepo extends Effect.Service<ModelsRepo>()("Models/ModelsRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(LlmModel, {
      tableName: "llm_models",
      spanPrefix: "ModelsRepo",
      idColumn: "id"
    })

    /** What a user may pick: an enabled model of an enabled provider. */
    const usable = sql`llm_models.enabled AND providers.enabled`
    const withProvider =
      sql`SELECT llm_models.* FROM llm_models JOIN providers ON providers.id = llm_models.provider_id`

    const list = SqlSchema.findAll({
      Request: ModelFilter,
      Result: LlmModel,
      execute: ({ providerId, status, usableOnly }) => {
        const conditions = [
          ...(status !== null ? [sql`llm_models.status = ${status}`] : []),
          ...(providerId !== null ? [sql`llm_models.provider_id = ${providerId}`] : []),
          ...(usableOnly ? [usable] : [])
        ]
        return sql`
          ${withProvider}
          ${conditions.length > 0 ? sql`WHERE ${sql.and(conditions)}` : sql``}
          ORDER BY providers.name, llm_models.display_name, llm_models.id`
      }
    })

    const findUsable = SqlSchema.findOne({
      Request: Schema.String,
      Result: LlmModel,
      execute: (id) => sql`${withProvider} WHERE llm_models.id = ${id} AND ${usable}`
    })

    /** Which of `ids` name a model (a usable one, with `usableOnly`). */
    const existing = (ids: ReadonlyArray<LlmModelId>, usableOnly: boolean) =>
      ids.length === 0 ? Effect.succeed(new Set<string>()) : Effect.map(
        sql<{ readonly id: string }>`SELECT llm_models.id FROM llm_models
          JOIN providers ON providers.id = llm_models.provider_id
          WHERE ${sql.in("llm_models.id", ids)} ${usableOnly ? sql`AND ${usable}` : sql``}`,
        (rows) => new Set(rows.map((row) => row.id))
      )

    const findByProviderModel = SqlSchema.findOne({
      Request: Schema.Struct({ providerId: ProviderId, providerModel: Schema.String }),
      Result: LlmModel,
      execute: ({ providerId, providerModel }) =>
        sql`SELECT * FROM llm_models WHERE provider_id = ${providerId} AND provider_model = ${providerModel}`
    })

    const setStatus = (id: LlmModelId, fields: Record<string, unknown>) =>
      Effect.flatMap(
        storedNow,
        (now) => sql`UPDATE llm_models SET ${sql.update({ ...fields, updatedAt: now })} WHERE id = ${id}`
      )

    const failInterrupted = (message: string) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql`UPDATE llm_models SET ${
            sql.update({ status: "error", statusMessage: message, updatedAt: now })
          } WHERE status = 'loading'`
      )

    // The registry keeps resolved models for a while: the count tells it when one may be out of date.
    const { counted, writes } = writeCounter()

    return {
      writes,
      failInterrupted: (message: string) => counted(Effect.orDie(Effect.asVoid(failInterrupted(message)))),
      insert: (model: typeof LlmModel.insert.Type) => counted(Effect.orDie(repo.insert(model))),
      update: (model: typeof LlmModel.update.Type) => counted(Effect.orDie(repo.update(model))),
      findById: (id: LlmModelId) => Effect.orDie(repo.findById(id)),
      /** The model, if a user may pick it (enabled, of an enabled provider). */
      findUsable: (id: LlmModelId) => Effect.orDie(findUsable(id)),
      existing: (ids: ReadonlyArray<LlmModelId>, usableOnly: boolean) => Effect.orDie(existing(ids, usableOnly)),
      delete: (id: LlmModelId) => counted(Effect.orDie(repo.delete(id))),
      list: (filter: ModelFilter) => Effect.orDie(list(filter)),
      findByProviderModel: (providerId: ProviderId, providerModel: string) =>
        Effect.orDie(findByProviderModel({ providerId, providerModel })),
      setStatus: (id: LlmModelId, status: ModelStatus, statusMessage: string | null, enabled?: boolean) =>
        counted(Effect.orDie(
          setStatus(id, { status, statusMessage, ...(enabled !== undefined ? { enabled: enabled ? 1 : 0 } : {}) })
        ))
    } as const
  })
}) {}
