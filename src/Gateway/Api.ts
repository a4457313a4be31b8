/**
 * The REST side of the gateway: how many tokens were spent, per API key, per
 * user (your own) and over every user (admins). (The OpenAI-compatible
 * endpoints themselves are not part of the REST API: they answer in OpenAI's
 * error format, see `Http.ts`.)
 */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Forbidden, NotFound } from "../Domain/Errors.js"
import { ApiKeyId, UserId } from "../Domain/Ids.js"
import { request } from "../Domain/Request.js"
import { ApiKeyUsage, MyUsage, TokenBudget, UsageReport } from "./Schemas.js"

/** The time range of a report: rows recorded at `from` or later, and before `to`. */
const UsageRange = {
  from: Schema.optional(Schema.DateTimeUtc).annotations({ description: "From this time on (inclusive), ISO 8601" }),
  to: Schema.optional(Schema.DateTimeUtc).annotations({
    description: "Up to this time (exclusive), ISO 8601; not before `from`"
  })
}

export const MyUsageQuery = request(Schema.Struct({
  ...UsageRange,
  groupBy: Schema.optionalWith(Schema.Literal("model", "day", "source"), { default: () => "model" as const })
    .annotations({
      description: "Sum per model (the default), per day (UTC) or per source (`gateway`, `chat`, `graph`)"
    })
}))
export type MyUsageQuery = typeof MyUsageQuery.Type

export const UsageReportQuery = request(Schema.Struct({
  ...UsageRange,
  userId: Schema.optional(UserId).annotations({ description: "Only this user's usage" }),
  groupBy: Schema.optionalWith(Schema.Literal("model", "day", "source", "user"), { default: () => "model" as const })
    .annotations({ description: "Sum per model (the default), per day (UTC), per source or per user" })
}))
export type UsageReportQuery = typeof UsageReportQuery.Type

export class UsageApi extends HttpApiGroup.make("usage")
  .add(
    HttpApiEndpoint.get("apiKeyUsage", "/api/v1/auth/api-keys/:id/usage")
      .setPath(request(Schema.Struct({ id: ApiKeyId })))
      .addSuccess(ApiKeyUsage)
      .addError(Forbidden)
      .addError(NotFound)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Tokens spent with one of your API keys, in total and per model")
  )
  .add(
    HttpApiEndpoint.get("myUsage", "/api/v1/me/usage")
      .setUrlParams(MyUsageQuery)
      .addSuccess(MyUsage)
      .addError(Forbidden)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Tokens you spent, in total and per model, day or source")
  )
  .add(
    HttpApiEndpoint.get("myBudget", "/api/v1/me/budget")
      .addSuccess(TokenBudget)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Your token budget this period: how much, how much is spent, when it renews")
  )
  .add(
    HttpApiEndpoint.get("usageReport", "/api/v1/admin/usage")
      .setUrlParams(UsageReportQuery)
      .addSuccess(UsageReport)
      .addError(Forbidden)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Tokens every user spent (admins), in total and per model, day, source or user")
  )
  .annotate(OpenApi.Description, "Token usage reported by the providers")
{}
