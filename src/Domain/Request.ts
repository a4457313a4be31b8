/**
 * Request schemas (payload, query, path, headers) are decoded reporting every
 * failing field, so a 422 lists them all instead of stopping at the first.
 * Wrap each one in `request(…)` where an endpoint is declared; the API tests
 * check that no endpoint forgets it.
 */
import { type Schema, SchemaAST } from "effect"
import type { ParseOptions } from "effect/SchemaAST"

export const requestParseOptions: ParseOptions = { errors: "all", onExcessProperty: "ignore" }

export const request = <S extends Schema.Schema.Any>(schema: S): S =>
  schema.annotations({ parseOptions: requestParseOptions }) as S

/** Whether a schema was declared through `request(…)`. */
export const isRequestSchema = (schema: Schema.Schema.Any): boolean =>
  SchemaAST.getParseOptionsAnnotation(schema.ast).pipe((option) =>
    option._tag === "Some" && option.value.errors === "all"
  )
