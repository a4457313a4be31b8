/**
 * The errors every endpoint may answer with. Each is a tagged schema with its
 * HTTP status, so handlers fail with data and the body is always
 * `{ _tag, message, … }`. Feature errors live next to their feature.
 */
import { HttpApiSchema } from "@effect/platform"
import { DateTime, Effect, Option, Schema } from "effect"

export class FieldIssue extends Schema.Class<FieldIssue>("FieldIssue")({
  path: Schema.Array(Schema.Union(Schema.String, Schema.Number)).annotations({
    description: "Where the problem is: path segments into the request (path, query, headers or body)"
  }),
  message: Schema.String
}) {}

/** The request did not match its schema (or its body was not valid JSON). */
export class ValidationError extends Schema.TaggedError<ValidationError>()(
  "ValidationError",
  { message: Schema.String, issues: Schema.Array(FieldIssue) },
  HttpApiSchema.annotations({ status: 422, description: "The request is malformed; `issues` lists the failing fields" })
) {}

/** A `ValidationError` about one field. */
export const invalid = (path: ReadonlyArray<string | number>, message: string) =>
  new ValidationError({ message, issues: [new FieldIssue({ path, message })] })

/**
 * A report's `[from, to)`: a range ending before it starts is a mistake (422 on `from`), not an
 * empty report (`from` = `to` is the empty one).
 */
export const checkRange = (range: {
  readonly from?: DateTime.Utc | undefined
  readonly to?: DateTime.Utc | undefined
}): Effect.Effect<void, ValidationError> =>
  range.from !== undefined && range.to !== undefined && DateTime.greaterThan(range.from, range.to)
    ? Effect.fail(invalid(["from"], "`from` is after `to`"))
    : Effect.void

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401, description: "Missing or invalid credentials" })
) {}

export class Forbidden extends Schema.TaggedError<Forbidden>()(
  "Forbidden",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 403, description: "Authenticated, but not allowed" })
) {}

export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such resource (or not yours)" })
) {}

export class Conflict extends Schema.TaggedError<Conflict>()(
  "Conflict",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 409, description: "The change conflicts with the current state" })
) {}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { message: Schema.String, limitBytes: Schema.Int },
  HttpApiSchema.annotations({ status: 413, description: "The request body exceeds the configured limit" })
) {}

export class RateLimited extends Schema.TaggedError<RateLimited>()(
  "RateLimited",
  { message: Schema.String, retryAfterSeconds: Schema.Int },
  HttpApiSchema.annotations({ status: 429, description: "Too many requests; retry after `Retry-After` seconds" })
) {}

/** An unexpected failure. The body carries the request id to quote; details are only in the server log. */
export class InternalError extends Schema.TaggedError<InternalError>()(
  "InternalError",
  { message: Schema.String, requestId: Schema.String },
  HttpApiSchema.annotations({ status: 500, description: "Unexpected server error" })
) {}

export class ServiceUnavailable extends Schema.TaggedError<ServiceUnavailable>()(
  "ServiceUnavailable",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "A dependency is unavailable" })
) {}

/** Turns "no such row" into `NotFound`: for another user's object too, so its existence is not revealed. */
export const orNotFound = (message: string) => <A, E, R>(effect: Effect.Effect<Option.Option<A>, E, R>) =>
  Effect.flatMap(
    effect,
    Option.match({ onNone: () => Effect.fail(new NotFound({ message })), onSome: Effect.succeed })
  )
