/**
 * Full-text search over a user's conversation titles and message contents,
 * one interface over two engines: SQLite FTS5 (bm25 ranking) and PostgreSQL
 * text search (`tsvector` GIN indexes, `ts_rank`). Both index words
 * without stemming and match the last word as a prefix, so typing "deplo"
 * already finds "deployment". Snippets are cut here, the same for both.
 *
 * Title matches rank before message matches; within each kind, by relevance,
 * then newest first. Conversations in the trash are left out.
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { MessageRole } from "../Domain/Conversation.js"
import { ConversationId, MessageId, ThreadId } from "../Domain/Ids.js"
import type { UserId } from "../Domain/Ids.js"
import { dialectOf } from "../Sql.js"

export const SearchRow = Schema.Struct({
  kind: Schema.Literal("conversation", "message"),
  conversationId: ConversationId,
  conversationTitle: Schema.String,
  messageId: Schema.NullOr(MessageId),
  threadId: Schema.NullOr(ThreadId),
  role: Schema.NullOr(MessageRole),
  text: Schema.String.annotations({ description: "The matching title or message content" }),
  score: Schema.Number,
  createdAt: Schema.DateTimeUtc
})
export type SearchRow = typeof SearchRow.Type

export interface SearchRequest {
  readonly userId: UserId
  /** Words as a user typed them: letters and digits only (see `searchTerms`). */
  readonly terms: ReadonlyArray<string>
  readonly limit: number
  readonly offset: number
}

/** The words of a query: runs of letters and digits, lower-cased, at most 16. */
export const searchTerms = (query: string): ReadonlyArray<string> =>
  (query.normalize("NFKC").toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).slice(0, 16)

/** A word as the indexes compare it: lower-cased, without diacritics. */
const folded = (word: string) => word.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase()

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`)

/**
 * The part of `text` around the first match of `terms` (every word but the last matched
 * whole, the last as a prefix, as the query does), as HTML: the text escaped, the matching
 * words in `<mark>`. Built here rather than by the database, so both dialects give the same.
 */
export const snippet = (text: string, terms: ReadonlyArray<string>, before = 10, length = 32): string => {
  const wanted = terms.map(folded)
  const last = wanted.length - 1
  const matches = (word: string) => {
    const candidate = folded(word)
    return wanted.some((term, index) => (index === last ? candidate.startsWith(term) : candidate === term))
  }
  const words = [...text.matchAll(/[\p{L}\p{N}]+/gu)]
  const from = Math.max(0, words.findIndex((word) => matches(word[0])) - before)
  const to = Math.min(words.length, from + length)
  const start = from === 0 ? 0 : words[from]!.index
  const end = to === words.length ? text.length : words[to]!.index
  let html = ""
  let position = start
  for (const word of words.slice(from, to)) {
    if (!matches(word[0])) continue
    html += `${escapeHtml(text.slice(position, word.index))}<mark>${escapeHtml(word[0])}</mark>`
    position = word.index + word[0].length
  }
  html += escapeHtml(text.slice(position, end))
  html = html.replace(/\s+/g, " ").trim()
  return `${from === 0 ? "" : "…"}${html}${to === words.length ? "" : "…"}`
}

/** FTS5: every word must appear, the last one as a prefix (`"a" "b" "c"*`). Words are quoted, so none is an operator. */
const fts5Query = (terms: ReadonlyArray<string>) =>
  terms.map((term, index) => `"${term}"${index === terms.length - 1 ? "*" : ""}`).join(" ")

/** PostgreSQL tsquery: the same meaning (`a & b & c:*`). Words are letters and digits only. */
const tsQuery = (terms: ReadonlyArray<string>) =>
  terms.map((term, index) => `'${term}'${index === terms.length - 1 ? ":*" : ""}`).join(" & ")

export class SearchRepo extends Effect.Service<SearchRepo>()("Conversations/SearchRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const sqliteSearch = ({ limit, offset, terms, userId }: SearchRequest) => {
      const match = fts5Query(terms)
      return sql`
        SELECT * FROM (
          SELECT 'conversation' AS kind, c.id AS conversation_id, c.title AS conversation_title,
            NULL AS message_id, NULL AS thread_id, NULL AS role,
            c.title AS text,
            -bm25(conversations_fts) AS score, 0 AS priority, c.updated_at AS created_at
          FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid
          WHERE conversations_fts MATCH ${match} AND c.user_id = ${userId} AND c.deleted_at IS NULL
          UNION ALL
          SELECT 'message', c.id, c.title, m.id, m.thread_id, m.role,
            m.content,
            -bm25(messages_fts), 1, m.created_at
          FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
            JOIN conversations c ON c.id = m.conversation_id
          WHERE messages_fts MATCH ${match} AND c.user_id = ${userId} AND c.deleted_at IS NULL
        ) hits
        ORDER BY priority, score DESC, created_at DESC LIMIT ${limit} OFFSET ${offset}`
    }

    // The user's live conversations are read once and hashed: a common word matches thousands of
    // messages (of every user), and looking each one's conversation up by key costs more than that.
    // `ts_rank` (word frequency) rather than `ts_rank_cd` (also proximity): it ranks thousands of matches
    // in a fraction of the time. Ranking first, then reading the texts of the page's rows only.
    const pgSearch = ({ limit, offset, terms, userId }: SearchRequest) =>
      sql`
        WITH query AS (SELECT to_tsquery('simple', webplus_search_fold(${tsQuery(terms)})) AS q),
        mine AS MATERIALIZED (SELECT id FROM conversations WHERE user_id = ${userId} AND deleted_at IS NULL),
        hits AS (
          SELECT 'conversation' AS kind, c.id AS conversation_id, NULL::uuid AS message_id,
            ts_rank(c.search_vector, query.q) AS score, 0 AS priority, c.updated_at AS created_at
          FROM conversations c, query
          WHERE c.search_vector @@ query.q AND c.user_id = ${userId} AND c.deleted_at IS NULL
          UNION ALL
          SELECT 'message', m.conversation_id, m.id, ts_rank(m.search_vector, query.q), 1, m.created_at
          FROM messages m JOIN mine ON mine.id = m.conversation_id, query
          WHERE m.search_vector @@ query.q AND m.deleted_at IS NULL
          ORDER BY priority, score DESC, created_at DESC LIMIT ${limit} OFFSET ${offset}
        )
        SELECT hits.kind, hits.conversation_id, c.title AS conversation_title, hits.message_id,
          m.thread_id, m.role, hits.score, hits.created_at, coalesce(m.content, c.title) AS text
        FROM hits JOIN conversations c ON c.id = hits.conversation_id
          LEFT JOIN messages m ON m.id = hits.message_id
        ORDER BY hits.priority, hits.score DESC, hits.created_at DESC`

    const search = SqlSchema.findAll({
      Request: Schema.Any as Schema.Schema<SearchRequest>,
      Result: SearchRow,
      execute: dialectOf(sql) === "pg" ? pgSearch : sqliteSearch
    })

    return {
      search: (request: SearchRequest) => Effect.orDie(search(request))
    } as const
  })
}) {}
