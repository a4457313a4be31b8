/** Shares' SQL: the owner's reads are scoped to them; the public ones go by slug, and never to a revoked share. */
import { SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { generateUuid, UserId } from "../Domain/Ids.js"
import { createdBefore, storedNow } from "../Sql.js"
import { type Reaction, ShareContent, ShareId } from "./Api.js"

export const ShareRow = Schema.Struct({
  id: ShareId,
  userId: UserId,
  slug: Schema.String,
  kind: Schema.Literal("conversation", "analysis"),
  targetId: Schema.String,
  title: Schema.String,
  content: Schema.parseJson(ShareContent),
  viewCount: Schema.Union(Schema.Int, Schema.NumberFromString),
  revokedAt: Schema.NullOr(Schema.DateTimeUtc),
  createdAt: Schema.DateTimeUtc
})
export type ShareRow = typeof ShareRow.Type

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

    const page = (userId: UserId, after: Option.Option<{ readonly at: string; readonly id: string }>, limit: number) =>
      Effect.flatMap(
        sql`SELECT * FROM shares WHERE user_id = ${userId} AND ${createdBefore(sql, after)}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
        decodeRows
      )

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
      page: (...args: Parameters<typeof page>) => Effect.orDie(page(...args)),
      findOwn: (id: string, userId: UserId) => Effect.orDie(findOwn({ id, userId })),
      revoke: (id: string, userId: UserId) => Effect.orDie(revoke(id, userId)),
      findLive: (slug: string) => Effect.orDie(findLive(slug)),
      countView: (id: string) => Effect.orDie(countView(id)),
      react: (slug: string, reaction: Reaction) => Effect.orDie(react(slug, reaction)),
      reactionsOf: (ids: ReadonlyArray<string>) => Effect.orDie(reactionsOf(ids))
    } as const
  })
}) {}
