/**
 * Column shapes shared by the row models. Both dialects hand rows over in one
 * representation (see `Sql.ts`), so these decode SQLite and PostgreSQL alike.
 */
import { Model } from "@effect/sql"
import { Schema } from "effect"

export const JsonValue = Schema.Unknown.annotations({ description: "Any JSON value" })

/** A JSON object column (metadata, parameters), `{}` when empty. */
export const JsonObject = Schema.Record({ key: Schema.String, value: JsonValue })
export type JsonObject = typeof JsonObject.Type

export const JsonObjectColumn = Model.JsonFromString(JsonObject)
export const StringListColumn = Model.JsonFromString(Schema.Array(Schema.String))

/** A nullable point in time, read as `Option<DateTime.Utc>`. */
export const OptionalDateTime = Model.FieldOption(Schema.DateTimeUtc)

export const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative())

/** A count or a sum as either dialect gives it (PostgreSQL's bigint and numeric may come as text). */
export const CountColumn = Schema.Union(Schema.Int, Schema.NumberFromString)
