/**
 * Shares' SQL: the owner's reads are scoped to them; the public ones go by slug, and never to a revoked
 * share. A share's tags are in `share_tags`, written with the share.
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { CountColumn } from "../Domain/Fields.js"
import { generateUuid, UserId } from "../Domain/Ids.js"
import { createdBefore, storedNow } from "../Sql.js"
import { type Reaction, ShareContent, ShareId, type ShareListQuery } from "./Api.js"

export const ShareRow = Schema.Struct({
  id: ShareId,
  userId: UserId,
  slug: Schema.String,
  kind: Schema.Literal("conversation", "analysis"),
  targetId: Schema.String,
  title: Schema.String,
  description: Schema.String,
  content: Schema.parseJson(ShareContent),
  viewCount: CountColumn,
  revokedAt: Schema.NullOr(Schema.DateTimeUtc),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.NullOr(Schema.DateTimeUtc)
})
export type ShareRow = typeof ShareRow.Type

/** The list's filters, as the request gives them. */
export type ShareFilter = Pick<ShareListQuery, "tag" | "q" | "kind" | "status">

/** `text` as a LIKE pattern matching it anywhere, its wildcards (and the escape) taken literally. */
const containing = (text: string) => `%${text.replace(/[\\%_]/g, (character) => `\\${character}`)}%`

const encodeContent = Schema.encodeSync(Schema.parseJson(ShareContent))

export class SharesRepo extends Effect.Service<SharesRepo>()("Shares/SharesRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const decodeRows = Schema.decodeUnknown(Schema.Array(ShareRow))

    const insert = (row: {
      readonly userId: UserId
      readonly slug: string
      readonly kind: "conversation" | "analysis"
      readonly targetId: string
      readonly title: string
      readonly description: string
      readonly content: ShareContent
    }) =>
      Effect.gen(function*() {
        const id = yield* generateUuid
        const now = yield* storedNow
        const rows = yield* sql`INSERT INTO shares ${
          sql.insert({ ...row, id, content: encodeContent(row.content), viewCount: 0, createdAt: now })
        } RETURNING *`
        return (yield* decodeRows(rows))[0]!
      })

    /**
     * Changes a live share's own fields (those given) and marks it updated; `None` when the owner has
     * no such live share (revoked meanwhile, say).
     */
    const update = (
      id: string,
      userId: UserId,
      fields: { readonly title?: string; readonly description?: string; readonly content?: ShareContent }
    ) =>
      Effect.gen(function*() {
        const now = yield* storedNow
        const { content, ...rest } = fields
        const rows = yield* sql`UPDATE shares SET ${
          sql.update({ ...rest, ...(content === undefined ? {} : { content: encodeContent(content) }), updatedAt: now })
        } WHERE id = ${id} AND user_id = ${userId} AND revoked_at IS NULL RETURNING *`
        return Option.fromNullable((yield* decodeRows(rows))[0])
      })

    /** Makes `tags` a share's whole set of tags. */
    const setTags = (id: string, tags: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        yield* sql`DELETE FROM share_tags WHERE share_id = ${id}`
        if (tags.length > 0) {
          yield* sql`INSERT INTO share_tags ${sql.insert(tags.map((tag) => ({ shareId: id, tag })))}`
        }
      })

    /** The owner's shares after `after`, newest first, narrowed by the filters given. */
    const page = (
      userId: UserId,
      filter: ShareFilter,
      after: Option.Option<{ readonly at: string; readonly id: string }>,
      limit: number
    ) => {
      const pattern = filter.q === undefined ? undefined : containing(filter.q)
      const conditions = [
        sql`user_id = ${userId}`,
        createdBefore(sql, after),
        filter.kind !== undefined ? sql`kind = ${filter.kind}` : undefined,
        filter.status === "active" ? sql`revoked_at IS NULL` : undefined,
        filter.status === "revoked" ? sql`revoked_at IS NOT NULL` : undefined,
        filter.tag !== undefined
          ? sql`EXISTS (SELECT 1 FROM share_tags WHERE share_id = shares.id AND tag = ${filter.tag})`
          : undefined,
        // lower() on both sides: PostgreSQL's LIKE minds case (and SQLite's lower() folds ASCII only).
        pattern !== undefined
          ? sql`(lower(title) LIKE lower(${pattern}) ESCAPE '\\'
                 OR lower(description) LIKE lower(${pattern}) ESCAPE '\\')`
          : undefined
      ].filter((condition) => condition !== undefined)
      return Effect.flatMap(
        sql`SELECT * FROM shares WHERE ${sql.and(conditions)} ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
        decodeRows
      )
    }

    const findOwn = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.String, userId: UserId }),
      Result: ShareRow,
      execute: ({ id, userId }) => sql`SELECT * FROM shares WHERE id = ${id} AND user_id = ${userId}`
    })

    /** Marks a share revoked (once); whether the owner has it at all. */
    const revoke = (id: string, userId: UserId) =>
      Effect.gen(function*() {
        const now = yield* storedNow
        yield* sql`UPDATE shares SET revoked_at = ${now} WHERE id = ${id} AND user_id = ${userId} AND revoked_at IS NULL`
        const rows = yield* sql`SELECT id FROM shares WHERE id = ${id} AND user_id = ${userId}`
        return rows.length > 0
      })

    /** A live share by its slug. */
    const findLive = (slug: string) =>
      Effect.map(
        Effect.flatMap(sql`SELECT * FROM shares WHERE slug = ${slug} AND revoked_at IS NULL`, decodeRows),
        (rows) => Option.fromNullable(rows[0])
      )

    /** Counts a view of a live share; the share as it is then (`None` if revoked meanwhile). */
    const countView = (id: string) =>
      Effect.map(
        Effect.flatMap(
          sql`UPDATE shares SET view_count = view_count + 1 WHERE id = ${id} AND revoked_at IS NULL RETURNING *`,
          decodeRows
        ),
        (rows) => Option.fromNullable(rows[0])
      )

    /** Counts a reaction on a live share; `None` when there is no such share. */
    const react = (slug: string, reaction: Reaction) =>
      Effect.gen(function*() {
        const found = yield* sql<{ readonly id: string }>`
          SELECT id FROM shares WHERE slug = ${slug} AND revoked_at IS NULL`
        const share = found[0]
        if (share === undefined) return Option.none<string>()
        yield* sql`INSERT INTO share_reactions ${sql.insert({ shareId: share.id, reaction, count: 1 })}
                   ON CONFLICT (share_id, reaction) DO UPDATE SET count = share_reactions.count + 1`
        return Option.some(share.id)
      })

    /** Each share's tags, sorted. */
    const tagsOf = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(new Map<string, Array<string>>())
        : Effect.map(
          sql<{ readonly shareId: string; readonly tag: string }>`
            SELECT share_id, tag FROM share_tags WHERE ${sql.in("share_id", ids)}`,
          (rows) => {
            const tags = new Map<string, Array<string>>()
            for (const row of rows) tags.set(row.shareId, [...(tags.get(row.shareId) ?? []), row.tag])
            // Sorted here, not by the database: PostgreSQL's collation would order them otherwise than SQLite.
            for (const list of tags.values()) list.sort()
            return tags
          }
        )

    /** An owner's totals, counted by the database: shares (all, revoked), views, and reactions by kind. */
    const totals = SqlSchema.findOne({
      Request: UserId,
      Result: Schema.Struct({ shares: CountColumn, revoked: CountColumn, views: Schema.NullOr(CountColumn) }),
      execute: (userId) =>
        sql`SELECT count(*) AS shares, count(revoked_at) AS revoked, sum(view_count) AS views
            FROM shares WHERE user_id = ${userId}`
    })

    const reactionTotals = SqlSchema.findAll({
      Request: UserId,
      Result: Schema.Struct({ reaction: Schema.String, count: CountColumn }),
      execute: (userId) =>
        sql`SELECT r.reaction, sum(r.count) AS count
            FROM share_reactions r JOIN shares s ON s.id = r.share_id
            WHERE s.user_id = ${userId} GROUP BY r.reaction`
    })

    const statsOf = (userId: UserId) =>
      Effect.gen(function*() {
        const counted = yield* totals(userId)
        const reactions = yield* reactionTotals(userId)
        const { revoked, shares, views } = Option.getOrElse(counted, () => ({ shares: 0, revoked: 0, views: 0 }))
        return {
          shares,
          revoked,
          views: views ?? 0,
          reactions: Object.fromEntries(reactions.map((row) => [row.reaction, row.count])) as Record<string, number>
        }
      })

    /** Each share's reaction counts. */
    const reactionsOf = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(new Map<string, Record<string, number>>())
        : Effect.map(
          sql<{ readonly shareId: string; readonly reaction: string; readonly count: number | string }>`
            SELECT share_id, reaction, count FROM share_reactions WHERE ${sql.in("share_id", ids)}`,
          (rows) => {
            const counts = new Map<string, Record<string, number>>()
            for (const row of rows) {
              const forShare = counts.get(row.shareId) ?? {}
              forShare[row.reaction] = Number(row.count)
              counts.set(row.shareId, forShare)
            }
            return counts
          }
        )

    return {
      insert: (row: Parameters<typeof insert>[0]) => Effect.orDie(insert(row)),
      update: (...args: Parameters<typeof update>) => Effect.orDie(update(...args)),
      setTags: (id: string, tags: ReadonlyArray<string>) => Effect.orDie(setTags(id, tags)),
      page: (...args: Parameters<typeof page>) => Effect.orDie(page(...args)),
      findOwn: (id: string, userId: UserId) => Effect.orDie(findOwn({ id, userId })),
      revoke: (id: string, userId: UserId) => Effect.orDie(revoke(id, userId)),
      findLive: (slug: string) => Effect.orDie(findLive(slug)),
      countView: (id: string) => Effect.orDie(countView(id)),
      react: (slug: string, reaction: Reaction) => Effect.orDie(react(slug, reaction)),
      reactionsOf: (ids: ReadonlyArray<string>) => Effect.orDie(reactionsOf(ids)),
      tagsOf: (ids: ReadonlyArray<string>) => Effect.orDie(tagsOf(ids)),
      statsOf: (userId: UserId) => Effect.orDie(statsOf(userId))
    } as const
  })
}) {}
