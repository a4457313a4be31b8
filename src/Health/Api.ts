import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Unauthorized } from "../Domain/Errors.js"
import { request } from "../Domain/Request.js"

export const CheckStatus = Schema.Literal("ok", "failing")

export class ReadinessCheck extends Schema.Class<ReadinessCheck>("ReadinessCheck")({
  status: CheckStatus,
  message: Schema.optional(Schema.String),
  durationMs: Schema.Number
}) {}

/**
 * `database`, `migrations`, with `AMQP_URL` `rabbitmq`, and with `FILES_STORAGE=s3` `storage` (the
 * object store's bucket) must be ok for the instance to be ready. `redis`, with `REDIS_URL`, is
 * reported only: without it the instance serves every request, its rate limits and cross-instance
 * events aside.
 */
export const ReadinessChecks = Schema.Struct({
  database: ReadinessCheck,
  migrations: ReadinessCheck,
  redis: Schema.optional(ReadinessCheck),
  rabbitmq: Schema.optional(ReadinessCheck),
  storage: Schema.optional(ReadinessCheck)
})

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

/** Prometheus's text format, version 0.0.4. */
export const MetricsText = HttpApiSchema.Text({ contentType: "text/plain; version=0.0.4; charset=utf-8" })

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
      .annotate(
        OpenApi.Summary,
        "The database is reachable and every migration is applied; RabbitMQ and the object store answer (when configured)"
      )
      .annotate(
        OpenApi.Description,
        "Each check within 2 s. With `REDIS_URL`, `checks.redis` reports Redis, but an unreachable Redis leaves " +
          "the instance ready (200): rate limits are then not enforced and events are not passed between instances. " +
          "With `AMQP_URL`, an unreachable RabbitMQ makes it not ready (503): background jobs can be neither " +
          "queued nor run. With `FILES_STORAGE=s3`, `checks.storage` is a signed HEAD on the bucket; an object " +
          "store that does not answer or refuses makes it not ready (503): files can be neither stored nor read."
      )
  )
  .add(
    HttpApiEndpoint.get("metrics", "/metrics")
      .setHeaders(request(Schema.Struct({ authorization: Schema.optional(Schema.String) })))
      .addSuccess(MetricsText)
      .addError(Unauthorized)
      .annotate(OpenApi.Summary, "This instance's metrics, in Prometheus's text format")
      .annotate(
        OpenApi.Description,
        "HTTP requests by route and status, chat answers (started, ended by status, streaming, time to the first " +
          "token, tokens), background jobs (run, timed, waiting by queue), and the process (CPU time, memory). " +
          "With `METRICS_TOKEN` set, it must come as " +
          "`Authorization: Bearer <token>`."
      )
  )
  .annotate(
    OpenApi.Description,
    "Liveness and readiness probes for orchestrators and load balancers, and metrics for Prometheus"
  )
{}
