/**
 * What reading the conversation history costs after years of chats, on
 * SQLite and on PostgreSQL (issue #4).
 *
 * For each dialect: a fresh database (SQLite in a temporary directory, a new
 * PostgreSQL database dropped at the end), migrated, then seeded straight
 * through SQL (multi-row INSERTs in one transaction) with a deterministic
 * data set — the same rows on both dialects:
 *
 * - the benchmarked user: 10,000 conversations over about three years (8
 *   pinned, ~5 % archived, ~3 % in the trash), 9,999 of them with 1–4
 *   messages, and one "big" conversation of 10,000 messages in a branching
 *   tree (its shape is printed);
 * - 3 other users with 1,000 conversations each, so every query has rows to
 *   leave out;
 * - message text drawn from a word list with Zipf frequencies, so a query
 *   can use common words, prefixes and one rare planted word.
 *
 * Then `ANALYZE` (PostgreSQL: `VACUUM (ANALYZE)`), and after a warm-up, many
 * timed calls of three read paths through the `Conversations` service (an
 * actor in context, rows decoded and mapped to views: what a request pays
 * apart from HTTP and JSON), and of the same SQL run bare through the client
 * (no name transforms, no decoding), against a `SELECT 1` round trip measured in the same run:
 *
 * a. one page (50) of the conversation list: the first, and one 100 pages deep via the cursor;
 * b. the active branch of the big conversation, whole (what the target is
 *    checked against), and, as additional information, its first page: the
 *    100 messages nearest the leaf (`listMessages` with `limit`);
 * c. search: a rare word, and a common word plus a prefix.
 *
 * Run with `npm run bench:conversations` (a few minutes). `--explain` also
 * writes `docs/query-plans.md` (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL
 * `EXPLAIN (ANALYZE, BUFFERS)` of each path's exact SQL on the seeded data);
 * `--quick` runs a tenth of the iterations. PostgreSQL is reached at
 * `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
 */
import { SqlClient, Statement } from "@effect/sql"
import { Effect, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { v7 } from "uuid"
import { AuditLog } from "../src/Audit.js"
import { AuditRepo } from "../src/Audit/AuditRepo.js"
import { Conversations } from "../src/Conversations.js"
import { type ConversationPosition, ConversationRepo } from "../src/Conversations/ConversationRepo.js"
import { SearchRepo, searchTerms } from "../src/Conversations/SearchRepo.js"
import { Actor, CurrentActor } from "../src/Domain/Actor.js"
import { ConversationId, MessageId, UserId } from "../src/Domain/Ids.js"
import { BuiltinRoles } from "../src/Domain/User.js"
import { GraphRepo } from "../src/Graph/GraphRepo.js"
import { runMigrations } from "../src/Migrations.js"
import { ModelConfigsRepo } from "../src/Models/ModelConfigsRepo.js"
import { ModelsRepo } from "../src/Models/ModelsRepo.js"
import { type Dialect, dialectOf } from "../src/Sql.js"
import { freshDirectory, freshPgDatabase, pgClientFor, sqliteClientFor } from "../test/fixtures/Database.js"

const args = new Set(process.argv.slice(2))
const explain = args.has("--explain")
const scale = args.has("--quick") ? 0.1 : 1

const runs = {
  baseline: { warmup: 200, iterations: 2_000 },
  list: { warmup: 50, iterations: 500 },
  branch: { warmup: 20, iterations: 200 },
  branchPage: { warmup: 50, iterations: 500 },
  search: { warmup: 50, iterations: 500 },
  /** Fewer: each call ranks thousands of matches. */
  commonSearch: { warmup: 20, iterations: 300 }
} as const

/** Targets of issue #4, p99 in milliseconds, on this 2-core machine. */
const targets = { list: 10, branch: 20, search: 50 } as const

const dataset = {
  conversations: 10_000,
  pinned: 8,
  archivedShare: 0.05,
  trashedShare: 0.03,
  otherUsers: 3,
  otherConversations: 1_000,
  years: 3,
  big: { messages: 10_000, activePath: 1_000 },
  rareWord: "quokka",
  commonQuery: "database conf",
  deepPage: 100,
  pageSize: 50,
  /** The page of the active branch read from the leaf up (`listMessages` with `limit`). */
  branchPage: 100
} as const

/** The end of the seeded history: fixed, so every run (and both dialects) get the same rows. */
const historyEnd = Date.parse("2026-11-20T12:00:00.000Z")
const day = 86_400_000

// --- deterministic data

/** mulberry32: a small seeded generator, so every run seeds the same rows. */
const seeded = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

type Random = () => number

const between = (random: Random, min: number, max: number) => min + Math.floor(random() * (max - min + 1))

const functionWords = (
  "the a an to of and in is it that for on with as this be are you can if or not but we at by from your " +
  "have will so there when which then also more just how what all some into one would should"
).split(" ")

/** Topical words, most frequent first (Zipf weights): "database" is common, "conf…" words are spread out. */
const topicalWords = (
  "data code database function server user error file query model request test value time system " +
  "memory network build type config page list index cache result string number table example version " +
  "option process change update thread message output input service client docker container image " +
  "deploy deployment configuration project library package module interface schema migration column " +
  "key token session password account email login permission role security policy certificate proxy " +
  "route handler response header body json yaml parser compiler runtime stream buffer queue worker job " +
  "schedule timeout retry latency throughput benchmark profile trace log metric alert dashboard chart " +
  "graph node edge tree branch commit merge rebase review issue bug fix feature release tag pipeline " +
  "backup restore replica primary shard partition transaction lock deadlock isolation snapshot vacuum " +
  "statistics planner join scan sort filter aggregate window cursor pagination offset limit keyset " +
  "search ranking snippet prefix term phrase language translation summary essay poem story recipe " +
  "garden travel budget invoice contract meeting agenda calendar reminder weather coffee bread pasta " +
  "training exercise sleep health doctor appointment school homework math physics chemistry history " +
  "economics market price stock investment savings mortgage insurance vacation flight hotel museum " +
  "concert guitar piano painting photo camera lens bicycle engine battery charger laptop keyboard " +
  "monitor printer router firmware kernel driver shell script terminal editor plugin extension theme " +
  "font color layout grid flexbox component state hook effect layer context fiber scope resource " +
  "conference configure confident confirm conflict console constant constraint contact content " +
  "continue control convert cookie copy core cost count course cover create credit crisis criteria " +
  "culture current custom cycle daily damage dance danger dark deadline debate debug decade decide " +
  "decimal default defense define degree delay delete delivery demand density depend deposit design " +
  "detail detect develop device diagram dialect diamond diet digital dinner direct discount discover " +
  "disk display distance divide domain double download draft dragon drama dream dress drift drop " +
  "dynamic eager early earth easy economy edition effort elastic election element elevator embed " +
  "emerge emotion empire employ enable encode energy engage enhance enough ensure entity entry " +
  "episode equal escape estimate ethics event evidence exact exam exchange execute exhibit exit expand " +
  "expect expert explain export expose express extend extract fabric factor failure faith family " +
  "famous fashion fault favor feedback fence festival fiction field figure final finance finger " +
  "fiscal flavor flight floor fluid focus folder follow forest format formula forum fossil frame " +
  "freedom frequency fresh friend frontier fruit fuel funnel gallery galaxy gateway gather gauge " +
  "gender genome gesture giant glass global glory goal golden gossip govern gravity green guard guess " +
  "guide habit harbor harvest hazard heart helmet heritage hidden highway hobby holiday horizon humor"
).split(" ")

const zipfCumulative = (() => {
  let total = 0
  const cumulative = topicalWords.map((_, rank) => (total += 1 / (rank + 1)))
  return cumulative.map((weight) => weight / total)
})()

const topicalWord = (random: Random) => {
  const r = random()
  let low = 0
  let high = zipfCumulative.length - 1
  while (low < high) {
    const mid = (low + high) >> 1
    if (zipfCumulative[mid]! < r) low = mid + 1
    else high = mid
  }
  return topicalWords[low]!
}

const capitalise = (text: string) => text.charAt(0).toUpperCase() + text.slice(1)

/** Prose of `words` words: sentences of 5–16 words, about 40 % function words. */
const prose = (random: Random, words: number) => {
  const sentences: Array<string> = []
  let left = words
  while (left > 0) {
    const length = Math.min(left, between(random, 5, 16))
    const sentence: Array<string> = []
    for (let i = 0; i < length; i++) {
      sentence.push(random() < 0.4 ? functionWords[between(random, 0, functionWords.length - 1)]! : topicalWord(random))
    }
    sentences.push(capitalise(sentence.join(" ")) + (random() < 0.15 ? "?" : "."))
    left -= length
  }
  return sentences.join(" ")
}

/** Text with the rare word planted at a random place. */
const plant = (random: Random, text: string) => {
  const words = text.split(" ")
  words.splice(between(random, 0, words.length), 0, dataset.rareWord)
  return words.join(" ")
}

type Role = "user" | "assistant"

type UserSeed = {
  readonly id: string
  readonly roleId: string
  readonly email: string
  readonly username: string
  readonly termsAcceptedAt: string
  readonly createdAt: string
  readonly updatedAt: string
}

type ConversationSeed = {
  readonly id: string
  readonly userId: string
  readonly title: string
  readonly pinned: number
  readonly archived: number
  readonly deletedAt: string | null
  readonly messageCount: number
  readonly createdAt: string
  readonly updatedAt: string
}

type MessageSeed = {
  readonly id: string
  readonly conversationId: string
  readonly parentId: string | null
  readonly role: Role
  readonly content: string
  readonly status: "complete" | "incomplete"
  readonly modelName: string | null
  readonly promptTokens: number | null
  readonly completionTokens: number | null
  readonly editedFromId: string | null
  readonly createdAt: string
  readonly updatedAt: string
}

interface Seed {
  readonly users: ReadonlyArray<UserSeed>
  readonly conversations: ReadonlyArray<ConversationSeed>
  readonly messages: ReadonlyArray<MessageSeed>
  readonly leaves: ReadonlyArray<{ readonly conversationId: string; readonly leafId: string }>
  readonly benchUserId: string
  readonly big: { readonly id: string; readonly leafId: string; readonly shape: ReadonlyArray<string> }
  readonly rareMessages: number
}

const iso = (ms: number) => new Date(ms).toISOString()

/** The whole data set, the same on every run. */
const generate = (roleId: string): Seed => {
  const random = seeded(4)
  let sequence = 0
  /** A UUIDv7 whose time part is the row's creation time, as the server would have made it. */
  const id = (ms: number) =>
    v7({
      msecs: ms,
      seq: sequence++,
      random: Uint8Array.from({ length: 16 }, () => Math.floor(random() * 256))
    })
  const users: Array<UserSeed> = []
  const conversations: Array<ConversationSeed> = []
  const messages: Array<MessageSeed> = []
  const leaves: Array<{ conversationId: string; leafId: string }> = []
  let rareMessages = 0

  const messageText = (role: Role, benchUser: boolean) => {
    const text = prose(random, role === "user" ? between(random, 6, 40) : between(random, 30, 160))
    if (random() < 0.0005) {
      if (benchUser) rareMessages++
      return plant(random, text)
    }
    return text
  }

  const message = (fields: {
    conversationId: string
    parentId: string | null
    role: Role
    at: number
    benchUser: boolean
    editedFromId?: string | null
  }): MessageSeed => {
    const content = messageText(fields.role, fields.benchUser)
    const assistant = fields.role === "assistant"
    return {
      id: id(fields.at),
      conversationId: fields.conversationId,
      parentId: fields.parentId,
      role: fields.role,
      content,
      status: assistant && random() < 0.01 ? "incomplete" : "complete",
      modelName: assistant ? "llama3.1:8b" : null,
      promptTokens: assistant ? between(random, 50, 4_000) : null,
      completionTokens: assistant ? Math.ceil(content.length / 4) : null,
      editedFromId: fields.editedFromId ?? null,
      createdAt: iso(fields.at),
      updatedAt: iso(fields.at)
    }
  }

  /** A user's conversations of 1–4 messages each, created over the last `years` years. */
  const smallConversations = (userId: string, count: number, benchUser: boolean, pinned: number) => {
    let pinnedLeft = pinned
    for (let i = 0; i < count; i++) {
      const createdAt = historyEnd - Math.floor(random() * dataset.years * 365 * day)
      const conversationId = id(createdAt)
      const length = between(random, 1, 4)
      let parentId: string | null = null
      let at = createdAt
      for (let position = 0; position < length; position++) {
        at += between(random, 2_000, 90_000)
        const row: MessageSeed = message({
          conversationId,
          parentId,
          role: position % 2 === 0 ? "user" : "assistant",
          at,
          benchUser
        })
        messages.push(row)
        parentId = row.id
      }
      const state = random()
      const trashed = state < dataset.trashedShare
      const archived = !trashed && state < dataset.trashedShare + dataset.archivedShare
      const pin = !trashed && !archived && pinnedLeft > 0
      if (pin) pinnedLeft--
      const title = capitalise(prose(random, between(random, 3, 7)).replace(/[.?]$/, ""))
      conversations.push({
        id: conversationId,
        userId,
        title: random() < 0.0003 ? plant(random, title) : title,
        pinned: pin ? 1 : 0,
        archived: archived ? 1 : 0,
        deletedAt: trashed ? iso(at + between(random, 1, 30) * day) : null,
        messageCount: length,
        createdAt: iso(createdAt),
        updatedAt: iso(at)
      })
      leaves.push({ conversationId, leafId: parentId! })
    }
  }

  const userRow = (n: number): UserSeed => {
    const at = historyEnd - dataset.years * 365 * day - n * day
    return {
      id: id(at),
      roleId,
      email: `bench-${n}@example.com`,
      username: `bench-${n}`,
      termsAcceptedAt: iso(at),
      createdAt: iso(at),
      updatedAt: iso(at)
    }
  }

  const benchUser = userRow(0)
  users.push(benchUser)
  smallConversations(benchUser.id, dataset.conversations - 1, true, dataset.pinned)

  // The big conversation: an active path of `activePath` messages (user and assistant taking turns),
  // and, hanging off it, edited (user) and regenerated (assistant) siblings, each the start of a
  // abandoned branch, until the conversation holds `big.messages` messages.
  const bigStart = historyEnd - 120 * day
  const bigId = id(bigStart)
  const gap = 600_000
  const path: Array<MessageSeed> = []
  /** Every message of the big conversation, each after its parent and the message it was edited from. */
  const big: Array<MessageSeed> = []
  const abandoned = { branches: 0, points: 0, before: 0, after: 0, longest: 0, siblings: new Map<number, number>() }
  let budget = dataset.big.messages - dataset.big.activePath
  const alternativesAt = (position: number) => 1 + (position % 3)
  const branchLength = (position: number, k: number) => 1 + ((position * 7 + k * 3) % 9)
  for (let position = 0; position < dataset.big.activePath; position++) {
    const role: Role = position % 2 === 0 ? "user" : "assistant"
    const parentId = position === 0 ? null : path[position - 1]!.id
    const slot = bigStart + position * gap
    // Usually the alternatives came first and the kept message is the newest (an edit or a
    // regeneration); at every fourth position the user went back to the first version.
    const keptFirst = position % 4 === 0
    const keep = (editedFromId: string | null) => {
      const kept = message({
        conversationId: bigId,
        parentId,
        role,
        at: slot + (keptFirst ? 1_000 : 300_000),
        benchUser: true,
        editedFromId
      })
      path.push(kept)
      big.push(kept)
      return kept
    }
    const first = keptFirst ? keep(null) : undefined
    const wants = position === 0 || budget === 0 ? 0 : alternativesAt(position)
    const siblings: Array<MessageSeed> = []
    let at = slot + 2_000
    for (let k = 0; k < wants && budget > 0; k++) {
      const length = Math.min(budget, branchLength(position, k))
      let parent = parentId
      for (let depth = 0; depth < length; depth++) {
        const row = message({
          conversationId: bigId,
          parentId: parent,
          role: (position + depth) % 2 === 0 ? "user" : "assistant",
          at,
          benchUser: true,
          // A later version of a user message records the one it was edited from.
          editedFromId: depth === 0 && role === "user" && first ? first.id : null
        })
        at += 500
        if (depth === 0) siblings.push(row)
        big.push(row)
        parent = row.id
      }
      budget -= length
      abandoned.branches++
      abandoned.longest = Math.max(abandoned.longest, length)
    }
    if (siblings.length > 0) {
      abandoned.points++
      if (keptFirst) abandoned.after++
      else abandoned.before++
      const count = siblings.length + 1
      abandoned.siblings.set(count, (abandoned.siblings.get(count) ?? 0) + 1)
    }
    if (!keptFirst) keep(role === "user" && siblings.length > 0 ? siblings[siblings.length - 1]!.id : null)
  }
  const bigLeaf = path[path.length - 1]!
  const alternatives = big.length - path.length
  messages.push(...big)
  conversations.push({
    id: bigId,
    userId: benchUser.id,
    title: "Planning the database migration for the analytics platform",
    pinned: 0,
    archived: 0,
    deletedAt: null,
    messageCount: big.length,
    createdAt: iso(bigStart),
    updatedAt: bigLeaf.createdAt
  })
  leaves.push({ conversationId: bigId, leafId: bigLeaf.id })

  for (let n = 1; n <= dataset.otherUsers; n++) {
    const user = userRow(n)
    users.push(user)
    smallConversations(user.id, dataset.otherConversations, false, 3)
  }

  const shape = [
    `${big.length} messages: an active path of ${path.length} (user and assistant ` +
    `taking turns, root to current leaf) and ${alternatives} in ${abandoned.branches} abandoned branches`,
    `${abandoned.points} messages of the path have siblings (edits of a user message, regenerations of an ` +
    `answer): ${
      [...abandoned.siblings.entries()].sort(([a], [b]) => a - b).map(([count, n]) => `${n} with ${count} siblings`)
        .join(", ")
    }; each sibling starts a branch of 1–${abandoned.longest} messages`,
    `at ${abandoned.before} branch points the kept message is the newest sibling (shown "n / n"), ` +
    `at ${abandoned.after} the oldest (the user went back to the first version)`
  ]
  return {
    users,
    conversations,
    messages,
    leaves,
    benchUserId: benchUser.id,
    big: { id: bigId, leafId: bigLeaf.id, shape },
    rareMessages
  }
}

// --- seeding

const chunks = <A>(rows: ReadonlyArray<A>, size: number) =>
  Array.from({ length: Math.ceil(rows.length / size) }, (_, i) => rows.slice(i * size, (i + 1) * size))

const seed = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const dialect = dialectOf(sql)
  const started = Date.now()
  const role = yield* sql<{ id: string }>`SELECT id FROM roles WHERE name = ${BuiltinRoles.user}`
  const data = generate(role[0]!.id)
  const generated = Date.now()
  const idType = sql.literal(dialect === "pg" ? "uuid" : "text")
  yield* sql.withTransaction(Effect.gen(function*() {
    for (const rows of chunks(data.users, 500)) yield* sql`INSERT INTO users ${sql.insert(rows)}`
    for (const rows of chunks(data.conversations, 500)) yield* sql`INSERT INTO conversations ${sql.insert(rows)}`
    for (const rows of chunks(data.messages, 500)) yield* sql`INSERT INTO messages ${sql.insert(rows)}`
    // The current leaves, set once the messages exist (the foreign key points both ways).
    yield* sql`CREATE TABLE bench_leaves (conversation_id ${idType} PRIMARY KEY, leaf_id ${idType} NOT NULL)`
    for (const rows of chunks(data.leaves, 1_000)) yield* sql`INSERT INTO bench_leaves ${sql.insert(rows)}`
    yield* sql`UPDATE conversations
      SET current_leaf_id = (SELECT b.leaf_id FROM bench_leaves b WHERE b.conversation_id = conversations.id)
      WHERE id IN (SELECT conversation_id FROM bench_leaves)`
    yield* sql`DROP TABLE bench_leaves`
    // Sibling positions, as the service keeps them (the small conversations are single chains: 0 of 1).
    yield* (yield* ConversationRepo).renumberTree(ConversationId.make(data.big.id))
  })).pipe(Effect.orDie)
  const inserted = Date.now()
  yield* (dialect === "pg" ? sql`VACUUM (ANALYZE)` : sql`ANALYZE`).pipe(Effect.orDie)
  const analysed = Date.now()
  // The counts and leaves must agree with the rows, as the service keeps them.
  const [check] = yield* sql<{ conversations: number; messages: number; wrongCounts: number; wrongLeaves: number }>`
    SELECT
      (SELECT count(*) FROM conversations) AS conversations,
      (SELECT count(*) FROM messages) AS messages,
      (SELECT count(*) FROM conversations c WHERE c.message_count <> (
        SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.deleted_at IS NULL)) AS wrong_counts,
      (SELECT count(*) FROM conversations c WHERE c.current_leaf_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM messages m WHERE m.id = c.current_leaf_id AND m.conversation_id = c.id
          AND NOT EXISTS (SELECT 1 FROM messages k WHERE k.parent_id = m.id))) AS wrong_leaves`.pipe(Effect.orDie)
  if (Number(check!.wrongCounts) !== 0 || Number(check!.wrongLeaves) !== 0) {
    return yield* Effect.dieMessage(`seeded data inconsistent: ${JSON.stringify(check)}`)
  }
  const size = dialect === "pg"
    ? yield* sql<{ size: string }>`SELECT pg_size_pretty(pg_database_size(current_database())) AS size`
    : yield* sql<{ size: string }>`
      SELECT printf('%.0f MB', page_count * page_size / 1048576.0) AS size
      FROM pragma_page_count(), pragma_page_size()`
  console.log(
    `   seeded ${check!.conversations} conversations and ${check!.messages} messages of ${data.users.length} users ` +
      `in ${((inserted - generated) / 1000).toFixed(1)} s (text generated in ${
        ((generated - started) / 1000).toFixed(1)
      } s), ` +
      `${dialect === "pg" ? "VACUUM (ANALYZE)" : "ANALYZE"} in ${((analysed - inserted) / 1000).toFixed(1)} s; ` +
      `database ${size[0]?.size ?? "?"}; ` +
      `message counts and current leaves consistent`
  )
  return data
})

// --- timing

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN

interface Stats {
  readonly n: number
  readonly p50: number
  readonly p99: number
  readonly max: number
}

/** Runs `effect` `iterations` times after `warmup` runs; milliseconds per run. */
const measure = <A, E, R>(effect: Effect.Effect<A, E, R>, run: { warmup: number; iterations: number }) =>
  Effect.gen(function*() {
    const warmup = Math.max(5, Math.round(run.warmup * scale))
    const iterations = Math.max(20, Math.round(run.iterations * scale))
    for (let i = 0; i < warmup; i++) yield* effect
    const samples: Array<number> = []
    for (let i = 0; i < iterations; i++) {
      const start = process.hrtime.bigint()
      yield* effect
      samples.push(Number(process.hrtime.bigint() - start) / 1e6)
    }
    samples.sort((a, b) => a - b)
    return {
      n: iterations,
      p50: percentile(samples, 50),
      p99: percentile(samples, 99),
      max: samples[samples.length - 1]!
    }
  })

/** The statements an effect runs, as compiled for the database (SQL text and parameters). */
const captureStatements = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const statements: Array<readonly [string, ReadonlyArray<unknown>]> = []
    const result = yield* Statement.withTransformer(effect, (statement) => {
      statements.push(statement.compile())
      return Effect.succeed(statement)
    })
    return { result, statements }
  })

/**
 * The captured statements, run bare through the client: the database and driver, no name
 * transforms and no row decoding.
 */
const bare = (statements: ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => {
      const raw = sql.withoutTransforms()
      return Effect.forEach(statements, ([text, params]) => raw.unsafe(text, params), { discard: true }).pipe(
        Effect.orDie
      )
    }
  )

// --- plans

interface PlanRow {
  readonly id: number
  readonly parent: number
  readonly detail: string
}

/** SQLite's plan rows as its shell draws them. */
const drawSqlitePlan = (rows: ReadonlyArray<PlanRow>) => {
  const lines = ["QUERY PLAN"]
  const draw = (parent: number, prefix: string) => {
    const children = rows.filter((row) => row.parent === parent)
    children.forEach((row, index) => {
      const last = index === children.length - 1
      lines.push(`${prefix}${last ? "`--" : "|--"}${row.detail}`)
      draw(row.id, `${prefix}${last ? "   " : "|  "}`)
    })
  }
  draw(0, "")
  return lines.join("\n")
}

const planOf = (text: string, params: ReadonlyArray<unknown>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    if (dialectOf(sql) === "pg") {
      const rows = yield* sql.unsafe<Record<string, string>>(`EXPLAIN (ANALYZE, BUFFERS) ${text}`, params)
      return rows.map((row) => Object.values(row)[0]).join("\n")
    }
    return drawSqlitePlan(yield* sql.unsafe<PlanRow>(`EXPLAIN QUERY PLAN ${text}`, params))
  }).pipe(Effect.orDie)

/** SQL as compiled, without the template's indentation. */
const tidy = (text: string) => text.split("\n").map((line) => line.trim()).filter((line) => line.length > 0).join("\n")

const showParam = (param: unknown) =>
  (typeof param === "string" && param.length > 60 ? `${JSON.stringify(param.slice(0, 60))}…` : JSON.stringify(param))
    .replace(/[\uE000-\uF8FF]/g, (char) => `\\u${char.charCodeAt(0).toString(16).toUpperCase()}`)

// --- one dialect

interface PathResult {
  readonly key: string
  readonly label: string
  /** The p99 target, or undefined for a path measured as additional information. */
  readonly target: number | undefined
  readonly service: Stats
  readonly repo: Stats
  readonly bare: Stats
  readonly note: string
  readonly statements: ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>
}

interface DialectResult {
  readonly dialect: Dialect
  readonly baseline: Stats
  readonly paths: ReadonlyArray<PathResult>
  readonly plans: ReadonlyArray<
    { readonly key: string; readonly sql: string; readonly params: string; readonly plan: string }
  >
  readonly shape: ReadonlyArray<string>
  readonly experiments: ReadonlyArray<{
    readonly key: string
    readonly label: string
    readonly level: string
    readonly change: string
    readonly stats: Stats
    readonly plans: ReadonlyArray<string>
  }>
}

const ms = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2))

const benchmarkDialect = (dialect: Dialect) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* runMigrations.pipe(Effect.orDie)
    const data = yield* seed
    for (const line of data.big.shape) console.log(`   big conversation: ${line}`)
    const conversations = yield* Conversations
    const repo = yield* ConversationRepo
    const searchRepo = yield* SearchRepo
    const actor = new Actor({
      userId: UserId.make(data.benchUserId),
      role: BuiltinRoles.user,
      permissions: ["conversations:read", "conversations:write"],
      via: "session"
    })
    const asActor = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(Effect.provideService(CurrentActor, actor), Effect.orDie)
    const bigId = ConversationId.make(data.big.id)

    // The cursor of page `deepPage`, reached by following the list from the start.
    let cursor: string | undefined
    for (let page = 1; page < dataset.deepPage; page++) {
      const result = yield* asActor(conversations.list({ limit: dataset.pageSize, cursor }))
      cursor = result.nextCursor ?? undefined
    }
    if (cursor === undefined) return yield* Effect.dieMessage("the list ended before the deep page")
    const deepCursor = cursor

    const definePath = <A>(spec: {
      key: string
      label: string
      target: number | undefined
      run: { warmup: number; iterations: number }
      effect: Effect.Effect<A>
      repo: Effect.Effect<unknown>
      note: (result: A) => string
    }): {
      key: string
      label: string
      target: number | undefined
      run: { warmup: number; iterations: number }
      effect: Effect.Effect<unknown>
      repo: Effect.Effect<unknown>
      describe: Effect.Effect<string>
    } => ({ ...spec, describe: Effect.map(spec.effect, spec.note) })
    const leafId = MessageId.make(data.big.leafId)
    const userId = UserId.make(data.benchUserId)
    const deepPosition = JSON.parse(Buffer.from(deepCursor, "base64url").toString()) as ConversationPosition
    const searchRepoCall = (q: string) => searchRepo.search({ userId, terms: searchTerms(q), limit: 21, offset: 0 })
    const paths = [
      definePath({
        key: "list",
        label: "list, first page (50)",
        target: targets.list,
        run: runs.list,
        effect: asActor(conversations.list({ limit: dataset.pageSize })),
        repo: repo.listSummaries(userId, "active", Option.none(), dataset.pageSize),
        note: (r) => `${r.items.length} items, ${r.items.filter((item) => item.pinned).length} pinned`
      }),
      definePath({
        key: "list-deep",
        label: `list, page ${dataset.deepPage} (cursor)`,
        target: targets.list,
        run: runs.list,
        effect: asActor(conversations.list({ limit: dataset.pageSize, cursor: deepCursor })),
        repo: repo.listSummaries(userId, "active", Option.some(deepPosition), dataset.pageSize),
        note: (r) => `${r.items.length} items`
      }),
      definePath({
        key: "branch",
        label: "active branch, big conversation",
        target: targets.branch,
        run: runs.branch,
        effect: asActor(conversations.listMessages(bigId, { view: "active" })),
        repo: Effect.zip(repo.findSummary(userId, bigId), repo.activeBranch(bigId, leafId)),
        note: (r) =>
          `${r.items.length} messages, ${r.items.filter((item) => item.siblingCount > 1).length} with siblings`
      }),
      definePath({
        key: "branch-page",
        label: `(info) branch, first page (${dataset.branchPage})`,
        target: undefined,
        run: runs.branchPage,
        effect: asActor(conversations.listMessages(bigId, { view: "active", limit: dataset.branchPage })),
        repo: Effect.zip(repo.findSummary(userId, bigId), repo.activeBranch(bigId, leafId, dataset.branchPage)),
        note: (r) =>
          `${r.items.length} messages nearest the leaf, root first, ` +
          `${r.items.filter((item) => item.siblingCount > 1).length} with siblings, ` +
          `${r.items.at(-1)?.id === data.big.leafId ? "ending at the leaf" : "NOT ending at the leaf"}, ` +
          `${r.nextCursor === null ? "no next cursor" : "a next cursor toward the root"}`
      }),
      definePath({
        key: "search-rare",
        label: `search "${dataset.rareWord}" (rare)`,
        target: targets.search,
        run: runs.search,
        effect: asActor(conversations.search({ q: dataset.rareWord })),
        repo: searchRepoCall(dataset.rareWord),
        note: (r) => `${r.items.length} hits on the page`
      }),
      definePath({
        key: "search-common",
        label: `search "${dataset.commonQuery}" (common + prefix)`,
        target: targets.search,
        run: runs.commonSearch,
        effect: asActor(conversations.search({ q: dataset.commonQuery })),
        repo: searchRepoCall(dataset.commonQuery),
        note: (r) => `${r.items.length} hits on the page`
      })
    ]

    // How many of the user's rows each search matches (the work behind one page of 20).
    const tsQuery = (query: string) => {
      const terms = query.split(" ")
      return dialect === "pg"
        ? terms.map((term, index) => `'${term}'${index === terms.length - 1 ? ":*" : ""}`).join(" & ")
        : terms.map((term, index) => `"${term}"${index === terms.length - 1 ? "*" : ""}`).join(" ")
    }
    const matches = (query: string) =>
      (dialect === "pg"
        ? sql<{ messages: number; titles: number }>`
          SELECT
            (SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
              WHERE m.search_vector @@ to_tsquery('simple', ${tsQuery(query)}) AND m.deleted_at IS NULL
                AND c.user_id = ${data.benchUserId} AND c.deleted_at IS NULL) AS messages,
            (SELECT count(*) FROM conversations c
              WHERE c.search_vector @@ to_tsquery('simple', ${tsQuery(query)})
                AND c.user_id = ${data.benchUserId} AND c.deleted_at IS NULL) AS titles`
        : sql<{ messages: number; titles: number }>`
          SELECT
            (SELECT count(*) FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
              JOIN conversations c ON c.id = m.conversation_id
              WHERE messages_fts MATCH ${tsQuery(query)} AND c.user_id = ${data.benchUserId}
                AND c.deleted_at IS NULL) AS messages,
            (SELECT count(*) FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid
              WHERE conversations_fts MATCH ${tsQuery(query)} AND c.user_id = ${data.benchUserId}
                AND c.deleted_at IS NULL) AS titles`).pipe(
          Effect.orDie,
          Effect.map((rows) => `matches ${rows[0]!.messages} messages and ${rows[0]!.titles} titles of the user`)
        )
    const matchNotes: Record<string, string> = {
      "search-rare": yield* matches(dataset.rareWord),
      "search-common": yield* matches(dataset.commonQuery)
    }

    const baseline = yield* measure(Effect.orDie(sql`SELECT 1`), runs.baseline)
    const results: Array<PathResult> = []
    for (const path of paths) {
      const { result, statements } = yield* captureStatements(path.describe)
      const service = yield* measure(path.effect, path.run)
      const half = { ...path.run, iterations: path.run.iterations / 2 }
      const repoStats = yield* measure(path.repo, half)
      const bareStats = yield* measure(bare(statements), half)
      const note = [result, matchNotes[path.key]].filter(Boolean).join("; ")
      results.push({
        key: path.key,
        label: path.label,
        target: path.target,
        service,
        repo: repoStats,
        bare: bareStats,
        note,
        statements
      })
    }

    const plans: Array<DialectResult["plans"][number]> = []
    if (explain) {
      for (const result of results) {
        for (const [text, params] of result.statements) {
          plans.push({
            key: result.key,
            sql: tidy(text),
            params: params.map(showParam).join(", "),
            plan: yield* planOf(text, params)
          })
        }
      }
    }
    // Experiments: variants of the SQL above, run bare, to show what a change of the query would buy.
    const statementsOf = (key: string) => results.find((result) => result.key === key)?.statements ?? []
    const variant = (key: string, from: string | RegExp, to: string) =>
      statementsOf(key).map(([text, params]) => [text.replace(from, to), params] as const)
    const rank = dialect === "pg" ? "ts_rank(m.search_vector, query.q)" : "-bm25(messages_fts)"
    const candidates: Array<{
      key: string
      label: string
      change: string
      run: { warmup: number; iterations: number }
      statements: ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>
    }> = [
      ...(dialect === "pg"
        ? [{
          key: "branch",
          label: "branch, timestamps sent as text",
          change: "`m.created_at, m.updated_at` → `to_char(m.created_at AT TIME ZONE 'UTC', " +
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at` (and the same for `updated_at`): the driver " +
            "receives ISO text instead of parsing each timestamp into a `Date` and formatting it back",
          run: runs.branch,
          statements: variant(
            "branch",
            "m.created_at, m.updated_at,",
            `to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at, ` +
              `to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS updated_at,`
          )
        }]
        : []),
      {
        key: "search-common",
        label: "search common, messages not ranked",
        change: `\`${rank}\` → \`0\` in the messages arm (what ranking every match costs)`,
        run: runs.commonSearch,
        statements: variant("search-common", rank, dialect === "pg" ? "0::real" : "0")
      }
    ]
    const experiments: Array<DialectResult["experiments"][number]> = []
    for (const candidate of candidates) {
      const changed = candidate.statements.some(([text], index) => text !== statementsOf(candidate.key)[index]?.[0])
      if (!changed) {
        console.log(`   experiment "${candidate.label}": the SQL no longer has the text it changes; skipped`)
        continue
      }
      const stats = yield* measure(bare(candidate.statements), {
        ...candidate.run,
        iterations: candidate.run.iterations / 2
      })
      const plans: Array<string> = []
      if (explain) {
        for (const [text, params] of candidate.statements) {
          if (text !== statementsOf(candidate.key).find(([original]) => original === text)?.[0]) {
            plans.push(yield* planOf(text, params))
          }
        }
      }
      experiments.push({
        key: candidate.key,
        label: candidate.label,
        level: "bare SQL",
        change: candidate.change,
        stats,
        plans
      })
    }
    return {
      dialect,
      baseline,
      paths: results,
      plans,
      shape: data.big.shape,
      experiments
    } satisfies DialectResult
  })

const servicesOn = (dialect: Dialect) => {
  const client = Layer.unwrapScoped(
    dialect === "pg"
      ? Effect.map(freshPgDatabase, ({ url }) => pgClientFor(url))
      : Effect.map(freshDirectory, sqliteClientFor)
  ).pipe(Layer.orDie)
  return Conversations.Default.pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        ConversationRepo.Default,
        GraphRepo.Default,
        SearchRepo.Default,
        ModelsRepo.Default,
        ModelConfigsRepo.Default,
        AuditLog.Default.pipe(Layer.provide(AuditRepo.Default))
      )
    ),
    Layer.provideMerge(client)
  )
}

const dialectNames: Record<Dialect, string> = {
  sqlite: "SQLite (better-sqlite3, a file in a temporary directory)",
  pg: "PostgreSQL (127.0.0.1, pool of 5, a fresh database dropped afterwards)"
}

const table = (result: DialectResult) => {
  const header = [
    "path".padEnd(40),
    "level".padEnd(8),
    "n".padStart(5),
    "p50 ms".padStart(8),
    "p99 ms".padStart(8),
    "max ms".padStart(8),
    "p50/base".padStart(9),
    "  target p99"
  ].join(" ")
  const row = (label: string, level: string, stats: Stats, verdict: string) =>
    [
      label.padEnd(40),
      level.padEnd(8),
      String(stats.n).padStart(5),
      ms(stats.p50).padStart(8),
      ms(stats.p99).padStart(8),
      ms(stats.max).padStart(8),
      `${(stats.p50 / result.baseline.p50).toFixed(0)}×`.padStart(9),
      verdict ? `  ${verdict}` : ""
    ].join(" ").trimEnd()
  const lines = [header, row("baseline: SELECT 1 round trip", "bare", result.baseline, "")]
  for (const path of result.paths) {
    const verdict = path.target === undefined
      ? "no target (information)"
      : `≤ ${path.target} ms: ${path.service.p99 <= path.target ? "PASS" : "MISS"}`
    lines.push(row(path.label, "service", path.service, verdict))
    lines.push(row("", "repo", path.repo, ""))
    lines.push(row("", "bare SQL", path.bare, ""))
  }
  for (const experiment of result.experiments) {
    lines.push(row(`experiment: ${experiment.label}`, experiment.level, experiment.stats, ""))
  }
  return lines.join("\n")
}

const writeDoc = (results: ReadonlyArray<DialectResult>, command: string) => {
  const sections = planSections.map(({ explanation, key, title }) => {
    const parts = [`## ${title}`, "", explanation.trim(), ""]
    for (const result of results) {
      const plans = result.plans.filter((plan) => plan.key === key)
      plans.forEach((plan, index) => {
        const heading = result.dialect === "pg"
          ? "PostgreSQL — `EXPLAIN (ANALYZE, BUFFERS)`"
          : "SQLite — `EXPLAIN QUERY PLAN`"
        parts.push(
          `### ${heading}${plans.length > 1 ? `, statement ${index + 1} of ${plans.length}` : ""}`,
          "",
          "```sql",
          plan.sql,
          "```",
          "",
          `Parameters: ${plan.params}`,
          "",
          "```",
          plan.plan,
          "```",
          ""
        )
      })
      for (const experiment of result.experiments.filter((experiment) => experiment.key === key)) {
        parts.push(
          `### Experiment on ${
            result.dialect === "pg" ? "PostgreSQL" : "SQLite"
          } (not in the source): ${experiment.label}`,
          "",
          `Change: ${experiment.change}. ${experiment.level === "service" ? "Service level" : "Bare SQL"}: p50 ${
            ms(experiment.stats.p50)
          } ms, p99 ${ms(experiment.stats.p99)} ms, against the unchanged query's figures in \`bench/RESULTS.md\`.`,
          ""
        )
        for (const plan of experiment.plans) parts.push("```", plan, "```", "")
      }
    }
    return parts.join("\n")
  })
  const doc = [
    "# Query plans of the conversation history",
    "",
    "The plans of the three read paths that issue #4 sets targets for — a page of the conversation list,",
    "the active branch of a conversation, and search — and of the first page of the active branch, on the",
    "benchmark's data set: a user with 10,000 conversations (and 3 other users with 1,000 each), one",
    "conversation of 10,000 messages in a branching tree, after `ANALYZE` (PostgreSQL: `VACUUM (ANALYZE)`).",
    "The SQL is exactly what the repositories send (statements sent without the client's name transforms",
    "included), captured while the benchmark calls the `Conversations` service; PostgreSQL plans come from",
    "`EXPLAIN (ANALYZE, BUFFERS)` (so they show real row counts and timings of one run), SQLite plans from",
    "`EXPLAIN QUERY PLAN`. Sections headed \"Experiment\" show a variant of the SQL that is not in the source.",
    "",
    `Regenerate with \`${command}\` (it runs the benchmark and rewrites this file);`,
    "the figures are in [`bench/RESULTS.md`](../bench/RESULTS.md).",
    "",
    "Big conversation:",
    "",
    ...(results[0]?.shape ?? []).map((line) => `- ${line}`),
    "",
    ...sections
  ].join("\n")
  Fs.writeFileSync(Path.join(import.meta.dirname, "..", "docs", "query-plans.md"), doc.trimEnd() + "\n")
}

/** What each plan shows; kept next to the code that prints the plans. */
const planSections: ReadonlyArray<{ key: string; title: string; explanation: string }> = [
  {
    key: "list",
    title: "1. Conversation list, first page",
    explanation: `
\`ConversationRepo.listSummaries\`: the user's live, non-archived conversations, pinned first, then
newest-updated, 50 + 1 rows (the extra row tells whether there is a next page), each with a preview
of its current leaf.

Served by \`conversations_user_list_idx\` — \`(user_id, archived, pinned, updated_at, id) WHERE
deleted_at IS NULL\` — read backwards: the equality on \`user_id\` and \`archived\` selects one range
of the index, and its order is the \`ORDER BY\` (\`pinned DESC, updated_at DESC, id DESC\`), so both
databases stop after 51 index entries: SQLite shows no \`USE TEMP B-TREE FOR ORDER BY\`, PostgreSQL an
\`Index Scan Backward\` under the \`Limit\` (51 rows read of the ~9,200 that qualify). The partial
index's predicate is implied by \`c.deleted_at IS NULL\`. Each row's preview is one primary-key lookup
of the leaf message (\`messages_pkey\`; on SQLite \`sqlite_autoindex_messages_1\`, the index of the
text primary key).`
  },
  {
    key: "list-deep",
    title: "2. Conversation list, a page deep in the list (keyset cursor)",
    explanation: `
Page ${dataset.deepPage} of the same list, reached with the cursor of page ${dataset.deepPage - 1}: the
cursor carries the last row's \`(pinned, updated_at, id)\`, and the query continues with a row-value
comparison. Both databases use that comparison as an index bound on
\`conversations_user_list_idx\` (SQLite: \`(pinned,updated_at,id)<(?,?,?)\` inside the \`SEARCH\`;
PostgreSQL: \`ROW(pinned, updated_at, id) < ROW(…)\` in the \`Index Cond\`), so the scan starts at the
cursor and reads 51 entries: a page deep in the list costs what the first page costs (no \`OFFSET\`).`
  },
  {
    key: "branch",
    title: "3. Active branch of the big conversation",
    explanation: `
\`Conversations.listMessages(…, { view: "active" })\` runs two statements: the conversation (primary
key, with the owner check) and \`ConversationRepo.activeBranch\`, a recursive CTE that walks from the
current leaf up through \`parent_id\` (one primary-key lookup per step, 1,000 steps here), then reads
each message's full row by key (\`FROM branch CROSS JOIN messages m WHERE m.id = branch.id\`) and
returns its stored position among its siblings. The statement is sent through the
client without its name transforms (\`sql.withoutTransforms()\`; the SQL below is what it sends), and
\`readMessageRow\` reads the rows without a schema pass.

- The walk: \`messages_pkey\` / \`sqlite_autoindex_messages_1\` per step (PostgreSQL: \`Recursive Union\`
  with an \`Index Scan using messages_pkey\`, 1,000 loops; SQLite: \`RECURSIVE STEP\` with \`SCAN branch\`
  and \`SEARCH m … (id=?)\`).
- The rows: SQLite keeps the order of a \`CROSS JOIN\`, so it reads \`SCAN branch\` and looks each message
  up with \`SEARCH m USING INDEX sqlite_autoindex_messages_1 (id=?)\` — 1,000 key lookups, whatever the
  size of \`messages\` (with the former plain \`JOIN\` it scanned all of \`messages\` against an automatic
  index on the CTE). PostgreSQL plans the \`CROSS JOIN … WHERE\` as the inner join it is: a \`Nested
  Loop\` of \`CTE Scan on branch\` and \`Index Scan using messages_pkey\`. Both then sort the 1,000 rows by
  depth in memory (\`USE TEMP B-TREE FOR ORDER BY\` / \`Sort\`, quicksort).
- Sibling positions ("2 / 3") are columns of the row (\`sibling_index\`, \`sibling_count\`), kept by
  the repository whenever a message joins or leaves its siblings (migration 0004): the statement
  counts nothing. (Counting them per message, two correlated counts on \`messages_children_idx\`, took
  about 40 % of the statement.)
- PostgreSQL executes the statement in a few milliseconds (\`Execution Time\` below). A caller waits for
  more than that: the 1,000 full rows (the message texts, about 0.5 MB) cross the socket and the driver
  parses every field, each row's two timestamps into a \`Date\` and back to ISO text (the client's type
  parsers, \`src/Sql.ts\`) — the experiment "timestamps sent as text" shows that part — and the service
  builds 1,000 views. See \`bench/RESULTS.md\`.`
  },
  {
    key: "branch-page",
    title: `3b. Active branch, first page (the ${dataset.branchPage} messages nearest the leaf)`,
    explanation: `
\`Conversations.listMessages(…, { view: "active", limit: ${dataset.branchPage} })\`: the same two statements,
with the walk stopped by \`WHERE branch.depth < ${dataset.branchPage}\` in the recursive step. It returns
${dataset.branchPage + 1} rows: the ${dataset.branchPage} messages nearest the leaf and the one above them, whose id the
service puts in \`nextCursor\` (the next page walks up from it). The plans are the plans of the whole
branch with a tenth of the loops: the cost follows the page size, not the length of the branch, and a
later page starts its walk at the cursor's message by primary key, so it costs the same (no \`OFFSET\`).
Not a target of issue #4 (the target is on the whole branch): measured to show what a client that reads
the branch a page at a time pays.`
  },
  {
    key: "search-rare",
    title: "4. Search, a rare word",
    explanation: `
\`SearchRepo.search\` with a word that 22 of the user's messages and 2 titles contain. Title hits and
message hits are two arms of one \`UNION ALL\`, ranked, sorted (titles first, then score, then
newest) and cut to 20 + 1.

- SQLite: each arm is an FTS5 \`MATCH\` (\`SCAN messages_fts VIRTUAL TABLE INDEX 0:M1\` — the FTS5 index
  answers the match; "scan" is how SQLite prints a virtual-table query), then one lookup by \`rowid\` in
  \`messages\` and one by primary key in \`conversations\` per match, to check the owner and the trash.
  It reads only the matching rows (of every user: the owner is checked after the text match).
- PostgreSQL: \`Bitmap Index Scan\` on the GIN indexes \`messages_search_idx\` and
  \`conversations_search_idx\` (both partial, \`WHERE deleted_at IS NULL\`). The titles arm checks the owner
  on the matching rows; the messages arm hash-joins its matches with \`mine\`, the user's live
  conversation ids, read once by an \`Index Only Scan\` of \`conversations_user_list_idx\` (9,699 ids here)
  and hashed (\`MATERIALIZED\` CTE). For a rare word, reading and hashing those ids is most of the
  statement's time (\`CTE Scan on mine\` and \`Hash\` below, against a few hundredths of a millisecond for
  the 29 matching messages): a fixed cost per search that grows with the number of the user's
  conversations, not with the number of matches.`
  },
  {
    key: "search-common",
    title: "5. Search, a common word and a prefix",
    explanation: `
The same statement with \`database conf*\`: 11,099 messages of all users match (9,002 of them the user's,
plus 51 titles). The indexes find the matches, as for the rare word, but every match must then be
fetched, checked against its conversation, **ranked** (\`bm25\` / \`ts_rank\`) and sorted before the first
21 rows are known: no index returns rows in relevance order.

- PostgreSQL: the \`Bitmap Heap Scan\` returns the 11,099 matching messages of every user (the GIN
  estimate is 212 rows: a prefix term is estimated poorly), the \`Hash Join\` with \`mine\` keeps the
  user's 9,002 (one hash probe each, rather than the 11,099 key lookups in \`conversations_pkey\` of a
  nested loop, which the estimate would lead the planner to), then \`ts_rank\` scores each and a
  \`top-N heapsort\` keeps 21. Ranking reads every match's \`search_vector\`, for longer messages out of
  line: the \`Hash Join\` touches 10,810 buffers here against 4,543 in the experiment without ranking
  below: the same heap and index pages, and 6,267 more, those of the TOAST table (and its index) that
  holds the larger vectors. The experiment's figures show what ranking costs in time.
- SQLite materialises the matching rows (with their texts) in a temporary B-tree for the \`ORDER BY\`,
  ranking each with \`bm25\`.

The cost grows with the number of matching messages, i.e. with a user's history.`
  }
]

const main = Effect.gen(function*() {
  const command = `npm run bench:conversations${explain ? " -- --explain" : ""}${scale < 1 ? " --quick" : ""}`
  console.log(
    `Web+ conversation history benchmark — Node ${process.version}, ${Os.cpus().length} cores ` +
      `(${Os.cpus()[0]?.model.trim() ?? "?"}), load average ${Os.loadavg().map((n) => n.toFixed(1)).join(" ")}`
  )
  console.log(
    `Data set: a user with ${dataset.conversations} conversations (${dataset.pinned} pinned, ` +
      `~${dataset.archivedShare * 100} % archived, ~${dataset.trashedShare * 100} % in the trash; ` +
      `all but one with 1–4 messages), one conversation of ${dataset.big.messages} messages; ` +
      `${dataset.otherUsers} other users with ${dataset.otherConversations} conversations each`
  )
  console.log(
    `Targets (p99, service level): list page ≤ ${targets.list} ms, active branch ≤ ${targets.branch} ms, ` +
      `search ≤ ${targets.search} ms`
  )
  const results: Array<DialectResult> = []
  for (const dialect of ["sqlite", "pg"] as const) {
    console.log("")
    console.log(dialectNames[dialect])
    const result = yield* Effect.scoped(Effect.provide(benchmarkDialect(dialect), servicesOn(dialect)))
    results.push(result)
    for (const path of result.paths) console.log(`   ${path.label}: ${path.note}`)
    console.log("")
    console.log(table(result))
    for (const experiment of result.experiments) {
      console.log(`   experiment "${experiment.label}": ${experiment.change}`)
    }
  }
  if (explain) {
    writeDoc(results, command)
    console.log("")
    console.log("Wrote docs/query-plans.md")
  }
})

Effect.runPromiseExit(main).then((exit) => {
  if (exit._tag === "Failure") {
    console.error(exit.cause)
    process.exit(1)
  }
  process.exit(0)
})
