import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { Session } from "../Domain/Credentials.js"
import type { SessionFamilyId, UserId } from "../Domain/Ids.js"
import { storedNow } from "../Sql.js"

export class SessionsRepo extends Effect.Service<SessionsRepo>()("Auth/SessionsRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(Session, {
      tableName: "sessions",
      spanPrefix: "SessionsRepo",
      idColumn: "id"
    })

    const findByTokenHash = SqlSchema.findOne({
      Request: Schema.String,
      Result: Session,
      execute: (tokenHash) => sql`SELECT * FROM sessions WHERE token_hash = ${tokenHash}`
    })

    const now = storedNow

    /** Marks a session rotated, only if it was not already: false means someone else rotated it first. */
    const markRotated = (id: Session["id"]) =>
      Effect.gen(function*() {
        const at = yield* now
        const rows = yield* sql<{ id: string }>`
          UPDATE sessions SET rotated_at = ${at}, last_used_at = ${at}
          WHERE id = ${id} AND rotated_at IS NULL AND revoked_at IS NULL
          RETURNING id`
        return rows.length === 1
      })

    const revokeFamily = (familyId: SessionFamilyId, reason: string) =>
      Effect.flatMap(now, (at) =>
        sql`UPDATE sessions SET revoked_at = ${at}, revoked_reason = ${reason}
            WHERE family_id = ${familyId} AND revoked_at IS NULL`)

    const revokeAllForUser = (userId: UserId, reason: string, except?: SessionFamilyId) =>
      Effect.flatMap(now, (at) =>
        sql`UPDATE sessions SET revoked_at = ${at}, revoked_reason = ${reason}
            WHERE user_id = ${userId} AND revoked_at IS NULL
            ${except === undefined ? sql`` : sql`AND family_id <> ${except}`}`)

    /**
     * A family is revoked as soon as any of its sessions is: revocation marks every row it can
     * see, and a row a concurrent rotation inserts just after is covered by this rule.
     */
    const familyRevoked = (familyId: SessionFamilyId) =>
      Effect.map(
        sql<
          { one: number }
        >`SELECT 1 AS one FROM sessions WHERE family_id = ${familyId} AND revoked_at IS NOT NULL LIMIT 1`,
        (rows) => rows.length > 0
      )

    /** Expired sessions are of no use to anyone (a presented expired token is refused either way). */
    const deleteExpired = Effect.flatMap(
      storedNow,
      (now) =>
        sql<{ id: string }>`DELETE FROM sessions WHERE expires_at < ${now} RETURNING id`.pipe(
          Effect.map((rows) => rows.length)
        )
    )

    return {
      insert: repo.insert,
      familyRevoked: (familyId: SessionFamilyId) => Effect.orDie(familyRevoked(familyId)),
      deleteExpired: Effect.orDie(deleteExpired),
      findByTokenHash: (tokenHash: string) => Effect.orDie(findByTokenHash(tokenHash)),
      markRotated: (id: Session["id"]) => Effect.orDie(markRotated(id)),
      revokeFamily: (familyId: SessionFamilyId, reason: string) => Effect.orDie(revokeFamily(familyId, reason)),
      revokeAllForUser: (userId: UserId, reason: string, except?: SessionFamilyId) =>
        Effect.orDie(revokeAllForUser(userId, reason, except))
    } as const
  })
}) {}
