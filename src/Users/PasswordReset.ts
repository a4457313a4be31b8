/**
 * Setting a user's password without the old one: an administrator's reset, or the operator's
 * (`npm run cli -- reset-password`) when no administrator can sign in any more.
 */
import { SqlClient } from "@effect/sql"
import { Effect, type Redacted } from "effect"
import { type AuditEntry, AuditLog } from "../Audit.js"
import { checkPasswordPolicy } from "../Auth.js"
import { Passwords } from "../Auth/Passwords.js"
import { SessionsRepo } from "../Auth/SessionsRepo.js"
import { inTransaction } from "../Sql.js"
import { UsersRepo, type UserWithRole } from "./UsersRepo.js"

/** Sets `user`'s password and ends every session of theirs (their API keys keep working). */
export const resetPassword = (
  user: typeof UserWithRole.Type,
  password: Redacted.Redacted<string>,
  actor: AuditEntry["actor"]
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const users = yield* UsersRepo
    const sessions = yield* SessionsRepo
    const audit = yield* AuditLog
    yield* checkPasswordPolicy(password, [user.email, user.username])
    const passwordHash = yield* (yield* Passwords).hash(password)
    yield* Effect.gen(function*() {
      yield* users.setPasswordHash(user.id, passwordHash)
      yield* sessions.revokeAllForUser(user.id, "password-reset")
      yield* audit.record({ action: "user.password.reset", actor, target: { type: "user", id: user.id } })
    }).pipe(inTransaction(sql))
  })
