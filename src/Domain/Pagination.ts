/**
 * One pagination shape: `{ items, nextCursor }`, with an opaque cursor that
 * encodes the sort key of the last item (keyset pagination: stable while new
 * rows arrive, and fast at any depth).
 */
import { DateTime, Effect, Option, Schema } from "effect"
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

/** An opaque cursor carrying a value of `schema`: base64url JSON, validated when it comes back. */
export const cursorOf = <A, I>(schema: Schema.Schema<A, I>) => {
  const json = Schema.parseJson(schema)
  return {
    encode: (value: A): string => Buffer.from(Schema.encodeSync(json)(value)).toString("base64url"),
    decode: (cursor: string | undefined): Effect.Effect<Option.Option<A>, ValidationError> =>
      cursor === undefined
        ? Effect.succeedNone
        : Schema.decodeUnknown(json)(Buffer.from(cursor, "base64url").toString()).pipe(
          Effect.map(Option.some),
          Effect.mapError(() =>
            new ValidationError({
              message: "Invalid cursor",
              issues: [new FieldIssue({ path: ["cursor"], message: "Not a cursor this server issued" })]
            })
          )
        )
  } as const
}

const positionCursor = cursorOf(Position)

/** Where a page ordered by creation time ends: the row's time (as stored: ISO-8601 UTC) and id. */
export const createdPosition = (row: { readonly id: string; readonly createdAt: DateTime.Utc }) => ({
  at: DateTime.formatIso(row.createdAt),
  id: row.id
})

export const encodeCursor = positionCursor.encode
export const decodeCursor = positionCursor.decode

/** Builds a page from `limit + 1` fetched rows; `positionOf` gives the sort key a page ends at. */
export const toPage = <A, P = Position>(
  rows: ReadonlyArray<A>,
  limit: number,
  positionOf: (row: A) => P,
  encode: (position: P) => string = encodeCursor as (position: P) => string
) => {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return { items, nextCursor: rows.length > limit && last !== undefined ? encode(positionOf(last)) : null }
}

/**
 * A page of rows ordered by creation time: the request's `limit` (else the default) and `cursor`,
 * `read` asked for the rows after the cursor's position (`rows`: one more than the page holds, to
 * know whether another follows), and the page built from them.
 */
export const pageByCreation = <A extends { readonly id: string; readonly createdAt: DateTime.Utc }, E, R>(
  query: { readonly limit?: number | undefined; readonly cursor?: string | undefined },
  read: (after: Option.Option<Position>, rows: number) => Effect.Effect<ReadonlyArray<A>, E, R>
): Effect.Effect<{ readonly items: ReadonlyArray<A>; readonly nextCursor: string | null }, E | ValidationError, R> =>
  Effect.gen(function*() {
    const limit = query.limit ?? defaultLimit
    const rows = yield* read(yield* decodeCursor(query.cursor), limit + 1)
    return toPage(rows, limit, createdPosition)
  })
