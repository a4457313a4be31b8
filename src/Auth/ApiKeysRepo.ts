import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { DateTime, Effect, Schema } from "effect"
import { ApiKey } from "../Domain/Credentials.js"
import { type ApiKeyId, UserId } from "../Domain/Ids.js"
import { storedNow } from "../Sql.js"

export class ApiKeysRepo extends Effect.Service<ApiKeysRepo>()("Auth/ApiKeysRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(ApiKey, {
      tableName: "api_keys",
      spanPrefix: "ApiKeysRepo",
      idColumn: "id"
    })

    const findByHash = SqlSchema.findOne({
      Request: Schema.String,
      Result: ApiKey,
      execute: (keyHash) => sql`SELECT * FROM api_keys WHERE key_hash = ${keyHash}`
    })

    const listForUser = SqlSchema.findAll({
      Request: UserId,
      Result: ApiKey,
      execute: (userId) => sql`SELECT * FROM api_keys WHERE user_id = ${userId} ORDER BY created_at DESC, id DESC`
    })

    const findForUser = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.String, userId: UserId }),
      Result: ApiKey,
      execute: ({ id, userId }) => sql`SELECT * FROM api_keys WHERE id = ${id} AND user_id = ${userId}`
    })

    const revoke = (id: ApiKeyId) =>
      Effect.flatMap(
        storedNow,
        (now) => sql`UPDATE api_keys SET revoked_at = ${now} WHERE id = ${id} AND revoked_at IS NULL`
      )

    // Written at most once a minute per key: a key in heavy use must not turn every request into a write.
    const touch = (id: ApiKeyId) =>
      Effect.flatMap(DateTime.now, (now) => {
        const at = DateTime.formatIso(now)
        const staleBefore = DateTime.formatIso(DateTime.subtract(now, { minutes: 1 }))
        return sql`UPDATE api_keys SET last_used_at = ${at}
                   WHERE id = ${id} AND (last_used_at IS NULL OR last_used_at < ${staleBefore})`
      })

    return {
      insert: repo.insert,
      findByHash: (keyHash: string) => Effect.orDie(findByHash(keyHash)),
      listForUser: (userId: UserId) => Effect.orDie(listForUser(userId)),
      findForUser: (id: string, userId: UserId) => Effect.orDie(findForUser({ id, userId })),
      revoke: (id: ApiKeyId) => Effect.orDie(revoke(id)),
      touch: (id: ApiKeyId) => Effect.orDie(touch(id))
    } as const
  })
}) {}
