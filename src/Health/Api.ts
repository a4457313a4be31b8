import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"

export const CheckStatus = Schema.Literal("ok", "failing")

export class ReadinessCheck extends Schema.Class<ReadinessCheck>("ReadinessCheck")({
  status: CheckStatus,
  message: Schema.optional(Schema.String),
  durationMs: Schema.Number
}) {}

export const ReadinessChecks = Schema.Struct({ database: ReadinessCheck, migrations: ReadinessCheck })

export class Live extends Schema.Class<Live>("Live")({
  status: Schema.Literal("live"),
  uptimeSeconds: Schema.Number
}) {}

export class Ready extends Schema.Class<Ready>("Ready")({
  status: Schema.Literal("ready"),
  checks: ReadinessChecks
}) {}

/** Readiness failed: `checks` says which check and why. */
export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String, checks: ReadinessChecks },
  HttpApiSchema.annotations({ status: 503, description: "Not ready to serve traffic" })
) {}

export class HealthApi extends HttpApiGroup.make("health")
  .add(
    HttpApiEndpoint.get("live", "/health/live")
      .addSuccess(Live)
      .annotate(OpenApi.Summary, "The process is up")
  )
  .add(
    HttpApiEndpoint.get("ready", "/health/ready")
      .addSuccess(Ready)
      .addError(NotReady)
      .annotate(OpenApi.Summary, "The database is reachable and every migration is applied")
  )
  .annotate(OpenApi.Description, "Liveness and readiness probes for orchestrators and load balancers")
{}
