/** The session-family rules, on the repositories, with the interleavings a race can produce. */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { DateTime, Effect, Layer, Option } from "effect"
import { SessionsRepo } from "../src/Auth/SessionsRepo.js"
import { Session } from "../src/Domain/Credentials.js"
import { generateUuid, SessionFamilyId, UserId } from "../src/Domain/Ids.js"
import { runMigrations } from "../src/Migrations.js"
import { UsersRepo } from "../src/Users/UsersRepo.js"
import { dialects, freshDatabase } from "./fixtures/Database.js"

const newSession = (userId: UserId, familyId: SessionFamilyId, expiresAt = DateTime.unsafeMake(Date.now() + 60_000)) =>
  Effect.gen(function*() {
    const sessions = yield* SessionsRepo
    return yield* sessions.insert(Session.insert.make({
      userId,
      familyId,
      tokenHash: yield* generateUuid,
      expiresAt,
      rotatedAt: Option.none(),
      revokedAt: Option.none(),
      revokedReason: Option.none(),
      ipAddress: Option.none(),
      userAgent: Option.none(),
      lastUsedAt: Option.none()
    }))
  })

const newUser = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const id = UserId.make(yield* generateUuid)
  yield* sql`INSERT INTO users (id, email, username, role_id, terms_accepted_at)
             SELECT ${id}, ${`${id}@example.com`}, ${`u${id.slice(-12)}`}, id, ${new Date().toISOString()}
             FROM roles WHERE name = 'user'`
  return id
})

const sessionActive = (userId: UserId, familyId: SessionFamilyId) =>
  Effect.flatMap(UsersRepo, (users) =>
    Effect.map(
      users.findForSession(userId, familyId),
      Option.match({
        onNone: () => false,
        onSome: (row) => row.sessionActive
      })
    ))

for (const dialect of dialects) {
  describe(`session families on ${dialect}`, () => {
    const Repos = Layer.mergeAll(SessionsRepo.Default, UsersRepo.Default).pipe(
      Layer.provideMerge(Layer.effectDiscard(runMigrations).pipe(Layer.provideMerge(freshDatabase(dialect))))
    )
    layer(Repos, { excludeTestServices: true })((it) => {
      it.effect("a family is live while none of its sessions is revoked", () =>
        Effect.gen(function*() {
          const userId = yield* newUser
          const familyId = SessionFamilyId.make(yield* generateUuid)
          expect(yield* sessionActive(userId, familyId)).toBe(false) // no such family yet
          yield* newSession(userId, familyId)
          expect(yield* sessionActive(userId, familyId)).toBe(true)
          // Another user cannot borrow the family.
          expect(yield* sessionActive(yield* newUser, familyId)).toBe(false)
        }))

      it.effect("a revocation that ran before a concurrent rotation inserted its session still ends the family", () =>
        Effect.gen(function*() {
          const sessions = yield* SessionsRepo
          const userId = yield* newUser
          const familyId = SessionFamilyId.make(yield* generateUuid)
          const first = yield* newSession(userId, familyId)
          // The winner of a rotation marks the old session rotated…
          expect(yield* sessions.markRotated(first.id)).toBe(true)
          // …a loser detects the reuse and revokes the family before the winner's insert lands…
          expect(yield* sessions.markRotated(first.id)).toBe(false)
          yield* sessions.revokeFamily(familyId, "refresh-token-reuse")
          // …and then the winner's new session is inserted, unrevoked.
          const second = yield* newSession(userId, familyId)
          expect(Option.isNone(second.revokedAt)).toBe(true)
          expect(yield* sessions.familyRevoked(familyId)).toBe(true)
          expect(yield* sessionActive(userId, familyId)).toBe(false)
        }))

      it.effect("expired sessions are deleted, live ones kept", () =>
        Effect.gen(function*() {
          const sessions = yield* SessionsRepo
          const userId = yield* newUser
          const familyId = SessionFamilyId.make(yield* generateUuid)
          const expired = yield* newSession(userId, familyId, DateTime.unsafeMake(Date.now() - 1_000))
          const live = yield* newSession(userId, familyId)
          expect(yield* sessions.deleteExpired).toBeGreaterThanOrEqual(1)
          expect(Option.isNone(yield* sessions.findByTokenHash(expired.tokenHash))).toBe(true)
          expect(Option.isSome(yield* sessions.findByTokenHash(live.tokenHash))).toBe(true)
        }))
    })
  })
}
