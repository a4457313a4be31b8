import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { ModelConfigId, UserId } from "../Domain/Ids.js"
import { ModelConfig } from "../Domain/Model.js"

export class ModelConfigsRepo extends Effect.Service<ModelConfigsRepo>()("Models/ModelConfigsRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(ModelConfig, {
      tableName: "model_configs",
      spanPrefix: "ModelConfigsRepo",
      idColumn: "id"
    })

    /** Global presets and the user's own, personal ones first. */
    const listVisible = SqlSchema.findAll({
      Request: UserId,
      Result: ModelConfig,
      execute: (userId) =>
        sql`SELECT * FROM model_configs WHERE owner_id IS NULL OR owner_id = ${userId}
            ORDER BY owner_id IS NULL, name, id`
    })

    const findVisible = SqlSchema.findOne({
      Request: Schema.Struct({ id: ModelConfigId, userId: UserId }),
      Result: ModelConfig,
      execute: ({ id, userId }) =>
        sql`SELECT * FROM model_configs WHERE id = ${id} AND (owner_id IS NULL OR owner_id = ${userId})`
    })

    const findByName = SqlSchema.findOne({
      Request: Schema.Struct({ name: Schema.String, ownerId: Schema.NullOr(UserId) }),
      Result: ModelConfig,
      execute: ({ name, ownerId }) =>
        ownerId === null
          ? sql`SELECT * FROM model_configs WHERE name = ${name} AND owner_id IS NULL`
          : sql`SELECT * FROM model_configs WHERE name = ${name} AND owner_id = ${ownerId}`
    })

    return {
      insert: (config: typeof ModelConfig.insert.Type) => Effect.orDie(repo.insert(config)),
      update: (config: typeof ModelConfig.update.Type) => Effect.orDie(repo.update(config)),
      delete: (id: ModelConfigId) => Effect.orDie(repo.delete(id)),
      listVisible: (userId: UserId) => Effect.orDie(listVisible(userId)),
      findVisible: (id: ModelConfigId, userId: UserId) => Effect.orDie(findVisible({ id, userId })),
      findByName: (name: string, ownerId: UserId | null) => Effect.orDie(findByName({ name, ownerId }))
    } as const
  })
}) {}
