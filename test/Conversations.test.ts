/**
 * The conversation history over HTTP, on both databases: conversations and
 * their lists, the branching message tree, threads, search, export and
 * import, isolation between users, and validation that changes nothing.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Schema } from "effect"
import { AuditLog } from "../src/Audit.js"
import { AuditRepo } from "../src/Audit/AuditRepo.js"
import { Conversations } from "../src/Conversations.js"
import { ChatGptExport, ConversationExport } from "../src/Conversations/Api.js"
import { ConversationRepo, readMessage, type StoredMessageRow } from "../src/Conversations/ConversationRepo.js"
import { SearchRepo } from "../src/Conversations/SearchRepo.js"
import { Actor, CurrentActor } from "../src/Domain/Actor.js"
import { Message, MessageView } from "../src/Domain/Conversation.js"
import { generateUuid, UserId } from "../src/Domain/Ids.js"
import { BuiltinRoles } from "../src/Domain/User.js"
import { GraphRepo } from "../src/Graph/GraphRepo.js"
import { ModelConfigsRepo } from "../src/Models/ModelConfigsRepo.js"
import { ModelsRepo } from "../src/Models/ModelsRepo.js"
import { call, expectStatus, type Reply, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { conversationDocument, documentMessage, exportFile } from "./fixtures/Documents.js"
import { fakeProvider } from "./fixtures/Providers.js"
import { inServerDatabase, TestServer, testServer } from "./fixtures/Server.js"

const inDatabase = inServerDatabase

/** How many conversations the database holds, everyone's. */
const allConversations = inDatabase(Effect.map(
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ count: number }>`SELECT count(*) AS count FROM conversations`),
  (rows) => Number(rows[0]!.count)
))

const countRows = (table: "conversations" | "messages" | "threads", userId: string) =>
  inDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = table === "conversations"
      ? yield* sql<{ count: number }>`SELECT count(*) AS count FROM conversations WHERE user_id = ${userId}`
      : yield* sql<{ count: number }>`
          SELECT count(*) AS count FROM ${sql(table)} t JOIN conversations c ON c.id = t.conversation_id
          WHERE c.user_id = ${userId}`
    return Number(rows[0]!.count)
  }))

/** A fresh user for each test, so tests do not see each other's conversations. */
const person = signUp()

const api = (user: TestUser) => ({
  get: (path: string) => call("GET", path, { auth: user.accessToken }),
  post: (path: string, body: unknown = {}) => call("POST", path, { auth: user.accessToken, body }),
  patch: (path: string, body: unknown) => call("PATCH", path, { auth: user.accessToken, body }),
  put: (path: string, body: unknown) => call("PUT", path, { auth: user.accessToken, body }),
  del: (path: string) => call("DELETE", path, { auth: user.accessToken })
})

const createConversation = (user: TestUser, body: Record<string, unknown> = {}) =>
  Effect.map(api(user).post("/api/v1/conversations", body), (reply) => expectStatus(reply, 201))

const append = (user: TestUser, conversationId: string, content: string, extra: Record<string, unknown> = {}) =>
  Effect.map(
    api(user).post(`/api/v1/conversations/${conversationId}/messages`, { content, ...extra }),
    (reply) => expectStatus(reply, 201)
  )

const activeBranch = (user: TestUser, conversationId: string) =>
  Effect.map(api(user).get(`/api/v1/conversations/${conversationId}/messages`), (reply) => expectStatus(reply, 200))

const contents = (list: { items: ReadonlyArray<{ content: string }> }) => list.items.map((item) => item.content)

/** Every page of a list, following `nextCursor`. */
const allPages = (user: TestUser, path: string) =>
  Effect.gen(function*() {
    const pages: Array<Array<any>> = []
    let cursor: string | null = null
    do {
      const separator = path.includes("?") ? "&" : "?"
      const url: string = cursor === null ? path : `${path}${separator}cursor=${encodeURIComponent(cursor)}`
      const body = expectStatus(yield* api(user).get(url), 200)
      pages.push(body.items)
      cursor = body.nextCursor
    } while (cursor !== null && pages.length < 50)
    return pages
  })

class Other extends Context.Tag("test/Conversations/Other")<Other, TestUser>() {}

for (const dialect of dialects) {
  layer(Layer.effect(Other, signUp()).pipe(Layer.provideMerge(testServer({ dialect }))), {
    excludeTestServices: true
  })(`conversations on ${dialect}`, (it) => {
    describe("conversations", () => {
      it.effect("are created, read, renamed, given a default model config, pinned and archived", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const created = yield* createConversation(alice, { title: "Trip to Lisbon" })
          expect(created).toMatchObject({
            title: "Trip to Lisbon",
            pinned: false,
            archived: false,
            deletedAt: null,
            messageCount: 0,
            lastMessage: null,
            currentLeafId: null
          })
          const path = `/api/v1/conversations/${created.id}`
          expect(expectStatus(yield* api(alice).get(path), 200)).toEqual(created)
          const renamed = expectStatus(yield* api(alice).patch(path, { title: "Trip to Porto", pinned: true }), 200)
          expect(renamed).toMatchObject({ title: "Trip to Porto", pinned: true })
          expect(Date.parse(renamed.updatedAt)).toBeGreaterThanOrEqual(Date.parse(created.updatedAt))
          const archived = expectStatus(yield* api(alice).patch(path, { archived: true }), 200)
          expect(archived).toMatchObject({ title: "Trip to Porto", pinned: true, archived: true })
          // Unknown models and configs are refused by field, and nothing changes.
          const unknown = "01a20000-0000-7000-8000-000000000000"
          const refused = yield* api(alice).patch(path, { modelId: unknown, modelConfigId: unknown, title: "x" })
          expect(expectStatus(refused, 422).issues.map((issue: { path: Array<string> }) => issue.path)).toEqual([
            ["modelId"],
            ["modelConfigId"]
          ])
          expect(expectStatus(yield* api(alice).get(path), 200).title).toBe("Trip to Porto")
          // A personal model config of the owner may be the default; null clears it.
          const configId = yield* inDatabase(Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            const id = yield* generateUuid
            yield* sql`INSERT INTO model_configs ${sql.insert({ id, ownerId: alice.id, name: "Precise" })}`
            return id
          }))
          const configured = expectStatus(yield* api(alice).patch(path, { modelConfigId: configId }), 200)
          expect(configured.modelConfigId).toBe(configId)
          const other = yield* Other
          const foreign = yield* api(other).post("/api/v1/conversations", { modelConfigId: configId })
          expect(expectStatus(foreign, 422).issues[0].path).toEqual(["modelConfigId"])
          expect(expectStatus(yield* api(alice).patch(path, { modelConfigId: null }), 200).modelConfigId).toBeNull()
        }))

      it.scoped("take as default model only one users may pick from the registry", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const admin = yield* Other
          const ollama = yield* fakeProvider("ollama", [{ name: "llama3.2:1b" }, { name: "qwen3:4b" }])
          const provider = expectStatus(
            yield* api(admin).post("/api/v1/providers", {
              name: `loopback-${Math.random().toString(36).slice(2)}`,
              kind: "ollama",
              baseUrl: ollama.url
            }),
            201
          )
          const synced = expectStatus(yield* api(admin).post(`/api/v1/providers/${provider.id}/sync`), 200)
          const [usable, disabled] = synced.models.map((model: { id: string }) => model.id)
          expectStatus(yield* api(admin).patch(`/api/v1/models/${disabled}`, { enabled: false }), 200)
          const created = yield* createConversation(alice, { modelId: usable })
          expect(created.modelId).toBe(usable)
          const refused = yield* api(alice).patch(`/api/v1/conversations/${created.id}`, { modelId: disabled })
          expect(expectStatus(refused, 422).issues).toEqual([{ path: ["modelId"], message: "No such model" }])
          expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${created.id}`), 200).modelId).toBe(usable)
        }))

      it.effect("list pinned first, then newest-updated, with message counts and the last message's preview", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const first = yield* createConversation(alice, { title: "first" })
          const second = yield* createConversation(alice, { title: "second" })
          const third = yield* createConversation(alice, { title: "third" })
          yield* append(alice, first.id, "Hello")
          const long = "word ".repeat(100)
          yield* append(alice, first.id, long, { role: "assistant" })
          expectStatus(yield* api(alice).patch(`/api/v1/conversations/${second.id}`, { pinned: true }), 200)
          const items = expectStatus(yield* api(alice).get("/api/v1/conversations"), 200).items
          expect(items.map((item: { title: string }) => item.title)).toEqual(["second", "first", "third"])
          const listed = items.find((item: { id: string }) => item.id === first.id)
          expect(listed.messageCount).toBe(2)
          expect(listed.lastMessage).toMatchObject({
            role: "assistant",
            status: "complete",
            preview: long.slice(0, 200)
          })
          // Archived ones have their own list.
          expectStatus(yield* api(alice).patch(`/api/v1/conversations/${third.id}`, { archived: true }), 200)
          const active = expectStatus(yield* api(alice).get("/api/v1/conversations"), 200).items
          expect(active.map((item: { title: string }) => item.title)).toEqual(["second", "first"])
          const archive = expectStatus(yield* api(alice).get("/api/v1/conversations?archived=true"), 200).items
          expect(archive.map((item: { title: string }) => item.title)).toEqual(["third"])
        }))

      it.effect("go to the trash and back, and are purged with everything in them", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const kept = yield* createConversation(alice, { title: "kept" })
          const binned = yield* createConversation(alice, { title: "binned" })
          const message = yield* append(alice, binned.id, "a message")
          expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${binned.id}/threads`, { messageId: message.id }),
            201
          )
          const path = `/api/v1/conversations/${binned.id}`
          expectStatus(yield* api(alice).del(path), 204)
          const titles = (items: ReadonlyArray<{ title: string }>) => items.map((item) => item.title)
          expect(titles(expectStatus(yield* api(alice).get("/api/v1/conversations"), 200).items)).toEqual(["kept"])
          const trash = expectStatus(yield* api(alice).get("/api/v1/conversations?trashed=true"), 200).items
          expect(titles(trash)).toEqual(["binned"])
          expect(trash[0].deletedAt).not.toBeNull()
          // In the trash it can be read, not changed.
          expectStatus(yield* api(alice).get(path), 200)
          const restored = expectStatus(yield* api(alice).post(`${path}/restore`), 200)
          expect(restored.deletedAt).toBeNull()
          expect(titles(expectStatus(yield* api(alice).get("/api/v1/conversations"), 200).items).sort()).toEqual([
            "binned",
            "kept"
          ])
          expectStatus(yield* api(alice).post(`${path}/purge`), 204)
          expect(expectStatus(yield* api(alice).get(path), 404)._tag).toBe("NotFound")
          expect(yield* countRows("conversations", alice.id)).toBe(1)
          expect(yield* countRows("messages", alice.id)).toBe(0)
          expect(yield* countRows("threads", alice.id)).toBe(0)
          expectStatus(yield* api(alice).get(`/api/v1/conversations/${kept.id}`), 200)
        }))

      it.effect("a conversation in the trash takes no new messages", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const binned = yield* createConversation(alice)
          expectStatus(yield* api(alice).del(`/api/v1/conversations/${binned.id}`), 204)
          const refused = yield* api(alice).post(`/api/v1/conversations/${binned.id}/messages`, { content: "hi" })
          expect(expectStatus(refused, 404)._tag).toBe("NotFound")
          expect(yield* countRows("messages", alice.id)).toBe(0)
        }))

      it.effect("pages are stable while new conversations arrive: each one exactly once", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const originals: Array<string> = []
          for (let index = 0; index < 7; index++) {
            originals.push((yield* createConversation(alice, { title: `c${index}` })).id)
          }
          const seen: Array<string> = []
          let cursor: string | null = null
          let pages = 0
          do {
            const query: string = cursor === null ? "?limit=3" : `?limit=3&cursor=${encodeURIComponent(cursor)}`
            const page = expectStatus(yield* api(alice).get(`/api/v1/conversations${query}`), 200)
            seen.push(...page.items.map((item: { id: string }) => item.id))
            cursor = page.nextCursor
            pages++
            // Newcomers go to the top, before the cursor: they must not shift what comes next.
            yield* createConversation(alice, { title: `new ${pages}` })
          } while (cursor !== null && pages < 10)
          expect(seen).toEqual([...originals].reverse())
          expect(pages).toBe(3)
          const bad = yield* api(alice).get("/api/v1/conversations?cursor=not-a-cursor")
          expect(expectStatus(bad, 422).issues[0].path).toEqual(["cursor"])
        }))
    })

    describe("the message tree", () => {
      it.effect("editing adds a sibling branch, switching the leaf changes the active path, siblings are counted", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const conversation = yield* createConversation(alice, { title: "branches" })
          const id = conversation.id
          const q1 = yield* append(alice, id, "q1")
          const a1 = yield* append(alice, id, "a1", { role: "assistant" })
          const q2 = yield* append(alice, id, "q2")
          const a2 = yield* append(alice, id, "a2", { role: "assistant" })
          expect([q1.parentId, a1.parentId, q2.parentId, a2.parentId]).toEqual([null, q1.id, a1.id, q2.id])
          expect(contents(yield* activeBranch(alice, id))).toEqual(["q1", "a1", "q2", "a2"])

          // Edit q2: a sibling of q2 with the new content, now the leaf; the original is kept.
          const edited = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/messages/${q2.id}/edit`, { content: "q2 (edited)" }),
            201
          )
          expect(edited).toMatchObject({ parentId: a1.id, role: "user", editedFromId: q2.id })
          expect(edited).toMatchObject({ siblingIndex: 1, siblingCount: 2 })
          let branch = yield* activeBranch(alice, id)
          expect(contents(branch)).toEqual(["q1", "a1", "q2 (edited)"])
          expect(branch.currentLeafId).toBe(edited.id)
          expect(branch.items.map((m: any) => [m.siblingIndex, m.siblingCount])).toEqual([[0, 1], [0, 1], [1, 2]])
          const a2b = yield* append(alice, id, "a2 (for the edit)", { role: "assistant" })
          expect(a2b.parentId).toBe(edited.id)

          // Switch back to the first branch's leaf.
          const switched = yield* api(alice).put(`/api/v1/conversations/${id}/current-leaf`, { messageId: a2.id })
          expect(expectStatus(switched, 200).currentLeafId).toBe(a2.id)
          branch = yield* activeBranch(alice, id)
          expect(contents(branch)).toEqual(["q1", "a1", "q2", "a2"])
          expect(branch.items[2]).toMatchObject({ siblingIndex: 0, siblingCount: 2 })

          // Switching to a sibling with `descend` follows its newest answers down to a leaf.
          const descended = yield* api(alice).put(`/api/v1/conversations/${id}/current-leaf`, {
            messageId: edited.id,
            descend: true
          })
          expect(expectStatus(descended, 200).currentLeafId).toBe(a2b.id)
          expect(contents(yield* activeBranch(alice, id))).toEqual(["q1", "a1", "q2 (edited)", "a2 (for the edit)"])

          // Without `descend`, the chosen message itself ends the branch.
          expectStatus(yield* api(alice).put(`/api/v1/conversations/${id}/current-leaf`, { messageId: a1.id }), 200)
          expect(contents(yield* activeBranch(alice, id))).toEqual(["q1", "a1"])

          // Appending with an explicit parent starts a third branch there.
          const q2c = yield* append(alice, id, "q2 (third)", { parentId: a1.id })
          expect(q2c).toMatchObject({ parentId: a1.id, siblingIndex: 2, siblingCount: 3 })
          expect(contents(yield* activeBranch(alice, id))).toEqual(["q1", "a1", "q2 (third)"])

          // Editing the root makes a second root.
          const q1b = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/messages/${q1.id}/edit`, { content: "q1 (edited)" }),
            201
          )
          expect(q1b).toMatchObject({ parentId: null, siblingIndex: 1, siblingCount: 2 })
          expect(contents(yield* activeBranch(alice, id))).toEqual(["q1 (edited)"])

          // The tree view has every message, oldest first, paged.
          const pages = yield* allPages(alice, `/api/v1/conversations/${id}/messages?view=tree&limit=3`)
          expect(pages.map((page) => page.length)).toEqual([3, 3, 2])
          expect(pages.flat().map((m) => m.content)).toEqual([
            "q1",
            "a1",
            "q2",
            "a2",
            "q2 (edited)",
            "a2 (for the edit)",
            "q2 (third)",
            "q1 (edited)"
          ])
          const summary = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200)
          expect(summary).toMatchObject({ messageCount: 8, currentLeafId: q1b.id })
          expect(summary.lastMessage).toMatchObject({ id: q1b.id, preview: "q1 (edited)" })
        }))

      it.effect("a long active branch can be read a page at a time, from the leaf up", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          for (let index = 1; index <= 7; index++) yield* append(alice, id, `m${index}`)
          const pages = yield* allPages(alice, `/api/v1/conversations/${id}/messages?limit=3`)
          expect(pages.map((page) => page.map((m: { content: string }) => m.content))).toEqual([
            ["m5", "m6", "m7"],
            ["m2", "m3", "m4"],
            ["m1"]
          ])
          expect(contents(yield* activeBranch(alice, id))).toEqual(["m1", "m2", "m3", "m4", "m5", "m6", "m7"])
          const treeCursor = expectStatus(
            yield* api(alice).get(`/api/v1/conversations/${id}/messages?view=tree&limit=2`),
            200
          ).nextCursor
          const mixed = yield* api(alice).get(`/api/v1/conversations/${id}/messages?cursor=${treeCursor}`)
          expect(expectStatus(mixed, 422).issues[0].path).toEqual(["cursor"])
        }))

      it.effect("the active path stays right after many switches", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          // A root with three answers, each answered twice.
          const root = yield* append(alice, id, "root")
          const leaves: Array<{ id: string; path: Array<string> }> = []
          for (const answer of ["x", "y", "z"]) {
            const middle = yield* append(alice, id, answer, { parentId: root.id, role: "assistant" })
            for (const follow of ["1", "2"]) {
              const leaf = yield* append(alice, id, `${answer}${follow}`, { parentId: middle.id })
              leaves.push({ id: leaf.id, path: ["root", answer, `${answer}${follow}`] })
            }
          }
          for (const index of [3, 0, 5, 2, 4, 1, 3]) {
            const leaf = leaves[index]!
            expectStatus(yield* api(alice).put(`/api/v1/conversations/${id}/current-leaf`, { messageId: leaf.id }), 200)
            const branch = yield* activeBranch(alice, id)
            expect(contents(branch)).toEqual(leaf.path)
            expect(branch.items.map((m: any) => m.siblingCount)).toEqual([1, 3, 2])
            expect(branch.items[1].siblingIndex).toBe(Math.floor(index / 2))
            expect(branch.items[2].siblingIndex).toBe(index % 2)
          }
        }))

      it.effect("deleting a message removes its branch; the leaf moves to the newest branch left", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          const q = yield* append(alice, id, "q")
          const first = yield* append(alice, id, "first answer", { role: "assistant" })
          yield* append(alice, id, "follow-up")
          const second = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/messages/${first.id}/edit`, {
              content: "second answer"
            }),
            201
          )
          const below = yield* append(alice, id, "below the second")
          // The leaf is in the branch being deleted: it moves to the newest branch left under q.
          expectStatus(yield* api(alice).del(`/api/v1/conversations/${id}/messages/${second.id}`), 204)
          const branch = yield* activeBranch(alice, id)
          expect(contents(branch)).toEqual(["q", "first answer", "follow-up"])
          expect(branch.items[1]).toMatchObject({ siblingIndex: 0, siblingCount: 1 })
          for (const gone of [second.id, below.id]) {
            expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}/messages/${gone}`), 404)._tag).toBe(
              "NotFound"
            )
          }
          const summary = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200)
          expect(summary.messageCount).toBe(3)
          // Deleting outside the active branch leaves the leaf alone; deleting the root empties the tree.
          expectStatus(yield* api(alice).del(`/api/v1/conversations/${id}/messages/${q.id}`), 204)
          const emptied = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200)
          expect(emptied).toMatchObject({ messageCount: 0, currentLeafId: null, lastMessage: null })
          expect((yield* activeBranch(alice, id)).items).toEqual([])
        }))

      it.effect("concurrent appends each land on the leaf the previous one left: one chain, nothing lost", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          const added = yield* Effect.all(
            Array.from({ length: 12 }, (_, index) => append(alice, id, `m${index}`)),
            { concurrency: "unbounded" }
          )
          const branch = yield* activeBranch(alice, id)
          expect(branch.items).toHaveLength(12)
          expect(new Set(contents(branch))).toEqual(new Set(added.map((message) => message.content)))
          expect(branch.items.every((m: any) => m.siblingCount === 1)).toBe(true)
          branch.items.forEach((m: any, index: number) =>
            expect(m.parentId).toBe(index === 0 ? null : branch.items[index - 1].id)
          )
          expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200).messageCount).toBe(12)
        }))

      it.effect("messages carry role, content, status, model, usage, tool calls and metadata", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          const message = yield* append(alice, id, "with metadata", { metadata: { client: "web", draft: false } })
          const read = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}/messages/${message.id}`), 200)
          expect(read).toMatchObject({
            role: "user",
            content: "with metadata",
            status: "complete",
            modelId: null,
            modelName: null,
            promptTokens: null,
            completionTokens: null,
            toolCalls: [],
            metadata: { client: "web", draft: false }
          })
        }))

      it.effect("long lists read rows without a schema pass, and agree with the schema", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          const first = yield* append(alice, id, "plain", { metadata: { nested: { list: [1, "two", null] } } })
          const second = yield* append(alice, id, "with tools", { role: "assistant" })
          expectStatus(yield* api(alice).del(`/api/v1/conversations/${id}/messages/${second.id}`), 204)
          const rows = yield* inDatabase(Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* sql`UPDATE messages SET ${
              sql.update({
                toolCalls: JSON.stringify([{ id: "call_1", name: "lookup", arguments: "{\"q\":\"x\"}" }]),
                modelName: "llama3",
                promptTokens: 12,
                completionTokens: 34,
                status: "incomplete"
              })
            } WHERE id = ${second.id}`
            const query = (client: SqlClient.SqlClient) =>
              client<StoredMessageRow>`
                SELECT m.*, 1 AS sibling_index, 2 AS sibling_count FROM messages m
                WHERE m.id IN (${first.id}, ${second.id}) ORDER BY m.created_at`
            return { stored: yield* query(sql.withoutTransforms()), transformed: yield* query(sql) }
          }))
          expect(rows.stored).toHaveLength(2)
          const encode = Schema.encodeSync(MessageView)
          rows.stored.forEach((row, index) => {
            // The row model's reading, plus the sibling columns the query adds.
            const { deletedAt: _deletedAt, ...stored } = Schema.decodeUnknownSync(Message)(rows.transformed[index])
            const expected = new MessageView({ ...stored, siblingIndex: 1, siblingCount: 2 })
            const read = readMessage(row)
            expect(encode(read)).toEqual(encode(expected))
            // Built without the constructor, it is still what the constructor builds.
            expect(read).toBeInstanceOf(MessageView)
            expect(Object.keys(read)).toEqual(Object.keys(expected))
            expect(JSON.stringify(read)).toBe(JSON.stringify(expected))
          })
          expect(readMessage(rows.stored[1]!)).toMatchObject({
            modelName: "llama3",
            toolCalls: [{ name: "lookup" }]
          })
        }))

      it.effect("bad input is refused by field and changes nothing", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          yield* append(alice, id, "only message")
          const issuesOf = (reply: Reply) =>
            expectStatus(reply, 422).issues.map((issue: { path: Array<string> }) => issue.path.join("."))
          expect(issuesOf(yield* api(alice).post(`/api/v1/conversations/${id}/messages`, { content: "" }))).toEqual([
            "content"
          ])
          expect(
            issuesOf(yield* api(alice).post(`/api/v1/conversations/${id}/messages`, { content: 5, role: "wizard" }))
          ).toEqual(["content", "role"])
          expect(issuesOf(yield* api(alice).post("/api/v1/conversations", { title: "t".repeat(501) }))).toEqual([
            "title"
          ])
          expect(issuesOf(yield* api(alice).get("/api/v1/conversations/not-an-id"))).toEqual(["id"])
          const stranger = "01a20000-0000-7000-8000-000000000001"
          expect(
            issuesOf(
              yield* api(alice).post(`/api/v1/conversations/${id}/messages`, { content: "x", parentId: stranger })
            )
          ).toEqual(["parentId"])
          expect(issuesOf(yield* api(alice).put(`/api/v1/conversations/${id}/current-leaf`, { messageId: stranger })))
            .toEqual(["messageId"])
          const summary = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200)
          expect(summary.messageCount).toBe(1)
          expect(yield* countRows("messages", alice.id)).toBe(1)
        }))
    })

    describe("threads", () => {
      it.effect("start on a message, list, append and page, rename and delete", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice)
          const question = yield* append(alice, id, "What is a monad?")
          const answer = yield* append(alice, id, "A monoid in the category of endofunctors.", { role: "assistant" })
          const threads = `/api/v1/conversations/${id}/threads`
          const thread = expectStatus(yield* api(alice).post(threads, { messageId: answer.id, title: "Unpack" }), 201)
          expect(thread).toMatchObject({ anchorMessageId: answer.id, title: "Unpack", messageCount: 0 })
          const untitled = expectStatus(yield* api(alice).post(threads, { messageId: question.id }), 201)
          expect(untitled.title).toBe("What is a monad?")
          const listed = expectStatus(yield* api(alice).get(threads), 200)
          expect(listed.items.map((item: { id: string }) => item.id)).toEqual([thread.id, untitled.id])

          const messages = `${threads}/${thread.id}/messages`
          for (const content of ["What is an endofunctor?", "A functor from a category to itself.", "Thanks"]) {
            const role = content.startsWith("A ") ? "assistant" : "user"
            const added = expectStatus(yield* api(alice).post(messages, { content, role }), 201)
            expect(added).toMatchObject({ threadId: thread.id, parentId: null, siblingIndex: 0, siblingCount: 1 })
          }
          const pages = yield* allPages(alice, `${messages}?limit=2`)
          expect(pages.map((page) => page.map((m: { content: string }) => m.content))).toEqual([
            ["What is an endofunctor?", "A functor from a category to itself."],
            ["Thanks"]
          ])
          expect(expectStatus(yield* api(alice).get(threads), 200).items[0].messageCount).toBe(3)
          // Thread messages stay out of the conversation's own tree.
          expect(contents(yield* activeBranch(alice, id))).toEqual([
            "What is a monad?",
            "A monoid in the category of endofunctors."
          ])
          expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}`), 200).messageCount).toBe(2)

          const renamed = yield* api(alice).patch(`${threads}/${thread.id}`, { title: "Endofunctors" })
          expect(expectStatus(renamed, 200).title).toBe("Endofunctors")
          expectStatus(yield* api(alice).del(`${threads}/${thread.id}`), 204)
          expect(expectStatus(yield* api(alice).get(messages), 404)._tag).toBe("NotFound")
          expect(expectStatus(yield* api(alice).get(threads), 200).items.map((item: { id: string }) => item.id))
            .toEqual([untitled.id])
          expect(yield* countRows("messages", alice.id)).toBe(2)
        }))

      it.effect("anchor only on a message of the same conversation", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const one = yield* createConversation(alice)
          const two = yield* createConversation(alice)
          const elsewhere = yield* append(alice, two.id, "in the other conversation")
          const refused = yield* api(alice).post(`/api/v1/conversations/${one.id}/threads`, {
            messageId: elsewhere.id
          })
          expect(expectStatus(refused, 422).issues[0].path).toEqual(["messageId"])
          expect(yield* countRows("threads", alice.id)).toBe(0)
        }))
    })

    describe("search", () => {
      it.effect("finds titles and messages, ranked, with highlighted snippets, and only the user's own", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const other = yield* Other
          const kayak = yield* createConversation(alice, { title: "Kayak trip planning" })
          const gear = yield* append(alice, kayak.id, "Which kayak should I buy? A sea kayak or a river kayak?")
          const weather = yield* append(alice, kayak.id, "Check the weather before any kayak outing.", {
            role: "assistant"
          })
          const cooking = yield* createConversation(alice, { title: "Cooking" })
          yield* append(alice, cooking.id, "A recipe for <b>bread</b> & butter")
          const theirs = yield* createConversation(other, { title: "Other's kayak" })
          yield* append(other, theirs.id, "my kayak secret")

          const hits = expectStatus(yield* api(alice).get("/api/v1/search?q=kayak"), 200).items
          // The title first, then the messages by relevance: three mentions before one.
          expect(hits.map((hit: any) => [hit.kind, hit.messageId])).toEqual([
            ["conversation", null],
            ["message", gear.id],
            ["message", weather.id]
          ])
          expect(hits.every((hit: any) => hit.conversationId === kayak.id)).toBe(true)
          expect(hits[0].snippet).toBe("<mark>Kayak</mark> trip planning")
          expect(hits[1].snippet).toContain("<mark>kayak</mark>")
          expect(hits[1]).toMatchObject({ role: "user", conversationTitle: "Kayak trip planning", threadId: null })
          expect(hits[1].score).toBeGreaterThan(hits[2].score)

          // Every word must match, the last one as a prefix; snippets are HTML-escaped.
          const bread = expectStatus(yield* api(alice).get("/api/v1/search?q=recipe%20bre"), 200).items
          expect(bread).toHaveLength(1)
          expect(bread[0].snippet).toBe(
            "A <mark>recipe</mark> for &#60;b&#62;<mark>bread</mark>&#60;/b&#62; &#38; butter"
          )
          expect(expectStatus(yield* api(alice).get("/api/v1/search?q=recipe%20kayak"), 200).items).toEqual([])
          expect(expectStatus(yield* api(alice).get("/api/v1/search?q=secret"), 200).items).toEqual([])
          const theirHits = expectStatus(yield* api(other).get("/api/v1/search?q=kayak"), 200).items
          expect(theirHits.map((hit: any) => hit.conversationId)).toEqual([theirs.id, theirs.id])

          // Operators are words like any other; a query with no words at all is refused.
          expect(expectStatus(yield* api(alice).get(`/api/v1/search?q=${encodeURIComponent("kayak\" OR *")}`), 200))
            .toMatchObject({ items: expect.any(Array) })
          expect(expectStatus(yield* api(alice).get("/api/v1/search?q=%22%2A%22"), 422).issues[0].path).toEqual(["q"])
        }))

      it.effect("pages through results, follows edits and deletions, and leaves the trash out", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice, { title: "notes" })
          const ids: Array<string> = []
          for (let index = 0; index < 5; index++) ids.push((yield* append(alice, id, `zebra number ${index}`)).id)
          const pages = yield* allPages(alice, "/api/v1/search?q=zebra&limit=2")
          expect(pages.map((page) => page.length)).toEqual([2, 2, 1])
          expect(new Set(pages.flat().map((hit) => hit.messageId))).toEqual(new Set(ids))

          expectStatus(yield* api(alice).del(`/api/v1/conversations/${id}/messages/${ids[4]}`), 204)
          const afterDelete = expectStatus(yield* api(alice).get("/api/v1/search?q=zebra&limit=50"), 200).items
          expect(afterDelete.map((hit: any) => hit.messageId)).not.toContain(ids[4])
          expect(afterDelete).toHaveLength(4)

          // Thread messages are found too, pointing at their thread.
          const thread = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/threads`, { messageId: ids[0] }),
            201
          )
          yield* api(alice).post(`/api/v1/conversations/${id}/threads/${thread.id}/messages`, { content: "okapi" })
          const okapi = expectStatus(yield* api(alice).get("/api/v1/search?q=okapi"), 200).items
          expect(okapi).toMatchObject([{ kind: "message", threadId: thread.id }])

          expectStatus(yield* api(alice).del(`/api/v1/conversations/${id}`), 204)
          expect(expectStatus(yield* api(alice).get("/api/v1/search?q=zebra"), 200).items).toEqual([])
          expectStatus(yield* api(alice).post(`/api/v1/conversations/${id}/restore`), 200)
          expect(expectStatus(yield* api(alice).get("/api/v1/search?q=zebra&limit=50"), 200).items).toHaveLength(4)
        }))

      it.effect("folds case and Latin diacritics alike on both databases", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const { id } = yield* createConversation(alice, { title: "Crème brûlée" })
          const message = yield* append(alice, id, "Un café à Zürich, s'il vous plaît")
          for (const query of ["cafe zurich", "CAFÉ ZÜRICH", "Cafe Zuri"]) {
            const hits = expectStatus(yield* api(alice).get(`/api/v1/search?q=${encodeURIComponent(query)}`), 200)
            expect(hits.items.map((hit: any) => hit.messageId), query).toEqual([message.id])
            expect(hits.items[0].snippet).toBe("Un <mark>café</mark> à <mark>Zürich</mark>, s&#39;il vous plaît")
          }
          const titles = expectStatus(yield* api(alice).get("/api/v1/search?q=creme%20brulee"), 200).items
          expect(titles).toMatchObject([{ kind: "conversation", snippet: "<mark>Crème</mark> <mark>brûlée</mark>" }])
        }))
    })

    describe("export and import", () => {
      it.effect("a conversation exports as JSON and Markdown and imports back with every branch and thread", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const original = yield* createConversation(alice, { title: "Round trip" })
          const id = original.id
          const q = yield* append(alice, id, "Question?")
          const a = yield* append(alice, id, "Answer.", { role: "assistant" })
          yield* api(alice).post(`/api/v1/conversations/${id}/messages/${q.id}/edit`, { content: "Better question?" })
          yield* append(alice, id, "Better answer.", { role: "assistant" })
          const thread = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/threads`, { messageId: a.id, title: "Aside" }),
            201
          )
          yield* api(alice).post(`/api/v1/conversations/${id}/threads/${thread.id}/messages`, { content: "why?" })

          const exported = expectStatus(yield* api(alice).get(`/api/v1/conversations/${id}/export`), 200)
          expect(exported).toMatchObject({ format: "webplus.conversation", version: 1 })
          expect(exported.messages).toHaveLength(4)
          expect(exported.threads).toMatchObject([{ title: "Aside", messages: [{ content: "why?" }] }])

          const markdown = yield* api(alice).get(`/api/v1/conversations/${id}/export/markdown`)
          expect(markdown.headers["content-type"]).toContain("text/markdown")
          expect(markdown.body).toBe(
            "# Round trip\n\n## User\n\nBetter question?\n\n## Assistant\n\nBetter answer.\n"
          )

          const imported = expectStatus(yield* api(alice).post("/api/v1/conversations/import", exported), 201)
          expect(imported.id).not.toBe(id)
          expect(imported).toMatchObject({ title: "Round trip", messageCount: 4 })
          const before = yield* activeBranch(alice, id)
          const after = yield* activeBranch(alice, imported.id)
          const shape = (list: any) =>
            list.items.map((m: any) => [m.role, m.content, m.siblingIndex, m.siblingCount, m.editedFromId !== null])
          expect(shape(after)).toEqual(shape(before))
          const tree = (conversationId: string) =>
            Effect.map(
              allPages(alice, `/api/v1/conversations/${conversationId}/messages?view=tree`),
              (pages) => pages.flat().map((m) => m.content)
            )
          expect(yield* tree(imported.id)).toEqual(yield* tree(id))
          const threads = expectStatus(yield* api(alice).get(`/api/v1/conversations/${imported.id}/threads`), 200)
          expect(threads.items).toMatchObject([{ title: "Aside", messageCount: 1 }])
          // The copy is searchable like any conversation.
          const hits = expectStatus(yield* api(alice).get("/api/v1/search?q=better%20question"), 200).items
          expect(new Set(hits.map((hit: any) => hit.conversationId))).toEqual(new Set([id, imported.id]))
        }))

      it.effect("a document that is not a tree is refused by field, and nothing is written", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const at = new Date().toISOString()
          const message = (id: string, parentId: string | null) =>
            documentMessage({ id, parentId, role: "user", content: id }, at)
          const document = (messages: Array<unknown>, currentLeafId: string | null = null) =>
            conversationDocument({ title: "bad", messages, currentLeafId, at })
          const paths = (reply: Reply) =>
            expectStatus(reply, 422).issues.map((issue: { path: Array<string> }) => issue.path.join("."))
          const post = (body: unknown) => api(alice).post("/api/v1/conversations/import", body)
          expect(paths(yield* post(document([message("a", null), message("b", "nowhere")])))).toEqual([
            "messages.1.parentId"
          ])
          expect(paths(yield* post(document([message("a", "b"), message("b", "a")])))).toContain(
            "messages.0.parentId"
          )
          expect(paths(yield* post(document([message("a", null), message("a", null)])))).toEqual(["messages.1.id"])
          expect(paths(yield* post(document([message("a", null)], "z")))).toEqual(["conversation.currentLeafId"])
          expect(paths(yield* post({ ...document([]), format: "something else" }))).toEqual(["format"])
          expect(yield* countRows("conversations", alice.id)).toBe(0)
          expect(yield* countRows("messages", alice.id)).toBe(0)
        }))
    })

    describe("imports from other products", () => {
      const importFile = (user: TestUser, product: "open-webui" | "chatgpt", file: unknown) =>
        api(user).post(`/api/v1/conversations/import/${product}`, file)
      /** Every message of a conversation, oldest first. */
      const wholeTree = (user: TestUser, conversationId: string) =>
        Effect.map(
          allPages(user, `/api/v1/conversations/${conversationId}/messages?view=tree`),
          (pages) => pages.flat()
        )
      const seconds = (epoch: number) => new Date(epoch * 1000).toISOString()
      const issuePaths = (reply: Reply) =>
        expectStatus(reply, 422).issues.map((issue: { path: Array<string | number> }) => issue.path)

      it.effect("Open WebUI chats arrive with their tree, the regenerated answer beside the first, and the branch last seen", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const summary = expectStatus(yield* importFile(alice, "open-webui", exportFile("open-webui-chats.json")), 201)
          expect(summary).toMatchObject({ messageCount: 8, skippedCount: 0 })
          expect(summary.conversations).toMatchObject([
            {
              sourceId: "6f1c2a9e-4b7d-4e0a-9c1e-2d8f5a3b7c10",
              title: "Keeping a sourdough starter alive",
              messageCount: 5,
              skippedCount: 0
            },
            { sourceId: "7a2d3b0f-5c8e-4f1b-8d2f-3e9a6b4c8d21", title: "Translate a greeting", messageCount: 3 }
          ])
          const [sourdough, greeting] = summary.conversations.map((one: { id: string }) => one.id)

          const conversation = expectStatus(yield* api(alice).get(`/api/v1/conversations/${sourdough}`), 200)
          expect(conversation).toMatchObject({
            title: "Keeping a sourdough starter alive",
            messageCount: 5,
            pinned: false,
            createdAt: seconds(1717999999)
          })
          // The user went back to the first answer and went on from there: that branch is the current one.
          const branch = yield* activeBranch(alice, sourdough)
          expect(contents(branch)).toEqual([
            "How do I keep a sourdough starter alive?",
            "Feed it once a day: discard half, then add equal weights of flour and water.",
            "And if I go on holiday for two weeks?",
            "Feed it, let it rise for an hour, then keep it in the fridge; it will be fine for two weeks."
          ])
          expect(branch.currentLeafId).toBe(conversation.currentLeafId)
          expect(branch.items.map((m: any) => [m.role, m.siblingIndex, m.siblingCount])).toEqual([
            ["user", 0, 1],
            ["assistant", 0, 2],
            ["user", 0, 1],
            ["assistant", 0, 1]
          ])
          expect(branch.items[0]).toMatchObject({ createdAt: seconds(1718000000), modelName: null, status: "complete" })
          expect(branch.items[1]).toMatchObject({
            modelName: "llama3.1:8b",
            promptTokens: 21,
            completionTokens: 64,
            createdAt: seconds(1718000005),
            metadata: { imported: { from: "open-webui", id: "c3f5d7b9-1e2a-4f4b-9c6d-8e0f2a3b4c52" } }
          })
          const tree = yield* wholeTree(alice, sourdough)
          expect(tree).toHaveLength(5)
          const regenerated = tree.find((m) => m.content.startsWith("Keep it at room temperature"))
          expect(regenerated).toMatchObject({ parentId: branch.items[0].id, siblingIndex: 1, siblingCount: 2 })

          expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${greeting}`), 200)).toMatchObject({
            title: "Translate a greeting",
            pinned: true,
            messageCount: 3
          })
          // The first answer failed; the one asked for again is current.
          expect(contents(yield* activeBranch(alice, greeting))).toEqual([
            "How do you say \"good morning\" in Portuguese?",
            "\"Bom dia.\""
          ])
          const failed = (yield* wholeTree(alice, greeting)).find((m) => m.status === "error")
          expect(failed).toMatchObject({
            role: "assistant",
            content: "",
            siblingIndex: 0,
            siblingCount: 2,
            metadata: { error: { message: "Ollama: 500, message='Internal Server Error'" } }
          })
          // A chat alone (not in a list, not wrapped in its record) is a file of one.
          const alone = exportFile("open-webui-chats.json")[1].chat
          const one = expectStatus(yield* importFile(alice, "open-webui", alone), 201)
          expect(one).toMatchObject({ messageCount: 3, conversations: [{ title: "Translate a greeting" }] })
        }))

      it.effect("ChatGPT conversations arrive without the empty root, system, tool and reasoning nodes, branches kept", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const file = exportFile("chatgpt-conversations.json")
          const summary = expectStatus(yield* importFile(alice, "chatgpt", file), 201)
          expect(summary).toMatchObject({ messageCount: 9, skippedCount: 5 })
          expect(summary.conversations).toMatchObject([
            {
              sourceId: "65190f70-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
              title: "Packing for Iceland",
              messageCount: 7,
              skippedCount: 3
            },
            { title: "Rock identification", messageCount: 2, skippedCount: 2 }
          ])
          const [iceland, rock] = summary.conversations.map((one: { id: string }) => one.id)
          expect(expectStatus(yield* api(alice).get(`/api/v1/conversations/${iceland}`), 200)).toMatchObject({
            messageCount: 7,
            createdAt: "2023-10-01T08:46:40.123Z"
          })
          // The current node's branch: the edited question, answered after a web search (the search and its
          // results are left out, the answer hangs from the question).
          const branch = yield* activeBranch(alice, iceland)
          expect(branch.items.map((m: any) => [m.role, m.content, m.siblingIndex, m.siblingCount])).toEqual([
            ["user", "What should I pack for a week in Iceland in October?", 0, 1],
            ["assistant", "Layers: a waterproof shell, a warm fleece, thermal underwear and sturdy boots.", 0, 2],
            ["user", "Do I need crampons for the glacier hike on Sólheimajökull?", 1, 2],
            ["assistant", "Yes, but the tour operators hand out crampons, helmets and ice axes with the booking.", 0, 1]
          ])
          expect(branch.items[3]).toMatchObject({ parentId: branch.items[2].id, modelName: "gpt-4o" })
          expect(branch.items[0]).toMatchObject({ parentId: null, createdAt: "2023-10-01T08:46:40.500Z" })
          const tree = yield* wholeTree(alice, iceland)
          expect(tree.map((m) => m.content)).toEqual(expect.arrayContaining([
            "Pack for rain and wind more than for cold: the weather changes by the hour.",
            "Do I need crampons?",
            "Not for the usual tourist routes."
          ]))
          expect(tree).toHaveLength(7)
          expect(tree.every((m) => m.role === "user" || m.role === "assistant")).toBe(true)

          // The picture is left out of the question, its text kept; the reasoning before the answer is left out.
          const rockBranch = yield* activeBranch(alice, rock)
          expect(rockBranch.items.map((m: any) => [m.role, m.content])).toEqual([
            ["user", "What kind of rock is this?"],
            ["assistant", "It looks like basalt: dark, fine grained, with small gas bubbles."]
          ])
          expect(rockBranch.items[0].metadata).toEqual({
            imported: { from: "chatgpt", id: "f1a2b3c4-0000-4000-8000-000000000021", omittedParts: 1 }
          })

          // A current node that is left out gives way to the nearest message kept above it.
          const [packing] = exportFile("chatgpt-conversations.json")
          packing.current_node = "d4e5f6a7-0000-4000-8000-000000000010"
          const again = expectStatus(yield* importFile(alice, "chatgpt", [packing]), 201)
          const shorter = yield* activeBranch(alice, again.conversations[0].id)
          expect(contents(shorter).at(-1)).toBe("Do I need crampons for the glacier hike on Sólheimajökull?")
        }))

      it.effect("imports belong to the caller alone, and need credentials", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const other = yield* Other
          const summary = expectStatus(
            yield* importFile(alice, "chatgpt", exportFile("chatgpt-conversations.json")),
            201
          )
          for (const { id } of summary.conversations) {
            expect(expectStatus(yield* api(other).get(`/api/v1/conversations/${id}`), 404)._tag).toBe("NotFound")
            expect(expectStatus(yield* api(other).get(`/api/v1/conversations/${id}/messages`), 404)._tag).toBe(
              "NotFound"
            )
          }
          const theirs = expectStatus(yield* api(other).get("/api/v1/conversations"), 200).items
          expect(theirs.map((item: { id: string }) => item.id)).not.toEqual(
            expect.arrayContaining([summary.conversations[0].id])
          )
          const mine = expectStatus(yield* api(alice).get("/api/v1/conversations"), 200).items
          expect(mine.map((item: { id: string }) => item.id).sort()).toEqual(
            summary.conversations.map((one: { id: string }) => one.id).sort()
          )
          const conversationsBefore = yield* allConversations
          for (
            const [product, name] of [["open-webui", "open-webui-chats.json"], [
              "chatgpt",
              "chatgpt-conversations.json"
            ]] as const
          ) {
            const anonymous = yield* call("POST", `/api/v1/conversations/import/${product}`, { body: exportFile(name) })
            expect(expectStatus(anonymous, 401)._tag).toBe("Unauthorized")
          }
          expect(yield* allConversations).toBe(conversationsBefore)
        }))

      it.effect("what deletions and long texts leave in a file is mended: a lost parent, a lost current message, a long text or title", () =>
        Effect.gen(function*() {
          const alice = yield* person
          // Open WebUI: an answer whose question was deleted starts a branch of its own.
          const openWebUi = exportFile("open-webui-chats.json")
          const answer = "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4da5"
          openWebUi[1].chat.history.messages[answer].parentId = "gone"
          const mendedWebUi = expectStatus(yield* importFile(alice, "open-webui", openWebUi), 201)
          const greeting = mendedWebUi.conversations[1].id
          const roots = (yield* wholeTree(alice, greeting)).filter((message: any) => message.parentId === null)
          expect(roots.map((message: any) => message.metadata.imported.id)).toContain(answer)

          // ChatGPT: a current node the file does not have; a text longer than a message may be; a long title.
          const chatGpt = exportFile("chatgpt-conversations.json")
          chatGpt[0].current_node = "nowhere"
          chatGpt[0].title = "t".repeat(600)
          const question = "aaa2b3c4-0000-4000-8000-000000000003"
          chatGpt[0].mapping[question].message.content.parts = ["x".repeat(200_001)]
          const mendedGpt = expectStatus(yield* importFile(alice, "chatgpt", chatGpt), 201)
          const first = mendedGpt.conversations[0]
          expect(first.title).toBe("t".repeat(500))
          const conversation = expectStatus(yield* api(alice).get(`/api/v1/conversations/${first.id}`), 200)
          const tree = yield* wholeTree(alice, first.id)
          const leaves = tree.filter((message: any) => !tree.some((other: any) => other.parentId === message.id))
          expect(leaves.map((message: any) => message.id)).toContain(conversation.currentLeafId)
          const cut = tree.find((message: any) => message.metadata.imported.id === question)
          expect(cut.content).toBe("x".repeat(200_000))
          expect(cut.metadata.imported).toMatchObject({ from: "chatgpt", truncated: true })
        }))

      it.effect("a file whose tree is broken, or that breaks the schema, is refused by field and nothing of it is written", () =>
        Effect.gen(function*() {
          const alice = yield* person
          // The first conversation is sound; the second's parents form a cycle.
          const cycle = exportFile("chatgpt-conversations.json")
          cycle[1].mapping["client-created-root"].parent = "f4d5e6f7-0000-4000-8000-000000000024"
          const cycleIssues = expectStatus(yield* importFile(alice, "chatgpt", cycle), 422).issues
          expect(cycleIssues.length).toBeGreaterThan(0)
          for (const issue of cycleIssues) {
            expect(issue.path.slice(0, 2)).toEqual([1, "mapping"])
            expect(issue.message).toBe("The parents form a cycle")
          }
          // The schema: a conversation without its mapping, children that are not a list.
          const malformed = exportFile("chatgpt-conversations.json")
          delete malformed[0].mapping
          malformed[1].mapping["client-created-root"].children = "f1a2b3c4"
          expect(issuePaths(yield* importFile(alice, "chatgpt", malformed))).toEqual([
            [0, "mapping"],
            [1, "mapping", "client-created-root", "children"]
          ])
          // Not an Open WebUI file at all.
          expect(issuePaths(yield* importFile(alice, "open-webui", exportFile("chatgpt-conversations.json")))).toEqual([
            [0, "chat"],
            [1, "chat"]
          ])
          expect(yield* countRows("conversations", alice.id)).toBe(0)
          expect(yield* countRows("messages", alice.id)).toBe(0)
        }))
    })

    describe("transactions", () => {
      /**
       * Runs `use` with the service on the server's database, as `user`, its repository changed by `change`
       * (to fail midway).
       */
      const failingService = <A, E>(
        user: TestUser,
        change: (repo: ConversationRepo) => Partial<ConversationRepo>,
        use: (service: Conversations) => Effect.Effect<A, E, CurrentActor>
      ) => {
        const failingRepo = Layer.effect(
          ConversationRepo,
          Effect.map(ConversationRepo, (repo) => ConversationRepo.make({ ...repo, ...change(repo) }))
        ).pipe(Layer.provide(ConversationRepo.Default))
        const actor = new Actor({
          userId: UserId.make(user.id),
          role: BuiltinRoles.user,
          permissions: ["conversations:read", "conversations:write"],
          via: "session"
        })
        return inDatabase(
          Effect.flatMap(Conversations, use).pipe(
            Effect.provide(
              Conversations.Default.pipe(
                Layer.provide(failingRepo),
                Layer.provide(Layer.mergeAll(
                  GraphRepo.Default,
                  SearchRepo.Default,
                  ModelsRepo.Default,
                  ModelConfigsRepo.Default,
                  AuditLog.Default.pipe(Layer.provide(AuditRepo.Default))
                ))
              )
            ),
            Effect.provideService(CurrentActor, actor),
            Effect.exit
          )
        )
      }

      it.effect("an import of another product's file that fails at its second conversation leaves none behind", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const file = Schema.decodeUnknownSync(ChatGptExport)(exportFile("chatgpt-conversations.json"))
          let conversations = 0
          const exit = yield* failingService(
            alice,
            (repo) => ({
              insertConversation: (row) =>
                ++conversations === 2 ? Effect.dieMessage("the disk is full") : repo.insertConversation(row)
            }),
            (service) => service.importChatGpt(file)
          )
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
          expect(conversations).toBe(2)
          expect(yield* countRows("conversations", alice.id)).toBe(0)
          expect(yield* countRows("messages", alice.id)).toBe(0)
        }))

      it.effect("an import that fails midway leaves nothing behind", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const source = yield* createConversation(alice, { title: "to copy" })
          const anchor = yield* append(alice, source.id, "anchor")
          yield* append(alice, source.id, "reply", { role: "assistant" })
          expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${source.id}/threads`, { messageId: anchor.id }),
            201
          )
          const document = expectStatus(yield* api(alice).get(`/api/v1/conversations/${source.id}/export`), 200)
          const before = {
            conversations: yield* countRows("conversations", alice.id),
            messages: yield* countRows("messages", alice.id),
            threads: yield* countRows("threads", alice.id)
          }
          // The same service on the server's database, whose repository fails after the conversation
          // and its messages are written, at the thread.
          const decoded = yield* Schema.decodeUnknown(ConversationExport)(document).pipe(Effect.orDie)
          const exit = yield* failingService(
            alice,
            () => ({ insertThread: () => Effect.dieMessage("the disk is full") }),
            (service) => service.importConversation(decoded)
          )
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
          expect({
            conversations: yield* countRows("conversations", alice.id),
            messages: yield* countRows("messages", alice.id),
            threads: yield* countRows("threads", alice.id)
          }).toEqual(before)
        }))
    })

    describe("isolation", () => {
      it.effect("another user's conversations, messages and threads are not found, and stay as they were", () =>
        Effect.gen(function*() {
          const alice = yield* person
          const other = yield* Other
          const { id } = yield* createConversation(alice, { title: "private" })
          const message = yield* append(alice, id, "secret plans")
          const thread = expectStatus(
            yield* api(alice).post(`/api/v1/conversations/${id}/threads`, { messageId: message.id }),
            201
          )
          const base = `/api/v1/conversations/${id}`
          const attempts: Array<Effect.Effect<Reply, never, TestServer>> = [
            api(other).get(base),
            api(other).patch(base, { title: "mine now" }),
            api(other).del(base),
            api(other).post(`${base}/purge`),
            api(other).post(`${base}/restore`),
            api(other).get(`${base}/messages`),
            api(other).post(`${base}/messages`, { content: "intrusion" }),
            api(other).get(`${base}/messages/${message.id}`),
            api(other).post(`${base}/messages/${message.id}/edit`, { content: "changed" }),
            api(other).del(`${base}/messages/${message.id}`),
            api(other).put(`${base}/current-leaf`, { messageId: message.id }),
            api(other).get(`${base}/export`),
            api(other).get(`${base}/threads`),
            api(other).post(`${base}/threads`, { messageId: message.id }),
            api(other).get(`${base}/threads/${thread.id}/messages`),
            api(other).post(`${base}/threads/${thread.id}/messages`, { content: "intrusion" }),
            api(other).patch(`${base}/threads/${thread.id}`, { title: "x" }),
            api(other).del(`${base}/threads/${thread.id}`)
          ]
          for (const attempt of attempts) {
            expect(expectStatus(yield* attempt, 404)._tag).toBe("NotFound")
          }
          const list = expectStatus(yield* api(other).get("/api/v1/conversations"), 200).items
          expect(list.map((item: { id: string }) => item.id)).not.toContain(id)
          const mine = expectStatus(yield* api(alice).get(base), 200)
          expect(mine).toMatchObject({ title: "private", messageCount: 1, deletedAt: null, currentLeafId: message.id })
          expect(yield* countRows("messages", alice.id)).toBe(1)
          expect(yield* countRows("threads", alice.id)).toBe(1)
        }))
    })
  })
}

layer(testServer({ env: { MAX_BODY_SIZE: "1kb", IMPORT_MAX_SIZE: "16kb" } }), { excludeTestServices: true })(
  "imports' own body limit",
  (it) => {
    it.effect("an import may be larger than MAX_BODY_SIZE, up to IMPORT_MAX_SIZE (413 beyond)", () =>
      Effect.gen(function*() {
        const user = yield* signUp()
        const file = exportFile("open-webui-chats.json")
        expect(JSON.stringify(file).length).toBeGreaterThan(1024)
        expectStatus(
          yield* call("POST", "/api/v1/conversations/import/open-webui", { auth: user.accessToken, body: file }),
          201
        )
        // Anywhere else, the same size is too large.
        const elsewhere = yield* call("POST", "/api/v1/conversations", {
          auth: user.accessToken,
          body: { title: "Padded", padding: "x".repeat(2048) }
        })
        expect(elsewhere.status).toBe(413)
        // A sound file, but too large: refused by its declared length, and while reading one sent in chunks.
        const huge = [{
          title: "Huge",
          mapping: {
            a: { message: { author: { role: "user" }, content: { content_type: "text", parts: ["x".repeat(20_000)] } } }
          }
        }]
        const tooLarge = yield* call("POST", "/api/v1/conversations/import/chatgpt", {
          auth: user.accessToken,
          body: huge
        })
        expect(tooLarge.status).toBe(413)
        expect(tooLarge.body).toMatchObject({ _tag: "PayloadTooLarge", limitBytes: 16 * 1024 })
        const { baseUrl } = yield* TestServer
        const chunked = yield* Effect.promise(async () => {
          const text = JSON.stringify(huge)
          const response = await fetch(`${baseUrl}/api/v1/conversations/import/chatgpt`, {
            method: "POST",
            headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json" },
            body: new ReadableStream({
              start(controller) {
                for (let at = 0; at < text.length; at += 4096) {
                  controller.enqueue(new TextEncoder().encode(text.slice(at, at + 4096)))
                }
                controller.close()
              }
            }),
            duplex: "half"
          } as RequestInit)
          return { status: response.status, body: await response.json() }
        })
        expect(chunked).toMatchObject({ status: 413, body: { _tag: "PayloadTooLarge", limitBytes: 16 * 1024 } })
        const listed = expectStatus(
          yield* call("GET", "/api/v1/conversations?limit=100", { auth: user.accessToken }),
          200
        )
        expect(listed.items.map((conversation: { title: string }) => conversation.title)).not.toContain("Huge")
      }))
  }
)
