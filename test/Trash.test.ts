/**
 * What the trash and deletions keep, and for how long (`TRASH_RETENTION`): the sweep deletes
 * conversations in the trash for good and erases what deleted messages said, on both dialects.
 * The sweep is run directly against the server's database, as the hourly task runs it.
 */
import { SqlClient } from "@effect/sql"
import { expect, layer } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { AuditLog } from "../src/Audit.js"
import { AuditRepo } from "../src/Audit/AuditRepo.js"
import { sweepTrash } from "../src/Conversations.js"
import { ConversationRepo } from "../src/Conversations/ConversationRepo.js"
import { GraphRepo } from "../src/Graph/GraphRepo.js"
import { call, expectStatus, signUp } from "./fixtures/Auth.js"
import { uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { inServerDatabase, testServer } from "./fixtures/Server.js"

const sweep = (retention: Duration.Duration) =>
  inServerDatabase(
    Effect.provide(
      sweepTrash(retention),
      Layer.mergeAll(
        ConversationRepo.Default,
        GraphRepo.Default,
        AuditLog.Default.pipe(Layer.provide(AuditRepo.Default))
      )
    )
  )

/** An entity of the knowledge graph found in one conversation only, as an extraction stores it. */
const foundOnlyIn = (userId: string, conversationId: string) =>
  inServerDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const id = randomUUID()
    const now = new Date().toISOString()
    yield* sql`INSERT INTO graph_entities ${
      sql.insert({
        id,
        userId,
        name: "The plan",
        normalizedName: "the plan",
        type: "concept",
        description: "",
        confidence: 0.9,
        mentionCount: 1,
        createdAt: now,
        updatedAt: now
      })
    }`
    yield* sql`INSERT INTO graph_mentions ${
      sql.insert({
        entityId: id,
        sourceKind: "conversation",
        sourceId: conversationId,
        confidence: 0.9,
        createdAt: now
      })
    }`
    return id
  }))

const entityRows = (id: string) =>
  inServerDatabase(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT id FROM graph_entities WHERE id = ${id}`))

const attachedRows = (messageId: string) =>
  inServerDatabase(Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`SELECT file_id FROM message_files WHERE message_id = ${messageId}`
  ))

for (const dialect of dialects) {
  layer(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }), { excludeTestServices: true })(
    `the trash on ${dialect}`,
    (it) => {
      it.scoped("past the retention: trashed conversations go for good, deleted messages keep no content", () =>
        Effect.gen(function*() {
          const admin = yield* signUp()
          const user = yield* signUp()
          const auth = { auth: user.accessToken }
          const trashed = expectStatus(yield* call("POST", "/api/v1/conversations", { ...auth, body: {} }), 201)
          expectStatus(yield* call("DELETE", `/api/v1/conversations/${trashed.id}`, auth), 204)
          const entity = yield* foundOnlyIn(user.id, trashed.id)

          const file = yield* uploadOne(user.accessToken, "secret.txt", "the secret plan")
          const kept = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              ...auth,
              body: { content: "Keep this", title: "Kept" }
            }),
            200
          )
          const regretted = expectStatus(
            yield* call("POST", `/api/v1/conversations/${kept.conversationId}/chat`, {
              ...auth,
              body: { content: "my secret plan", fileIds: [file.id], metadata: { mood: "private" } }
            }),
            200
          )
          // A rating of the answer whose comment quotes it.
          expectStatus(
            yield* call(
              "PUT",
              `/api/v1/conversations/${kept.conversationId}/messages/${regretted.answer.id}/feedback`,
              { ...auth, body: { rating: "down", comment: "It repeated my secret plan" } }
            ),
            200
          )
          expectStatus(
            yield* call(
              "DELETE",
              `/api/v1/conversations/${kept.conversationId}/messages/${regretted.question.id}`,
              auth
            ),
            204
          )
          expect(yield* attachedRows(regretted.question.id)).toHaveLength(1)

          // Within the retention nothing is touched.
          expect(yield* sweep(Duration.hours(1))).toEqual({ purged: 0, erased: 0 })
          expectStatus(yield* call("GET", `/api/v1/conversations/${trashed.id}`, auth), 200)
          expect(yield* entityRows(entity)).toHaveLength(1)

          const swept = yield* sweep(Duration.zero)
          expect(swept.purged).toBeGreaterThanOrEqual(1)
          expect(swept.erased).toBeGreaterThanOrEqual(2)
          expectStatus(yield* call("GET", `/api/v1/conversations/${trashed.id}`, auth), 404)
          // What the knowledge graph took from it went with it.
          expect(yield* entityRows(entity)).toEqual([])
          const trash = expectStatus(yield* call("GET", "/api/v1/conversations?trashed=true", auth), 200)
          expect(trash.items).toEqual([])

          // The conversation that was not in the trash is whole, but for the deleted turn's words.
          const document = expectStatus(
            yield* call("GET", `/api/v1/conversations/${kept.conversationId}/export`, auth),
            200
          )
          const byId = new Map<string, any>(document.messages.map((message: any) => [message.id, message]))
          expect(byId.get(kept.question.id)).toMatchObject({ content: "Keep this", deleted: false })
          expect(byId.get(regretted.question.id)).toMatchObject({ content: "", deleted: true, metadata: {} })
          expect(byId.get(regretted.answer.id)).toMatchObject({ content: "", deleted: true })
          expect(JSON.stringify(document)).not.toContain("secret plan")
          expect(yield* attachedRows(regretted.question.id)).toEqual([])
          // The rating stays, without its comment.
          expect(
            yield* inServerDatabase(
              Effect.flatMap(
                SqlClient.SqlClient,
                (sql) => sql`SELECT rating, comment FROM message_feedback WHERE message_id = ${regretted.answer.id}`
              )
            ).pipe(
              Effect.orDie
            )
          ).toEqual([{ rating: "down", comment: null }])

          const audit = expectStatus(
            yield* call("GET", `/api/v1/admin/audit-events?targetId=${trashed.id}`, { auth: admin.accessToken }),
            200
          )
          expect(audit.items).toEqual([
            expect.objectContaining({
              action: "conversation.purged",
              actorType: "system",
              actorId: null,
              metadata: { reason: "trash-retention" }
            })
          ])
          // Again: nothing left to do.
          expect(yield* sweep(Duration.zero)).toEqual({ purged: 0, erased: 0 })
        }))
    }
  )
}
