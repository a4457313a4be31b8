/**
 * One pagination shape: `{ items, nextCursor }`, with an opaque cursor that
 * encodes the sort key of the last item (keyset pagination: stable while new
 * rows arrive, and fast at any depth).
 */
import { Effect, Option, Schema } from "effect"
import { FieldIssue, ValidationError } from "./Errors.js"
import { UuidV7 } from "./Ids.js"
import { request } from "./Request.js"

export const Page = <A, I, R>(item: Schema.Schema<A, I, R>) =>
  Schema.Struct({
    items: Schema.Array(item),
    nextCursor: Schema.NullOr(Schema.String).annotations({ description: "Pass as `cursor` for the next page" })
  })

export const PageParams = request(Schema.Struct({
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100))),
  cursor: Schema.optional(Schema.String.pipe(Schema.maxLength(500)))
}))

export const defaultLimit = 50

/** The position after which a page starts: the last item's time (as stored: ISO-8601 UTC) and id. */
export const Position = Schema.Struct({
  at: Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)),
  id: UuidV7
})
export type Position = typeof Position.Type

const PositionJson = Schema.parseJson(Position)

export const encodeCursor = (position: Position): string =>
  Buffer.from(Schema.encodeSync(PositionJson)(position)).toString("base64url")

export const decodeCursor = (cursor: string | undefined): Effect.Effect<Option.Option<Position>, ValidationError> =>
  cursor === undefined
    ? Effect.succeedNone
    : Schema.decodeUnknown(PositionJson)(Buffer.from(cursor, "base64url").toString()).pipe(
      Effect.map(Option.some),
      Effect.mapError(() =>
        new ValidationError({
          message: "Invalid cursor",
          issues: [new FieldIssue({ path: ["cursor"], message: "Not a cursor this server issued" })]
        })
      )
    )

/** Builds a page from `limit + 1` fetched rows. */
export const toPage = <A>(rows: ReadonlyArray<A>, limit: number, positionOf: (row: A) => Position) => {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return { items, nextCursor: rows.length > limit && last !== undefined ? encodeCursor(positionOf(last)) : null }
}
