import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { DateTime, Effect, Option, Schema } from "effect"
import { AuditEvent } from "../Domain/Credentials.js"
import type { UserId } from "../Domain/Ids.js"
import type { Position } from "../Domain/Pagination.js"
import { createdBefore } from "../Sql.js"

export const AuditFilter = Schema.Struct({
  actorId: Schema.optional(Schema.String),
  action: Schema.optional(Schema.String),
  targetType: Schema.optional(Schema.String),
  targetId: Schema.optional(Schema.String),
  from: Schema.optional(Schema.DateTimeUtc),
  to: Schema.optional(Schema.DateTimeUtc)
})
export type AuditFilter = typeof AuditFilter.Type

export class AuditRepo extends Effect.Service<AuditRepo>()("Audit/AuditRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(AuditEvent, {
      tableName: "audit_events",
      spanPrefix: "AuditRepo",
      idColumn: "id"
    })

    const decodeRows = Schema.decodeUnknown(Schema.Array(AuditEvent))

    /** Newest first, keyset-paginated on (created_at, id). */
    const list = (filter: AuditFilter, after: Option.Option<Position>, limit: number) => {
      const conditions = [
        filter.actorId !== undefined ? sql`actor_id = ${filter.actorId}` : undefined,
        filter.action !== undefined ? sql`action = ${filter.action}` : undefined,
        filter.targetType !== undefined ? sql`target_type = ${filter.targetType}` : undefined,
        filter.targetId !== undefined ? sql`target_id = ${filter.targetId}` : undefined,
        filter.from !== undefined ? sql`created_at >= ${DateTime.formatIso(filter.from)}` : undefined,
        filter.to !== undefined ? sql`created_at < ${DateTime.formatIso(filter.to)}` : undefined,
        Option.isSome(after) ? createdBefore(sql, after) : undefined
      ].filter((condition) => condition !== undefined)
      return sql`SELECT * FROM audit_events WHERE ${sql.and(conditions)}
                 ORDER BY created_at DESC, id DESC LIMIT ${limit + 1}`.pipe(
        Effect.flatMap(decodeRows),
        Effect.orDie
      )
    }

    /** Erasure: the trail stays, but nothing in it points back at the person (addresses, agents, metadata). */
    const pseudonymize = (userId: UserId) =>
      sql`UPDATE audit_events SET ip_address = NULL, user_agent = NULL, metadata = '{}'
          WHERE actor_id = ${userId} OR target_id = ${userId}`.pipe(Effect.orDie)

    const aboutUser = SqlSchema.findAll({
      Request: Schema.String,
      Result: AuditEvent,
      execute: (userId) =>
        sql`SELECT * FROM audit_events WHERE actor_id = ${userId} OR target_id = ${userId} ORDER BY created_at, id`
    })

    return {
      insert: repo.insertVoid,
      list,
      pseudonymize,
      /** Every event by or about a user (what their personal-data export shows). */
      aboutUser: (userId: string) => Effect.orDie(aboutUser(userId))
    } as const
  })
}) {}
