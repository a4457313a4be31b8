/**
 * The composition root: the whole server as one layer. The SQL client is
 * chosen here, once, from configuration; everything above it is
 * dialect-agnostic. `main.ts` launches it; tests build it on an ephemeral port.
 */
import { HttpServerError } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { SqlError } from "@effect/sql"
import { Cause, ConfigError, Layer, Option } from "effect"
import { AppConfig, formatConfigError } from "./Config.js"
import { HttpLive } from "./Http.js"
import { LoggingLive } from "./Logging.js"
import { MigrationsError, MigrationsLive } from "./Migrations.js"
import { Secrets } from "./Secrets.js"
import { SqlLive } from "./Sql.js"
import { TracingLive } from "./Tracing.js"

const InfrastructureLive = MigrationsLive.pipe(
  Layer.provideMerge(SqlLive),
  Layer.provideMerge(Secrets.Default)
)

/**
 * Everything the HTTP layer stands on: configuration, logging, tracing, secrets, the database and
 * its migrations.
 */
export const withInfrastructure = <A, E, R>(http: Layer.Layer<A, E, R>) =>
  http.pipe(
    Layer.provide(InfrastructureLive),
    Layer.provide(LoggingLive),
    Layer.provide(AppConfig.Default),
    Layer.provide(NodeContext.layer),
    Layer.provide(TracingLive.pipe(Layer.provide(AppConfig.Default)))
  )

export const ServerLive = withInfrastructure(HttpLive)

/** One line saying why the server could not start, without secrets or stack traces. */
export const describeStartupFailure = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) return `Start-up failed: ${Cause.pretty(cause).split("\n")[0] ?? "unknown defect"}`
  const error: unknown = failure.value
  if (ConfigError.isConfigError(error)) return formatConfigError(error)
  if (error instanceof SqlError.SqlError) {
    const reason = error.cause instanceof Error ? error.cause.message : String(error.cause)
    return `Database unavailable: ${error.message} (${reason})`
  }
  if (error instanceof MigrationsError) return error.message
  if (error instanceof HttpServerError.ServeError) {
    const reason = error.cause instanceof Error ? error.cause.message : String(error.cause)
    return `Could not start the HTTP server: ${reason}`
  }
  return `Start-up failed: ${String(error)}`
}
