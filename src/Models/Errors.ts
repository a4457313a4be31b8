/**
 * What can go wrong when the server talks to a model provider. Each is
 * answered to the client as a gateway error: the provider, not the request,
 * is at fault. Messages never carry credentials or upstream bodies.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

/** The provider could not be reached (refused connection, unknown host, TLS failure). */
export class ProviderUnreachable extends Schema.TaggedError<ProviderUnreachable>()(
  "ProviderUnreachable",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "The model provider cannot be reached" })
) {}

/** The provider did not answer within the provider's timeout. */
export class ProviderTimeout extends Schema.TaggedError<ProviderTimeout>()(
  "ProviderTimeout",
  { message: Schema.String, timeoutMs: Schema.Int },
  HttpApiSchema.annotations({ status: 504, description: "The model provider did not answer in time" })
) {}

/** The provider answered with an error status or with something that is not its API's shape. */
export class ProviderError extends Schema.TaggedError<ProviderError>()(
  "ProviderError",
  {
    message: Schema.String,
    upstreamStatus: Schema.NullOr(Schema.Int),
    /** How long the provider asked to be left alone (its `Retry-After`), when it said so. */
    retryAfterMs: Schema.optional(Schema.Int)
  },
  HttpApiSchema.annotations({ status: 502, description: "The model provider answered with an error or malformed data" })
) {}

/** The provider failed too often in a row: it is left alone until `retryAfterMs` have passed. */
export class ProviderUnavailable extends Schema.TaggedError<ProviderUnavailable>()(
  "ProviderUnavailable",
  { message: Schema.String, retryAfterMs: Schema.Int },
  HttpApiSchema.annotations({ status: 503, description: "The model provider is failing and is not called for a while" })
) {}

export type ProviderFailure = ProviderUnreachable | ProviderTimeout | ProviderError | ProviderUnavailable
