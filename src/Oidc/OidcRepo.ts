/**
 * Single sign-on's SQL: identities at providers, sign-in attempts under way and one-time codes.
 * Attempts and codes are taken with `DELETE … RETURNING`, so each is used at most once whichever
 * instance presents it, even when two present it at the same moment.
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import { DateTime, Effect, Schema } from "effect"
import { generateUuid, UserId } from "../Domain/Ids.js"
import { storedNow } from "../Sql.js"

export const LoginAttemptRow = Schema.Struct({
  stateHash: Schema.String,
  nonce: Schema.String,
  codeVerifier: Schema.String,
  codeVerifierKeyId: Schema.String,
  redirect: Schema.String,
  bindingHash: Schema.String,
  expiresAt: Schema.DateTimeUtc
})
export type LoginAttemptRow = typeof LoginAttemptRow.Type

const IdentityRow = Schema.Struct({
  id: Schema.String,
  userId: UserId,
  issuer: Schema.String,
  subject: Schema.String
})

const LoginCodeRow = Schema.Struct({ userId: UserId, expiresAt: Schema.DateTimeUtc })

export class OidcRepo extends Effect.Service<OidcRepo>()("Oidc/OidcRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const insertAttempt = (attempt: Omit<LoginAttemptRow, "expiresAt"> & { readonly expiresAt: DateTime.Utc }) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql`INSERT INTO oidc_login_attempts ${
            sql.insert({ ...attempt, expiresAt: DateTime.formatIso(attempt.expiresAt), createdAt: now })
          }`
      )

    const takeAttempt = SqlSchema.findOne({
      Request: Schema.String,
      Result: LoginAttemptRow,
      execute: (stateHash) => sql`DELETE FROM oidc_login_attempts WHERE state_hash = ${stateHash} RETURNING *`
    })

    const findIdentity = SqlSchema.findOne({
      Request: Schema.Struct({ issuer: Schema.String, subject: Schema.String }),
      Result: IdentityRow,
      execute: ({ issuer, subject }) =>
        sql`SELECT id, user_id, issuer, subject FROM oidc_identities WHERE issuer = ${issuer} AND subject = ${subject}`
    })

    const insertIdentity = (identity: {
      readonly userId: UserId
      readonly issuer: string
      readonly subject: string
      readonly email: string | null
    }) =>
      Effect.gen(function*() {
        const now = yield* storedNow
        const id = yield* generateUuid
        yield* sql`INSERT INTO oidc_identities ${sql.insert({ id, ...identity, createdAt: now, lastLoginAt: now })}`
        return id
      })

    const touchIdentity = (id: string, email: string | null) =>
      Effect.flatMap(
        storedNow,
        (now) => sql`UPDATE oidc_identities SET last_login_at = ${now}, email = ${email} WHERE id = ${id}`
      )

    const insertCode = (
      code: { readonly codeHash: string; readonly userId: UserId; readonly expiresAt: DateTime.Utc }
    ) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql`INSERT INTO oidc_login_codes ${
            sql.insert({ ...code, expiresAt: DateTime.formatIso(code.expiresAt), createdAt: now })
          }`
      )

    const takeCode = SqlSchema.findOne({
      Request: Schema.String,
      Result: LoginCodeRow,
      execute: (codeHash) =>
        sql`DELETE FROM oidc_login_codes WHERE code_hash = ${codeHash} RETURNING user_id, expires_at`
    })

    /** Attempts and codes past their expiry: nobody can use them any more. */
    const deleteExpired = Effect.gen(function*() {
      const now = yield* storedNow
      const attempts = yield* sql<{ stateHash: string }>`
        DELETE FROM oidc_login_attempts WHERE expires_at < ${now} RETURNING state_hash`
      const codes = yield* sql<
        { codeHash: string }
      >`DELETE FROM oidc_login_codes WHERE expires_at < ${now} RETURNING code_hash`
      return attempts.length + codes.length
    })

    return {
      insertAttempt: (attempt: Parameters<typeof insertAttempt>[0]) => Effect.orDie(insertAttempt(attempt)),
      takeAttempt: (stateHash: string) => Effect.orDie(takeAttempt(stateHash)),
      findIdentity: (issuer: string, subject: string) => Effect.orDie(findIdentity({ issuer, subject })),
      insertIdentity: (identity: Parameters<typeof insertIdentity>[0]) => Effect.orDie(insertIdentity(identity)),
      touchIdentity: (id: string, email: string | null) => Effect.orDie(touchIdentity(id, email)),
      insertCode: (code: Parameters<typeof insertCode>[0]) => Effect.orDie(insertCode(code)),
      takeCode: (codeHash: string) => Effect.orDie(takeCode(codeHash)),
      deleteExpired: Effect.orDie(deleteExpired)
    } as const
  })
}) {}
