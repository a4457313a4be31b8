import { Migrator, Model, SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { DateTime, Effect, Exit, Option } from "effect"
import { latestMigrationId, migrations } from "../migrations/index.js"
import { Conversation, Message } from "../src/Domain/Conversation.js"
import { User } from "../src/Domain/User.js"
import { appliedMigrationId, migrationsTable, runMigrations } from "../src/Migrations.js"
import {
  dialects,
  freshDatabase,
  freshDirectory,
  freshPgDatabase,
  pgClientFor,
  sqliteClientFor
} from "./fixtures/Database.js"
import { runEntry } from "./fixtures/Process.js"

const expectedTables = [
  "api_keys",
  "audit_events",
  "conversations",
  "file_analyses",
  "file_passage_sets",
  "file_passages",
  "files",
  "graph_entities",
  "graph_entity_embeddings",
  "graph_extractions",
  "graph_mentions",
  "graph_relationship_sources",
  "graph_relationships",
  "job_queue",
  "llm_models",
  "message_feedback",
  "message_feedback_reasons",
  "message_files",
  "messages",
  "model_configs",
  "oidc_identities",
  "oidc_login_attempts",
  "oidc_login_codes",
  "providers",
  "roles",
  "sessions",
  "share_reactions",
  "share_tags",
  "shares",
  "threads",
  "usage_records",
  "users"
]

const tableNames = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql.onDialectOrElse({
    pg: () =>
      sql<{ name: string }>`SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`,
    // The full-text indexes (FTS5 tables and their shadow tables) are not part of the data model.
    orElse: () => sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%_fts%'`
  })
  return rows.map((row) => row.name).filter((name) => !name.startsWith("sqlite_")).sort()
})

/** Runs `effect` and returns whether the database refused it. */
const migrationIds = Object.keys(migrations).map((key) => Number(key.slice(0, 4)))

const refused = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.map(Effect.exit(effect), Exit.isFailure)

const seedUser = (overrides: Partial<{ email: string; username: string }> = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [role] = yield* sql<{ id: string }>`SELECT id FROM roles WHERE name = 'user'`
    const users = yield* Model.makeRepository(User, { tableName: "users", spanPrefix: "UsersRepo", idColumn: "id" })
    return yield* users.insert(User.insert.make({
      email: (overrides.email ?? `u${Math.random().toString(36).slice(2)}@example.com`) as never,
      username: (overrides.username ?? `u${Math.random().toString(36).slice(2, 12)}`) as never,
      passwordHash: "hash",
      roleId: role!.id as never,
      disabled: false,
      termsAcceptedAt: DateTime.unsafeNow(),
      marketingConsent: false,
      marketingConsentAt: Option.none(),
      lastLoginAt: Option.none(),
      failedLoginCount: 0,
      deletedAt: Option.none()
    }))
  })

for (const dialect of dialects) {
  describe(`migrations on ${dialect}`, () => {
    layer(freshDatabase(dialect), { excludeTestServices: true })((it) => {
      it.effect("apply from an empty database, creating every table and seeding the roles", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          expect(yield* appliedMigrationId).toEqual(Option.none())
          const applied = yield* runMigrations
          expect(applied.map(([id]) => id)).toEqual(migrationIds)
          expect(yield* tableNames).toEqual([...expectedTables, migrationsTable].sort())
          const roles = yield* sql<{ name: string; permissions: string; builtin: number }>`
            SELECT name, permissions, builtin FROM roles ORDER BY name`
          expect(roles.map((role) => role.name)).toEqual(["admin", "user"])
          expect(roles.every((role) => role.builtin === 1)).toBe(true)
          const [admin, user] = roles.map((role) => JSON.parse(role.permissions) as Array<string>)
          expect(admin).toContain("admin:users")
          expect(user).not.toContain("admin:users")
          expect(user!.every((permission) => admin!.includes(permission))).toBe(true)
        }))

      it.effect("a second run is a no-op", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          expect(yield* runMigrations).toEqual([])
          const rows = yield* sql<{ count: number }>`SELECT count(*) AS count FROM ${sql(migrationsTable)}`
          expect(Number(rows[0]!.count)).toBe(migrationIds.length)
          expect(yield* appliedMigrationId).toEqual(Option.some(latestMigrationId))
        }))

      it.effect("a database a newer build migrated further is refused, and left as it was", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const future = latestMigrationId + 1
          yield* sql`INSERT INTO ${sql(migrationsTable)} (migration_id, name) VALUES (${future}, 'from_the_future')`
          const error = yield* Effect.flip(runMigrations)
          expect(error.message).toContain(`at migration ${future}, newer than this build knows (${latestMigrationId})`)
          expect(error.message).toContain("restore the backup")
          expect(yield* appliedMigrationId).toEqual(Option.some(future))
          yield* sql`DELETE FROM ${sql(migrationsTable)} WHERE migration_id = ${future}`
          expect(yield* runMigrations).toEqual([])
        }))

      it.effect("row models round-trip identically (booleans, timestamps, JSON, nullable columns)", () =>
        Effect.gen(function*() {
          const user = yield* seedUser()
          expect(user.disabled).toBe(false)
          expect(Option.isNone(user.deletedAt)).toBe(true)
          expect(DateTime.isDateTime(user.createdAt)).toBe(true)
          const conversations = yield* Model.makeRepository(Conversation, {
            tableName: "conversations",
            spanPrefix: "ConversationsRepo",
            idColumn: "id"
          })
          const conversation = yield* conversations.insert(Conversation.insert.make({
            userId: user.id,
            title: "Hello",
            modelId: null,
            modelConfigId: null,
            currentLeafId: null,
            pinned: true,
            archived: false,
            deletedAt: Option.none(),
            messageCount: 0
          }))
          const messages = yield* Model.makeRepository(Message, {
            tableName: "messages",
            spanPrefix: "MessagesRepo",
            idColumn: "id"
          })
          const root = yield* messages.insert(Message.insert.make({
            conversationId: conversation.id,
            parentId: null,
            threadId: null,
            role: "user",
            content: "Hi",
            status: "complete",
            modelId: null,
            modelName: null,
            promptTokens: null,
            completionTokens: null,
            toolCalls: [],
            metadata: { client: "test", nested: { ok: true } },
            editedFromId: null,
            deletedAt: Option.none()
          }))
          const reread = yield* messages.findById(root.id)
          expect(Option.getOrThrow(reread).metadata).toEqual({ client: "test", nested: { ok: true } })
          const { createdAt: _createdAt, updatedAt: _updatedAt, ...fields } = conversation
          const updated = yield* conversations.update(Conversation.update.make({
            ...fields,
            currentLeafId: root.id,
            archived: true
          }))
          expect(updated.pinned).toBe(true)
          expect(updated.archived).toBe(true)
          expect(updated.currentLeafId).toBe(root.id)
          expect(DateTime.lessThanOrEqualTo(updated.createdAt, updated.updatedAt)).toBe(true)
        }))

      it.effect("foreign keys hold, and deleting a user cascades to what they own", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const now = new Date().toISOString()
          expect(
            yield* refused(
              sql`INSERT INTO users (id, email, username, role_id, terms_accepted_at)
                  VALUES ('01900000-0000-7000-8000-000000000001', 'fk@example.com', 'fk', '01900000-0000-7000-8000-00000000dead', ${now})`
            )
          ).toBe(true)
          expect(
            yield* refused(
              sql`INSERT INTO conversations (id, user_id) VALUES ('01900000-0000-7000-8000-000000000002', '01900000-0000-7000-8000-00000000dead')`
            )
          ).toBe(true)
          const user = yield* seedUser()
          yield* sql`INSERT INTO conversations (id, user_id, title) VALUES ('01900000-0000-7000-8000-000000000003', ${user.id}, 'c')`
          yield* sql`INSERT INTO messages (id, conversation_id, role, content) VALUES ('01900000-0000-7000-8000-000000000004', '01900000-0000-7000-8000-000000000003', 'user', 'hi')`
          yield* sql`DELETE FROM users WHERE id = ${user.id}`
          const left = yield* sql<
            { count: number }
          >`SELECT count(*) AS count FROM messages WHERE conversation_id = '01900000-0000-7000-8000-000000000003'`
          expect(Number(left[0]!.count)).toBe(0)
        }))

      it.effect("uniqueness holds: emails, usernames ignoring case, global and personal config names", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const user = yield* seedUser({ email: "unique@example.com", username: "Unique" })
          expect(yield* refused(seedUser({ email: "unique@example.com" }))).toBe(true)
          expect(yield* refused(seedUser({ username: "UNIQUE" }))).toBe(true)
          yield* sql`INSERT INTO model_configs (id, name) VALUES ('01900000-0000-7000-8000-000000000010', 'Precise')`
          expect(
            yield* refused(
              sql`INSERT INTO model_configs (id, name) VALUES ('01900000-0000-7000-8000-000000000011', 'Precise')`
            )
          ).toBe(true)
          // A personal preset may reuse a global name, once per owner.
          yield* sql`INSERT INTO model_configs (id, owner_id, name) VALUES ('01900000-0000-7000-8000-000000000012', ${user.id}, 'Precise')`
          expect(
            yield* refused(
              sql`INSERT INTO model_configs (id, owner_id, name) VALUES ('01900000-0000-7000-8000-000000000013', ${user.id}, 'Precise')`
            )
          ).toBe(true)
        }))

      it.effect("checks on enumerations and ranges hold", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const user = yield* seedUser()
          yield* sql`INSERT INTO conversations (id, user_id) VALUES ('01900000-0000-7000-8000-000000000020', ${user.id})`
          const message = (id: string, role: string, status: string) =>
            sql`INSERT INTO messages (id, conversation_id, role, status) VALUES (${id}, '01900000-0000-7000-8000-000000000020', ${role}, ${status})`
          yield* message("01900000-0000-7000-8000-000000000021", "assistant", "streaming")
          expect(yield* refused(message("01900000-0000-7000-8000-000000000022", "robot", "complete"))).toBe(true)
          expect(yield* refused(message("01900000-0000-7000-8000-000000000023", "user", "done"))).toBe(true)
          expect(
            yield* refused(
              sql`INSERT INTO providers (id, name, kind, base_url) VALUES ('01900000-0000-7000-8000-000000000024', 'p', 'gemini', 'http://x')`
            )
          ).toBe(true)
          expect(
            yield* refused(
              sql`INSERT INTO model_configs (id, name, temperature) VALUES ('01900000-0000-7000-8000-000000000025', 'hot', 3)`
            )
          ).toBe(true)
          // A credential needs its key id, and the other way round.
          expect(
            yield* refused(
              sql`INSERT INTO providers (id, name, kind, base_url, credential_ciphertext) VALUES ('01900000-0000-7000-8000-000000000026', 'q', 'openai', 'http://x', 'abc')`
            )
          ).toBe(true)
          // So does a file's sealed data key.
          const fileRow = (id: string, ciphertext: string | null, keyId: string | null) =>
            sql`INSERT INTO files (id, user_id, original_name, content_type, size_bytes, sha256, storage_key,
                  content_key_ciphertext, content_key_id)
                VALUES (${id}, ${user.id}, 'f.txt', 'text/plain', 1, ${"0".repeat(64)}, ${id}, ${ciphertext}, ${keyId})`
          expect(yield* refused(fileRow("01900000-0000-7000-8000-000000000027", "abc", null))).toBe(true)
          expect(yield* refused(fileRow("01900000-0000-7000-8000-000000000028", null, "k1"))).toBe(true)
          expect(yield* refused(fileRow("01900000-0000-7000-8000-000000000029", "abc", "k1"))).toBe(false)
          expect(yield* refused(fileRow("01900000-0000-7000-8000-00000000002a", null, null))).toBe(false)
        }))

      it.effect("usage records outlive their key and model, and go with their user", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const user = yield* seedUser()
          const provider = "01900000-0000-7000-8000-000000000030"
          const model = "01900000-0000-7000-8000-000000000031"
          const key = "01900000-0000-7000-8000-000000000032"
          yield* sql`INSERT INTO providers (id, name, kind, base_url) VALUES (${provider}, 'usage', 'ollama', 'http://x')`
          yield* sql`INSERT INTO llm_models (id, provider_id, provider_model, display_name) VALUES (${model}, ${provider}, 'm', 'm')`
          yield* sql`INSERT INTO api_keys (id, user_id, name, prefix, key_hash) VALUES (${key}, ${user.id}, 'k', 'wp_usage', 'hash-usage')`
          const usage = (id: string, source: string, promptTokens: number) =>
            sql`INSERT INTO usage_records (id, user_id, api_key_id, model_id, model_name, source, prompt_tokens, completion_tokens)
                VALUES (${id}, ${user.id}, ${key}, ${model}, 'm', ${source}, ${promptTokens}, 1)`
          yield* usage("01900000-0000-7000-8000-000000000033", "gateway", 3)
          yield* usage("01900000-0000-7000-8000-000000000034", "chat", 4)
          expect(yield* refused(usage("01900000-0000-7000-8000-000000000035", "email", 1))).toBe(true)
          expect(yield* refused(usage("01900000-0000-7000-8000-000000000036", "chat", -1))).toBe(true)
          yield* sql`DELETE FROM llm_models WHERE id = ${model}`
          yield* sql`DELETE FROM api_keys WHERE id = ${key}`
          const rows = yield* sql<{ apiKeyId: string | null; modelId: string | null; modelName: string }>`
            SELECT api_key_id, model_id, model_name FROM usage_records WHERE user_id = ${user.id}`
          expect(rows).toEqual([
            { apiKeyId: null, modelId: null, modelName: "m" },
            { apiKeyId: null, modelId: null, modelName: "m" }
          ])
          yield* sql`DELETE FROM users WHERE id = ${user.id}`
          const left = yield* sql<
            { count: number }
          >`SELECT count(*) AS count FROM usage_records WHERE user_id = ${user.id}`
          expect(Number(left[0]!.count)).toBe(0)
        }))
    })

    it.scoped("0018 gives each relationship already stored the one source it had", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const earlier = Object.fromEntries(Object.entries(migrations).filter(([key]) => Number(key.slice(0, 4)) < 18))
        yield* Migrator.make({})({ loader: Migrator.fromRecord(earlier), table: migrationsTable })
        const user = yield* seedUser()
        const [ada, engine, edge, source] = [
          "01900000-0000-7000-8000-0000000000a1",
          "01900000-0000-7000-8000-0000000000a2",
          "01900000-0000-7000-8000-0000000000a3",
          "01900000-0000-7000-8000-0000000000a4"
        ]
        for (const [id, name] of [[ada, "ada"], [engine, "engine"]] as const) {
          yield* sql`INSERT INTO graph_entities (id, user_id, name, normalized_name, type, confidence)
                     VALUES (${id}, ${user.id}, ${name}, ${name}, 'thing', 0.9)`
        }
        yield* sql`INSERT INTO graph_relationships
                     (id, user_id, source_entity_id, target_entity_id, type, confidence, source_kind, source_id)
                   VALUES (${edge}, ${user.id}, ${ada}, ${engine}, 'wrote', 0.75, 'file', ${source})`
        yield* runMigrations
        const rows = yield* sql<{ relationshipId: string; sourceKind: string; sourceId: string; confidence: number }>`
          SELECT relationship_id, source_kind, source_id, confidence FROM graph_relationship_sources`
        expect(rows).toEqual([{ relationshipId: edge, sourceKind: "file", sourceId: source, confidence: 0.75 }])
      }).pipe(Effect.provide(freshDatabase(dialect))))

    it.scoped("0020 keeps the usage records, lets the graph record its own, and stores vectors as bytes", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const earlier = Object.fromEntries(Object.entries(migrations).filter(([key]) => Number(key.slice(0, 4)) < 20))
        yield* Migrator.make({})({ loader: Migrator.fromRecord(earlier), table: migrationsTable })
        const user = yield* seedUser()
        const [provider, model, entity] = [
          "01900000-0000-7000-8000-0000000000b1",
          "01900000-0000-7000-8000-0000000000b2",
          "01900000-0000-7000-8000-0000000000b3"
        ]
        yield* sql`INSERT INTO providers (id, name, kind, base_url) VALUES (${provider}, 'p', 'ollama', 'http://x')`
        yield* sql`INSERT INTO llm_models (id, provider_id, provider_model, display_name)
                   VALUES (${model}, ${provider}, 'm', 'm')`
        const usage = (id: string, source: string) =>
          sql`INSERT INTO usage_records (id, user_id, model_id, model_name, source, prompt_tokens, completion_tokens)
              VALUES (${id}, ${user.id}, ${model}, 'm', ${source}, 5, 1)`
        yield* usage("01900000-0000-7000-8000-0000000000b4", "chat")
        yield* runMigrations
        yield* usage("01900000-0000-7000-8000-0000000000b5", "graph")
        expect(yield* refused(usage("01900000-0000-7000-8000-0000000000b6", "email"))).toBe(true)
        const rows = yield* sql<{ source: string; promptTokens: number }>`
          SELECT source, prompt_tokens FROM usage_records ORDER BY id`
        expect(rows).toEqual([{ source: "chat", promptTokens: 5 }, { source: "graph", promptTokens: 5 }])

        yield* sql`INSERT INTO graph_entities (id, user_id, name, normalized_name, type, confidence)
                   VALUES (${entity}, ${user.id}, 'ada', 'ada', 'person', 0.9)`
        const vector = new Uint8Array(new Float32Array([0.6, -0.8]).buffer)
        const embed = (dimensions: number) =>
          sql`INSERT INTO graph_entity_embeddings (entity_id, model_id, dimensions, vector, text_hash, created_at)
              VALUES (${entity}, ${model}, ${dimensions}, ${vector}, ${"0".repeat(64)}, '2026-01-01T00:00:00.000Z')`
        expect(yield* refused(embed(3))).toBe(true)
        yield* embed(2)
        const [stored] = yield* sql<{ vector: Uint8Array }>`SELECT vector FROM graph_entity_embeddings`
        expect(new Uint8Array(stored!.vector)).toEqual(vector)
        // The vector goes with its model, as with its entity.
        yield* sql`DELETE FROM llm_models WHERE id = ${model}`
        expect(yield* sql`SELECT entity_id FROM graph_entity_embeddings`).toEqual([])
      }).pipe(Effect.provide(freshDatabase(dialect))))

    it.scoped("0021 keeps the usage records and lets the background jobs record their own", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const earlier = Object.fromEntries(Object.entries(migrations).filter(([key]) => Number(key.slice(0, 4)) < 21))
        yield* Migrator.make({})({ loader: Migrator.fromRecord(earlier), table: migrationsTable })
        const user = yield* seedUser()
        const usage = (id: string, source: string) =>
          sql`INSERT INTO usage_records (id, user_id, model_name, source, prompt_tokens, completion_tokens)
              VALUES (${id}, ${user.id}, 'm', ${source}, 5, 1)`
        yield* usage("01900000-0000-7000-8000-0000000000c1", "graph")
        expect(yield* refused(usage("01900000-0000-7000-8000-0000000000c2", "title"))).toBe(true)
        yield* runMigrations
        const sources = ["title", "analysis", "extraction", "files"]
        for (const [index, source] of sources.entries()) {
          yield* usage(`01900000-0000-7000-8000-0000000000d${index}`, source)
        }
        expect(yield* refused(usage("01900000-0000-7000-8000-0000000000c3", "email"))).toBe(true)
        const rows = yield* sql<{ source: string }>`SELECT source FROM usage_records ORDER BY id`
        expect(rows.map((row) => row.source)).toEqual(["graph", ...sources])
        // The table's indexes are back (SQLite rebuilt it).
        const indexes = yield* sql.onDialectOrElse({
          pg: () => sql<{ name: string }>`SELECT indexname AS name FROM pg_indexes WHERE tablename = 'usage_records'`,
          orElse: () =>
            sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records'`
        })
        expect(indexes.map((index) => index.name)).toEqual(expect.arrayContaining([
          "usage_records_user_idx",
          "usage_records_api_key_idx",
          "usage_records_model_idx"
        ]))
      }).pipe(Effect.provide(freshDatabase(dialect))))

    it.live("several instances migrating one database at once apply each migration exactly once", () =>
      Effect.gen(function*() {
        const dataDir = yield* freshDirectory
        const database = dialect === "pg" ? yield* freshPgDatabase : undefined
        const env = { DATA_DIR: dataDir, LOG_FORMAT: "json", ...(database ? { DATABASE_URL: database.url } : {}) }
        const runs = yield* Effect.all(Array.from({ length: 4 }, () => runEntry("migrate", env)), {
          concurrency: "unbounded"
        })
        for (const run of runs) expect(run, run.stderr).toMatchObject({ code: 0, stderr: "" })
        const appliedBy = runs.filter((run) => run.stdout.includes("Applied migration"))
        expect(appliedBy).toHaveLength(1)
        const client = dialect === "pg" ? pgClientFor(database!.url) : sqliteClientFor(dataDir)
        const rows = yield* Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql<{ id: number }>`SELECT migration_id AS id FROM ${sql(migrationsTable)}`
        ).pipe(Effect.provide(client))
        expect(rows.map((row) => Number(row.id)).sort((a, b) => a - b)).toEqual(migrationIds)
      }).pipe(Effect.scoped))
  })
}

it("has at least one migration", () => {
  expect(latestMigrationId).toBeGreaterThan(0)
})
